"""Run format exporters in ``jobs`` worker processes.

Formats are shared out to the workers by their registered export cost (longest first), so on a
2-core machine two conversions run at once and each worker starts torch only once. A worker
imports the modules that registered its formats and runtimes, sends back each format's
artefacts (without the torch reference) and failures as it finishes it, and writes the
converters' chatter to its own log file (``capture``), whose last lines come back with a
failure. A worker that dies (a segfault in a converter) fails the format it was on; the formats
it had not started go to a fresh worker. Ctrl-C reaches only the parent, which stops the
workers (SIGTERM: they unwind, removing their temporary files) before it re-raises.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from exporters import get_exporter
from exporters.base import ExportSettings, Failure
from exporters.job import FormatResult, run_format

STOP_SECONDS = 10.0  # how long a stopped worker may take to unwind before it is killed


@dataclass(frozen=True)
class Task:
    formats: tuple[str, ...]
    checkpoint: Path
    cfg: ExportSettings
    out_dir: Path
    threads: int
    log_file: Path | None  # None: the converters' output goes to the console
    modules: tuple[str, ...] = ()  # modules that register the formats and their runtimes


def share_out(formats: tuple[str, ...], jobs: int) -> list[tuple[str, ...]]:
    """Split formats into at most ``jobs`` groups of similar total cost (longest first)."""
    bins: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(formats))))]
    loads = [0.0] * len(bins)
    for fmt in sorted(formats, key=lambda f: -get_exporter(f).cost):
        i = loads.index(min(loads))
        bins[i].append(fmt)
        loads[i] += get_exporter(fmt).cost
    order = {f: i for i, f in enumerate(formats)}
    return [tuple(sorted(b, key=order.__getitem__)) for b in bins if b]


def registering_modules(formats: tuple[str, ...]) -> tuple[str, ...]:
    """The modules a fresh process imports to know ``formats`` and their runtimes."""
    from runtimes import get_runtime

    mods = []
    for fmt in formats:
        mods.append(get_exporter(fmt).module)
        with contextlib.suppress(KeyError):
            mods.append(get_runtime(fmt).module)
    return tuple(dict.fromkeys(m for m in mods if m and m != "__main__"))


@contextlib.contextmanager
def _captured(log_file: Path | None) -> Iterator[None]:
    """In a worker: file descriptors 1 and 2 (and sys.stdout/err) into ``log_file``."""
    if log_file is None:
        yield
        return
    with open(log_file, "a", buffering=1) as text:
        os.dup2(text.fileno(), 1)
        os.dup2(text.fileno(), 2)
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            yield


def _unwind(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _tail(log_file: Path | None, start: int = 0, lines: int = 12) -> str:
    if log_file is None or not log_file.is_file():
        return ""
    with open(log_file, "rb") as fh:
        fh.seek(start)
        text = fh.read().decode(errors="replace").strip().splitlines()
    return "\n".join("    | " + line for line in text[-lines:])


def _worker(task: Task, conn: Connection) -> None:
    import torch

    from kd_core.checkpoint import load_model
    from kd_core.cli import setup_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _unwind)  # unwind: atomic writes remove their temp files
    with _captured(task.log_file):
        setup_logging(verbose=task.log_file is not None)
        for module in task.modules:
            importlib.import_module(module)
        torch.set_num_threads(task.threads)
        model, _ = load_model(task.checkpoint)
        for fmt in task.formats:
            start = task.log_file.stat().st_size if task.log_file else 0
            got = run_format(fmt, model, task.cfg, task.out_dir)
            sys.stdout.flush()
            tail = _tail(task.log_file, start) if got.failures else ""
            conn.send(replace(got, artifacts=[replace(a, reference=None) for a in got.artifacts],
                              log_tail=tail))
    conn.close()


def run_parallel(tasks: list[Task], jobs: int) -> Iterator[FormatResult]:
    """Yield a ``FormatResult`` per format as workers finish them; workers still running
    when the caller stops (or is interrupted) are stopped."""
    ctx = mp.get_context("spawn")
    pending = list(tasks)
    running: dict[Connection, tuple[Task, Any, list[str]]] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(task, send), daemon=True)
                proc.start()
                send.close()  # the child's end: EOF here once the child has exited
                running[recv] = (task, proc, list(task.formats))
            for ready in wait(list(running)):
                assert isinstance(ready, Connection)
                task, proc, left = running[ready]
                try:
                    result: FormatResult = ready.recv()
                except (EOFError, OSError):
                    del running[ready]
                    ready.close()
                    yield from _died(task, proc, left, pending)
                    continue
                left.remove(result.fmt)
                yield result
    finally:
        _stop(running)


def _stop(running: dict[Connection, tuple[Task, Any, list[str]]]) -> None:
    procs = [proc for _, proc, _ in running.values()]
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(STOP_SECONDS)
        if proc.is_alive():
            proc.kill()
            proc.join()
    for conn in running:
        conn.close()
    running.clear()


def _died(task: Task, proc: Any, left: list[str], pending: list[Task]
          ) -> Iterator[FormatResult]:
    proc.join()
    if not left:
        return
    error = f"worker process died (exit code {proc.exitcode})"
    wanted = get_exporter(left[0]).artefact_precisions(task.cfg.precisions)
    yield FormatResult(left[0], [], [Failure(left[0], p, error) for p in wanted],
                       _tail(task.log_file))
    if left[1:]:
        pending.append(replace(task, formats=tuple(left[1:])))
