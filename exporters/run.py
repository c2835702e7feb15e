"""Export a checkpoint as a library call: ``export_checkpoint(checkpoint, out, options)``.

A minimal shim over ``exporters.all``'s functions (``load_settings``, ``load_calibration``,
``export_all``) with the interface of PLAN.md, so that the pipeline can call a function instead
of a CLI; the exporters engineer's real module replaces this file at merge.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kd_core.cli import BadInput

log = logging.getLogger(__name__)


class ExportInputError(BadInput):
    """Bad input to an export (checkpoint, formats, precisions, calibration data, output)."""


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...] = ("tflite", "executorch", "coreml", "onnx")
    precisions: tuple[str, ...] = ("fp32", "int8")
    calib_data: Path | None = None
    calib_samples: int = 256
    seed: int = 42
    jobs: int = 1
    threads: int = 1
    verbose: bool = False
    allow_uncalibrated: bool = False
    allow_few_calib_images: bool = False


@dataclass(frozen=True)
class ExportResult:
    artifacts: list[Any]
    failures: list[Any]
    manifest_path: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures


def auto_jobs() -> int:
    """The cores this process may use, at most 2: more workers add memory, little speed."""
    usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
    return max(1, min(2, usable))


def check_formats(formats: tuple[str, ...], families: tuple[str, ...]) -> None:
    """Known formats and precision families (``ExportInputError`` naming the flag)."""
    from exporters import list_exporters
    from exporters.all import FAMILIES

    known = list_exporters()
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        what = ", ".join(unknown) or "(none given)"
        raise ExportInputError(f"--formats: unknown format(s) {what}; known formats: "
                               f"{', '.join(known)}")
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise ExportInputError(f"--precisions: unknown precision(s) "
                               f"{', '.join(bad) or '(none given)'}; use {', '.join(FAMILIES)}")


def _check(checkpoint: Path, out: Path, options: ExportOptions) -> None:
    check_formats(options.formats, options.precisions)
    if options.threads < 1 or options.jobs < 1 or options.calib_samples < 1:
        raise ExportInputError("threads, jobs and calib_samples must be >= 1")
    if not checkpoint.is_file():
        raise ExportInputError(f"{checkpoint}: checkpoint not found")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test."):
            pass
    except OSError as exc:
        raise ExportInputError(f"{out}: output folder cannot be written "
                               f"({exc.strerror or exc})") from None


def export_checkpoint(checkpoint: Path, out: Path, options: ExportOptions) -> ExportResult:
    """Every requested format and precision of ``checkpoint`` into ``out`` with its manifest;
    ``ExportInputError`` for bad input before any work."""
    import torch

    from exporters import get_exporter
    from exporters.all import UsageError, export_all, load_settings
    from exporters.calibration_data import CalibrationDataError, load_calibration

    checkpoint, out = Path(checkpoint), Path(out)
    _check(checkpoint, out, options)
    try:
        model, cfg, k = load_settings(checkpoint, options.precisions)
    except UsageError as exc:
        raise ExportInputError(str(exc)) from None
    needs = [f for f in options.formats
             if set(get_exporter(f).needs_calibration) & set(options.precisions)]
    if needs:
        if options.calib_data is None:
            raise ExportInputError(f"INT8 ({', '.join(needs)}) needs calibration images: "
                                   "give calib_data")
        try:
            calib = load_calibration(options.calib_data, cfg.preprocessing, cfg.labels,
                                     options.calib_samples, options.seed)
        except CalibrationDataError as exc:
            raise ExportInputError(str(exc)) from None
        cfg = replace(cfg, calibration=calib)
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    res = export_all(model, cfg, out, options.formats, options.verbose, k, jobs=options.jobs,
                     checkpoint=checkpoint, threads=options.threads)
    return ExportResult(res.artifacts, res.failures, res.manifest_path, res.seconds)
