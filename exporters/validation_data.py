"""Labelled validation images for INT8 repair: the validation split, never the holdout.

``--val-data DIR`` takes the same folders as ``--calib-data`` that carry labels: a prepared split
folder or a HAM10000 folder (``kd_core.data.sources.resolve_prepared`` answers which, and
prepares the splits when needed). Only ``val_data.csv`` and the images it lists are read; images
go through the exact eval preprocessing of the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.calibration_data import CalibrationDataError, target_for
from kd_core.data.transforms import ImageError, Preprocessing, normalize

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


def load_validation(source: str | Path, prep: Preprocessing, labels: Sequence[str],
                    limit: int | None = None, seed: int = 42) -> ValidationSet:
    """The validation split of ``source`` (all of it, or ``limit`` images drawn with ``seed``)."""
    from kd_core.data.dataset import decode_images
    from kd_core.data.ham10000 import DataError, load_split
    from kd_core.data.sources import resolve_prepared

    source = Path(source)
    target = target_for(labels)
    if target is None:
        raise ValidationDataError(f"--val-data {source}: labels {list(labels)} match neither the "
                                  "melanoma nor the 7-class target, so validation has no labels")
    try:
        prepared = resolve_prepared(source)
        split = load_split(prepared, SPLIT)
    except DataError as exc:
        raise ValidationDataError(f"--val-data {source}: {exc}") from None
    if len(split) == 0:
        raise ValidationDataError(f"--val-data {source}: the validation split is empty")
    idx = np.arange(len(split))
    if limit is not None and limit < len(split):
        idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:limit])
    y = split.labels_for(target)[idx]
    log.info("validation: %d images of %s (%s split)", len(idx), prepared, SPLIT)
    try:
        pixels = decode_images([split.paths[i] for i in idx], prep, desc="validation images")
    except ImageError as exc:
        raise ValidationDataError(f"validation image unusable: {exc}") from None
    return ValidationSet(str(prepared.resolve()), tuple(split.image_ids[i] for i in idx), pixels,
                         np.asarray(y, dtype=np.int64), prep)
