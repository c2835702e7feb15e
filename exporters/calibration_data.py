"""Calibration images for INT8: real training images through the exact eval preprocessing.

``--calib-data DIR`` may be
- a prepared folder (``split_metadata.json`` + ``train_data.csv``): its train split;
- a HAM10000-layout folder (a metadata CSV), an image folder (``<class>/*.jpg``) or a CSV file
  (``path,label[,group]``): splits are prepared (or reused) where every command finds them
  (``kd_core.data.sources.resolve_prepared``), and the train split is used;
- a plain folder of images (``.jpg``, ``.jpeg``, ``.png``, searched recursively): no labels, so
  no class balancing.

With labels, samples are class-balanced (equal per class up to availability, the rest filled from
classes with images to spare), seeded. Images go through ``preprocess_uint8`` + ``normalize`` of
``kd_core.data.transforms`` with the checkpoint's ``Preprocessing``: exactly the eval pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.cli import BadInput
from kd_core.data.transforms import ImageError, Preprocessing, normalize

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# 256 images left MobileNetV3-Small INT8 at 224 px 0.012-0.014 ROC-AUC below float on the real
# HAM10000 holdout in LiteRT and ExecuTorch; 1024 kept it within 0.005 (README, INT8 section).
DEFAULT_SAMPLES = 1024
MIN_SAMPLES = 32  # fewer images give unreliable activation ranges (override: allow_few=True)


class CalibrationDataError(BadInput):
    """Calibration images that cannot be had: missing, empty or unreadable folder."""


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration images plus where they came from (for the manifest)."""

    source: str
    kind: str  # "prepared", "ham10000", "imagefolder", "csv" (train split) or "folder"
    seed: int
    image_ids: tuple[str, ...]
    pixels: np.ndarray  # N x size x size x 3 uint8, after the eval resize
    prep: Preprocessing
    class_counts: dict[str, int] | None  # None: no labels, no balancing

    def __len__(self) -> int:
        return len(self.image_ids)

    def normalized(self, n: int | None = None) -> np.ndarray:
        """N (or the first ``n``) x 3 x size x size float32: the model input (eval
        preprocessing)."""
        return normalize(self.pixels[:n], self.prep)

    def batches(self, layout: str = "NCHW") -> Iterator[Any]:
        """One 1 x 3 x H x W (or 1 x H x W x 3) float32 torch tensor per image."""
        import torch

        for x in self.normalized():
            t = torch.from_numpy(x).unsqueeze(0)
            yield t.permute(0, 2, 3, 1).contiguous() if layout == "NHWC" else t

    def key(self, layout: str = "NCHW") -> str:
        """What ``batches(layout)`` yields, as a digest: the pixels, their preprocessing and the
        layout (``exporters.int8.observers`` reuses a calibration on the same key)."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps([layout, self.prep.to_dict()], sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.pixels).tobytes())
        return h.hexdigest()

    def to_manifest(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "samples": len(self), "seed": self.seed,
                "class_balanced": self.class_counts is not None,
                "class_counts": self.class_counts, "image_ids": list(self.image_ids)}


def balanced_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices (fewer if there are fewer items), as equal per class as availability allows."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    quota = {c: 0 for c in pools}
    left = min(n, len(labels))
    while left > 0:
        open_ = [c for c in pools if quota[c] < len(pools[c])]
        share = max(1, left // len(open_))
        for c in open_:
            take = min(share, len(pools[c]) - quota[c], left)
            quota[c] += take
            left -= take
            if left == 0:
                break
    picked = np.concatenate([np.asarray(pools[c][: quota[c]], dtype=np.int64) for c in pools])
    return np.sort(picked)


def _from_prepared(prepared: Path, labels: Sequence[str], n: int, seed: int
                   ) -> tuple[list[str], list[Path], dict[str, int] | None]:
    from kd_core.data.prepared import DataError, load_split

    split = load_split(prepared, "train")
    if len(split) == 0:
        raise CalibrationDataError(f"{prepared}: the train split is empty")
    try:
        y = split.labels_for(list(labels))  # any dataset: the model's labels name its classes
    except DataError:
        log.info("calibration: labels %s do not match the classes of %s; sampling without "
                 "class balance", list(labels), prepared)
        idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
        counts = None
    else:
        idx = balanced_indices(y, n, seed)
        counts = {labels[c]: int((y[idx] == c).sum()) for c in range(len(labels))}
    return [split.image_ids[i] for i in idx], [split.paths[i] for i in idx], counts


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file() and not any(part.startswith(".") for part in p.parts))


def _labelled(source: Path, labels: Sequence[str], n: int, seed: int
              ) -> tuple[str, list[str], list[Path], dict[str, int] | None] | None:
    """The train split of a data source with labels (prepared, HAM10000, image folder, CSV);
    None for a folder without class sub-folders. An image folder that cannot be split (its
    sub-folders are not classes) is sampled as plain images."""
    from kd_core.data.prepared import DataError
    from kd_core.data.sources import data_kind, resolve_prepared
    from kd_core.data.splits import SplitError

    kind = data_kind(source)
    try:
        if kind == "prepared":
            return ("prepared", *_from_prepared(source, labels, n, seed))
        if kind in ("ham10000", "imagefolder", "csv"):
            prepared = resolve_prepared(source)
            log.info("calibration: %s is a %s dataset; using the train split prepared in %s",
                     source, kind, prepared)
            return (kind, *_from_prepared(prepared, labels, n, seed))
    except (DataError, SplitError) as exc:
        if kind != "imagefolder":
            raise CalibrationDataError(str(exc)) from None
        log.info("calibration: %s cannot be split by class (%s); sampling its images without "
                 "class balance", source, exc)
    return None


def select_images(source: Path, labels: Sequence[str], n: int, seed: int
                  ) -> tuple[str, list[str], list[Path], dict[str, int] | None]:
    """(kind, image ids, paths, class counts or None) of the images to calibrate on."""
    if not source.exists():
        raise CalibrationDataError(f"{source}: calibration folder not found")
    found = _labelled(source, labels, n, seed)
    if found is not None:
        return found
    if not source.is_dir():
        raise CalibrationDataError(f"{source}: not a folder (pass a folder of images, an image "
                                   "folder by class, a CSV file, a prepared split folder or a "
                                   "HAM10000 folder)")
    files = _folder_images(source)
    if not files:
        raise CalibrationDataError(
            f"{source}: no images (.jpg, .jpeg, .png) found; pass a folder of training images, "
            "a prepared split folder or a HAM10000 folder")
    log.info("calibration: %s is a plain image folder without labels; sampling without class "
             "balance", source)
    idx = np.sort(np.random.default_rng(seed).permutation(len(files))[:n])
    picked = [files[i] for i in idx]
    return "folder", [p.relative_to(source).as_posix() for p in picked], picked, None


def load_calibration(source: str | Path, prep: Preprocessing, labels: Sequence[str],
                     n: int = DEFAULT_SAMPLES, seed: int = 42, allow_few: bool = False
                     ) -> CalibrationSet:
    """Pick ``n`` images from ``source`` and decode them through the eval preprocessing. Fewer
    than ``MIN_SAMPLES`` (asked for or available) is an error unless ``allow_few``."""
    from kd_core.data.dataset import decode_images

    check_sample_count(n, allow_few)
    source = Path(source)
    kind, ids, paths, counts = select_images(source, labels, n, seed)
    if len(ids) < n:
        if len(ids) < MIN_SAMPLES and not allow_few:
            raise CalibrationDataError(
                f"{source}: only {len(ids)} calibration images (INT8 needs at least "
                f"{MIN_SAMPLES}); add images, or pass --allow-few-calib-images to calibrate on "
                "these")
        log.info("calibration: only %d images available in %s (asked for %d)", len(ids),
                 source, n)
    try:
        pixels = decode_images(paths, prep, desc="calibration images")
    except ImageError as exc:
        raise CalibrationDataError(f"calibration image unusable: {exc}") from None
    return CalibrationSet(str(source.resolve()), kind, seed, tuple(ids), pixels, prep, counts)


def check_sample_count(n: int, allow_few: bool = False) -> None:
    """``--calib-samples``: at least 1, and at least ``MIN_SAMPLES`` unless ``allow_few``."""
    if n < 1:
        raise CalibrationDataError(f"--calib-samples must be >= 1, got {n}")
    if n < MIN_SAMPLES and not allow_few:
        raise CalibrationDataError(
            f"--calib-samples {n} is below the minimum of {MIN_SAMPLES} images for INT8 "
            "calibration; pass --allow-few-calib-images to calibrate on fewer")
