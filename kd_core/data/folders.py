"""Your own data: an image folder (``D/<class>/*.jpg``) or a CSV of ``path,label[,group]``.

An image folder's classes are its sub-folder names (sorted); every image under a class folder
(recursively; ``.jpg``, ``.jpeg``, ``.png``) is its own group. A CSV names each image's path
(relative to the CSV's folder), its class and, optionally, a group (patient, lesion, ...): every
image of a group lands in the same split. ``prepare_listing`` checks every image (missing,
corrupt or non-RGB images are errors that name the file; ``skip_corrupt`` skips them), splits
by group, stratified by class, seeded and byte-for-byte reproducible, and writes the prepared
folder (``kd_core.data.prepared``).
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

from kd_core.data.ham10000 import IMAGE_SUFFIXES, usable_images
from kd_core.data.prepared import (
    GENERIC_ALL,
    GENERIC_COLUMNS,
    SPLIT_FILES,
    DataError,
    reusable,
    write_splits,
)
from kd_core.data.splits import SPLITS, check_class_split, split_lesions

log = logging.getLogger(__name__)
PREP_VERSION = 1
CSV_COLUMNS = ("path", "label")


@dataclass(frozen=True)
class Listing:
    """The images of an image-folder or CSV dataset, before any image is opened."""

    kind: str  # "imagefolder" or "csv"
    source: Path  # the folder, or the CSV file
    root: Path  # image paths are relative to this folder
    name: str  # display name
    classes: tuple[str, ...]
    rows: list[dict[str, str]]  # image_id, label, group, image_path
    sha256: str  # of the listing: what a reuse of the splits must match


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _class_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively, hidden ones skipped), sorted, relative."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath, name).relative_to(folder).as_posix())
    return sorted(found)


def _class_folders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def is_image_folder(path: Path) -> bool:
    """A folder with at least one class sub-folder holding an image."""
    path = Path(path)
    if not path.is_dir():
        return False
    for name in _class_folders(path):
        for _dirpath, dirnames, filenames in os.walk(path / name):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if any(os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES for f in filenames):
                return True
    return False


def list_image_folder(root: Path) -> Listing:
    """Every image of ``root/<class>/``; an empty class folder or fewer than 2 classes is a
    ``DataError``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    classes = _class_folders(root)
    rows, empty = [], []
    for cls in classes:
        images = _class_images(root / cls)
        if not images:
            empty.append(cls)
        rows += [{"image_id": f"{cls}/{rel}", "label": cls, "group": f"{cls}/{rel}",
                  "image_path": f"{cls}/{rel}"} for rel in images]
    if empty:
        raise DataError(f"{root}: class folder(s) {', '.join(empty)} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
    if len(classes) < 2:
        raise DataError(f"{root}: an image-folder dataset needs at least 2 class folders "
                        f"(<class>/*.jpg), found {classes or 'none'} (a HAM10000 folder needs "
                        "its HAM10000_metadata.csv)")
    loose = [f for f in os.listdir(root) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    if loose:
        log.info("ignoring %d image(s) directly in %s (not in a class folder)", len(loose), root)
    digest = hashlib.sha256("".join(f"{r['image_path']}\n" for r in rows).encode()).hexdigest()
    return Listing("imagefolder", root, root, root.name, tuple(classes), rows, digest)


def _csv_text(path: Path) -> tuple[str, bytes]:
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), raw
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the "
                        "CSV as UTF-8") from None


def _csv_row(path: Path, line: int, row: dict[str, str], grouped: bool) -> dict[str, str]:
    row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
    for col in (*CSV_COLUMNS, *(("group",) if grouped else ())):
        if not row.get(col):
            raise DataError(f"{path}:{line}: empty {col}" + (
                " (give every row a group, or leave the column out)" if col == "group" else ""))
    rel = row["path"].replace("\\", "/")
    return {"image_id": rel, "label": row["label"], "group": row["group"] if grouped else rel,
            "image_path": rel}


def read_csv_listing(path: Path) -> Listing:
    """Read ``path,label[,group]`` rows; paths relative to the CSV's folder. Missing columns,
    empty cells, repeated paths and missing image files are ``DataError``s naming the line."""
    path = Path(path).resolve()
    text, raw = _csv_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {columns} "
                        "(expected a header row: path,label[,group])")
    rows: list[dict[str, str]] = []
    first: dict[str, int] = {}
    for line, raw_row in enumerate(reader, start=2):
        row = _csv_row(path, line, raw_row, "group" in columns)
        if row["image_id"] in first:
            raise DataError(f"{path}:{line}: path {row['image_id']} repeats line "
                            f"{first[row['image_id']]}")
        first[row["image_id"]] = line
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    absent = [r["image_id"] for r in rows if not (path.parent / r["image_path"]).is_file()]
    if absent:
        raise DataError(f"{path}: {len(absent)} image(s) listed are missing on disk (paths are "
                        f"relative to {path.parent}): {', '.join(absent[:10])}"
                        + (" ..." if len(absent) > 10 else ""))
    classes = tuple(sorted({r["label"] for r in rows}))
    if len(classes) < 2:
        raise DataError(f"{path}: needs at least 2 classes in the label column, found "
                        f"{list(classes)}")
    return Listing("csv", path, path.parent, path.stem, classes, rows,
                   hashlib.sha256(raw).hexdigest())


def _counts(rows: list[dict[str, str]]) -> dict[str, object]:
    return {"images": len(rows), "groups": len({r["group"] for r in rows}),
            "classes": dict(sorted(Counter(r["label"] for r in rows).items()))}


def _usable(listing: Listing, skip_corrupt: bool) -> tuple[list[dict[str, str]], list[str]]:
    paths = [listing.root / r["image_path"] for r in listing.rows]
    bad = usable_images(paths, skip_corrupt)
    rows = [r for r, p in zip(listing.rows, paths, strict=True) if p not in bad]
    skipped = [r["image_id"] for r, p in zip(listing.rows, paths, strict=True) if p in bad]
    left = Counter(r["label"] for r in rows)
    emptied = [c for c in listing.classes if not left[c]]
    if emptied:
        raise DataError(f"{listing.source}: class(es) {', '.join(emptied)} have no usable "
                        "images left after skipping the unusable ones")
    return rows, skipped


def prepare_listing(listing: Listing, out: Path, *, seed: int = 42, force: bool = False,
                    skip_corrupt: bool = False,
                    split: tuple[float, float, float] = (0.70, 0.15, 0.15),
                    verbose: bool = True) -> Path:
    """Make (or reuse) the group-aware, class-stratified splits of ``listing`` in ``out``."""
    out = Path(out)
    level = logging.INFO if verbose else logging.DEBUG
    params: dict[str, object] = {
        "prep_version": PREP_VERSION, "kind": listing.kind, "listing_sha256": listing.sha256,
        "seed": seed, "fractions": list(split), "skip_corrupt": skip_corrupt,
        "data_dir": str(listing.root), "source": str(listing.source),
    }
    if not force and reusable(out, params, [GENERIC_ALL, *SPLIT_FILES.values()]):
        log.log(level, "reusing splits in %s (same listing, seed and fractions)", out)
        return out
    rows, skipped = _usable(listing, skip_corrupt)
    if skipped:
        log.log(level, "skipped %d corrupt or non-RGB image(s): %s", len(skipped),
                ", ".join(skipped[:10]))
    groups, labels = [r["group"] for r in rows], [r["label"] for r in rows]
    assignment = split_lesions(groups, labels, split, seed, priority=None, midpoint=True)
    check_class_split(assignment, labels, groups, split)
    by_split = {s: [r for r, a in zip(rows, assignment, strict=True) if a == s] for s in SPLITS}
    summary = {**params, "name": listing.name, "classes": list(listing.classes),
               "skipped": skipped,
               "counts": {"all": _counts(rows), **{s: _counts(r) for s, r in by_split.items()}}}
    write_splits(out, GENERIC_ALL, GENERIC_COLUMNS, rows, by_split, summary)
    log.log(level, "prepared %s (%d classes) in %s", ", ".join(
        f"{s} {len(by_split[s])} images" for s in SPLITS), len(listing.classes), out)
    return out
