"""The pipeline's stages as library calls with typed results: ``kd_core.train.run``,
``exporters.run.export_checkpoint``, ``benchmarks.harness.run_benchmarks``; and the run report.

Each stage goes through ``benchmarks.stages.run_stage`` (skip when up to date, else run and
record); progress is logged (``logging``), never printed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from benchmarks.stages import Done, file_key, run_stage
from kd_core.cli import JobFailed
from kd_core.config import (
    Config,
    DataConfig,
    KDConfig,
    StudentConfig,
    TeacherConfig,
    TrainingConfig,
    to_dict,
)

log = logging.getLogger(__name__)
Records = list[dict[str, Any]]
PRECISIONS = ("fp32", "int8")  # exported precision families


def _holdout_line(metrics_path: Path) -> str:
    from kd_core.io import loads_json

    m: Any = loads_json(metrics_path.read_text(encoding="utf-8"))
    h = m["holdout"]
    return (f"holdout ROC-AUC {h['roc_auc']:.3f}, ECE {m['holdout_uncalibrated']['ece']:.3f} -> "
            f"{h['ece']:.3f}, sens {h['sensitivity']:.2f} / spec {h['specificity']:.2f}")


def train_config(role: str, p: Any, args: argparse.Namespace, data_dir: Path,
                 prepared: Path) -> Config:
    data = DataConfig(data_dir=str(data_dir), prepared_dir=str(prepared),
                      image_size=p.image_size, seed=args.seed)
    training = TrainingConfig(epochs=p.teacher_epochs if role == "teacher" else p.student_epochs,
                              batch_size=p.batch_size, patience=p.patience, device=args.device,
                              seed=args.seed)
    if role == "teacher":
        return Config(data=data, training=training,
                      teacher=TeacherConfig(architecture=p.teacher, pretrained=p.pretrained))
    return Config(data=data, training=training, kd=KDConfig(temperature=2.0, alpha=0.5),
                  student=StudentConfig(architecture=p.student, pretrained=p.pretrained))


def split_files(prepared: Path) -> list[Path]:
    return sorted(p for p in prepared.iterdir() if p.is_file() and p.suffix in (".json", ".csv"))


def stage_data(args: argparse.Namespace, p: Any, run_dir: Path, records: Records
               ) -> tuple[Path, Path]:
    from kd_core.data.ham10000 import metadata_path
    from kd_core.data.sources import resolve_prepared
    from kd_core.data.synthetic import generate

    synthetic = args.data_dir is None
    data_dir = run_dir / "data" / "synthetic" if synthetic else Path(args.data_dir).resolve()
    target = run_dir / "data" / "prepared"
    inputs = {"data_dir": str(data_dir), "synthetic": synthetic, "seed": args.seed,
              "synth_images": p.synth_images, "synth_size": p.synth_size,
              "metadata": None if synthetic else file_key(metadata_path(data_dir))}

    def body() -> Done:
        from kd_core.io import loads_json

        if synthetic:
            generate(data_dir, n_images=p.synth_images, size=p.synth_size, seed=args.seed)
        prepared = resolve_prepared(data_dir, target, seed=args.seed)
        meta: Any = loads_json((prepared / "split_metadata.json").read_text(encoding="utf-8"))
        c = meta["counts"]
        return Done(split_files(prepared), (
            f"{'synthetic' if synthetic else data_dir.name}: "
            + ", ".join(f"{s} {c[s]['images']} ({100 * c[s]['prevalence']:.1f}% mel)"
                        for s in ("train", "val", "holdout"))), {"prepared": str(prepared)})

    record = run_stage(run_dir, "data", inputs, args.force, body, records)
    return data_dir, Path(record["result"]["prepared"])


def stage_train(role: str, cfg: Config, run_dir: Path, upstream: Path | None, force: bool,
                records: Records) -> Path:
    from kd_core.train import run

    out = run_dir / role
    prepared = Path(str(cfg.data.prepared_dir))
    inputs = {"config": to_dict(cfg), "upstream": file_key(upstream) if upstream else None,
              "split": file_key(prepared / "split_metadata.json")}

    def body() -> Done:
        best = run(role, cfg, out, upstream, force=force)
        return Done([best, out / "metrics.json"], _holdout_line(out / "metrics.json"),
                    {"checkpoint": str(best)})

    record = run_stage(run_dir, role, inputs, force, body, records)
    return Path(record["result"]["checkpoint"])


def stage_export(student: Path, prepared: Path, p: Any, args: argparse.Namespace,
                 run_dir: Path, records: Records) -> Path:
    from benchmarks.integrity import export_problems
    from exporters.run import ExportOptions, auto_jobs, export_checkpoint
    from kd_core.deploy import load_manifest

    out = run_dir / "export"
    # INT8: repaired on the validation split (never the holdout), with a measured speed plan.
    options = ExportOptions(formats=tuple(args.formats), precisions=PRECISIONS,
                            calib_data=prepared, calib_samples=p.calib_samples, seed=args.seed,
                            jobs=auto_jobs(), threads=1, val_data=prepared, repair="auto",
                            qat_steps=p.qat_steps, speed_plan="measure")
    inputs = {"student": file_key(student), "calib": file_key(prepared / "split_metadata.json"),
              "calib_samples": p.calib_samples, "seed": args.seed, "formats": list(args.formats),
              "repair": options.repair, "qat_steps": p.qat_steps,
              "speed_plan": options.speed_plan}

    def body() -> Done:
        result = export_checkpoint(student, out, options)
        if not result.ok:
            failed = "; ".join(f"{f.format} {f.precision}: {f.error}" for f in result.failures)
            raise JobFailed(f"export failed ({failed}); see {result.manifest_path}")
        manifest = load_manifest(result.manifest_path)
        files = [result.manifest_path, *(e.file(out) for e in manifest.artifacts),
                 *(out / s for e in manifest.artifacts for s in e.sidecars)]
        return Done(files, f"{len(manifest.artifacts)} artefacts in {out}")

    run_stage(run_dir, "export", inputs, args.force, body, records,
              check=lambda: export_problems(out))
    return out


def stage_benchmark(teacher: Path, student: Path, export: Path, data_dir: Path, prepared: Path,
                    p: Any, args: argparse.Namespace, run_dir: Path, records: Records) -> bool:
    """Score, time and gate every artefact; True when the parity gate passed."""
    from benchmarks.harness import BenchConfig, run_benchmarks
    from benchmarks.integrity import export_problems
    from benchmarks.outputs import save_results
    from kd_core.deploy import manifest_path

    out = run_dir / "benchmark"
    threads = args.threads or BenchConfig("", "", "").threads
    cfg = BenchConfig(artifacts=str(export), student_ckpt=str(student),
                      teacher_ckpt=str(teacher), data_dir=str(data_dir),
                      prepared_dir=str(prepared), threads=threads, runs=p.bench_runs,
                      limit=p.bench_limit, out=str(out), seed=args.seed)
    inputs = {"teacher": file_key(teacher), "student": file_key(student),
              "manifest": file_key(manifest_path(export)), "runs": p.bench_runs,
              "limit": p.bench_limit, "threads": list(threads)}

    def body() -> Done:
        results = run_benchmarks(cfg)
        path = save_results(results, cfg)
        for warning in results.meta.get("warnings", []):
            log.warning("warning: %s", warning)
        failed = [] if results.gate is None else [v.name for v in results.gate.violations]
        verdict = ("parity gate passed" if results.passed else
                   f"PARITY GATE FAILED ({', '.join(dict.fromkeys(failed)) or 'nothing gated'})")
        return Done([path, out / "predictions.npz"], f"{verdict}; {out / 'results.md'}",
                    {"passed": results.passed})

    record = run_stage(run_dir, "benchmark", inputs, args.force, body, records,
                       check=lambda: export_problems(export))
    return bool(record["result"].get("passed"))


def _training_rows(run_dir: Path) -> list[str]:
    from kd_core.io import loads_json

    rows = []
    for role in ("teacher", "student"):
        mpath = run_dir / role / "metrics.json"
        if not mpath.is_file():
            continue
        m: Any = loads_json(mpath.read_text(encoding="utf-8"))
        h = m["holdout"]
        cfg: Any = loads_json((run_dir / role / "config.json").read_text(encoding="utf-8"))
        rows.append(
            f"| {role} | {cfg[role]['architecture']} | {h['roc_auc']:.4f} "
            f"[{h['roc_auc_ci_low']:.3f}, {h['roc_auc_ci_high']:.3f}] | {h['pr_auc']:.4f} | "
            f"{m['holdout_uncalibrated']['ece']:.4f} -> {h['ece']:.4f} | "
            f"{m['temperature']:.3f} | {m['threshold']:.4f} | {h['sensitivity']:.3f} | "
            f"{h['specificity']:.3f} | {m['best_epoch']} |")
    return rows


def write_run_report(run_dir: Path, records: Records, bench_dir: Path) -> Path:
    """RUN/report.md: stage timings, training metrics, the deployment table, the plots."""
    from kd_core.io import atomic_write_text

    lines = ["# EdgeKD run report", "", f"Run folder: `{run_dir}`", "", "## Stages", "",
             "| stage | status | seconds | summary |", "|---|---|---|---|"]
    for rec in records:
        status = "skipped (up to date)" if rec.get("skipped") else "ran"
        lines.append(f"| {rec['stage']} | {status} | {rec['seconds']:.0f} | {rec['summary']} |")
    lines += ["", "## Training (holdout, threshold and temperature fitted on validation)", "",
              "| model | arch | ROC-AUC [95% CI] | PR-AUC | ECE raw -> calibrated | T | "
              "threshold | sensitivity | specificity | best epoch |",
              "|---|---|---|---|---|---|---|---|---|---|", *_training_rows(run_dir)]
    results_md = bench_dir / "results.md"
    if results_md.is_file():  # the harness's report, one heading level down
        body = results_md.read_text().strip().removeprefix("# Benchmark results").strip()
        lines += ["", "## Benchmark (holdout)", "", body.replace("## ", "### ")]
    if (bench_dir / "subgroups.md").is_file():
        lines += ["", "Subgroups, decision curves and intervals: "
                  f"[{bench_dir.name}/subgroups.md]({bench_dir.name}/subgroups.md)"]
    if (run_dir / "MODEL_CARD.md").is_file():
        lines += ["", "Model card: [MODEL_CARD.md](MODEL_CARD.md)"]
    lines += ["", "## Plots", ""]
    for png in sorted(run_dir.glob("*/plots/*.png")):
        rel = png.relative_to(run_dir).as_posix()
        lines.append(f"![{rel}]({rel})")
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
