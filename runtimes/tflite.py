"""LiteRT interpreter (``ai_edge_litert``, XNNPACK delegate by default), ``num_threads`` fixed.

The manifest gives the layout (NHWC) and the int8 I/O quantization; the interpreter's own tensor
details are checked against it so that a stale manifest is an error, not a silent drift.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import numpy as np

from runtimes import Runner, RuntimeLoadError, register_runtime


@register_runtime("tflite")
class TFLiteRunner(Runner):
    def _import(self) -> None:
        import ai_edge_litert.interpreter  # noqa: F401

    def _load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.runtime = f"LiteRT {version('ai-edge-litert')} interpreter"
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad files
            raise RuntimeLoadError(f"{self.path}: LiteRT cannot load it ({exc})") from None
        (self.inp,) = self.interpreter.get_input_details()
        (self.out,) = self.interpreter.get_output_details()
        self._check(self.inp, self.in_quant, "input")
        self._check(self.out, self.out_quant, "output")

    def _check(self, detail: dict[str, Any], quant: dict[str, Any] | None, which: str) -> None:
        integer = np.dtype(detail["dtype"]).kind in "iu"
        if integer != (quant is not None):
            raise RuntimeLoadError(
                f"{self.path}: the model's {which} is {np.dtype(detail['dtype']).name} but the "
                f"manifest says quantization={quant}")
        if quant is not None:
            scale, zero = detail["quantization"]
            if not np.isclose(scale, quant["scale"], rtol=1e-6) or zero != quant["zero_point"]:
                raise RuntimeLoadError(
                    f"{self.path}: {which} quantization ({scale}, {zero}) differs from the "
                    f"manifest's ({quant['scale']}, {quant['zero_point']})")

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.inp["index"], x.astype(self.inp["dtype"], copy=False))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.out["index"]))
