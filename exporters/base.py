"""Shared pieces of the format exporters: settings, names, I/O descriptions, metadata, timing."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters import Artifact
from exporters.calibration_data import CalibrationSet
from kd_core.data.transforms import Preprocessing

if TYPE_CHECKING:
    from exporters.int8.options import Int8Options

MANIFEST_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
BASE_TOOLS = ("torch", "torchvision", "torchao", "edgekd")


class ExportError(RuntimeError):
    """An exporter could not produce or verify its artefact."""


class MissingCalibrationError(ExportError):
    """INT8 was asked for without calibration images."""


def _plain_int8() -> Int8Options:
    from exporters.int8.options import Int8Options  # lazy: --help never imports torch

    return Int8Options()


@dataclass(frozen=True)
class ExportSettings:
    """Everything an exporter needs besides the model: the checkpoint's decision metadata."""

    arch: str
    labels: tuple[str, ...]
    positive_index: int
    preprocessing: Preprocessing
    temperature: float
    threshold: float
    checkpoint_sha256: str
    checkpoint_path: str = ""
    precisions: tuple[str, ...] = ("fp32", "int8")  # requested families
    calibration: CalibrationSet | None = None
    int8: Int8Options = field(default_factory=_plain_int8)  # plan, observer, speed, repair

    def require_calibration(self, fmt: str) -> CalibrationSet:
        if self.calibration is None:
            raise MissingCalibrationError(
                f"{fmt} INT8 needs calibration images: pass --calib-data DIR (a prepared split "
                "folder, a HAM10000 folder or a folder of training images)")
        return self.calibration


@dataclass(frozen=True)
class Failure:
    format: str
    precision: str
    error: str


class PartialExport(ExportError):
    """Some precisions of a format failed; ``artifacts`` holds the ones that were written."""

    def __init__(self, artifacts: list[Artifact], failures: list[Failure]) -> None:
        super().__init__("; ".join(f"{f.format} {f.precision}: {f.error}" for f in failures))
        self.artifacts = artifacts
        self.failures = failures


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def artefact_precisions(fmt: str, families: tuple[str, ...]) -> list[str]:
    """The artefact precisions a format makes for the requested families (its registration)."""
    from exporters import get_exporter

    spec = get_exporter(fmt)
    return [p for fam in families for p in spec.precisions.get(fam, ())]


def export_each(fmt: str, cfg: ExportSettings,
                one: Callable[[str], Artifact | list[Artifact]]) -> list[Artifact]:
    """Run ``one(precision)`` for each artefact precision ``cfg.precisions`` asks of ``fmt``;
    a failure does not stop the others. Raises ``PartialExport`` (with the artefacts that
    worked) if any precision failed.
    """
    import traceback

    arts: list[Artifact] = []
    failures = []
    for precision in artefact_precisions(fmt, cfg.precisions):
        try:
            got = one(precision)
        except Exception as exc:
            traceback.print_exc()
            failures.append(Failure(fmt, precision, describe(exc)))
            continue
        arts.extend(got if isinstance(got, list) else [got])
    if failures:
        raise PartialExport(arts, failures)
    return arts


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


def decision_fields(cfg: ExportSettings) -> dict[str, Any]:
    """What every artefact entry repeats so an app needs nothing else (docs/MANIFEST.md)."""
    return {
        "preprocessing": cfg.preprocessing.to_dict(),
        "labels": list(cfg.labels),
        "positive_index": cfg.positive_index,
        "temperature": cfg.temperature,
        "threshold": cfg.threshold,
    }


def io_spec(name: str, shape: list[int], dtype: str, layout: str | None = None,
            quant: tuple[float, int] | None = None, kind: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "shape": [int(s) for s in shape]}
    if layout is not None:
        spec["layout"] = layout
    spec["dtype"] = dtype
    spec["quantization"] = (
        None if quant is None else {"scale": float(quant[0]), "zero_point": int(quant[1])}
    )
    if kind is not None:
        spec["kind"] = kind
    return spec


def input_shape(cfg: ExportSettings, layout: str) -> list[int]:
    s = cfg.preprocessing.size
    return [1, s, s, 3] if layout == "NHWC" else [1, 3, s, s]


def embedded_metadata(cfg: ExportSettings, art: Artifact) -> dict[str, Any]:
    """The manifest entry minus what depends on the final bytes (bytes, sha256, seconds)."""
    meta: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION, "name": art.name, "format": art.format,
        "precision": art.precision, "input": art.input, "output": art.output,
        **decision_fields(cfg), "source_checkpoint_sha256": cfg.checkpoint_sha256,
        "tool_versions": art.tool_versions,
    }
    if art.quantization_recipe is not None:
        meta["quantization_recipe"] = art.quantization_recipe
    if art.quantization_recipe is not None and cfg.int8.plan:
        meta["precision_plan"] = cfg.int8.plan.to_dict()
    return meta


def metadata_json(cfg: ExportSettings, art: Artifact) -> str:
    return json.dumps(embedded_metadata(cfg, art), sort_keys=True)


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A scratch folder beside the outputs (same file system), removed afterwards."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".staging.", dir=out_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def int8_recipe(fmt: str, cfg: ExportSettings) -> dict[str, Any]:
    from exporters.int8 import quantize_recipe

    recipe = dict(quantize_recipe(fmt))
    calib = cfg.require_calibration(fmt)
    recipe.setdefault("calibration_samples", len(calib))
    return recipe


def safe_graph_report(path: Path, fmt: str) -> dict[str, Any] | None:
    """The INT8 helper's graph report; a failing report is recorded, not fatal to the export."""
    from exporters.int8 import graph_report

    try:
        return graph_report(path, fmt)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
