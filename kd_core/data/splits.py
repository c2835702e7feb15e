"""Lesion-aware, stratified, seeded train/val/holdout split.

The lesion is the unit: every image of a lesion lands in the same split. A lesion's stratum is
melanoma if any of its images is ``mel``, else its (most frequent) diagnosis, so both the
melanoma prevalence and the 7-class mix are kept in every split. Within a stratum, lesions are
shuffled with the seed and dealt out by cumulative IMAGE count, so image fractions land close to
the targets even when lesions have several images. The result depends only on (lesion_id,
image_id, dx) and the seed, not on row order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from kd_core.cli import BadInput

SPLITS = ("train", "val", "holdout")


class SplitError(BadInput):
    """The data cannot be split as asked (for example a split would get no melanoma)."""


def lesion_strata(lesion_ids: Sequence[str], dx: Sequence[str]) -> dict[str, str]:
    by_lesion: dict[str, list[str]] = defaultdict(list)
    for lesion, d in zip(lesion_ids, dx, strict=True):
        by_lesion[lesion].append(d)
    strata = {}
    for lesion, labels in by_lesion.items():
        if "mel" in labels:
            strata[lesion] = "mel"
        else:  # most frequent dx; ties broken alphabetically
            counts = Counter(labels)
            strata[lesion] = min(counts, key=lambda k: (-counts[k], k))
    return strata


def split_lesions(
    lesion_ids: Sequence[str],
    dx: Sequence[str],
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
    seed: int = 42,
) -> list[str]:
    """Return the split name ("train", "val" or "holdout") of every image, in input order."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise SplitError(
            f"split fractions must be three positive numbers summing to 1: {fractions}"
        )
    images_per_lesion = Counter(lesion_ids)
    strata = lesion_strata(lesion_ids, dx)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for stratum in sorted(set(strata.values())):
        lesions = sorted(lesion for lesion, s in strata.items() if s == stratum)
        order = rng.permutation(len(lesions))
        total = sum(images_per_lesion[lesion] for lesion in lesions)
        bounds = np.cumsum(fractions)[:2] * total
        done = 0
        for idx in order:
            lesion = lesions[idx]
            # Deal by the image count *before* this lesion, so each split fills to its share.
            split = 0 if done < bounds[0] else (1 if done < bounds[1] else 2)
            assignment[lesion] = SPLITS[split]
            done += images_per_lesion[lesion]
    return [assignment[lesion] for lesion in lesion_ids]


def check_split(splits: Sequence[str], targets: Sequence[int], lesion_ids: Sequence[str]) -> None:
    """Raise SplitError if a split is empty or lacks positives, or a lesion crosses splits."""
    seen: dict[str, str] = {}
    for lesion, split in zip(lesion_ids, splits, strict=True):
        if seen.setdefault(lesion, split) != split:
            raise SplitError(f"lesion {lesion} is in both {seen[lesion]} and {split}")
    for name in SPLITS:
        n = sum(1 for s in splits if s == name)
        pos = sum(1 for s, t in zip(splits, targets, strict=True) if s == name and t == 1)
        if n == 0:
            raise SplitError(f"the {name} split would be empty: too few lesions")
        if pos == 0:
            raise SplitError(
                f"the {name} split would get no melanoma images ({n} images): "
                "the dataset has too few melanoma lesions to split"
            )
