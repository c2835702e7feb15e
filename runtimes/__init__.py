"""Runtimes: load an exported artefact (or a checkpoint) in its real runtime and get logits.

One runner per format, registered with ``@register_runtime(format, label)``; ``load_runner(entry,
root, threads)`` picks it from a ``kd_core.deploy.ManifestEntry`` (docs/MANIFEST.md), whose path
is relative to ``root``. The exporters verify every artefact through these runners before it is
kept, and the benchmark harness scores them with the same ones. Every runner takes
float32 NCHW normalized images ``(N, 3, H, W)`` and returns float64 logits ``(N, K)``: the base
class reads the entry for layout (NCHW/NHWC) and I/O quantization, quantizes inputs and
dequantizes outputs with ``runtimes.quant``, and loops single images when the artefact has a
fixed batch of 1. A runtime that cannot run on this host raises ``RuntimeUnavailable`` (Core ML
off macOS), which callers report as a status. Importing this package (or a runtime module)
imports numpy and kd_core.deploy only; backends are imported inside the runners' methods.
Layers: kd_core < runtimes < exporters < benchmarks; nothing here imports an exporter.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.cli import BadInput
from kd_core.deploy import ContractError, ManifestEntry
from runtimes.quant import dequantize, quantize

BUILTIN_RUNTIMES = {"torch": "torch_eager", "onnx": "onnx", "tflite": "tflite",
                    "executorch": "executorch", "coreml": "coreml"}


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run on this host (for example Core ML off macOS); not a failure."""


class RuntimeLoadError(BadInput):
    """An artefact or manifest entry that cannot be loaded; the message names the file."""


class Runner:
    """A loaded model. Subclasses implement ``_load`` and ``_run`` on the artefact's own tensors."""

    runtime = "?"  # human-readable runtime name, with version

    def __init__(self, entry: ManifestEntry, path: Path, threads: int) -> None:
        self.entry, self.path, self.threads = entry, path, max(1, int(threads))
        self.name = entry.name
        inp, out = entry.input, entry.output
        self.layout = str(inp.get("layout") or "NCHW")
        self.in_quant: dict[str, Any] | None = inp.get("quantization")
        self.out_quant: dict[str, Any] | None = out.get("quantization")
        self.in_dtype = str(inp.get("dtype") or "float32")
        self.kind = str(out.get("kind") or "logits")
        shape = inp.get("shape") or [1]
        self.fixed_batch = shape[0] == 1
        self.temperature = entry.decision.temperature
        self._import()  # backend import time is not load time
        start = time.perf_counter()
        self._load()
        self.load_seconds = time.perf_counter() - start

    def _import(self) -> None:
        """Import the backend (before the load clock starts)."""

    def _load(self) -> None:
        """Open the artefact; ``load_seconds`` times this."""
        raise NotImplementedError

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One batch in the artefact's layout and dtype -> raw outputs (N, K)."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW normalized images (N, 3, H, W) -> float64 logits (N, K)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images (N, 3, H, W), got {x.shape}")
        batches = [x[i : i + 1] for i in range(len(x))] if self.fixed_batch else [x]
        return np.concatenate([self._finish(self.invoke(self.prepare(b))) for b in batches])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW images -> the artefact's input: its layout, its dtype, contiguous."""
        if self.layout == "NHWC":
            x = np.moveaxis(x, 1, -1)
        if self.in_quant is not None:
            x = quantize(x, self.in_quant["scale"], self.in_quant["zero_point"], self.in_dtype)
        return np.ascontiguousarray(x, dtype=None if self.in_quant is not None else np.float32)

    def invoke(self, prepared: np.ndarray) -> np.ndarray:
        """Run the model on an input from ``prepare``: what latency measurements time."""
        return self._run(prepared)

    def _finish(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y).reshape(len(y), -1)
        if self.out_quant is not None:
            z = dequantize(y, self.out_quant["scale"], self.out_quant["zero_point"])
        else:
            z = y.astype(np.float64)
        if self.kind == "probabilities":  # softmax(logits / T) -> logits up to a constant
            z = self.temperature * np.log(np.clip(z, 1e-300, None))
        return z


RunnerFactory = Callable[[ManifestEntry, Path, int], Runner]


@dataclass(frozen=True)
class RuntimeSpec:
    format: str
    factory: RunnerFactory
    label: str  # human name of the runtime, for rows of a runtime that did not load
    module: str = ""  # the module that registered it (worker processes import it)


RUNTIMES: dict[str, RuntimeSpec] = {}


def register_runtime(fmt: str, label: str) -> Callable[[type[Runner]], type[Runner]]:
    """Register the runner class of a format; a format may be registered once."""

    def deco(cls: type[Runner]) -> type[Runner]:
        if fmt in RUNTIMES:
            raise ValueError(f"runtime {fmt!r} is registered twice")
        RUNTIMES[fmt] = RuntimeSpec(fmt, cls, label, cls.__module__)
        return cls

    return deco


def _load_builtin(fmt: str) -> None:
    if fmt in BUILTIN_RUNTIMES and fmt not in RUNTIMES:
        importlib.import_module(f"runtimes.{BUILTIN_RUNTIMES[fmt]}")


def list_runtimes() -> list[str]:
    """Registered formats, built-in ones first."""
    for fmt in BUILTIN_RUNTIMES:
        _load_builtin(fmt)
    return [f for f in BUILTIN_RUNTIMES if f in RUNTIMES] + sorted(
        f for f in RUNTIMES if f not in BUILTIN_RUNTIMES)


def get_runtime(fmt: str) -> RuntimeSpec:
    _load_builtin(fmt)
    if fmt not in RUNTIMES:
        raise KeyError(f"no runtime for format {fmt!r}; known: {', '.join(list_runtimes())}")
    return RUNTIMES[fmt]


def host_device() -> str:
    """CPU model and logical core count of this host, e.g. ``AMD EPYC 7B13 (2 logical cores)``:
    where runners are timed (benchmarks, the exporters' speed plans)."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} logical cores)"


def runtime_label(fmt: str) -> str:
    """The human name of ``fmt``'s runtime (for a row whose artefact did not load)."""
    try:
        return get_runtime(fmt).label
    except KeyError:
        return f"no runtime for {fmt}"


def load_runner(entry: ManifestEntry | Mapping[str, Any], root: Path, threads: int = 1
                ) -> Runner:
    """Load the artefact a manifest entry describes (its ``path`` relative to ``root``). A
    mapping (a ``manifest.json`` entry) is read with ``ManifestEntry.from_dict`` first."""
    if not isinstance(entry, ManifestEntry):
        try:
            entry = ManifestEntry.from_dict(dict(entry), str(root))
        except ContractError as exc:
            raise RuntimeLoadError(str(exc)) from None
    path = entry.file(root)
    if not path.exists():
        raise RuntimeLoadError(f"{path}: artefact not found (manifest entry {entry.name!r})")
    try:
        spec = get_runtime(entry.format)
    except KeyError as exc:
        raise RuntimeLoadError(f"{path}: {exc.args[0]}") from None
    return spec.factory(entry, path, threads)


__all__ = [
    "RUNTIMES",
    "Runner",
    "RuntimeLoadError",
    "RuntimeSpec",
    "RuntimeUnavailable",
    "get_runtime",
    "host_device",
    "list_runtimes",
    "load_runner",
    "register_runtime",
    "runtime_label",
]
