"""Checks of the benchmarks' command-line input, made before any work: the error class and the
argument types and rules the CLIs share (thread lists, counts, names). Output folders are checked
with ``kd_core.io.check_output_dir``. Standard library only, so every ``--help`` stays fast."""

from __future__ import annotations

import argparse

from kd_core.cli import BadInput


class BenchInputError(BadInput):
    """Bad input to a benchmark (a flag, file or folder); the message names it."""


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
