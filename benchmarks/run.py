"""``python -m benchmarks.run``: score every artefact in its real runtime against the float
teacher and student, time it, and gate it on parity with the float student.

    python -m benchmarks.run --artifacts DIR --teacher-ckpt T.pth --student-ckpt S.pth \\
        --data-dir D [--split holdout] [--threads 1,N] [--out R]

Writes ``R/results.json`` (meta, rows, gate), ``R/results.csv``, ``R/results.md``,
``R/predictions.npz`` (labels and every model's logits), ``R/config.json`` and ``R/plots/``, and
records the gate's verdict on each artefact in ``DIR/gate.json``. The library behind it is
``benchmarks.harness`` (``run_benchmarks(cfg) -> Results``, re-exported here).
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.harness import BenchConfig, Results, run_benchmarks
from benchmarks.inputs import csv_list, thread_list
from kd_core import cli
from kd_core.parity import add_tolerance_arguments, tolerances_from_args

EPILOG = ("Exit 1: the gate refused an artefact (FAIL <name>: <metric> ... on stderr), an "
          "artefact failed to run or differs from the manifest's sha256, or no artefact was "
          "checked. --no-gate reports violations and exits 0.")

__all__ = ["BenchConfig", "Results", "build_parser", "main", "run_benchmarks"]


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig("", "", "")
    p = cli.parser("python -m benchmarks.run", (__doc__ or "").split("\n\n")[0], EPILOG)
    p.add_argument("--artifacts", required=True, metavar="DIR", help="export folder (manifest)")
    p.add_argument("--student-ckpt", required=True, metavar="S.pth", help="float student")
    p.add_argument("--teacher-ckpt", metavar="T.pth", help="float teacher (optional)")
    p.add_argument("--data-dir", required=True, metavar="D",
                   help="the data the student was trained on: HAM10000 folder, image folder "
                   "(<class>/*.jpg) or CSV file (splits prepared or reused), or a prepared "
                   "folder")
    p.add_argument("--prepared-dir", metavar="P", help="where the splits are prepared "
                   "(default: the user cache, see kd_core.data.sources)")
    p.add_argument("--split", default=d.split, choices=("train", "val", "holdout"),
                   help="split scored")
    p.add_argument("--threads", type=thread_list, default=",".join(map(str, d.threads)),
                   help="thread counts to time (1 and the CPU count here)")
    p.add_argument("--runs", type=int, default=d.runs, help="timed runs per thread count")
    p.add_argument("--warmup", type=int, default=d.warmup, help="discarded warm-up runs")
    p.add_argument("--no-latency", action="store_true", help="accuracy only")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N images")
    p.add_argument("--formats", type=csv_list, metavar="F,F",
                   help="formats to score (default: every artefact in the manifest)")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="ROC-AUC CI resamples")
    p.add_argument("--seed", type=int, default=d.seed, help="bootstrap seed")
    p.add_argument("--out", default=d.out, metavar="R", help="results folder")
    add_tolerance_arguments(p)
    p.add_argument("--no-gate", action="store_true", help="report violations, exit 0")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    tol = tolerances_from_args(args)
    return BenchConfig(
        artifacts=args.artifacts, student_ckpt=args.student_ckpt, data_dir=args.data_dir,
        teacher_ckpt=args.teacher_ckpt, prepared_dir=args.prepared_dir, split=args.split,
        threads=args.threads, runs=args.runs, warmup=args.warmup, latency=not args.no_latency,
        limit=args.limit, formats=args.formats, bootstrap=args.bootstrap, seed=args.seed,
        out=args.out, tolerances=tol, gate=not args.no_gate)


def _main(args: argparse.Namespace) -> int:
    from benchmarks.outputs import save_results
    from benchmarks.report import gate_lines, summary_table

    cfg = config_from_args(args)
    results = run_benchmarks(cfg)
    path = save_results(results, cfg)
    print(summary_table(results.to_json()))
    for warning in results.meta.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"\nresults: {path}")
    gate = None if results.gate is None else results.gate.to_dict()
    print("\n".join(gate_lines(gate)), file=sys.stdout if results.passed else sys.stderr)
    return cli.EXIT_FAILED if cfg.gate and not results.passed else cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
