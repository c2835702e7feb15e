"""Coverage matrix: does every architecture export, and does each artefact behave like the float
model? ``python -m benchmarks.zoo``.

    python -m benchmarks.zoo --archs mobilenet_v2,efficientnet_b0,resnet18 \\
        --data-dir HAM10000 --out runs/zoo [--formats tflite,executorch,onnx] [--update-readme]

For each architecture: build it for the data's classes and set its batch-norm statistics from
real training images (``--prepare bn``; or train it briefly, ``--prepare train``), fit its
temperature (and, with ``--positive``, its threshold) on the validation split, export every
format at fp32 and INT8 (``exporters.run.export_checkpoint``, INT8 calibrated on real training
images; with ``--repair auto`` an INT8 artefact that drifts is repaired on the validation split
by the exporters' ladder, as ``exporters.all --val-data`` does) and score every artefact in its
real runtime against the float model on the ``--split`` images
(``benchmarks.harness.run_benchmarks``): fp32 max |Δlogit|, INT8 top-1 agreement and ΔROC-AUC,
1-thread latency, size, the INT8 graph report, the repair rung, the parity gate. A format that
fails keeps the converter's exact error in its cell. Each architecture's cells are kept in
``OUT/<arch>/cells.json`` and reused when rerun with the same settings (``--force`` redoes
them). ``OUT/zoo.json``, ``zoo.md`` and ``zoo.csv`` hold the matrix; ``--update-readme`` writes
it between ``<!-- zoo-matrix:start -->`` and ``<!-- zoo-matrix:end -->``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.inputs import csv_list
from benchmarks.parity import Tolerances
from exporters.run import DEFAULT_BUDGET_MIN, REPAIR_MODES
from kd_core import cli

log = logging.getLogger(__name__)
FAMILIES = ("fp32", "int8")


class ZooInputError(cli.BadInput):
    """A flag of ``benchmarks.zoo`` that cannot be used; the message names it."""


@dataclass(frozen=True)
class ZooConfig:
    archs: tuple[str, ...]
    data_dir: str
    out: str
    image_size: int = 64
    formats: tuple[str, ...] = ("tflite", "executorch", "onnx")
    prepare: str = "bn"  # "bn": batch-norm statistics from real images; "train": short training
    train_epochs: int = 2
    bn_images: int = 256
    positive: str | None = None
    calib_samples: int = 128
    split: str = "holdout"
    limit: int | None = None  # score only the first N images of the split (None: all)
    runs: int = 30
    warmup: int = 5
    seed: int = 42
    jobs: int = 1
    repair: str = "off"  # exporters.all's --repair: the INT8 ladder on the validation split
    repair_budget_min: float = DEFAULT_BUDGET_MIN  # the ladder's wall-clock minutes per format
    force: bool = False
    tolerances: Tolerances = field(default_factory=Tolerances)
    command: str = ""

    def key(self, arch: str) -> str:
        """What an architecture's kept cells must have been made with."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("archs", "out", "jobs", "force", "command")}
        return hashlib.sha256(repr(sorted({**keep, "arch": arch}.items())).encode()).hexdigest()


def check_config(cfg: ZooConfig) -> None:
    """Every flag before any work (architectures, sizes, formats, counts, folders)."""
    from exporters.run import check_formats
    from kd_core.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
    from kd_core.data.prepared import task_for
    from kd_core.data.sources import data_kind, source_info
    from kd_core.io import check_output_dir
    from kd_core.model_names import describe
    from kd_core.models import get_spec, is_known

    unknown = [a for a in cfg.archs if not is_known(a)]
    if unknown or not cfg.archs:
        raise ZooInputError(f"--archs: unknown {', '.join(unknown) or '(none given)'}; use "
                            f"{describe()}")
    for arch in cfg.archs:
        unfit = get_spec(arch).check_size(cfg.image_size)
        if unfit:
            raise ZooInputError(f"--image-size {cfg.image_size}: {unfit} (leave it out of "
                                "--archs or change the size)")
    check_formats(cfg.formats, FAMILIES)
    if cfg.prepare not in ("bn", "train"):
        raise ZooInputError(f"--prepare must be bn or train, got {cfg.prepare!r}")
    if cfg.repair not in REPAIR_MODES:
        raise ZooInputError(f"--repair must be one of {', '.join(REPAIR_MODES)}, got "
                            f"{cfg.repair!r}")
    if not cfg.repair_budget_min > 0:
        raise ZooInputError(f"--repair-budget-min must be above 0, got {cfg.repair_budget_min}")
    for flag, value, low in (("--train-epochs", cfg.train_epochs, 1),
                             ("--bn-images", cfg.bn_images, 1), ("--runs", cfg.runs, 1),
                             ("--warmup", cfg.warmup, 0), ("--jobs", cfg.jobs, 1),
                             ("--calib-samples", cfg.calib_samples, 1)):
        if value < low:
            raise ZooInputError(f"{flag} must be at least {low}, got {value}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ZooInputError(f"--limit must be at least 1, got {cfg.limit}")
    if not MIN_IMAGE_SIZE <= cfg.image_size <= MAX_IMAGE_SIZE:
        raise ZooInputError(f"--image-size must be {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got "
                            f"{cfg.image_size}")
    if data_kind(Path(cfg.data_dir)) is None:
        raise ZooInputError(f"--data-dir {cfg.data_dir}: not a data source (HAM10000 folder, "
                            "image folder, CSV file or prepared split folder)")
    task_for(source_info(Path(cfg.data_dir)), "auto", cfg.positive)  # --positive names a class
    check_output_dir(cfg.out, "--out")


def _bn_checkpoint(arch: str, cfg: ZooConfig, prepared: Path, out: Path) -> Path:
    """``arch`` with batch-norm statistics from real training images and its temperature (and
    threshold) fitted on validation: a calibrated float checkpoint."""
    import torch

    from kd_core.checkpoint import build_checkpoint, calibration_record, save_checkpoint
    from kd_core.data.dataset import load_images, normalize_batch
    from kd_core.data.prepared import data_info, load_split, task_for
    from kd_core.data.transforms import Preprocessing
    from kd_core.finalize import fit_decision
    from kd_core.models import create_model

    info = data_info(prepared)
    task = task_for(info, "auto", cfg.positive)
    prep = Preprocessing(size=cfg.image_size)
    torch.manual_seed(cfg.seed)
    model = create_model(arch, len(task.labels))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average over every batch seen
    train = load_split(prepared, "train")
    with torch.no_grad():
        model.train()
        images = load_images(train.paths[: cfg.bn_images], prep, prepared / "cache")
        for i in range(0, len(images), 32):
            model(normalize_batch(images[i:i + 32], prep))
        model.eval()
        val = load_split(prepared, "val")
        x = load_images(val.paths, prep, prepared / "cache")
        logits = torch.cat([model(normalize_batch(x[i:i + 64], prep)) for i in
                            range(0, len(x), 64)]).double().numpy()
    y = val.labels_for(list(task.labels), task.positive_index)
    fitted = fit_decision(logits, y, task.positive_index, 0.95)
    t, thr = fitted["temperature"], fitted["threshold"]
    ckpt = build_checkpoint(model, arch, list(task.labels), prep, t, thr,
                            config={"role": "zoo", "prepare": "bn", "bn_images": cfg.bn_images,
                                    "seed": cfg.seed}, dataset=info.name,
                            calibration=calibration_record("val", len(y), t, thr, 0.95),
                            positive=task.positive_index)
    return save_checkpoint(ckpt, out / "float.pth")


def _trained_checkpoint(arch: str, cfg: ZooConfig, prepared: Path, out: Path) -> Path:
    from kd_core.config import Config, DataConfig, TeacherConfig, TrainingConfig
    from kd_core.train import run

    config = Config(
        data=DataConfig(data_dir=str(prepared), image_size=cfg.image_size, seed=cfg.seed,
                        positive=cfg.positive),
        teacher=TeacherConfig(architecture=arch, loss="ce"),
        training=TrainingConfig(epochs=cfg.train_epochs, device="cpu", seed=cfg.seed))
    return run("teacher", config, out / "train")


def arch_cells(arch: str, cfg: ZooConfig, prepared: Path) -> list[dict[str, Any]]:
    """Every cell of one architecture: checkpoint, export, benchmark."""
    from benchmarks.harness import BenchConfig, run_benchmarks
    from benchmarks.zoo_table import artefact_cell, expected_cells, failed_cell
    from exporters.run import ExportOptions, export_checkpoint
    from kd_core.deploy import load_manifest, manifest_path

    out = Path(cfg.out) / arch
    out.mkdir(parents=True, exist_ok=True)
    build = _bn_checkpoint if cfg.prepare == "bn" else _trained_checkpoint
    ckpt = build(arch, cfg, prepared, out)
    export = export_checkpoint(ckpt, out / "export", ExportOptions(
        formats=cfg.formats, precisions=FAMILIES, calib_data=prepared,
        calib_samples=cfg.calib_samples, seed=cfg.seed, jobs=cfg.jobs, repair=cfg.repair,
        val_data=None if cfg.repair == "off" else prepared,
        repair_budget_min=cfg.repair_budget_min, repair_tolerances=cfg.tolerances))
    errors = {(f.format, f.precision): f.error for f in export.failures}
    entries = {}
    if manifest_path(out / "export").is_file():
        entries = {(e.format, e.precision): e for e in load_manifest(out / "export").artifacts}
    rows: dict[str, dict[str, Any]] = {}
    reasons: dict[str, tuple[str, ...]] = {}
    if entries:
        results = run_benchmarks(BenchConfig(
            artifacts=str(out / "export"), student_ckpt=str(ckpt), data_dir=str(prepared),
            split=cfg.split, threads=(1,), runs=cfg.runs, warmup=cfg.warmup, limit=cfg.limit,
            bootstrap=0, seed=cfg.seed, out=str(out / "bench"), tolerances=cfg.tolerances))
        rows = {r["name"]: r for r in results.rows}
        reasons = {n: results.gate.reasons(n) for n in rows} if results.gate else {}
    cells = []
    for fmt, precision in expected_cells(cfg.formats, FAMILIES):
        entry = entries.get((fmt, precision))
        if entry is not None and entry.name in rows:
            cells.append(artefact_cell(arch, rows[entry.name], entry, reasons.get(entry.name, ())))
        else:
            cells.append(failed_cell(arch, fmt, precision, errors.get(
                (fmt, precision), "not exported (no error recorded)")))
    return cells


def _kept(arch: str, cfg: ZooConfig) -> list[dict[str, Any]] | None:
    from kd_core.io import loads_json

    path = Path(cfg.out) / arch / "cells.json"
    if cfg.force or not path.is_file():
        return None
    try:
        data: Any = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data["cells"] if isinstance(data, dict) and data.get("key") == cfg.key(arch) else None


def run_zoo(cfg: ZooConfig) -> dict[str, Any]:
    """Every architecture's cells (kept ones reused), the summary and the run's meta; writes
    ``OUT/<arch>/cells.json`` as each architecture finishes."""
    from benchmarks.latency import tool_versions
    from benchmarks.zoo_table import add_speed_notes, failed_cell, summary
    from kd_core.data.prepared import data_info, load_split
    from kd_core.data.sources import resolve_prepared
    from kd_core.io import write_json
    from runtimes import host_device

    check_config(cfg)
    prepared = resolve_prepared(Path(cfg.data_dir), seed=cfg.seed)
    cells: list[dict[str, Any]] = []
    for i, arch in enumerate(cfg.archs, 1):
        kept = _kept(arch, cfg)
        if kept is not None:
            log.info("[%d/%d] %s: kept from an earlier run", i, len(cfg.archs), arch)
            cells += kept
            continue
        log.info("[%d/%d] %s", i, len(cfg.archs), arch)
        try:
            got = arch_cells(arch, cfg, prepared)
        except cli.BadInput:
            raise
        except Exception as exc:  # a model that cannot even be built or checked: its cells say so
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            log.info("%s failed before export: %s", arch, error)
            got = [failed_cell(arch, f, p, error) for f, p in _expected(cfg)]
        write_json(Path(cfg.out) / arch / "cells.json", {"key": cfg.key(arch), "cells": got})
        cells += got
    add_speed_notes(cells)
    n_split = len(load_split(prepared, cfg.split))
    meta = {"data": cfg.data_dir, "data_name": data_info(prepared).name,
            "prepared": str(prepared), "split": cfg.split,
            "n_eval": min(n_split, cfg.limit or n_split),
            "image_size": cfg.image_size, "prepare": cfg.prepare, "formats": list(cfg.formats),
            "repair": cfg.repair,
            "runs": cfg.runs, "warmup": cfg.warmup, "host": host_device(),
            "versions": tool_versions(), "created": datetime.now(UTC).isoformat(),
            "command": cfg.command, "tolerances": cfg.tolerances.to_dict()}
    return {"meta": meta, "summary": summary(cells), "cells": cells}


def _expected(cfg: ZooConfig) -> list[tuple[str, str]]:
    from benchmarks.zoo_table import expected_cells

    return expected_cells(cfg.formats, FAMILIES)


def write_outputs(data: dict[str, Any], out: Path, readme: Path | None = None) -> list[Path]:
    """``zoo.json``, ``zoo.md``, ``zoo.csv`` (and the README block) from the matrix."""
    from benchmarks.report import update_readme
    from benchmarks.zoo_table import END, START, csv_text, readme_block, render_markdown
    from kd_core.io import atomic_write_text, write_json

    write_json(out / "zoo.json", data)
    atomic_write_text(out / "zoo.md", render_markdown(data))
    atomic_write_text(out / "zoo.csv", csv_text(data["cells"]))
    written = [out / "zoo.json", out / "zoo.md", out / "zoo.csv"]
    if readme is not None:
        update_readme(readme, readme_block(data), (START, END), "benchmarks.zoo")
        written.append(readme)
    return written


# ---- the command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d, t = ZooConfig((), "", ""), Tolerances()
    p = cli.parser("python -m benchmarks.zoo", __doc__)
    p.add_argument("--archs", type=csv_list, required=True, metavar="A,B",
                   help="architectures, comma-separated (torchvision names, timm:NAME, or the "
                   "tiny test models)")
    p.add_argument("--data-dir", required=True, metavar="D", help="real images: HAM10000 "
                   "folder, image folder, CSV file or prepared folder")
    p.add_argument("--out", required=True, metavar="R", help="results folder")
    p.add_argument("--image-size", type=int, default=d.image_size, help="input size, pixels")
    p.add_argument("--formats", type=csv_list, default=d.formats, metavar="F,F",
                   help="formats to export")
    p.add_argument("--prepare", choices=("bn", "train"), default=d.prepare,
                   help="bn: batch-norm statistics from real images; train: a short training")
    p.add_argument("--train-epochs", type=int, default=d.train_epochs, help="--prepare train")
    p.add_argument("--bn-images", type=int, default=d.bn_images,
                   help="training images the batch-norm statistics are taken from")
    p.add_argument("--positive", metavar="CLASS", help="a binary task (default: every class)")
    p.add_argument("--calib-samples", type=int, default=d.calib_samples,
                   help="INT8 calibration images")
    p.add_argument("--split", choices=("train", "val", "holdout"), default=d.split,
                   help="images scored")
    p.add_argument("--limit", type=int, default=d.limit, help="score only the first N images "
                   "of the split (HAM10000's are ordered by diagnosis: leave it out there)")
    p.add_argument("--runs", type=int, default=d.runs, help="timed runs per artefact")
    p.add_argument("--warmup", type=int, default=d.warmup, help="discarded warm-up runs")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of init, samples, split")
    p.add_argument("--jobs", type=int, default=d.jobs, help="export worker processes")
    p.add_argument("--repair", choices=REPAIR_MODES, default=d.repair,
                   help="auto: repair a drifted INT8 artefact on the validation split (the "
                   "exporters' ladder; the Repair column names its rung); recalibrate: its "
                   "first rung only")
    p.add_argument("--repair-budget-min", type=float, default=d.repair_budget_min, metavar="N",
                   help="wall-clock minutes the repair ladder may spend per format")
    p.add_argument("--max-auc-delta", type=float, default=t.max_auc_delta,
                   help="gate: largest |ROC-AUC - float model's|")
    p.add_argument("--min-top1-agreement", type=float, default=t.min_top1_agreement,
                   help="gate (argmax models): smallest top-1 agreement with the float model")
    p.add_argument("--force", action="store_true", help="redo architectures kept from a run")
    p.add_argument("--update-readme", nargs="?", const=Path("README.md"), type=Path,
                   metavar="README", help="write the matrix between the zoo-matrix markers")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace, argv: list[str]) -> ZooConfig:
    return ZooConfig(
        archs=args.archs, data_dir=args.data_dir, out=args.out, image_size=args.image_size,
        formats=args.formats, prepare=args.prepare, train_epochs=args.train_epochs,
        bn_images=args.bn_images, positive=args.positive, calib_samples=args.calib_samples,
        split=args.split, limit=args.limit, runs=args.runs, warmup=args.warmup, seed=args.seed,
        jobs=args.jobs, repair=args.repair, repair_budget_min=args.repair_budget_min,
        force=args.force,
        tolerances=Tolerances(max_auc_delta=args.max_auc_delta,
                              min_top1_agreement=args.min_top1_agreement),
        command=shlex.join(["python", "-m", "benchmarks.zoo", *argv]))


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmarks.zoo_table import markdown_table

    if args.update_readme is not None and not args.update_readme.is_file():
        raise ZooInputError(f"--update-readme {args.update_readme}: README not found")
    data = run_zoo(config_from_args(args, argv))
    written = write_outputs(data, Path(args.out), args.update_readme)
    print(markdown_table(data["cells"]))
    s = data["summary"]
    print(f"\nfp32 within tolerance: {s['fp32_within_tolerance']} of {s['fp32_cells']}; INT8 "
          f"exported {s['int8_exported']} of {s['int8_cells']}, gate passed "
          f"{s['int8_gate_pass']}; wrote {', '.join(map(str, written))}")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args, argv))


if __name__ == "__main__":
    sys.exit(main())
