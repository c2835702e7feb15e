"""Exploratory plots of a HAM10000-layout folder: the real data or the synthetic stand-in.

``eda(data_dir)`` reads the metadata CSV (the Kaggle layout, or the Dataverse one with CRLF line
endings, integer ages and an extra ``dataset`` column) and writes PNGs into ``out_dir``: class
balance, age, sex and localization by class, images per lesion, and a seeded grid of sample
images per class. Images are looked up by ``image_id`` in ``images/`` or
``HAM10000_images_part_1/`` and ``_part_2/`` (never ``images_hires/``), or in ``images_dir``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.data.ham10000 import DX_CLASSES, DataError, image_folders, metadata_path
from kd_core.data.ham10000 import read_metadata as read_checked
from kd_core.io import atomic_path

CLASSES = DX_CLASSES
DEFAULT_OUT = Path("artifacts/imgs/eda")
MEL, REST = "#c0392b", "#7f8c8d"


@dataclass(frozen=True)
class Record:
    lesion_id: str
    image_id: str
    dx: str
    age: float | None
    sex: str
    localization: str


def read_metadata(path: Path) -> list[Record]:
    """Rows of a HAM10000 metadata CSV, read and checked by ``ham10000.read_metadata``; age, sex
    and localization are optional (shown as unknown)."""
    meta = read_checked(Path(path))
    return [_record(meta.path, line, row) for line, row in enumerate(meta.rows, start=2)]


def _record(path: Path, line: int, row: dict[str, str]) -> Record:
    age = row.get("age", "")
    try:
        age_value = float(age) if age and age.lower() not in ("nan", "na") else None
    except ValueError:
        raise DataError(f"{path}:{line}: age {age!r} is not a number") from None
    return Record(row["lesion_id"], row["image_id"], row["dx"], age_value,
                  row.get("sex") or "unknown", row.get("localization") or "unknown")


def find_image(dirs: list[Path], image_id: str) -> Path | None:
    for d in dirs:
        for ext in (".jpg", ".jpeg", ".png"):
            if (d / f"{image_id}{ext}").is_file():
                return d / f"{image_id}{ext}"
    return None


def _figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas on save

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _class_balance(recs: list[Record]) -> Any:
    fig, ax = _figure(1, 2, (11, 4))
    counts = Counter(r.dx for r in recs)
    bars = ax[0, 0].bar(CLASSES, [counts[c] for c in CLASSES],
                        color=[MEL if c == "mel" else REST for c in CLASSES])
    ax[0, 0].bar_label(bars, [f"{counts[c]}\n{100 * counts[c] / len(recs):.1f}%" for c in CLASSES],
                       fontsize=8)
    ax[0, 0].set(title=f"images per diagnosis (n={len(recs)})", ylabel="images")
    ax[0, 0].margins(y=0.2)
    mel = counts["mel"]
    bars = ax[0, 1].bar(["mel", "rest"], [mel, len(recs) - mel], color=[MEL, REST])
    ax[0, 1].bar_label(bars, [f"{mel} ({100 * mel / len(recs):.1f}%)",
                              f"{len(recs) - mel} ({100 * (1 - mel / len(recs)):.1f}%)"])
    ax[0, 1].set(title="melanoma vs rest", ylabel="images")
    ax[0, 1].margins(y=0.15)
    return fig


def _age(recs: list[Record]) -> Any:
    fig, ax = _figure(1, 2, (11, 4))
    ages = {c: [r.age for r in recs if r.dx == c and r.age is not None] for c in CLASSES}
    present = [c for c in CLASSES if ages[c]]
    ax[0, 0].boxplot([ages[c] for c in present], tick_labels=present)
    missing = sum(r.age is None for r in recs)
    ax[0, 0].set(title=f"age by diagnosis ({missing} missing)", ylabel="age (years)")
    bins = np.arange(0, 95, 5) - 2.5
    for label, keep, colour in [("rest", lambda r: r.dx != "mel", REST),
                                ("mel", lambda r: r.dx == "mel", MEL)]:
        vals = [r.age for r in recs if keep(r) and r.age is not None]
        ax[0, 1].hist(vals, bins=bins, density=True, alpha=0.6, color=colour, label=label)
    ax[0, 1].set(title="age: melanoma vs rest", xlabel="age (years)", ylabel="density")
    ax[0, 1].legend()
    return fig


def _by_class(recs: list[Record], key: Callable[[Record], str]) -> tuple[list[str], np.ndarray]:
    """Categories (most common first) and a (categories, CLASSES) count matrix."""
    cats = [k for k, _ in Counter(key(r) for r in recs).most_common()]
    counts = np.zeros((len(cats), len(CLASSES)), dtype=np.int64)
    for r in recs:
        counts[cats.index(key(r)), CLASSES.index(r.dx)] += 1
    return cats, counts


def _sex(recs: list[Record]) -> Any:
    fig, ax = _figure(1, 1, (8, 4))
    cats, counts = _by_class(recs, lambda r: r.sex)
    frac = counts / np.maximum(counts.sum(0, keepdims=True), 1)
    bottom = np.zeros(len(CLASSES))
    for cat, row in zip(cats, frac, strict=True):
        ax[0, 0].bar(CLASSES, row, bottom=bottom, label=cat)
        bottom += row
    ax[0, 0].set(title="sex by diagnosis (fraction of each class)", ylabel="fraction", ylim=(0, 1))
    ax[0, 0].legend(loc="lower right", fontsize=8)
    return fig


def _localization(recs: list[Record]) -> Any:
    fig, ax = _figure(1, 1, (8, 7))
    cats, counts = _by_class(recs, lambda r: r.localization)
    frac = counts / np.maximum(counts.sum(0, keepdims=True), 1)
    im = ax[0, 0].imshow(frac, cmap="viridis", aspect="auto")
    ax[0, 0].set_xticks(range(len(CLASSES)), CLASSES)
    ax[0, 0].set_yticks(range(len(cats)), cats)
    for (i, j), n in np.ndenumerate(counts):
        ax[0, 0].text(j, i, str(n), ha="center", va="center", fontsize=7,
                      color="white" if frac[i, j] < 0.5 * frac.max() else "black")
    ax[0, 0].set_title("localization by diagnosis (colour: fraction of class, text: images)")
    fig.colorbar(im, ax=ax[0, 0], shrink=0.6)
    return fig


def _images_per_lesion(recs: list[Record]) -> Any:
    fig, ax = _figure(1, 1, (7, 4))
    per_lesion = Counter(r.lesion_id for r in recs)
    is_mel = {r.lesion_id: r.dx == "mel" for r in recs}
    sizes = np.arange(1, max(per_lesion.values()) + 1)
    mel = np.array([sum(1 for k, n in per_lesion.items() if n == s and is_mel[k]) for s in sizes])
    rest = np.array([sum(1 for k, n in per_lesion.items() if n == s and not is_mel[k])
                     for s in sizes])
    ax[0, 0].bar(sizes, rest, color=REST, label="rest")
    bars = ax[0, 0].bar(sizes, mel, bottom=rest, color=MEL, label="mel")
    ax[0, 0].bar_label(bars, [str(int(v)) for v in mel + rest], fontsize=8)
    ax[0, 0].set(title=f"images per lesion ({len(recs)} images, {len(per_lesion)} lesions)",
                 xlabel="images of the lesion", ylabel="lesions", xticks=sizes)
    ax[0, 0].legend()
    return fig


def _samples(recs: list[Record], dirs: list[Path], seed: int, per_class: int = 6) -> Any:
    from kd_core.data.transforms import ImageError, load_rgb

    fig, ax = _figure(len(CLASSES), per_class, (1.8 * per_class, 1.5 * len(CLASSES)))
    rng = np.random.default_rng(seed)
    for i, dx in enumerate(CLASSES):
        ids = [r.image_id for r in recs if r.dx == dx]
        shown = 0
        for k in rng.permutation(len(ids)):
            path = find_image(dirs, ids[k]) if shown < per_class else None
            if path is None:
                continue
            try:
                ax[i, shown].imshow(load_rgb(path))
            except ImageError:
                continue
            ax[i, shown].set_title(ids[k], fontsize=6)
            shown += 1
        for j in range(per_class):
            ax[i, j].set_xticks([])
            ax[i, j].set_yticks([])
        ax[i, 0].set_ylabel(f"{dx}\n({len(ids)})", fontsize=9)
    fig.suptitle(f"sample images per diagnosis (seed {seed})")
    return fig


def eda(data_dir: Path, out_dir: Path = DEFAULT_OUT,
        metadata: str | None = None, images_dir: Path | None = None,
        seed: int = 42) -> list[Path]:
    """Write the EDA plots of ``data_dir`` into ``out_dir``; return the PNG paths."""
    recs = read_metadata(metadata_path(Path(data_dir), metadata))
    dirs = image_folders(Path(data_dir), images_dir)
    plots: list[tuple[str, Callable[[], Any]]] = [
        ("class_balance", lambda: _class_balance(recs)),
        ("age_by_class", lambda: _age(recs)),
        ("sex_by_class", lambda: _sex(recs)),
        ("localization_by_class", lambda: _localization(recs)),
        ("images_per_lesion", lambda: _images_per_lesion(recs)),
        ("samples_per_class", lambda: _samples(recs, dirs, seed)),
    ]
    written = []
    for name, make in plots:
        path = Path(out_dir) / f"{name}.png"
        with atomic_path(path) as tmp:
            make().savefig(tmp, format="png", dpi=100)
        written.append(path)
    return written
