"""Run format exporters in ``jobs`` worker processes.

Formats are shared out to the workers by their usual export cost (longest first), so on a
2-core machine two conversions run at once and each worker starts torch only once. A worker
sends back each format's artefacts (without the torch reference) and failures as it finishes
it. A worker that dies (a segfault in a converter) fails the format it was on; the formats it
had not started go to a fresh worker.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from exporters import Artifact
from exporters.base import ExportSettings, Failure

# Rough relative export cost (CPU seconds for MobileNetV3-Small, fp32 + int8).
COST = {"tflite": 58.0, "executorch": 59.0, "onnx": 17.0, "coreml": 9.0}


@dataclass(frozen=True)
class Task:
    formats: tuple[str, ...]
    checkpoint: Path
    cfg: ExportSettings
    out_dir: Path
    verbose: bool
    threads: int


@dataclass(frozen=True)
class Outcome:
    fmt: str
    artifacts: list[Artifact]
    failures: list[Failure]
    log_tail: str


def share_out(formats: tuple[str, ...], jobs: int) -> list[tuple[str, ...]]:
    """Split formats into at most ``jobs`` groups of similar total cost (longest first)."""
    bins: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(formats))))]
    loads = [0.0] * len(bins)
    for fmt in sorted(formats, key=lambda f: -COST.get(f, 20.0)):
        i = loads.index(min(loads))
        bins[i].append(fmt)
        loads[i] += COST.get(fmt, 20.0)
    order = {f: i for i, f in enumerate(formats)}
    return [tuple(sorted(b, key=order.__getitem__)) for b in bins if b]


def _worker(task: Task, conn: Connection) -> None:
    import torch

    from exporters.all import Job, load_settings, run_format

    torch.set_num_threads(task.threads)
    model, _, _ = load_settings(task.checkpoint, task.cfg.precisions)
    for fmt in task.formats:
        job = Job((fmt,), task.cfg.precisions, task.out_dir, task.verbose)
        arts, failures, tail = run_format(fmt, model, task.cfg, job)
        conn.send(Outcome(fmt, [replace(a, reference=None) for a in arts], failures, tail))
    conn.close()


def run_parallel(tasks: list[Task], jobs: int, wanted: dict[str, list[str]]
                 ) -> Iterator[Outcome]:
    """Yield an ``Outcome`` per format as workers finish them."""
    ctx = mp.get_context("spawn")
    pending = list(tasks)
    running: dict[Connection, tuple[Task, Any, list[str]]] = {}
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
                outcome: Outcome = ready.recv()
            except (EOFError, OSError):
                del running[ready]
                yield from _died(task, proc, left, wanted, pending)
                continue
            left.remove(outcome.fmt)
            yield outcome


def _died(task: Task, proc: Any, left: list[str], wanted: dict[str, list[str]],
          pending: list[Task]) -> Iterator[Outcome]:
    proc.join()
    if not left:
        return
    error = f"worker process died (exit code {proc.exitcode})"
    yield Outcome(left[0], [], [Failure(left[0], p, error) for p in wanted[left[0]]], "")
    if left[1:]:
        pending.append(replace(task, formats=tuple(left[1:])))
