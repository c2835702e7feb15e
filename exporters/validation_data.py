"""Labelled validation images for INT8 repair: the validation split, never the holdout.

``--val-data DIR`` takes the labelled sources ``--calib-data`` takes: a prepared split folder or a
raw source (HAM10000, a class-per-folder image tree, a CSV; ``kd_core.data.sources.
resolve_prepared`` answers which, and prepares the splits when needed). Only the ``val`` split and
the images it lists are read; images go through the exact eval preprocessing of the checkpoint
(decoded once, cached in the prepared folder's ``cache`` as training caches them), and their
labels are the checkpoint's classes (``SplitData.labels_for``, as the benchmark harness labels
them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.calibration_data import CalibrationDataError
from kd_core.data.transforms import ImageError, Preprocessing, normalize
from kd_core.deploy import Decision

log = logging.getLogger(__name__)
SPLIT = "val"


class ValidationDataError(CalibrationDataError):
    """Validation images that cannot be had: missing folder, no labels, unreadable image."""


@dataclass(frozen=True)
class ValidationSet:
    """Preprocessed validation images with their class indices."""

    source: str
    image_ids: tuple[str, ...]
    pixels: np.ndarray  # N x size x size x 3 uint8, after the eval resize
    labels: np.ndarray  # int64 class indices into the checkpoint's labels
    prep: Preprocessing

    def __len__(self) -> int:
        return len(self.image_ids)

    def normalized(self) -> np.ndarray:
        return normalize(self.pixels, self.prep)

    def to_manifest(self) -> dict[str, object]:
        return {"source": self.source, "split": SPLIT, "n": len(self),
                "class_counts": np.bincount(self.labels).tolist()}


def load_validation(source: str | Path, prep: Preprocessing, decision: Decision
                    ) -> ValidationSet:
    """The whole validation split of ``source``, labelled with ``decision``'s classes."""
    from kd_core.data.dataset import cached_images
    from kd_core.data.prepared import DataError, load_split
    from kd_core.data.sources import resolve_prepared

    source = Path(source)
    try:
        prepared = resolve_prepared(source)
        split = load_split(prepared, SPLIT)
        y = split.labels_for(list(decision.labels), decision.positive_index)
    except DataError as exc:
        raise ValidationDataError(f"--val-data {source}: {exc}") from None
    if len(split) == 0:
        raise ValidationDataError(f"--val-data {source}: the validation split is empty")
    log.info("validation: %d images of %s (%s split)", len(split), prepared, SPLIT)
    try:
        pixels = cached_images(split.paths, prep, prepared / "cache", desc="validation images")
    except ImageError as exc:
        raise ValidationDataError(f"validation image unusable: {exc}") from None
    return ValidationSet(str(prepared.resolve()), tuple(split.image_ids), pixels,
                         np.asarray(y, dtype=np.int64), prep)
