"""Which kind of data folder is this, and where are its splits? Answered once, here.

A data source is either a prepared split folder (``split_metadata.json`` plus the split CSVs,
written by ``python -m kd_core.data prepare``) or a raw dataset folder that is prepared on first
use (today: the HAM10000 layout). Splits of a raw folder go to ``default_prepared_dir``: the
user's cache (``$EDGEKD_CACHE``, default ``~/.cache/edgekd``) under ``prepared/<name>-<hash>``,
so a read-only dataset folder works and every command finds the same splits.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kd_core.data.ham10000 import (
    DataError,
    is_ham10000_dir,
    is_prepared_dir,
    prepare,
    split_data_dir,
)

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


def resolve_prepared(data_dir: Path, prepared_dir: Path | None = None, *, seed: int = 42,
                     verbose: bool = False, metadata: str = "HAM10000_metadata.csv",
                     images_dir: Path | None = None, skip_corrupt: bool = False,
                     split: tuple[float, float, float] = (0.70, 0.15, 0.15)) -> Path:
    """The prepared split folder for ``data_dir``: ``data_dir`` itself when it is one; else the
    splits of the raw dataset, prepared (or reused) in ``prepared_dir`` (default: the cache).
    A ``prepared_dir`` that is already prepared is used as it is, never re-split. The other
    keywords are ``prepare``'s."""
    data_dir = Path(data_dir)
    if is_prepared_dir(data_dir):
        return data_dir
    if prepared_dir is not None and is_prepared_dir(prepared_dir):
        return Path(prepared_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    if is_ham10000_dir(data_dir, metadata):
        out = Path(prepared_dir) if prepared_dir is not None else default_prepared_dir(data_dir)
        return prepare(data_dir, out, seed=seed, verbose=verbose, metadata=metadata,
                       images_dir=images_dir, skip_corrupt=skip_corrupt, split=split)
    raise DataError(f"{data_dir}: neither a prepared split folder (split_metadata.json) nor a "
                    f"HAM10000 folder ({metadata})")


def dataset_name(prepared_dir: Path) -> str:
    """A display name for the data behind a prepared folder: "synthetic demo data" for the
    generated stand-in, else "HAM10000"."""
    from kd_core.data.synthetic import MARKER

    source = split_data_dir(prepared_dir)
    return "synthetic demo data" if (source / MARKER).is_file() else "HAM10000"
