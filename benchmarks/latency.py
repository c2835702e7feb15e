"""Latency the way the field measures it: one fresh process per (model, thread count), thread
pools fixed, one image at batch 1, warm-up runs discarded, then many timed runs reported as
p50/p90/p99/mean, plus the load time and the process's peak resident memory.

The parent calls ``measure_isolated``; the child is

    python -m benchmarks.latency --entry JSON --root DIR --threads T --runs N --warmup W \
        [--input X.npy]

and prints one line ``EDGEKD_LATENCY {json}``. The child imports numpy and the one runtime it
times (no torch unless the runtime needs it), so its peak memory is that runtime's footprint
plus the interpreter. ``--entry`` is a manifest entry (``ManifestEntry.to_dict()``). Exit codes:
0 timed (or the runtime is unavailable here: status in the JSON), 1 failed (error in the JSON),
2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core import cli

if TYPE_CHECKING:
    from kd_core.deploy import ManifestEntry

MARK = "EDGEKD_LATENCY "
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class LatencySettings:
    """At least ``warmup`` discarded runs lasting ``warmup_seconds``, then at least ``runs``
    timed runs lasting ``min_seconds``, as LiteRT's ``benchmark_model`` does (its
    ``--warmup_min_secs`` 0.5 and ``--min_secs`` 1): by count alone, 50 runs of a 0.2-ms model
    sample 10 ms of the host. The floors do not remove a slower state that lasts a whole
    process on a 2-vCPU host: the quick profile's LiteRT INT8 and its float-I/O twin (nearly
    the same graph) have each timed 0.21 ms in some processes and 0.32-0.36 ms in others."""

    runs: int = 100
    warmup: int = 10
    timeout_s: float = 900.0
    min_seconds: float = 1.0
    warmup_seconds: float = 0.5


def summarize(times_ms: list[float]) -> dict[str, Any]:
    t = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(t.mean()), "min_ms": float(t.min()), "max_ms": float(t.max()),
            "std_ms": float(t.std()), "runs": len(t)}


def _proc_status_mb(field: str) -> float | None:
    """A memory figure from /proc/self/status (Linux), in MB, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux: VmHWM, which (unlike ru_maxrss, carried
    over from the parent through fork and exec) counts only this program's own memory."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def measure(entry: ManifestEntry, root: Path, threads: int, settings: LatencySettings,
            image: np.ndarray) -> dict[str, Any]:
    """Time ``entry``'s runner in this process (the child side): load, warm up, run."""
    from runtimes import load_runner

    rss_before = _proc_status_mb("VmRSS")
    runner = load_runner(entry, root, threads)
    # Time the model call on an input already in the artefact's layout and dtype, as the
    # runtimes' own benchmark tools do; preprocessing is the same for every format.
    x = runner.prepare(np.ascontiguousarray(image[None], dtype=np.float32))
    start = time.perf_counter()
    runner.invoke(x)
    first_ms = (time.perf_counter() - start) * 1e3
    warmup = 1 if settings.warmup > 0 else 0  # the first call counts as a warm-up run
    while warmup < settings.warmup or time.perf_counter() - start < settings.warmup_seconds:
        runner.invoke(x)
        warmup += 1
    times: list[float] = []
    timed_ms = 0.0  # a running total: summing the list each run is quadratic in the runs
    while len(times) < settings.runs or timed_ms < 1e3 * settings.min_seconds:
        begin = time.perf_counter()
        runner.invoke(x)
        times.append((time.perf_counter() - begin) * 1e3)
        timed_ms += times[-1]
    return {"status": "ok", "runtime": runner.runtime, "threads": threads,
            "load_ms": runner.load_seconds * 1e3, "first_ms": first_ms,
            "warmup": warmup, **summarize(times),
            "peak_memory_mb": _peak_rss_mb(), "rss_before_load_mb": rss_before}


def tool_versions() -> dict[str, str]:
    """Versions of Python and of every runtime the harness may load."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("edgekd", "numpy", "torch", "onnxruntime", "ai-edge-litert", "executorch",
                 "coremltools"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(threads) for k in THREAD_ENV})
    env["PYTHONWARNINGS"] = "ignore"
    return env


def measure_isolated(entry: ManifestEntry, root: Path, threads: int,
                     settings: LatencySettings, image_path: Path | None = None) -> dict[str, Any]:
    """Run ``measure`` in a fresh Python process; returns its JSON (``status`` says how it went)."""
    from kd_core.io import dumps_json

    cmd = [sys.executable, "-m", "benchmarks.latency", "--entry",
           dumps_json(entry.to_dict(), indent=None),
           "--root", str(root), "--threads", str(threads), "--runs", str(settings.runs),
           "--warmup", str(settings.warmup), "--min-seconds", str(settings.min_seconds),
           "--warmup-seconds", str(settings.warmup_seconds)]
    if image_path is not None:
        cmd += ["--input", str(image_path)]
    return run_child(cmd, threads, settings.timeout_s, "latency")


def run_child(cmd: list[str], threads: int, timeout_s: float, what: str, mark: str = MARK
              ) -> dict[str, Any]:
    """Run a timing child with its thread pools pinned to ``threads``; its result is the JSON
    after ``mark`` on the last such line of its stdout (``status`` says how it went)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads),
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"error: {what} run timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(mark):
            return dict(json.loads(line[len(mark):]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"status": f"error: {what} process exited {proc.returncode}: {' | '.join(tail)}"}


def time_entry(entry: ManifestEntry, root: Path, threads: tuple[int, ...],
               settings: LatencySettings, image: Path | None = None) -> dict[str, Any]:
    """Row fields (latency by thread count, load_ms, peak_memory_mb, latency_error) from one
    fresh process per thread count; load time from the first count's (cold) process."""
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms", "runs",
            "first_ms", "warmup")
    latency, loads, peaks, errors = {}, [], [], []
    for t in threads:
        got = measure_isolated(entry, root, t, settings, image)
        if got.get("status") != "ok":
            errors.append(f"{t} thread(s): {got.get('status')}")
            continue
        latency[str(t)] = {k: got[k] for k in keys}
        loads.append(got["load_ms"])
        peaks.append(got["peak_memory_mb"])
    out: dict[str, Any] = {"latency": latency, "load_ms": loads[0] if loads else None,
                           "peak_memory_mb": max(peaks) if peaks else None}
    if errors:
        out["latency_error"] = "; ".join(errors)
    return out


def _image(path: Path | None, entry: ManifestEntry) -> np.ndarray:
    if path is not None:
        return np.load(path, allow_pickle=False).astype(np.float32)
    size = entry.preprocessing.size
    return np.random.default_rng(0).standard_normal((3, size, size)).astype(np.float32)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.latency",
                   "Time one model in this process (one JSON line); the harness's child.")
    p.add_argument("--entry", required=True, help="manifest entry as JSON")
    p.add_argument("--root", type=Path, required=True, help="folder the entry's path is under")
    p.add_argument("--threads", type=int, default=1, help="runtime threads")
    p.add_argument("--runs", type=int, default=LatencySettings.runs, help="timed runs")
    p.add_argument("--warmup", type=int, default=LatencySettings.warmup,
                   help="discarded runs")
    p.add_argument("--min-seconds", type=float, default=LatencySettings.min_seconds,
                   help="time runs until at least this long, past --runs")
    p.add_argument("--warmup-seconds", type=float, default=LatencySettings.warmup_seconds,
                   help="warm up until at least this long, past --warmup")
    p.add_argument("--input", type=Path, default=None,
                   help=".npy of one normalized 3 x H x W image (default: seeded noise)")
    return p


def _main(args: argparse.Namespace) -> int:
    from benchmarks.inputs import BenchInputError, check_counts
    from kd_core.deploy import ManifestEntry
    from kd_core.io import loads_json
    from runtimes import RuntimeUnavailable

    check_counts(threads=(args.threads, 1), runs=(args.runs, 1), warmup=(args.warmup, 0))
    for flag, value in (("--min-seconds", args.min_seconds),
                        ("--warmup-seconds", args.warmup_seconds)):
        if not 0 <= value <= 60:  # NaN fails too
            raise BenchInputError(f"{flag} must be from 0 to 60 seconds, got {value}")
    try:
        entry = ManifestEntry.from_dict(loads_json(args.entry), "--entry")
    except ValueError as exc:
        raise BenchInputError(f"--entry: {exc}") from None
    settings = LatencySettings(runs=args.runs, warmup=args.warmup, min_seconds=args.min_seconds,
                               warmup_seconds=args.warmup_seconds)
    code = cli.EXIT_OK
    try:
        out = measure(entry, args.root, args.threads, settings, _image(args.input, entry))
    except RuntimeUnavailable as exc:
        out = {"status": str(exc)}
    except Exception as exc:
        out, code = {"status": f"error: {type(exc).__name__}: {exc}"}, cli.EXIT_FAILED
    print(MARK + json.dumps(out), flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
