"""The main job: data -> teacher -> KD student -> calibration -> export -> benchmark -> report.

    python -m benchmarks.pipeline [--data-dir D] [--out RUN] [--profile quick|full] [--force]

Without ``--data-dir`` it first writes the embedded synthetic dataset (no download). Every stage
records what it was built from in ``RUN/stages/<stage>.json``; a stage whose inputs are unchanged
and whose outputs are complete is skipped, so an interrupted run picks up where it stopped
(training itself resumes from its last finished epoch). ``--force`` redoes every stage.
Everything lands in one run folder: ``RUN/report.md`` is the entry point.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kd_core.config import (
    Config,
    DataConfig,
    KDConfig,
    StudentConfig,
    TeacherConfig,
    TrainingConfig,
    save_config,
    to_dict,
)
from kd_core.io import atomic_write_text, sha256_file


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


PROFILES = {
    # A 2-core CPU, under 10 minutes on the synthetic data.
    "quick": Profile(image_size=64, teacher="resnet18", student="mobilenet_v3_small",
                     teacher_epochs=6, student_epochs=8, batch_size=64, patience=10,
                     synth_images=2000, synth_size=128, calib_samples=512, bench_runs=50,
                     bench_limit=None),
    # The seed project's settings for real HAM10000 on a GPU.
    "full": Profile(image_size=224, teacher="resnet34", student="mobilenet_v3_small",
                    teacher_epochs=50, student_epochs=50, batch_size=128, patience=10,
                    synth_images=2000, synth_size=128, calib_samples=512, bench_runs=100,
                    bench_limit=None),
}
STAGES = ("data", "teacher", "student", "export", "benchmark", "report")


class Stage:
    """Skip-if-done bookkeeping: a stage is done when its record matches its inputs and every
    output it listed still exists."""

    def __init__(self, run_dir: Path, name: str, inputs: dict[str, Any], force: bool) -> None:
        self.record_path = run_dir / "stages" / f"{name}.json"
        self.name, self.inputs, self.force = name, inputs, force
        self.key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()
                                  ).hexdigest()

    def done(self) -> dict[str, Any] | None:
        if self.force or not self.record_path.is_file():
            return None
        try:
            record = json.loads(self.record_path.read_text())
        except json.JSONDecodeError:
            return None
        outputs = [Path(p) for p in record.get("outputs", [])]
        if record.get("key") != self.key or not all(p.exists() for p in outputs):
            return None
        return dict(record)

    def finish(self, outputs: list[Path], seconds: float, summary: str) -> dict[str, Any]:
        record = {"stage": self.name, "key": self.key, "inputs": self.inputs,
                  "outputs": [str(p) for p in outputs], "seconds": round(seconds, 1),
                  "summary": summary}
        atomic_write_text(self.record_path, json.dumps(record, indent=2, default=str) + "\n")
        return record


def run_stage(run_dir: Path, name: str, inputs: dict[str, Any], force: bool,
              body: Callable[[], tuple[list[Path], str]], log: list[dict[str, Any]]) -> None:
    stage = Stage(run_dir, name, inputs, force)
    previous = stage.done()
    if previous is not None:
        print(f"[{name}] up to date, skipped ({previous['summary']})")
        log.append({**previous, "skipped": True})
        return
    print(f"[{name}] running ...", flush=True)
    start = time.perf_counter()
    outputs, summary = body()
    record = stage.finish(outputs, time.perf_counter() - start, summary)
    print(f"[{name}] done in {record['seconds']:.0f} s: {summary}", flush=True)
    log.append({**record, "skipped": False})


def file_key(path: Path) -> str:
    return sha256_file(path) if path.exists() else "missing"


def _holdout_line(metrics_path: Path) -> str:
    m = json.loads(metrics_path.read_text())
    h = m["holdout"]
    return (f"holdout ROC-AUC {h['roc_auc']:.3f}, ECE {m['holdout_uncalibrated']['ece']:.3f} -> "
            f"{h['ece']:.3f}, sens {h['sensitivity']:.2f} / spec {h['specificity']:.2f}")


def metadata_file(data_dir: Path) -> str:  # clinical (#17): the Dataverse release has sites
    dataverse = "HAM10000_metadata_dataverse.csv"
    return dataverse if (data_dir / dataverse).is_file() else "HAM10000_metadata.csv"


def train_config(role: str, p: Profile, args: argparse.Namespace, data_dir: Path,
                 prepared: Path) -> Config:
    data = DataConfig(data_dir=str(data_dir), prepared_dir=str(prepared),
                      metadata=metadata_file(data_dir),  # clinical (#17)
                      image_size=p.image_size, seed=args.seed)
    training = TrainingConfig(epochs=p.teacher_epochs if role == "teacher" else p.student_epochs,
                              batch_size=p.batch_size, patience=p.patience, device=args.device,
                              seed=args.seed)
    if role == "teacher":
        return Config(data=data, training=training,
                      teacher=TeacherConfig(architecture=p.teacher, pretrained=p.pretrained))
    return Config(data=data, training=training, kd=KDConfig(temperature=2.0, alpha=0.5),
                  student=StudentConfig(architecture=p.student, pretrained=p.pretrained))


def stage_data(args: argparse.Namespace, p: Profile, run_dir: Path, log: list[dict[str, Any]]
               ) -> tuple[Path, Path]:
    from kd_core.data.ham10000 import prepare
    from kd_core.data.synthetic import generate

    data_dir = Path(args.data_dir).resolve() if args.data_dir else run_dir / "data" / "synthetic"
    prepared = run_dir / "data" / "prepared"
    inputs = {"data_dir": str(data_dir), "synthetic": args.data_dir is None, "seed": args.seed,
              "synth_images": p.synth_images, "synth_size": p.synth_size,
              "metadata": metadata_file(data_dir)}  # clinical (#17)

    def body() -> tuple[list[Path], str]:
        if args.data_dir is None:
            generate(data_dir, n_images=p.synth_images, size=p.synth_size, seed=args.seed)
        prepare(data_dir, prepared, seed=args.seed, force=args.force,
                metadata=metadata_file(data_dir))  # clinical (#17)
        c = json.loads((prepared / "split_metadata.json").read_text())["counts"]
        return [prepared / "split_metadata.json"], (
            f"{'synthetic' if args.data_dir is None else data_dir.name}: "
            + ", ".join(f"{s} {c[s]['images']} ({100 * c[s]['prevalence']:.1f}% mel)"
                        for s in ("train", "val", "holdout")))

    run_stage(run_dir, "data", inputs, args.force, body, log)
    return data_dir, prepared


def stage_train(role: str, cfg: Config, run_dir: Path, upstream: Path | None, force: bool,
                log: list[dict[str, Any]]) -> Path:
    from kd_core.train import run

    out = run_dir / role
    inputs = {"config": to_dict(cfg), "upstream": file_key(upstream) if upstream else None,
              "split": file_key(Path(str(cfg.data.prepared_dir)) / "split_metadata.json")}

    def body() -> tuple[list[Path], str]:
        best = run(role, cfg, out, upstream, force=force)
        return [best, out / "metrics.json"], _holdout_line(out / "metrics.json")

    run_stage(run_dir, role, inputs, force, body, log)
    return out / "best.pth"


def stage_export(student: Path, prepared: Path, p: Profile, args: argparse.Namespace,
                 run_dir: Path, log: list[dict[str, Any]]) -> Path:
    from exporters.all import main as export_main

    out = run_dir / "export"
    inputs = {"student": file_key(student), "calib_samples": p.calib_samples, "seed": args.seed,
              "formats": args.formats}

    def body() -> tuple[list[Path], str]:
        rc = export_main([str(student), "--out", str(out), "--calib-data", str(prepared),
                          "--calib-samples", str(p.calib_samples), "--seed", str(args.seed),
                          "--formats", args.formats])
        manifest = json.loads((out / "manifest.json").read_text())
        names = [a["name"] for a in manifest["artifacts"]]
        if rc != 0:
            raise PipelineError(f"export failed (exit {rc}); see the summary above; "
                                f"written: {', '.join(names) or 'none'}")
        return [out / "manifest.json"], f"{len(names)} artefacts in {out}"

    run_stage(run_dir, "export", inputs, args.force, body, log)
    return out


def stage_benchmark(teacher: Path, student: Path, export: Path, data_dir: Path, prepared: Path,
                    p: Profile, args: argparse.Namespace, run_dir: Path,
                    log: list[dict[str, Any]]) -> tuple[Path, int]:
    from benchmarks.run import main as bench_main

    out = run_dir / "benchmark"
    inputs = {"teacher": file_key(teacher), "student": file_key(student),
              "manifest": file_key(export / "manifest.json"), "runs": p.bench_runs,
              "limit": p.bench_limit, "threads": args.threads}
    status = {"rc": 0}

    def body() -> tuple[list[Path], str]:
        argv = ["--artifacts", str(export), "--teacher-ckpt", str(teacher), "--student-ckpt",
                str(student), "--data-dir", str(data_dir), "--prepared-dir", str(prepared),
                "--threads", args.threads, "--runs", str(p.bench_runs), "--out", str(out)]
        if p.bench_limit:
            argv += ["--limit", str(p.bench_limit)]
        status["rc"] = bench_main(argv)
        verdict = "parity gate passed" if status["rc"] == 0 else "PARITY GATE FAILED"
        return [out / "results.json"], f"{verdict}; {out / 'results.md'}"

    run_stage(run_dir, "benchmark", inputs, args.force, body, log)
    if log[-1].get("skipped"):
        status["rc"] = 0 if "passed" in log[-1]["summary"] else 1
    return out, status["rc"]


class PipelineError(RuntimeError):
    """A stage failed; the message says which and why."""


def write_report(run_dir: Path, log: list[dict[str, Any]], bench_dir: Path) -> Path:
    """RUN/report.md: stage timings, training metrics, the deployment table, the plots."""
    lines = ["# EdgeKD run report", "", f"Run folder: `{run_dir}`", "", "## Stages", "",
             "| stage | status | seconds | summary |", "|---|---|---|---|"]
    for rec in log:
        status = "skipped (up to date)" if rec.get("skipped") else "ran"
        lines.append(f"| {rec['stage']} | {status} | {rec['seconds']:.0f} | {rec['summary']} |")
    lines += ["", "## Training (holdout, threshold and temperature fitted on validation)", "",
              "| model | arch | ROC-AUC [95% CI] | PR-AUC | ECE raw -> calibrated | T | "
              "threshold | sensitivity | specificity | best epoch |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for role in ("teacher", "student"):
        mpath = run_dir / role / "metrics.json"
        if not mpath.is_file():
            continue
        m = json.loads(mpath.read_text())
        h = m["holdout"]
        arch = json.loads((run_dir / role / "config.json").read_text())[role]["architecture"]
        lines.append(
            f"| {role} | {arch} | {h['roc_auc']:.4f} [{h['roc_auc_ci_low']:.3f}, "
            f"{h['roc_auc_ci_high']:.3f}] | {h['pr_auc']:.4f} | "
            f"{m['holdout_uncalibrated']['ece']:.4f} -> {h['ece']:.4f} | "
            f"{m['temperature']:.3f} | {m['threshold']:.4f} | {h['sensitivity']:.3f} | "
            f"{h['specificity']:.3f} | {m['best_epoch']} |")
    results_md = bench_dir / "results.md"
    if results_md.is_file():  # the harness's report, one heading level down
        body = results_md.read_text().strip().removeprefix("# Benchmark results").strip()
        lines += ["", "## Benchmark (holdout)", "", body.replace("## ", "### ")]
    if (run_dir / "MODEL_CARD.md").is_file():  # clinical (#17): written by the harness
        lines += ["", "Model card: [MODEL_CARD.md](MODEL_CARD.md)"]
    lines += ["", "## Plots", ""]
    for png in sorted(run_dir.glob("*/plots/*.png")):
        rel = png.relative_to(run_dir).as_posix()
        lines.append(f"![{rel}]({rel})")
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="HAM10000-layout folder (default: the embedded synthetic dataset)")
    p.add_argument("--out", type=Path, default=Path("runs/main"), help="run folder")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                   help="quick: 2-core CPU, minutes; full: the seed settings on a GPU")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--formats", default="tflite,executorch,coreml,onnx")
    p.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                   help="latency thread counts (default: %(default)s)")
    for field in ("image_size", "teacher_epochs", "student_epochs", "batch_size",
                  "calib_samples", "bench_runs", "bench_limit", "synth_images"):
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=None,
                       help="override the profile's value")
    for field in ("teacher", "student", "pretrained"):
        p.add_argument(f"--{field}", default=None, help="override the profile's value")
    return p


def resolve_profile(args: argparse.Namespace) -> Profile:
    base = PROFILES[args.profile]
    overrides = {k: getattr(args, k) for k in asdict(base) if getattr(args, k, None) is not None}
    return replace(base, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    p = resolve_profile(args)
    run_dir = args.out.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(p, run_dir / "pipeline_profile.json")
    atomic_write_text(run_dir / "pipeline_args.json",
                      json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2) + "\n")
    print(f"EdgeKD pipeline, profile {args.profile}, run folder {run_dir}")
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        data_dir, prepared = stage_data(args, p, run_dir, log)
        teacher = stage_train("teacher", train_config("teacher", p, args, data_dir, prepared),
                              run_dir, None, args.force, log)
        student = stage_train("student", train_config("student", p, args, data_dir, prepared),
                              run_dir, teacher, args.force, log)
        export = stage_export(student, prepared, p, args, run_dir, log)
        bench_dir, gate_rc = stage_benchmark(teacher, student, export, data_dir, prepared, p,
                                             args, run_dir, log)
    except Exception as exc:  # report which stage broke, keep finished stages
        from kd_core.checkpoint import CheckpointError
        from kd_core.data.ham10000 import DataError

        if not isinstance(exc, PipelineError | DataError | CheckpointError | ValueError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = write_report(run_dir, log, bench_dir)
    print(f"[report] {report}")
    print(f"pipeline finished in {time.perf_counter() - start:.0f} s"
          + ("" if gate_rc == 0 else "; the parity gate FAILED for at least one artefact"))
    return 0 if gate_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
