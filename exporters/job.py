"""One checkpoint's export settings, and one format exported with its failures isolated.

Used by ``exporters.run`` in this process and by ``exporters.parallel``'s worker processes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters import get_exporter
from exporters.base import (
    Artifact,
    ExportSettings,
    Failure,
    PartialExport,
    UsageError,
    describe,
)

log = logging.getLogger(__name__)


def load_settings(path: Path, families: tuple[str, ...] = ("fp32", "int8"),
                  allow_uncalibrated: bool = False) -> tuple[Any, ExportSettings]:
    """(eval model, export settings) of a checkpoint. ``UsageError`` if the checkpoint is
    unreadable or inconsistent, or not calibrated (unless ``allow_uncalibrated``)."""
    from kd_core.checkpoint import (
        CheckpointError,
        decision_of,
        is_calibrated,
        load_checkpoint,
        model_from_checkpoint,
    )
    from kd_core.data.transforms import Preprocessing
    from kd_core.io import sha256_file

    try:
        ckpt = load_checkpoint(path)
        decision = decision_of(ckpt, path)
        model = model_from_checkpoint(ckpt, path)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    calibrated = is_calibrated(ckpt)
    if not calibrated and not allow_uncalibrated:
        raise UsageError(
            f"{path}: not calibrated (no record that its temperature and threshold were fitted "
            "on validation data); export a calibrated best.pth, or pass --allow-uncalibrated")
    dataset = ckpt.get("dataset")
    settings = ExportSettings(
        arch=str(ckpt["arch"]), decision=decision,
        preprocessing=Preprocessing.from_dict(ckpt["preprocessing"]),
        checkpoint_sha256=sha256_file(path), checkpoint_path=str(path),
        dataset=dataset if isinstance(dataset, str) else None, calibrated=calibrated,
        precisions=families)
    return model, settings


@dataclass(frozen=True)
class FormatResult:
    fmt: str
    artifacts: list[Artifact]
    failures: list[Failure]
    log_tail: str = ""  # the converters' last output lines, from a worker that failed


def example_inputs(cfg: ExportSettings) -> tuple[Any, ...]:
    """One real calibration image when there are some, else zeros (tracing only)."""
    import torch

    if cfg.calibration is not None:
        return (torch.from_numpy(cfg.calibration.normalized(1)),)
    size = cfg.preprocessing.size
    return (torch.zeros(1, 3, size, size),)


def run_format(fmt: str, model: Any, cfg: ExportSettings, out_dir: Path) -> FormatResult:
    """Export one format (then its INT8 objectives, ``exporters.int8.objectives``, when
    ``cfg.int8`` asks for them); an exception fails its precisions, never the caller."""
    spec = get_exporter(fmt)
    example = example_inputs(cfg)
    if cfg.int8 is not None and cfg.int8.active():
        from exporters.int8.objectives import plan_ahead

        cfg = plan_ahead(fmt, model, example, cfg)
    try:
        arts, failures = spec.export(model, example, out_dir, cfg), []
    except PartialExport as exc:
        arts, failures = exc.artifacts, exc.failures
    except Exception as exc:
        log.debug("%s failed", fmt, exc_info=True)
        return FormatResult(fmt, [], [Failure(fmt, p, describe(exc))
                                      for p in spec.artefact_precisions(cfg.precisions)])
    if cfg.int8 is not None and cfg.int8.active():
        from exporters.int8.objectives import apply_objectives

        arts = apply_objectives(fmt, model, example, cfg, out_dir, arts)
    return FormatResult(fmt, arts, failures)
