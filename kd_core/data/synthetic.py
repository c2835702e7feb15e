"""A deterministic synthetic stand-in for HAM10000, in the exact Kaggle layout.

``generate(out)`` writes ``out/HAM10000_metadata.csv`` (LF line endings, the Kaggle columns
``lesion_id,image_id,dx,dx_type,age,sex,localization``), the JPEGs split across
``out/HAM10000_images_part_1/`` and ``out/HAM10000_images_part_2/`` (the lower half of the sorted
image ids in part 1, as on Kaggle) and, last, ``out/synthetic.json`` (parameters and counts: the
marker that makes a second call with the same parameters a no-op).

Images are RGB, ``size`` x ``size * 3 // 4`` (4:3 like the real 600x450 images, e.g. 128x96),
JPEG quality 90. Class counts follow the real HAM10000 proportions by largest remainder (nv 67 %,
mel 11.1 %, bkl 11 %, bcc 5.1 %, akiec 3.3 %, vasc 1.4 %, df 1.1 %), so melanoma is
``round(n * 1113 / 10015)`` images give or take one (222 of 2,000); every class gets at least one
image when ``n >= 7``. Images per lesion follow HAM10000's histogram (7,470 lesions for 10,015
images); the images of one lesion are that lesion re-photographed (new pose, zoom, lighting, hair
and noise). Naevi and melanomas share one model driven by a latent atypia (Beta(1.5, 5) for nv,
Beta(4, 2.5) for mel, so the two overlap): with atypia a lesion grows larger, more asymmetric and
irregular, and gains black, blue-grey, red and white regions and dark dots. The other classes have
their own looks (bkl waxy tan, 20 % dark; bcc pink with red vessels, 40 % with blue-grey nests;
vasc red-purple lobules; df small with a white centre; akiec red and scaly). Melanoma vs rest is
learnable but not trivial: a small CNN (tiny_resnet, 64-96 px, 20 epochs) reached ROC-AUC ~0.83
on held-out lesions of a 2,000-image set, logistic regression on 16x16 pixels ~0.80.

The same seed gives byte-identical files: every lesion and every image draws from its own
``numpy.random.default_rng([seed, kind, index])``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_core.cli import BadInput
from kd_core.data.ham10000 import DX_CLASSES, METADATA_NAME
from kd_core.data.prepared import SYNTHETIC_MARKER
from kd_core.data.synthetic_look import Lesion, pick, render, sample_lesion
from kd_core.io import atomic_path

CLASSES = DX_CLASSES
HAM_COUNTS = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142,
              "df": 115}
IMAGES_PER_LESION = {1: 5514, 2: 1423, 3: 490, 4: 34, 5: 5, 6: 4}  # HAM10000's lesion sizes
LOCALIZATIONS = {
    "back": 2192, "lower extremity": 2077, "trunk": 1404, "upper extremity": 1118,
    "abdomen": 1022, "face": 745, "chest": 407, "foot": 319, "unknown": 234, "neck": 168,
    "scalp": 128, "hand": 90, "ear": 56, "genital": 48, "acral": 7,
}
LOC_BIAS = {"akiec": {"face": 4.0}, "bkl": {"face": 4.0}, "bcc": {"face": 2.5},
            "df": {"lower extremity": 5.0}, "nv": {"face": 0.3}}
AGE = {"akiec": (67, 11), "bcc": (67, 14), "bkl": (64, 14), "df": (53, 14), "mel": (61, 15),
       "nv": (46, 15), "vasc": (51, 22)}  # mean, sd of the real ages
DX_TYPE = {"nv": {"follow_up": 0.55, "histo": 0.37, "consensus": 0.08},
           "bkl": {"histo": 0.70, "consensus": 0.24, "confocal": 0.06},
           "vasc": {"consensus": 0.53, "histo": 0.47}, "df": {"consensus": 0.52, "histo": 0.48}}
COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
METADATA = METADATA_NAME
PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
MARKER = SYNTHETIC_MARKER  # the file that marks a generated dataset (kd_core.data.prepared)
GENERATOR_VERSION = 1  # bump whenever the output for given parameters changes
JPEG_QUALITY = 90

@dataclass(frozen=True)
class Row:
    lesion_id: str
    image_id: str
    dx: str
    dx_type: str
    age: str
    sex: str
    localization: str
    lesion: int  # index of the lesion in the plan (seeds its look)


def class_counts(n: int) -> dict[str, int]:
    """Images per dx: HAM10000 proportions by largest remainder; >= 1 each when n >= 7."""
    total = sum(HAM_COUNTS.values())
    exact = {dx: n * c / total for dx, c in HAM_COUNTS.items()}
    counts = {dx: int(v) for dx, v in exact.items()}
    for dx in sorted(exact, key=lambda d: counts[d] - exact[d])[: n - sum(counts.values())]:
        counts[dx] += 1
    if n >= len(CLASSES):
        for dx in CLASSES:
            if counts[dx] == 0:
                counts[dx], counts["nv"] = 1, counts["nv"] - 1
    return {dx: counts[dx] for dx in CLASSES}


def _lesion_meta(dx: str, rng: np.random.Generator) -> tuple[str, str, str, str]:
    """dx_type, age, sex, localization of one lesion (shared by all its images)."""
    dx_type = pick(rng, DX_TYPE.get(dx, {"histo": 1.0}))
    mean, sd = AGE[dx]
    age = float(np.clip(5 * round(rng.normal(mean, sd) / 5), 0, 85))
    age_text = "" if rng.random() < 0.006 else f"{age:.1f}"  # HAM10000 leaves 57 ages empty
    sex = pick(rng, {"male": 0.54, "female": 0.455, "unknown": 0.005})
    bias = LOC_BIAS.get(dx, {})
    loc = pick(rng, {k: v * bias.get(k, 1.0) for k, v in LOCALIZATIONS.items()})
    return dx_type, age_text, sex, loc


def plan_metadata(n_images: int, seed: int) -> list[Row]:
    """The metadata rows: lesions of 1-6 images each, the images of a lesion adjacent."""
    rng = np.random.default_rng([seed, 0])
    sizes, p = np.array(list(IMAGES_PER_LESION)), np.array(list(IMAGES_PER_LESION.values()), float)
    lesions: list[tuple[str, int]] = []
    for dx, count in class_counts(n_images).items():
        while count > 0:
            k = min(int(rng.choice(sizes, p=p / p.sum())), count)
            lesions.append((dx, k))
            count -= k
    order = rng.permutation(len(lesions))
    lesion_nums = rng.choice(max(10_000, 2 * len(lesions)), size=len(lesions), replace=False)
    image_nums = 24306 + rng.choice(max(10_015, 2 * n_images), size=n_images, replace=False)
    rows: list[Row] = []
    for li, idx in enumerate(order):
        dx, k = lesions[idx]
        meta = _lesion_meta(dx, np.random.default_rng([seed, 3, li]))
        for _ in range(k):
            rows.append(Row(f"HAM_{lesion_nums[li]:07d}", f"ISIC_{image_nums[len(rows)]:07d}", dx,
                            *meta, lesion=li))
    return rows


class SynthError(BadInput, FileExistsError):
    """``out`` exists and is something else than a synthetic dataset (it is left alone)."""


@dataclass(frozen=True)
class SynthParams:
    n_images: int = 2000
    size: int = 128
    seed: int = 42

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise BadInput(f"--n-images (n_images) must be >= 1, got {self.n_images}")
        if self.size < 16:
            raise BadInput(f"--size (size) must be >= 16, got {self.size}")

    @property
    def width(self) -> int:
        return self.size

    @property
    def height(self) -> int:
        return self.size * 3 // 4


def _marker(params: SynthParams, rows: list[Row], parts: list[int]) -> dict[str, object]:
    counts = {dx: sum(r.dx == dx for r in rows) for dx in CLASSES}
    return {"generator": "kd_core.data.synthetic", "version": GENERATOR_VERSION,
            "n_images": params.n_images, "size": params.size, "width": params.width,
            "height": params.height, "seed": params.seed, "jpeg_quality": JPEG_QUALITY,
            "counts": counts, "lesions": len({r.lesion_id for r in rows}),
            "images_per_part": dict(zip(PARTS, parts, strict=True))}


def is_complete(out: Path, params: SynthParams) -> bool:
    """True when ``out`` holds a finished dataset generated with ``params`` by this version."""
    try:
        marker = json.loads((Path(out) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    same = all(marker.get(k) == v for k, v in [("version", GENERATOR_VERSION),
               ("n_images", params.n_images), ("size", params.size), ("seed", params.seed)])
    if not same or not (Path(out) / METADATA).is_file():
        return False
    return sum(len(list((Path(out) / p).glob("*.jpg"))) for p in PARTS) == params.n_images


def _metadata_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([getattr(r, col) for col in COLUMNS])
    return buf.getvalue()


def generate(out: Path, n_images: int = 2000, size: int = 128, seed: int = 42,
             force: bool = False) -> Path:
    """Write the synthetic dataset into ``out`` (atomically); a no-op if it is already there."""
    from PIL import Image
    from tqdm import tqdm

    out, params = Path(out), SynthParams(n_images, size, seed)
    if not force and is_complete(out, params):
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise SynthError(f"{out}: exists and is not a synthetic dataset; not replacing it")
    rows = plan_metadata(n_images, seed)
    ids = sorted(r.image_id for r in rows)
    part_of = {iid: PARTS[0] if i < (n_images + 1) // 2 else PARTS[1] for i, iid in enumerate(ids)}
    lesions: dict[int, Lesion] = {}
    with atomic_path(out) as tmp:
        for part in PARTS:
            (tmp / part).mkdir(parents=True)
        for i, row in enumerate(tqdm(rows, desc="synthetic images", unit="img", leave=False)):
            if row.lesion not in lesions:
                lesion_rng = np.random.default_rng([seed, 1, row.lesion])
                lesions[row.lesion] = sample_lesion(row.dx, lesion_rng)
            image_rng = np.random.default_rng([seed, 2, i])
            pixels = render(lesions[row.lesion], image_rng, params.width, params.height)
            path = tmp / part_of[row.image_id] / f"{row.image_id}.jpg"
            Image.fromarray(pixels, "RGB").save(path, format="JPEG", quality=JPEG_QUALITY)
        (tmp / METADATA).write_text(_metadata_text(rows), encoding="utf-8", newline="")
        parts = [sum(p == part for p in part_of.values()) for part in PARTS]
        (tmp / MARKER).write_text(json.dumps(_marker(params, rows, parts), indent=2) + "\n")
    return out
