"""Shared types and small helpers of the format exporters: settings, artefacts, failures, names,
I/O descriptions, tool versions, scratch folders. Imports neither torch nor a backend."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from exporters.calibration_data import CalibrationSet
from kd_core.cli import BadInput
from kd_core.data.transforms import Preprocessing
from kd_core.deploy import Decision, ManifestEntry

METADATA_KEY = "edgekd_manifest"  # the key (or sidecar) an artefact embeds its entry under
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
BASE_TOOLS = ("torch", "torchvision", "torchao", "edgekd")
STAGING_PREFIX = ".staging."


class ExportError(RuntimeError):
    """An exporter could not produce or verify its artefact (recorded as a failure)."""


class UsageError(BadInput):
    """Bad input to an export (flag, checkpoint, data or folder): found before any work."""


@dataclass(frozen=True)
class ExportSettings:
    """Everything an exporter needs besides the model: the checkpoint's deploy facts."""

    arch: str
    decision: Decision
    preprocessing: Preprocessing
    checkpoint_sha256: str
    checkpoint_path: str = ""
    dataset: str | None = None  # what the model was trained on (the checkpoint's "dataset")
    calibrated: bool = True  # temperature and threshold fitted on validation data
    precisions: tuple[str, ...] = ("fp32", "int8")  # requested families
    calibration: CalibrationSet | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.decision.labels

    def require_calibration(self, fmt: str) -> CalibrationSet:
        if self.calibration is None:
            raise UsageError(f"{fmt} INT8 needs calibration images: pass --calib-data DIR (a "
                             "prepared split folder, a HAM10000 folder or a folder of images)")
        return self.calibration


@dataclass(frozen=True)
class Artifact:
    """One exported file (or ``.mlpackage`` folder): its manifest entry, its final path and,
    in the exporting process only, the torch model whose outputs it reproduces (NCHW input)."""

    entry: ManifestEntry
    path: Path
    reference: Any = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def format(self) -> str:
        return self.entry.format

    @property
    def precision(self) -> str:
        return self.entry.precision


@dataclass(frozen=True)
class Failure:
    format: str
    precision: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"format": self.format, "precision": self.precision, "error": self.error}


class PartialExport(ExportError):
    """Some precisions of a format failed; ``artifacts`` holds the ones that were written."""

    def __init__(self, artifacts: list[Artifact], failures: list[Failure]) -> None:
        super().__init__("; ".join(f"{f.format} {f.precision}: {f.error}" for f in failures))
        self.artifacts = artifacts
        self.failures = failures


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def artifact_name(cfg: ExportSettings, fmt: str, precision: str) -> str:
    return f"{cfg.arch}_{fmt}_{precision}"


def tool_versions(tools: tuple[str, ...] = ()) -> dict[str, str]:
    out = {}
    for dist in (*BASE_TOOLS, *tools):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def io_spec(name: str, shape: list[int], dtype: str, layout: str | None = None,
            quant: tuple[float, int] | None = None, kind: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "shape": [int(s) for s in shape]}
    if layout is not None:
        spec["layout"] = layout
    spec["dtype"] = dtype
    spec["quantization"] = (
        None if quant is None else {"scale": float(quant[0]), "zero_point": int(quant[1])})
    if kind is not None:
        spec["kind"] = kind
    return spec


def input_shape(cfg: ExportSettings, layout: str) -> list[int]:
    s = cfg.preprocessing.size
    return [1, s, s, 3] if layout == "NHWC" else [1, 3, s, s]


def logits_spec(cfg: ExportSettings) -> dict[str, Any]:
    """A float32 logits output of shape (1, K)."""
    return io_spec(OUTPUT_NAME, [1, len(cfg.labels)], "float32", kind="logits")


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A scratch folder beside the outputs (same file system), removed afterwards."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 2)
