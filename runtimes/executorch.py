"""ExecuTorch runtime (``executorch.runtime``), XNNPACK-lowered ``.pte``; threadpool size fixed."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from importlib.metadata import version

import numpy as np

from runtimes import Runner, RuntimeLoadError, register_runtime


def set_threads(threads: int) -> None:
    """Resize ExecuTorch's shared threadpool (XNNPACK uses it); ignored if the API is absent."""
    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    except ImportError:
        return
    with _quiet_native_stderr():  # cpuinfo and threadpool chatter on every reset
        _unsafe_reset_threadpool(threads)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@register_runtime("executorch", "ExecuTorch")
class ExecuTorchRunner(Runner):
    def _import(self) -> None:
        import logging

        # torchao, imported by ExecuTorch, registers an Enum the deprecated way: one warning line.
        pytree_log = logging.getLogger("torch.utils._pytree")
        level = pytree_log.level
        pytree_log.setLevel(logging.ERROR)
        try:
            import executorch.runtime  # noqa: F401
        finally:
            pytree_log.setLevel(level)

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
