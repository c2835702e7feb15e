"""CLI: ``python -m benchmarks.android`` (timing) and ``python -m benchmarks.android parity``."""

from __future__ import annotations

import argparse
import sys

from benchmarks.android import parity
from benchmarks.android.adb import AdbError, BinaryError
from benchmarks.android.parsers import ParseError
from benchmarks.android.results import ResultsError, merge_results
from benchmarks.android.run import (
    AndroidBenchConfig,
    AndroidRun,
    BenchError,
    run_android_benchmarks,
)

EXPECTED = (AdbError, BinaryError, BenchError, ParseError, ResultsError)

DESCRIPTION = """\
Time exported models on an Android phone over adb with the official tools (LiteRT benchmark_model
for .tflite, ExecuTorch executor_runner for .pte) and add phone rows to R/results.json.
Files go to /data/local/tmp/edgekd on the phone and are removed afterwards.
Run `python -m benchmarks.android parity --help` for the on-device accuracy-parity check."""


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifacts", required=True, metavar="DIR",
                   help="export folder holding manifest.json (or bare .tflite/.pte files)")
    p.add_argument("--serial", metavar="S", help="device serial from `adb devices` "
                   "(default: $ANDROID_SERIAL, else the only attached device)")
    p.add_argument("--adb", metavar="PATH", help="adb executable (default: adb on PATH)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds allowed for one run on the phone (default 600)")
    p.add_argument("--out", metavar="R", help="results folder: phone rows are merged into "
                   "R/results.json (host rows kept), or a new one is written")


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.android", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--tflite-benchmark", metavar="PATH",
                   help="Android build of LiteRT benchmark_model (android_aarch64_benchmark_model)")
    p.add_argument("--executorch-runner", metavar="PATH",
                   help="Android build of ExecuTorch executor_runner (times each .pte)")
    p.add_argument("--threads", type=_threads, default=(1, 4), metavar="1,4",
                   help="thread counts to time, comma-separated (default 1,4)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=int, default=5,
                   help="warm-up runs for benchmark_model (default 5)")
    p.add_argument("--taskset", metavar="MASK",
                   help="pin the tool to CPUs with `taskset MASK` (for example f0: big cores)")
    return p


def print_run(run: AndroidRun) -> None:
    print(f"device: {run.device.describe()}  thermal: {run.device.thermal or 'n/a'}")
    for row in run.rows:
        for threads, lat in row["latency"].items():
            mean = lat["mean_ms"]
            p50 = "-" if lat["p50_ms"] is None else f"{lat['p50_ms']:.2f}"
            print(f"  {row['name']:<40} {row['runtime']:<28} threads={threads:<3} "
                  f"mean={mean:.2f} ms p50={p50} runs={lat['runs']}")
        if not row["latency"]:
            print(f"  {row['name']:<40} {row['runtime']:<28} FAILED")


def bench_main(args: argparse.Namespace) -> int:
    cfg = AndroidBenchConfig(
        artifacts=args.artifacts, tflite_benchmark=args.tflite_benchmark,
        executorch_runner=args.executorch_runner, serial=args.serial, adb=args.adb,
        threads=args.threads, runs=args.runs, warmup=args.warmup, out=args.out,
        timeout_s=args.timeout, taskset=args.taskset)
    run = run_android_benchmarks(cfg)
    print_run(run)
    if cfg.out:
        path = merge_results(cfg.out, list(run.rows), run.meta)
        print(f"wrote {len(run.rows)} phone row(s) to {path}")
    for error in run.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if run.errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["parity"]:  # its own CLI: kd_core.cli conventions (exit 2 bad input)
            return parity.main(argv[1:])
        return bench_main(bench_parser().parse_args(argv))
    except EXPECTED as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
