"""CLI: ``python -m benchmarks.android`` (timing) and ``python -m benchmarks.android parity``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.android.adb import find_adb, read_device_info, select_device
from benchmarks.android.parity import (
    ParityConfig,
    ParityError,
    compare_logits,
    run_device_parity,
    score_logits,
)
from benchmarks.android.results import attach_accuracy, merge_results
from benchmarks.android.run import (
    AndroidBenchConfig,
    AndroidRun,
    BenchError,
    load_artifacts,
    run_android_benchmarks,
)
from benchmarks.inputs import thread_list
from kd_core import cli
from kd_core.io import atomic_path, check_output_dir, dumps_json, write_json

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


def parity_parser() -> argparse.ArgumentParser:
    d = ParityConfig()
    p = cli.parser(
        "python -m benchmarks.android parity",
        "Run preprocessed images through a model on the phone (the demo app's ParityTest), "
        "pull the outputs back and score them on the host.")
    _common(p)
    p.add_argument("--artifact", metavar="NAME",
                   help="artefact name from the manifest (default: the only .tflite one)")
    p.add_argument("--inputs", required=True, metavar="X.npy",
                   help="float32 N x 3 x H x W preprocessed images (kd_core preprocessing)")
    p.add_argument("--labels", metavar="Y.npy", help="N class indices: adds AUC and decisions")
    p.add_argument("--host-logits", metavar="H.npy", help="N x C host logits to compare with")
    p.add_argument("--instrumentation", default=d.instrumentation, help="test package/runner")
    p.add_argument("--device-outputs", default=d.device_outputs, metavar="PATH",
                   help="where the app writes its outputs")
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


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: cannot read .npy ({exc})") from None


def _pick_artifact(folder: str, name: str | None) -> dict[str, Any]:
    entries = load_artifacts(folder)
    if name:
        hits = [e for e in entries if e.get("name") == name]
        if not hits:
            raise BenchError(f"{folder}: no artefact named {name!r} "
                             f"(have: {', '.join(str(e.get('name')) for e in entries)})")
        return hits[0]
    tflite = [e for e in entries if e.get("format") == "tflite"]
    if len(tflite) != 1:
        raise BenchError(f"{folder}: {len(tflite)} .tflite artefacts; pick one with --artifact")
    return tflite[0]


def parity_main(args: argparse.Namespace) -> int:
    if args.out:
        check_output_dir(args.out, "--out")
    artifact = _pick_artifact(args.artifacts, args.artifact)
    x = _load_npy(args.inputs)
    cfg = ParityConfig(instrumentation=args.instrumentation, device_outputs=args.device_outputs,
                       timeout_s=args.timeout)
    adb = select_device(find_adb(args.adb), args.serial, args.timeout)
    device = read_device_info(adb).describe()
    outputs = run_device_parity(adb, artifact, Path(args.artifacts) / artifact["path"], x, cfg)
    kind = str((artifact.get("output") or {}).get("kind", "logits"))
    common: dict[str, Any] = {"temperature": float(artifact.get("temperature", 1.0)),
                              "positive_index": int(artifact.get("positive_index", 1)),
                              "threshold": artifact.get("threshold")}
    report: dict[str, Any] = {"artifact": artifact.get("name"), "device": device,
                              "n": int(outputs.shape[0]), "output_kind": kind}
    if args.labels:
        report["accuracy"] = score_logits(outputs, _load_npy(args.labels), kind=kind, **common)
    if args.host_logits:
        report["vs_host"] = compare_logits(outputs, _load_npy(args.host_logits), **common)
    print(dumps_json(report), end="")
    if args.out:
        out, name = Path(args.out), str(artifact.get("name"))
        write_json(out / f"android_parity_{name}.json", report)
        with atomic_path(out / f"android_outputs_{name}.npy") as tmp, tmp.open("wb") as fh:
            np.save(fh, outputs)
        if "accuracy" in report:
            attach_accuracy(out, name, device, report["accuracy"])
    return cli.EXIT_OK


def _body(argv: list[str]) -> int:
    """The subcommand; a ParityError that is not bad input means the phone step failed."""
    try:
        if argv[:1] == ["parity"]:
            return parity_main(parity_parser().parse_args(argv[1:]))
        return bench_main(bench_parser().parse_args(argv))
    except ParityError as exc:
        if isinstance(exc, cli.BadInput):
            raise
        raise cli.JobFailed(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli.setup_logging()
    return cli.run(lambda: _body(argv))


if __name__ == "__main__":
    sys.exit(main())
