"""Small file helpers: atomic writes, hashing, output-folder checks, and a thread pool for file
work that stops promptly on Ctrl-C. Nothing here imports torch."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


@contextlib.contextmanager
def thread_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A ``ThreadPoolExecutor`` whose queued jobs are dropped when the block fails (a Ctrl-C
    does not wait for thousands of queued image decodes)."""
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written file, and a failure leaves the old file (if any) untouched.
    Works for files and for folders (for example a Core ML ``.mlpackage``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (as a file or a folder)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            _remove(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of every file in a folder (sorted by relative path)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def path_bytes(path: str | Path) -> int:
    """Size of a file, or the total size of a folder's files."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def dumps_json(obj: object, indent: int | None = 2) -> str:
    """Strict JSON text (NaN and Infinity are errors, not ``NaN`` tokens), newline-terminated."""
    return json.dumps(obj, indent=indent, allow_nan=False) + "\n"


def loads_json(text: str) -> object:
    """Parse strict JSON: ``NaN``, ``Infinity`` and ``-Infinity`` raise ValueError."""
    return json.loads(text, parse_constant=_reject_constant)


def write_json(path: str | Path, obj: object, indent: int | None = 2) -> None:
    """Write strict JSON atomically (ValueError before anything is written if not finite)."""
    atomic_write_text(path, dumps_json(obj, indent))


def check_output_dir(path: str | Path, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be created or written, before any work: it exists
    as a file, or its nearest existing parent is not writable (``BadInput`` names ``flag``)."""
    from kd_core.cli import BadInput

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{flag} {path}: exists and is not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} {path}: {parent} is not writable")
