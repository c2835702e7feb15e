"""HAM10000 ingestion: read the metadata as users download it, find the images, check them,
split by lesion, and write the prepared CSVs.

Accepts the Kaggle layout (``HAM10000_metadata.csv`` with ``HAM10000_images_part_1/`` and
``HAM10000_images_part_2/``), one flat images folder, and the Harvard Dataverse metadata (CRLF line
endings, integer ages, an extra ``dataset`` column).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_core.data.prepared import DX_CLASSES as DX_CLASSES
from kd_core.data.prepared import MEL_CLASSES as MEL_CLASSES
from kd_core.data.prepared import SPLIT_FILES as SPLIT_FILES
from kd_core.data.prepared import DataError as DataError
from kd_core.data.prepared import SplitData as SplitData
from kd_core.data.prepared import is_prepared_dir as is_prepared_dir
from kd_core.data.prepared import load_split as load_split
from kd_core.data.prepared import reusable, write_splits
from kd_core.data.prepared import split_data_dir as split_data_dir
from kd_core.data.splits import SPLITS, check_split, split_lesions
from kd_core.data.transforms import ImageError, load_rgb
from kd_core.io import thread_pool

log = logging.getLogger(__name__)

# The class names live in kd_core.data.prepared (every prepared folder's reader needs them).
TARGETS = {"mel": MEL_CLASSES, "dx": DX_CLASSES}
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
IMAGE_FOLDERS = (
    "HAM10000_images_part_1",
    "HAM10000_images_part_2",
    "ham10000_images_part_1",
    "ham10000_images_part_2",
    "HAM10000_images",
    "images",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PREPARED_FILES = ("labeled_ham10000.csv", "train_data.csv", "val_data.csv", "holdout_data.csv")
PREP_VERSION = 1


METADATA_NAME = "HAM10000_metadata.csv"
SITE_COLUMN = "dataset"  # the acquisition site, in the Harvard Dataverse release only


def metadata_path(data_dir: Path, metadata: str | None = None) -> Path:
    """The metadata CSV of a HAM10000 folder. ``metadata`` (a name inside ``data_dir`` or a path)
    when given; else the ``HAM10000_metadata*.csv`` in the folder that carries the acquisition
    site (the Dataverse release's ``dataset`` column), else ``HAM10000_metadata.csv``. Both
    releases hold the same images and labels, so the split is the same either way."""
    data_dir = Path(data_dir)
    if metadata:
        return Path(metadata) if Path(metadata).is_absolute() else data_dir / metadata
    for candidate in sorted(data_dir.glob("HAM10000_metadata*.csv")):
        try:
            with candidate.open(encoding="utf-8-sig", errors="replace") as fh:
                header = [c.strip() for c in fh.readline().split(",")]
        except OSError:
            continue
        if SITE_COLUMN in header:
            return candidate
    return data_dir / METADATA_NAME


def class_labels(target: str) -> list[str]:
    """The labels of a ``--target``: "mel" -> other/melanoma; "dx" -> the 7 diagnoses."""
    if target not in TARGETS:
        raise DataError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    return list(TARGETS[target])


@dataclass(frozen=True)
class Metadata:
    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    sha256: str


def read_metadata(path: Path) -> Metadata:
    """Read and validate a HAM10000 metadata CSV (LF or CRLF, optional BOM)."""
    if not path.is_file():
        raise DataError(f"{path}: metadata file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the "
                        "metadata CSV as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {columns}")
    reader.fieldnames = columns
    rows: list[dict[str, str]] = []
    first_row: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in row.items() if k is not None}
        for col in REQUIRED_COLUMNS:
            if not row.get(col):
                raise DataError(f"{path}:{line}: empty {col}")
        if row["dx"] not in DX_CLASSES:
            raise DataError(
                f"{path}:{line}: unknown dx {row['dx']!r}; expected one of {DX_CLASSES}"
            )
        if row["image_id"] in first_row:
            raise DataError(
                f"{path}:{line}: duplicate image_id {row['image_id']} "
                f"(first at line {first_row[row['image_id']]})"
            )
        first_row[row["image_id"]] = line
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return Metadata(path, columns, rows, hashlib.sha256(raw).hexdigest())


def image_folders(data_dir: Path, images_dir: Path | None = None) -> list[Path]:
    if images_dir is not None:
        if not images_dir.is_dir():
            raise DataError(f"{images_dir}: images folder not found")
        return [images_dir]
    found = [data_dir / name for name in IMAGE_FOLDERS if (data_dir / name).is_dir()]
    return [*found, data_dir]


def find_images(
    data_dir: Path, image_ids: list[str], images_dir: Path | None = None
) -> dict[str, Path]:
    """Map every image id to its file; a listed image missing on disk is an error."""
    index: dict[str, Path] = {}
    for folder in image_folders(data_dir, images_dir):
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() in IMAGE_SUFFIXES and stem not in index and entry.is_file():
                    index[stem] = Path(entry.path)
    missing = [i for i in image_ids if i not in index]
    if missing:
        where = ", ".join(str(f) for f in image_folders(data_dir, images_dir))
        raise DataError(
            f"{len(missing)} image(s) listed in the metadata are missing on disk "
            f"(looked in {where}): {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
        )
    return {i: index[i] for i in image_ids}


def check_images(paths: list[Path], workers: int | None = None) -> dict[Path, str]:
    """Decode every image; return {path: problem} for corrupt or non-RGB ones."""
    from tqdm import tqdm

    def check(path: Path) -> str | None:
        try:
            load_rgb(path)
        except ImageError as exc:
            return str(exc).removeprefix(f"{path}: ")
        return None

    with thread_pool(workers or min(8, os.cpu_count() or 2)) as pool:
        results = list(
            tqdm(
                pool.map(check, paths),
                total=len(paths),
                desc="checking images",
                unit="img",
                leave=False,
                disable=len(paths) < 500,
            )
        )
    return {p: r for p, r in zip(paths, results, strict=True) if r is not None}


def usable_images(paths: list[Path], skip_corrupt: bool) -> dict[Path, str]:
    """``check_images``; any unusable image is a ``DataError`` naming it, unless
    ``skip_corrupt`` (then the unusable ones are returned, to be skipped)."""
    bad = check_images(paths)
    if bad and not skip_corrupt:
        listed = "; ".join(f"{p}: {why}" for p, why in list(bad.items())[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} unusable image(s) (pass --skip-corrupt to skip them): "
                        f"{listed}{more}")
    return bad


def _counts(rows: list[dict[str, str]]) -> dict[str, object]:
    n = len(rows)
    pos = sum(1 for r in rows if r["target"] == "1")
    return {
        "images": n,
        "lesions": len({r["lesion_id"] for r in rows}),
        "melanoma": pos,
        "prevalence": round(pos / n, 6) if n else 0.0,
        "dx": dict(sorted(Counter(r["dx"] for r in rows).items())),
    }


def prepare(
    data_dir: Path,
    out: Path,
    *,
    seed: int = 42,
    force: bool = False,
    metadata: str | None = None,
    images_dir: Path | None = None,
    skip_corrupt: bool = False,
    split: tuple[float, float, float] = (0.70, 0.15, 0.15),
    verbose: bool = True,
) -> Path:
    """Make (or reuse) the lesion-aware splits of ``data_dir`` in ``out``; return ``out``."""
    data_dir, out = Path(data_dir).resolve(), Path(out)
    level = logging.INFO if verbose else logging.DEBUG
    meta = read_metadata(metadata_path(data_dir, metadata))
    params: dict[str, object] = {
        "prep_version": PREP_VERSION,
        "metadata_sha256": meta.sha256,
        "seed": seed,
        "fractions": list(split),
        "skip_corrupt": skip_corrupt,
        "data_dir": str(data_dir),
        "images_dir": str(images_dir.resolve()) if images_dir else None,
    }
    if not force and reusable(out, params, PREPARED_FILES):
        log.log(level, "reusing splits in %s (same metadata sha256, seed and fractions)", out)
        return out
    rows, skipped = _usable_rows(meta, data_dir, images_dir, skip_corrupt)
    if skipped:
        log.log(level, "skipped %d corrupt or non-RGB image(s): %s", len(skipped),
                ", ".join(skipped[:10]))
    _check_classes(rows, meta.path)
    assignment = split_lesions([r["lesion_id"] for r in rows], [r["dx"] for r in rows], split, seed)
    check_split(assignment, [int(r["target"]) for r in rows], [r["lesion_id"] for r in rows])
    by_split = {s: [r for r, a in zip(rows, assignment, strict=True) if a == s] for s in SPLITS}
    summary = {**params, "metadata_file": meta.path.name, "skipped": skipped,
               "counts": {"all": _counts(rows), **{s: _counts(r) for s, r in by_split.items()}}}
    write_splits(out, "labeled_ham10000.csv", [*meta.columns, "image_path", "target"], rows,
                 by_split, summary)
    c: dict[str, Any] = summary["counts"]  # type: ignore[assignment]
    log.log(level, "prepared %s in %s", ", ".join(
        f"{s} {c[s]['images']} images / {c[s]['lesions']} lesions / "
        f"{100 * c[s]['prevalence']:.1f}% mel" for s in SPLITS), out)
    return out


def _usable_rows(meta: Metadata, data_dir: Path, images_dir: Path | None, skip_corrupt: bool
                 ) -> tuple[list[dict[str, str]], list[str]]:
    """Rows whose image decodes as RGB (with ``image_path`` and ``target``), and skipped ids."""
    paths = find_images(data_dir, [r["image_id"] for r in meta.rows], images_dir)
    bad = usable_images(list(paths.values()), skip_corrupt)
    rows, skipped = [], []
    for row in meta.rows:
        path = paths[row["image_id"]]
        if path in bad:
            skipped.append(row["image_id"])
            continue
        rel = os.path.relpath(path, data_dir).replace(os.sep, "/")
        rows.append({**row, "image_path": rel, "target": "1" if row["dx"] == "mel" else "0"})
    return rows, skipped


def _check_classes(rows: list[dict[str, str]], path: Path) -> None:
    pos = sum(1 for r in rows if r["target"] == "1")
    if pos == 0:
        raise DataError(f"{path}: the melanoma class is empty (no dx == 'mel' rows)")
    if pos == len(rows):
        raise DataError(f"{path}: the non-melanoma class is empty (every row is mel)")


def is_ham10000_dir(path: Path, metadata: str | None = None) -> bool:
    return metadata_path(path, metadata).is_file()
