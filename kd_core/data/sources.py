"""Which kind of data is this, and where are its splits? Answered once, here.

A data source is one of
- a prepared split folder (``split_metadata.json`` plus the split CSVs, written by
  ``python -m kd_core.data prepare``), used as it is;
- a HAM10000 folder (its metadata CSV plus image folders);
- an image folder, ``D/<class>/*.{jpg,jpeg,png}``;
- a CSV file of ``path,label[,group]`` rows (paths relative to the CSV).
A raw source is prepared on first use (``prepare_source``); its splits go to
``default_prepared_dir``: the user's cache (``$EDGEKD_CACHE``, default ``~/.cache/edgekd``)
under ``prepared/<name>-<hash>``, so a read-only dataset folder works and every command finds the
same splits. Readers then use ``kd_core.data.prepared.load_split`` whatever the kind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kd_core.data.ham10000 import IMAGE_FOLDERS, METADATA_NAME, is_ham10000_dir, prepare
from kd_core.data.prepared import DataError, DataInfo, data_info, ham_info, is_prepared_dir

CACHE_ENV = "EDGEKD_CACHE"


def cache_dir() -> Path:
    """``$EDGEKD_CACHE``, else ``$XDG_CACHE_HOME/edgekd``, else ``~/.cache/edgekd``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd"


def default_prepared_dir(data_dir: Path) -> Path:
    """Where the splits of ``data_dir`` go when no ``--prepared-dir`` is given."""
    resolved = Path(data_dir).resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return cache_dir() / "prepared" / f"{resolved.name}-{tag}"


def data_kind(path: Path, metadata: str | None = None) -> str | None:
    """"prepared", "ham10000", "imagefolder", "csv" or None (not a data source)."""
    from kd_core.data.folders import is_image_folder

    path = Path(path)
    if is_prepared_dir(path):
        return "prepared"
    if path.is_file():
        return "csv" if path.suffix.lower() == ".csv" else None
    if is_ham10000_dir(path, metadata) or any(
            (path / name).is_dir() for name in IMAGE_FOLDERS if "10000" in name):
        return "ham10000"  # (HAM10000's image folders without the metadata: it names the CSV)
    return "imagefolder" if is_image_folder(path) else None


def prepare_source(source: Path, out: Path, *, seed: int = 42, force: bool = False,
                   verbose: bool = True, metadata: str | None = None,
                   images_dir: Path | None = None, skip_corrupt: bool = False,
                   split: tuple[float, float, float] = (0.70, 0.15, 0.15)) -> Path:
    """Check and split a raw data source (HAM10000, image folder or CSV) into ``out``, or reuse
    the splits already there; return ``out``."""
    from kd_core.data.folders import list_image_folder, prepare_listing, read_csv_listing

    source = Path(source)
    kind = data_kind(source, metadata)
    if kind == "ham10000":
        return prepare(source, out, seed=seed, force=force, verbose=verbose, metadata=metadata,
                       images_dir=images_dir, skip_corrupt=skip_corrupt, split=split)
    if images_dir is not None:
        raise DataError(f"--images-dir {images_dir}: only for a HAM10000 folder")
    if kind in ("imagefolder", "csv"):
        listing = list_image_folder(source) if kind == "imagefolder" else read_csv_listing(source)
        return prepare_listing(listing, out, seed=seed, force=force, skip_corrupt=skip_corrupt,
                               split=split, verbose=verbose)
    if kind == "prepared":
        raise DataError(f"{source}: already a prepared split folder; use it as --data-dir")
    raise _not_a_source(source, metadata)


def _not_a_source(source: Path, metadata: str | None) -> DataError:
    if not source.exists():
        return DataError(f"{source}: data folder not found")
    return DataError(
        f"{source}: not a data source: expected a prepared split folder (split_metadata.json), "
        f"a HAM10000 folder ({metadata or METADATA_NAME}), an image folder (<class>/*.jpg) or a "
        "CSV file (path,label[,group])")


def source_info(data_dir: Path, prepared_dir: Path | None = None,
                metadata: str | None = None) -> DataInfo:
    """What ``resolve_prepared(data_dir, prepared_dir)`` will hold (kind, name, classes), read
    without preparing anything: a run checks its task before any work."""
    from kd_core.data.folders import list_image_folder, read_csv_listing
    from kd_core.data.prepared import SYNTHETIC_MARKER

    data_dir = Path(data_dir)
    for folder in (data_dir, prepared_dir):
        if folder is not None and is_prepared_dir(folder):
            return data_info(folder)
    kind = data_kind(data_dir, metadata)
    if kind == "ham10000":
        synthetic = (data_dir / SYNTHETIC_MARKER).is_file()
        return ham_info("synthetic demo data" if synthetic else "HAM10000")
    if kind in ("imagefolder", "csv"):
        listing = list_image_folder(data_dir) if kind == "imagefolder" else (
            read_csv_listing(data_dir))
        return DataInfo(kind, listing.name, listing.classes)
    raise _not_a_source(data_dir, metadata)


def resolve_prepared(data_dir: Path, prepared_dir: Path | None = None, *, seed: int = 42,
                     verbose: bool = False, metadata: str | None = None,
                     images_dir: Path | None = None, skip_corrupt: bool = False,
                     split: tuple[float, float, float] = (0.70, 0.15, 0.15)) -> Path:
    """The prepared split folder for ``data_dir``: ``data_dir`` itself when it is one; else the
    splits of the raw source (HAM10000, image folder or CSV file), prepared (or reused) in
    ``prepared_dir`` (default: the cache). A ``prepared_dir`` that is already prepared is used
    as it is, never re-split. The other keywords are ``prepare_source``'s."""
    data_dir = Path(data_dir)
    if is_prepared_dir(data_dir):
        return data_dir
    if prepared_dir is not None and is_prepared_dir(prepared_dir):
        return Path(prepared_dir)
    out = Path(prepared_dir) if prepared_dir is not None else default_prepared_dir(data_dir)
    return prepare_source(data_dir, out, seed=seed, verbose=verbose, metadata=metadata,
                          images_dir=images_dir, skip_corrupt=skip_corrupt, split=split)


def dataset_name(prepared_dir: Path) -> str:
    """A display name for the data behind a prepared folder: "synthetic demo data" for the
    generated stand-in, "HAM10000", or an image folder's or CSV file's name."""
    return data_info(prepared_dir).name
