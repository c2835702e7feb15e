"""ONNX Runtime (CPU execution provider), intra-op threads fixed, sequential execution."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

from runtimes import Runner, RuntimeLoadError, register_runtime


@register_runtime("onnx", "ONNX Runtime")
class OnnxRunner(Runner):
    def _import(self) -> None:
        import onnxruntime  # noqa: F401

    def _load(self) -> None:
        import onnxruntime as ort

        self.runtime = f"ONNX Runtime {version('onnxruntime')} (CPU)"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise RuntimeLoadError(f"{self.path}: ONNX Runtime cannot load it ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0])
