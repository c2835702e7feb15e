"""LiteRT interpreter (``ai_edge_litert``, XNNPACK delegate by default), ``num_threads`` fixed.

The manifest gives the layout (NHWC) and the int8 I/O quantization; the interpreter's own tensor
details are checked against it so that a stale manifest is an error, not a silent drift.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from runtimes import Runner, RuntimeLoadError, register_runtime


def _describe(detail: dict[str, Any], layout: str | None, kind: str | None) -> dict[str, Any]:
    dtype = np.dtype(detail["dtype"]).name
    scale, zero = detail["quantization"]
    spec: dict[str, Any] = {"name": str(detail["name"]),
                            "shape": [int(s) for s in detail["shape"]]}
    if layout is not None:
        spec["layout"] = layout
    spec["dtype"] = dtype
    spec["quantization"] = ({"scale": float(scale), "zero_point": int(zero)}
                            if dtype in ("int8", "uint8") else None)
    if kind is not None:
        spec["kind"] = kind
    return spec


def io_details(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest's ``input`` (NHWC) and ``output`` (logits) of a ``.tflite`` file, read from
    the interpreter: name, shape, dtype and int8 quantization."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return _describe(inp, "NHWC", None), _describe(out, None, "logits")


@register_runtime("tflite", "LiteRT interpreter")
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
