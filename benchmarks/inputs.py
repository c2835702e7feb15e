"""Checks of the benchmarks' command-line input, made before any work: the error class, output
folders, and the argument types the CLIs share (thread lists, counts). Standard library only, so
every ``--help`` stays fast."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kd_core.cli import BadInput


class BenchInputError(BadInput):
    """Bad input to a benchmark (a flag, file or folder); the message names it."""


def check_output_dir(path: str | Path, flag: str = "--out") -> None:
    """Fail unless ``path`` is (or can be created as) a writable folder; creates nothing.

    The message names the flag and the path: an unwritable output is found before any work,
    not after it, when every result would be lost. (The same rule and messages as
    ``kd_core.io.check_output_dir`` on the kd_core branch, which replaces this at merge.)"""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BenchInputError(f"{flag} {path}: exists and is not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BenchInputError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BenchInputError(f"{flag} {path}: {parent} is not writable")


def thread_list(value: str) -> tuple[int, ...]:
    """``1,4`` -> (1, 4): comma-separated thread counts, repeats dropped (the configs check
    that each is >= 1, with a one-line error naming the flag)."""
    try:
        return tuple(dict.fromkeys(int(v) for v in value.split(",") if v.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}"
                                         ) from None


def check_counts(**counts: tuple[int | None, int]) -> None:
    """``check_counts(runs=(value, minimum), ...)``: each given value must reach its minimum;
    the error names the flag (``--runs must be >= 1, got 0``)."""
    for name, (value, low) in counts.items():
        if value is not None and (isinstance(value, bool) or value < low):
            raise BenchInputError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def check_threads(threads: tuple[int, ...], flag: str = "--threads") -> None:
    if not threads or min(threads) < 1:
        raise BenchInputError(f"{flag} must list thread counts >= 1, got "
                              f"{','.join(map(str, threads)) or '(none)'}")


def csv_list(value: str) -> tuple[str, ...]:
    """``a, b,,c`` -> ("a", "b", "c")."""
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def check_known(flag: str, given: tuple[str, ...], known: list[str] | tuple[str, ...]) -> None:
    """Every name in ``given`` must be one of ``known`` (and at least one must be given)."""
    unknown = [g for g in given if g not in known]
    if unknown or not given:
        what = ", ".join(unknown) if unknown else "(none given)"
        raise BenchInputError(f"{flag}: unknown {what}; choose from {', '.join(known)}")
