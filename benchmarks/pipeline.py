"""The main job: data -> teacher -> KD student -> calibration -> export -> benchmark -> report.

    python -m benchmarks.pipeline [--data-dir D] [--out RUN] [--profile quick|full] [--force]

Without ``--data-dir`` it first writes the embedded synthetic dataset (no download). Every
argument is checked before any stage runs. Every stage records what it was built from and the
sha256 of what it wrote in ``RUN/stages/<stage>.json``; a stage whose inputs are unchanged and
whose outputs are intact (the export: every artefact as its manifest says) is skipped, so an
interrupted run picks up where it stopped (training itself resumes from its last finished
epoch). ``--force`` redoes every stage. Everything lands in one run folder: ``RUN/report.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.inputs import csv_list, thread_list
from exporters.calibration_data import DEFAULT_SAMPLES
from kd_core import cli


@dataclass(frozen=True)
class Profile:
    """Settings of one pipeline profile; every field can be overridden on the command line."""

    image_size: int
    teacher: str
    student: str
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    patience: int
    synth_images: int
    synth_size: int
    calib_samples: int
    bench_runs: int
    bench_limit: int | None  # holdout images scored (None: all)
    pretrained: str = "none"
    qat_steps: int = 0  # the INT8 repair ladder's opt-in QAT rung (exporters.all --qat-steps)


PROFILES = {
    # A 2-core CPU, under 10 minutes on the synthetic data.
    "quick": Profile(image_size=64, teacher="resnet18", student="mobilenet_v3_small",
                     teacher_epochs=6, student_epochs=8, batch_size=64, patience=10,
                     synth_images=2000, synth_size=128, calib_samples=DEFAULT_SAMPLES,
                     bench_runs=50,
                     bench_limit=None),
    # The seed project's settings for real HAM10000 on a GPU.
    "full": Profile(image_size=224, teacher="resnet34", student="mobilenet_v3_small",
                    teacher_epochs=50, student_epochs=50, batch_size=128, patience=10,
                    synth_images=2000, synth_size=128, calib_samples=DEFAULT_SAMPLES,
                    bench_runs=100,
                    bench_limit=None),
}
STAGES = ("data", "teacher", "student", "export", "benchmark", "report")
FORMATS = "tflite,executorch,coreml,onnx"
MINIMUMS = {"image_size": 1, "teacher_epochs": 1, "student_epochs": 1, "batch_size": 1,
            "patience": 0, "synth_images": 50, "synth_size": 16, "calib_samples": 1,
            "bench_runs": 1, "bench_limit": 2, "qat_steps": 0}


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.pipeline", __doc__,
                   "Exit 1: a stage failed or the parity gate refused an artefact.")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="HAM10000 folder or prepared split folder (default: the embedded "
                        "synthetic dataset)")
    p.add_argument("--out", type=Path, default=Path("runs/main"), help="run folder")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                   help="quick: 2-core CPU, minutes; full: the seed settings on a GPU")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--seed", type=int, default=42, help="seed of every stage")
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda, cuda:N")
    p.add_argument("--formats", type=csv_list, default=FORMATS,
                   help="export formats, comma-separated")
    p.add_argument("--threads", type=thread_list, default=None,
                   help="latency thread counts (default: 1 and the CPU count here)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    for name in (*MINIMUMS, "teacher", "student", "pretrained"):
        values = ", ".join(f"{k}: {getattr(v, name)}" for k, v in PROFILES.items())
        p.add_argument(f"--{name.replace('_', '-')}", type=int if name in MINIMUMS else str,
                       default=None, help=f"override the profile's value ({values})")
    return p


def resolve_profile(args: argparse.Namespace) -> Profile:
    base = PROFILES[args.profile]
    overrides = {k: getattr(args, k) for k in asdict(base) if getattr(args, k, None) is not None}
    return replace(base, **overrides)


def validate(args: argparse.Namespace, p: Profile) -> None:
    """Every argument, before any stage runs: a typo fails in a second, not after training."""
    from benchmarks.inputs import check_counts, check_known, check_threads
    from benchmarks.pipeline_stages import PRECISIONS, train_config
    from exporters.run import check_formats
    from kd_core.config import check_training
    from kd_core.data.sources import data_kind
    from kd_core.io import check_output_dir
    from kd_core.models import list_models
    from kd_core.runtime import check_device

    check_counts(**{k: (getattr(p, k), low) for k, low in MINIMUMS.items()})
    check_formats(args.formats, PRECISIONS)
    check_known("--teacher", (p.teacher,), list_models())
    check_known("--student", (p.student,), list_models())
    if args.threads is not None:
        check_threads(args.threads)
    if p.pretrained not in ("none", "imagenet") and not Path(p.pretrained).is_file():
        raise cli.BadInput(f"--pretrained {p.pretrained}: neither none, imagenet nor a file")
    if args.data_dir is not None and data_kind(args.data_dir) is None:
        raise cli.BadInput(f"--data-dir {args.data_dir}: not a HAM10000 folder "
                           "(HAM10000_metadata.csv), an image folder (<class>/*.jpg), a CSV "
                           "file (path,label[,group]) or a prepared split folder")
    for role in ("teacher", "student"):  # the trainer's own rules, on the configs it will get
        check_training(train_config(role, p, args, args.out, args.out), role)
    check_device(args.device)
    check_output_dir(args.out, "--out")


def run_all(args: argparse.Namespace, p: Profile, run_dir: Path) -> tuple[list[dict[str, Any]],
                                                                        bool]:
    """Every stage in order; (stage records, whether the parity gate passed)."""
    from benchmarks import pipeline_stages as st

    records: list[dict[str, Any]] = []
    data_dir, prepared = st.stage_data(args, p, run_dir, records)
    teacher = st.stage_train("teacher", st.train_config("teacher", p, args, data_dir, prepared),
                             run_dir, None, args.force, records)
    student = st.stage_train("student", st.train_config("student", p, args, data_dir, prepared),
                             run_dir, teacher, args.force, records)
    export = st.stage_export(student, prepared, p, args, run_dir, records)
    passed = st.stage_benchmark(teacher, student, export, data_dir, prepared, p, args, run_dir,
                                records)
    return records, passed


def _main(args: argparse.Namespace) -> int:
    from benchmarks.pipeline_stages import write_run_report
    from kd_core.config import save_config
    from kd_core.io import write_json

    p = resolve_profile(args)
    validate(args, p)
    run_dir = args.out.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(p, run_dir / "pipeline_profile.json")
    write_json(run_dir / "pipeline_args.json", {k: str(v) for k, v in vars(args).items()})
    print(f"EdgeKD pipeline, profile {args.profile}, run folder {run_dir}", flush=True)
    start = time.perf_counter()
    records, passed = run_all(args, p, run_dir)
    print(f"[report] {write_run_report(run_dir, records, run_dir / 'benchmark')}")
    print(f"pipeline finished in {time.perf_counter() - start:.0f} s"
          + ("" if passed else "; the parity gate FAILED for at least one artefact"))
    return cli.EXIT_OK if passed else cli.EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
