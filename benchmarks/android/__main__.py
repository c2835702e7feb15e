"""CLI: ``python -m benchmarks.android`` (timing) and ``python -m benchmarks.android parity``."""

from __future__ import annotations

import argparse
import sys

from benchmarks.android import parity
from benchmarks.android.results import merge_results
from benchmarks.android.run import AndroidBenchConfig, AndroidRun, run_android_benchmarks
from benchmarks.inputs import thread_list
from kd_core import cli

DESCRIPTION = """\
Time exported models on an Android phone over adb with the official tools (LiteRT benchmark_model
for .tflite, ExecuTorch executor_runner for .pte) and add phone rows to R/results.json.
Files go to /data/local/tmp/edgekd on the phone and are removed afterwards.
Run `python -m benchmarks.android parity --help` for the on-device accuracy-parity check."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifacts", required=True, metavar="DIR",
                   help="export folder with its manifest (or bare .tflite/.pte files)")
    p.add_argument("--serial", metavar="S", help="device serial from `adb devices` "
                   "(default: $ANDROID_SERIAL, else the only attached device)")
    p.add_argument("--adb", metavar="PATH", help="adb executable (default: adb on PATH)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds allowed for one run on the phone")
    p.add_argument("--out", metavar="R", help="results folder: phone rows are merged into "
                   "R/results.json (host rows kept), or a new one is written")


def bench_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.android", DESCRIPTION,
                   "Exit 1: adb or the phone failed, or a run printed no usable timing.")
    _common(p)
    p.add_argument("--tflite-benchmark", metavar="PATH",
                   help="Android build of LiteRT benchmark_model (android_aarch64_benchmark_model)")
    p.add_argument("--executorch-runner", metavar="PATH",
                   help="Android build of ExecuTorch executor_runner (times each .pte)")
    d = AndroidBenchConfig("")
    p.add_argument("--threads", type=thread_list, default=",".join(map(str, d.threads)),
                   metavar="1,4",
                   help="thread counts to time, comma-separated")
    p.add_argument("--runs", type=int, default=d.runs, help="timed runs per model")
    p.add_argument("--warmup", type=int, default=d.warmup,
                   help="warm-up runs for benchmark_model")
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
    return cli.EXIT_FAILED if run.errors else cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parity"]:  # its own CLI, with the same conventions
        return parity.main(argv[1:])
    args = bench_parser().parse_args(argv)
    cli.setup_logging()
    return cli.run(lambda: bench_main(args))


if __name__ == "__main__":
    sys.exit(main())
