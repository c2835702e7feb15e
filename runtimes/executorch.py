"""ExecuTorch runtime (``executorch.runtime``), XNNPACK-lowered ``.pte``; threadpool size fixed."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

from runtimes import Runner, RuntimeLoadError, register_runtime


def set_threads(threads: int) -> None:
    """Resize ExecuTorch's shared threadpool (XNNPACK uses it); ignored if the API is absent."""
    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    except ImportError:
        return
    _unsafe_reset_threadpool(threads)


@register_runtime("executorch")
class ExecuTorchRunner(Runner):
    def _import(self) -> None:
        import executorch.runtime  # noqa: F401

    def _load(self) -> None:
        from executorch.runtime import Runtime

        self.runtime = f"ExecuTorch {version('executorch')} (XNNPACK)"
        set_threads(self.threads)
        try:
            program = Runtime.get().load_program(self.path)
            self.method = program.load_method("forward")
        except Exception as exc:  # the pybindings raise RuntimeError for bad programs
            raise RuntimeLoadError(f"{self.path}: ExecuTorch cannot load it ({exc})") from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        out = self.method.execute([torch.from_numpy(x)])[0]
        return np.asarray(out.float().numpy())
