"""The benchmark harness: every artefact in its real runtime, against the float teacher and
student, on the same images; then the parity gate.

    python -m benchmarks.run --artifacts DIR --teacher-ckpt T.pth --student-ckpt S.pth \
        --data-dir D [--split holdout] [--threads 1,N] [--out R]

Writes ``R/results.json`` (meta, rows, gate), ``R/results.csv``, ``R/results.md``,
``R/predictions.npz`` (labels and every model's logits), ``R/config.json`` and ``R/plots/``.
Exit codes: 0 the gate passed (or ``--no-gate``), 1 an artefact violated a tolerance or failed to
run (``FAIL <name>: <metric> ...`` lines on stderr), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy import agreement, decode, predict_all, score
from benchmarks.latency import LatencySettings, host_device, time_entry, tool_versions
from benchmarks.parity import Tolerances, gate_report
from kd_core.data.transforms import Preprocessing

EXIT_GATE, EXIT_BAD_INPUT = 1, 2
DX_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
RUNTIME_LABELS = {"torch": "PyTorch eager", "onnx": "ONNX Runtime", "tflite": "LiteRT interpreter",
                  "executorch": "ExecuTorch", "coreml": "Core ML"}  # rows that did not load


class BenchInputError(ValueError):
    """Bad input to the harness (missing manifest, checkpoint or data); names the file."""


@dataclass(frozen=True)
class BenchConfig:
    artifacts: str
    student_ckpt: str
    data_dir: str
    teacher_ckpt: str | None = None
    prepared_dir: str | None = None
    split: str = "holdout"
    threads: tuple[int, ...] = (1, os.cpu_count() or 1)
    runs: int = 100
    warmup: int = 10
    latency: bool = True
    limit: int | None = None
    formats: tuple[str, ...] | None = None  # None: every artefact in the manifest
    bootstrap: int = 1000
    seed: int = 42
    out: str = "artifacts/bench"
    tolerances: Tolerances = field(default_factory=Tolerances)
    gate: bool = True


@dataclass(frozen=True)
class Model:
    role: str  # teacher | student | artifact
    entry: dict[str, Any]
    root: Path

    @property
    def name(self) -> str:
        return str(self.entry["name"])

    @property
    def prep(self) -> Preprocessing:
        return Preprocessing.from_dict(self.entry["preprocessing"])


@dataclass(frozen=True)
class Results:
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    gate: dict[str, Any] | None
    y_pos: np.ndarray  # 0/1 melanoma per image
    y_dx: np.ndarray  # dx class index per image (for 7-class models)
    logits: dict[str, np.ndarray]  # row name -> (N, K)
    image_ids: tuple[str, ...] = ()  # clinical (#17): split order, for the metadata join

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": self.rows, "gate": self.gate}


# ---- inputs ---------------------------------------------------------------------------------


def collect_models(cfg: BenchConfig) -> list[Model]:
    """Teacher and student checkpoints, then the manifest's artefacts (optionally filtered)."""
    from runtimes import RuntimeLoadError
    from runtimes.torch_eager import checkpoint_entry

    manifest_path = Path(cfg.artifacts) / "manifest.json"
    if not manifest_path.is_file():
        raise BenchInputError(f"{manifest_path}: manifest not found (run python -m exporters.all)")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = list(manifest["artifacts"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchInputError(f"{manifest_path}: not a readable manifest ({exc})") from None
    models = []
    for role, ckpt in (("teacher", cfg.teacher_ckpt), ("student", cfg.student_ckpt)):
        if ckpt is None:
            continue
        try:
            entry = checkpoint_entry(Path(ckpt))
        except RuntimeLoadError as exc:
            raise BenchInputError(str(exc)) from None
        entry["name"] = f"float_{role}_{entry['arch']}"
        models.append(Model(role, entry, Path(ckpt).parent))
    for entry in entries:
        if cfg.formats is None or entry.get("format") in cfg.formats:
            models.append(Model("artifact", dict(entry), manifest_path.parent))
    return models


def prepared_split(cfg: BenchConfig) -> Any:
    """The split (``SplitData``) to score, prepared (or reused) from ``cfg.data_dir``."""
    from kd_core.data.ham10000 import (
        DataError,
        is_ham10000_dir,
        is_prepared_dir,
        load_split,
        prepare,
    )
    from kd_core.train import default_prepared_dir

    data_dir = Path(cfg.data_dir)
    try:
        if is_prepared_dir(data_dir):
            prepared = data_dir
        elif is_ham10000_dir(data_dir):
            prepared = Path(cfg.prepared_dir) if cfg.prepared_dir else default_prepared_dir(
                data_dir)
            if not (cfg.prepared_dir and is_prepared_dir(prepared)):  # never re-split a given one
                prepare(data_dir, prepared, verbose=False)
        else:
            raise BenchInputError(f"{data_dir}: neither a HAM10000 folder (metadata CSV) nor a "
                                  "prepared split folder")
        split = load_split(prepared, cfg.split)
    except DataError as exc:
        raise BenchInputError(str(exc)) from None
    if cfg.limit is not None:
        split = type(split)(split.image_ids[: cfg.limit], split.paths[: cfg.limit],
                            split.targets[: cfg.limit], split.dx[: cfg.limit])
    if len(split) == 0 or split.targets.min() == split.targets.max():
        raise BenchInputError(f"{prepared}: the {cfg.split} split ({len(split)} images) needs "
                              "both melanoma and other images")
    return split, prepared


def labels_for(entry: dict[str, Any], split: Any) -> np.ndarray:
    labels = list(entry["labels"])
    if len(labels) == 2:
        return np.asarray(split.labels_for("mel"))
    if tuple(labels) == DX_CLASSES:
        return np.asarray(split.labels_for("dx"))
    raise BenchInputError(f"{entry['name']}: labels {labels} are neither binary nor the 7 dx")


# ---- scoring --------------------------------------------------------------------------------


def run_model(model: Model, pixels: np.ndarray, threads: int) -> tuple[str, str, np.ndarray | None]:
    """(status, runtime name, logits) of one model on every image, in-process."""
    from runtimes import RuntimeUnavailable, load_runner

    try:
        runner = load_runner(model.entry, model.root, threads)
        logits = predict_all(runner, pixels, model.prep, desc=model.name)
    except RuntimeUnavailable as exc:
        return str(exc), RUNTIME_LABELS.get(model.entry["format"], "?"), None
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}", RUNTIME_LABELS.get(
            model.entry["format"], "?"), None
    k = len(model.entry["labels"])
    if logits.shape != (len(pixels), k) or not np.isfinite(logits).all():
        return f"error: bad outputs {logits.shape} (expected {len(pixels)} x {k}, finite)", \
            runner.runtime, None
    return "ok", runner.runtime, logits


def base_row(model: Model, status: str, runtime: str, device: str) -> dict[str, Any]:
    e = model.entry
    return {"name": model.name, "role": model.role, "format": e["format"],
            "precision": e.get("precision"), "runtime": runtime, "device": device,
            "location": "host", "size_bytes": e.get("bytes"), "status": status,
            "latency": {}, "load_ms": None, "peak_memory_mb": None, "accuracy": None,
            "path": str(model.root / str(e["path"]))}


def accuracy_row(model: Model, logits: np.ndarray, y: np.ndarray, refs: dict[str, Model],
                 all_logits: dict[str, np.ndarray], cfg: BenchConfig) -> dict[str, Any]:
    acc = score(logits, y, model.entry, cfg.bootstrap, cfg.seed)
    for role in ("student", "teacher"):
        ref = refs.get(role)
        if ref is None or ref.name not in all_logits or ref.name == model.name:
            continue
        agree = agreement(logits, model.entry, all_logits[ref.name], ref.entry)
        acc.update({f"{k}_vs_{role}": v for k, v in agree.items()})
    return acc


def add_deltas(rows: list[dict[str, Any]]) -> None:
    ref = next((r for r in rows if r["role"] == "student" and r["accuracy"]), None)
    for row in rows:
        if ref is not None and row["accuracy"]:
            row["accuracy"]["roc_auc_delta_vs_student"] = (
                row["accuracy"]["roc_auc"] - ref["accuracy"]["roc_auc"])
            row["accuracy"]["ece_delta_vs_student"] = (
                row["accuracy"]["ece"] - ref["accuracy"]["ece"])


def run_benchmarks(cfg: BenchConfig) -> Results:
    """Score and time every model; the library entry point behind the CLI."""
    from tqdm import tqdm

    models = collect_models(cfg)
    split, prepared = prepared_split(cfg)
    pixels = decode(dict.fromkeys(m.prep for m in models), split.paths,
                    None if cfg.limit else prepared / "cache")
    device = host_device()
    refs = {m.role: m for m in models if m.role in ("teacher", "student")}
    rows, logits = [], {}
    for m in tqdm(models, desc="accuracy", unit="model"):
        status, runtime, z = run_model(m, pixels[m.prep], max(cfg.threads))
        rows.append(base_row(m, status, runtime, device))
        if z is not None:
            logits[m.name] = z
    for m, row in zip(models, rows, strict=True):
        if m.name in logits:
            row["accuracy"] = accuracy_row(m, logits[m.name], labels_for(m.entry, split), refs,
                                           logits, cfg)
    add_deltas(rows)
    if cfg.latency:
        time_all(models, rows, pixels, cfg)
    meta = build_meta(cfg, models, split, prepared, device)
    data = {"meta": meta, "rows": rows}
    report = None
    if "student" in refs and refs["student"].name in logits:  # else the gate cannot run
        report = {**gate_report(data, cfg.tolerances), "enforced": cfg.gate}
    return Results(meta, rows, report, np.asarray(split.targets),
                   np.asarray(split.labels_for("dx")), logits,
                   tuple(split.image_ids))  # clinical (#17)


def time_all(models: list[Model], rows: list[dict[str, Any]],
             pixels: dict[Preprocessing, np.ndarray], cfg: BenchConfig) -> None:
    from tqdm import tqdm

    from kd_core.data.transforms import normalize

    settings = LatencySettings(runs=cfg.runs, warmup=cfg.warmup)
    with tempfile.TemporaryDirectory(prefix="edgekd-latency-") as tmp:
        images = {}
        for i, prep in enumerate(pixels):
            images[prep] = Path(tmp) / f"image_{i}.npy"
            np.save(images[prep], normalize(pixels[prep][0], prep))
        todo = [(m, r) for m, r in zip(models, rows, strict=True) if r["status"] == "ok"]
        for m, row in tqdm(todo, desc="latency", unit="model"):
            row.update(time_entry(m.entry, m.root, cfg.threads, settings, images[m.prep]))


def build_meta(cfg: BenchConfig, models: list[Model], split: Any, prepared: Path,
               device: str) -> dict[str, Any]:
    from kd_core.io import sha256_file

    student = next(m for m in models if m.role == "student")
    student_sha = sha256_file(Path(cfg.student_ckpt))
    stale = [m.name for m in models if m.role == "artifact"
             and m.entry.get("source_checkpoint_sha256") not in (None, student_sha)]
    warnings = [f"{', '.join(stale)}: exported from another checkpoint than the float student"
                ] if stale else []
    y = np.asarray(split.targets)
    return {
        "data": str(cfg.data_dir), "prepared": str(prepared), "split": cfg.split,
        "n": len(split), "n_pos": int(y.sum()), "prevalence": float(y.mean()),
        "limit": cfg.limit, "image_size": student.prep.size, "host": device,
        "cpu_count": os.cpu_count(),
        "threads": list(cfg.threads), "latency": {"runs": cfg.runs, "warmup": cfg.warmup,
                                                  "batch": 1, "isolation": "process per run"},
        "versions": tool_versions(), "tolerances": cfg.tolerances.to_dict(),
        "seed": cfg.seed, "bootstrap": cfg.bootstrap,
        "artifacts": str(Path(cfg.artifacts) / "manifest.json"),
        "student_ckpt": {"path": str(cfg.student_ckpt), "sha256": student_sha},
        "teacher_ckpt": ({"path": str(cfg.teacher_ckpt), "sha256": sha256_file(
            Path(cfg.teacher_ckpt))} if cfg.teacher_ckpt else None),
        "shipped": {"threshold": student.entry["threshold"],
                    "temperature": student.entry["temperature"],
                    "target_sensitivity": student.entry.get("target_sensitivity")},
        "warnings": warnings,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# ---- outputs and CLI ------------------------------------------------------------------------


def save_results(results: Results, cfg: BenchConfig) -> Path:
    """results.json (keeping phone rows already there), predictions.npz, config.json, report."""
    from benchmarks.report import write_report
    from kd_core.config import save_config
    from kd_core.io import atomic_path, atomic_write_text

    out = Path(cfg.out)
    path = out / "results.json"
    data = results.to_json()
    if path.is_file():
        from benchmarks.android.results import load_results

        old = load_results(path)
        data["rows"] += [r for r in old["rows"] if r.get("location") == "android"]
        for key in ("android_devices",):
            if key in old["meta"]:
                data["meta"][key] = old["meta"][key]
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    arrays = {"y_pos": results.y_pos, "y_dx": results.y_dx,
              "image_ids": np.asarray(results.image_ids, dtype=str),  # clinical (#17)
              **{f"logits__{k}": v for k, v in results.logits.items()}}
    with atomic_path(out / "predictions.npz") as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
    save_config(cfg, out / "config.json")
    write_report(out)
    return path


def _threads(value: str) -> tuple[int, ...]:
    try:
        out = tuple(dict.fromkeys(int(v) for v in value.split(",") if v.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad thread list {value!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {value!r}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Score every artefact in its real runtime against the float models, time "
                    "it, and gate it on parity with the float student.",
        epilog="Exit codes: 0 passed (or --no-gate), 1 an artefact drifted or failed, 2 bad input.")
    p.add_argument("--artifacts", required=True, metavar="DIR", help="folder with manifest.json")
    p.add_argument("--student-ckpt", required=True, metavar="S.pth", help="float student")
    p.add_argument("--teacher-ckpt", metavar="T.pth", help="float teacher (optional)")
    p.add_argument("--data-dir", required=True, metavar="D",
                   help="HAM10000 folder (splits prepared or reused) or a prepared folder")
    p.add_argument("--prepared-dir", metavar="P", help="where the splits are prepared")
    p.add_argument("--split", default="holdout", choices=("train", "val", "holdout"))
    p.add_argument("--threads", type=_threads, default=BenchConfig.threads,
                   help="thread counts to time (default: 1,<cpu count>)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per thread count")
    p.add_argument("--warmup", type=int, default=10, help="discarded warm-up runs")
    p.add_argument("--no-latency", action="store_true", help="accuracy only")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N images")
    p.add_argument("--formats", help="comma-separated formats to score (default: all)")
    p.add_argument("--bootstrap", type=int, default=1000, help="ROC-AUC CI resamples")
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    p.add_argument("--out", default="artifacts/bench", metavar="R", help="results folder")
    t = Tolerances()
    p.add_argument("--max-auc-delta", type=float, default=t.max_auc_delta)
    p.add_argument("--min-sensitivity", type=float, default=t.min_sensitivity)
    p.add_argument("--max-ece-delta", type=float, default=t.max_ece_delta)
    p.add_argument("--no-gate", action="store_true", help="report violations, exit 0")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    tol = Tolerances(args.max_auc_delta, args.min_sensitivity, args.max_ece_delta)
    formats = tuple(f.strip() for f in args.formats.split(",")) if args.formats else None
    if args.limit is not None and args.limit < 2:
        raise BenchInputError(f"--limit must be >= 2, got {args.limit}")
    return BenchConfig(
        artifacts=args.artifacts, student_ckpt=args.student_ckpt, data_dir=args.data_dir,
        teacher_ckpt=args.teacher_ckpt, prepared_dir=args.prepared_dir, split=args.split,
        threads=args.threads, runs=args.runs, warmup=args.warmup, latency=not args.no_latency,
        limit=args.limit, formats=formats, bootstrap=args.bootstrap, seed=args.seed,
        out=args.out, tolerances=tol, gate=not args.no_gate)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import gate_lines, summary_table

    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        results = run_benchmarks(cfg)
    except BenchInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    path = save_results(results, cfg)
    print(summary_table(results.to_json()))
    print(f"\nresults: {path}")
    lines = gate_lines(results.gate)
    print("\n".join(lines), file=sys.stderr if results.gate and not results.gate["passed"]
          else sys.stdout)
    failed = results.gate is None or not results.gate["passed"]
    return EXIT_GATE if failed and cfg.gate else 0


if __name__ == "__main__":
    sys.exit(main())
