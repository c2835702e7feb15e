"""Group-aware (lesion-aware), stratified, seeded train/val/holdout split.

The group (a HAM10000 lesion; a patient or lesion id of a CSV dataset; each image of an image
folder) is the unit: every image of a group lands in the same split. A group's stratum is the
priority class (HAM10000: melanoma) if any of its images has it, else its most frequent class,
so both the melanoma prevalence and the class mix are kept in every split. Within a stratum,
groups are shuffled with the seed and dealt out by cumulative IMAGE count, so image fractions land
close to the targets even when groups have several images. The result depends only on (group,
image, class) and the seed, not on row order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from kd_core.cli import BadInput

SPLITS = ("train", "val", "holdout")


class SplitError(BadInput):
    """The data cannot be split as asked (for example a split would get no melanoma)."""


def lesion_strata(lesion_ids: Sequence[str], dx: Sequence[str], priority: str | None = "mel"
                  ) -> dict[str, str]:
    by_lesion: dict[str, list[str]] = defaultdict(list)
    for lesion, d in zip(lesion_ids, dx, strict=True):
        by_lesion[lesion].append(d)
    strata = {}
    for lesion, labels in by_lesion.items():
        if priority is not None and priority in labels:
            strata[lesion] = priority
        else:  # most frequent dx; ties broken alphabetically
            counts = Counter(labels)
            strata[lesion] = min(counts, key=lambda k: (-counts[k], k))
    return strata


def split_lesions(
    lesion_ids: Sequence[str],
    dx: Sequence[str],
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
    seed: int = 42,
    priority: str | None = "mel",
    midpoint: bool = False,
) -> list[str]:
    """Return the split name ("train", "val" or "holdout") of every image, in input order.
    ``lesion_ids`` are the groups, ``dx`` the classes; ``priority``: see ``lesion_strata``.
    A group goes where the image count before it falls (HAM10000), or with ``midpoint`` where
    the middle of its images falls, which gives small classes images in every split."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise SplitError(
            f"split fractions must be three positive numbers summing to 1: {fractions}"
        )
    images_per_lesion = Counter(lesion_ids)
    strata = lesion_strata(lesion_ids, dx, priority)
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
            at = done + images_per_lesion[lesion] / 2 if midpoint else done
            split = 0 if at < bounds[0] else (1 if at < bounds[1] else 2)
            assignment[lesion] = SPLITS[split]
            done += images_per_lesion[lesion]
    return [assignment[lesion] for lesion in lesion_ids]


def check_split(splits: Sequence[str], targets: Sequence[int], lesion_ids: Sequence[str],
                need_positives: bool = True) -> None:
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
        if pos == 0 and need_positives:
            raise SplitError(
                f"the {name} split would get no melanoma images ({n} images): "
                "the dataset has too few melanoma lesions to split"
            )


def check_class_split(splits: Sequence[str], classes: Sequence[str], groups: Sequence[str],
                      fractions: Sequence[float]) -> None:
    """Raise SplitError unless every class has images in every split (and no group crosses
    splits): a class with too few groups to split is named with its counts."""
    check_split(splits, [0] * len(splits), groups, need_positives=False)
    for name in sorted(set(classes)):
        got = {s for s, c in zip(splits, classes, strict=True) if c == name}
        lacking = [s for s in SPLITS if s not in got]
        if lacking:
            n = sum(1 for c in classes if c == name)
            g = len({grp for grp, c in zip(groups, classes, strict=True) if c == name})
            raise SplitError(
                f"class {name!r} has {n} image(s) in {g} group(s): too few to give "
                f"{' and '.join(lacking)} any (split fractions {list(fractions)}); add images "
                "to it or leave it out")
