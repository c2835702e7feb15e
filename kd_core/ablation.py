"""KD ablation: temperature x alpha grid plus a no-KD baseline, on one data split.

    python -m kd_core.ablation --data-dir D --teacher-ckpt T.pth [--temperatures 1,2]
        [--alphas 0.5,0.9] [--epochs 10] [--image-size 96] [--out runs/ablation]

Each run is a normal ``kd_core.train student`` run in ``OUT/<name>/`` (resumable, skipped when
finished) and takes every ``kd_core.train student`` option; the table goes to
``OUT/ablation.csv`` and ``OUT/ablation.md`` and the plot to ``OUT/ablation.png``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from kd_core import cli
from kd_core.config import Config, ConfigError, KDConfig
from kd_core.io import atomic_path, atomic_write_text
from kd_core.train_args import add_training_arguments, config_from_args

log = logging.getLogger(__name__)

COLUMNS = (
    "run",
    "temperature",
    "alpha",
    "roc_auc",
    "roc_auc_ci_low",
    "roc_auc_ci_high",
    "pr_auc",
    "ece_raw",
    "ece",
    "sensitivity",
    "specificity",
    "best_epoch",
)


def grid(temperatures: list[float], alphas: list[float]) -> list[tuple[str, float, float]]:
    runs = [("no_kd", 1.0, 0.0)]
    runs += [(f"kd_T{t:g}_a{a:g}", t, a) for t in temperatures for a in alphas]
    return runs


def summarize(name: str, t: float, a: float, metrics: dict[str, Any]) -> dict[str, Any]:
    h = metrics["holdout"]
    return {
        "run": name,
        "temperature": t if a > 0 else None,
        "alpha": a,
        "roc_auc": h["roc_auc"],  # macro ROC-AUC for a model decided by argmax
        "roc_auc_ci_low": h["roc_auc_ci_low"],
        "roc_auc_ci_high": h["roc_auc_ci_high"],
        "pr_auc": h.get("pr_auc"),  # positive-class figures: None for an argmax model
        "ece_raw": metrics["holdout_uncalibrated"]["ece"],
        "ece": h["ece"],
        "sensitivity": h.get("sensitivity"),
        "specificity": h.get("specificity"),
        "best_epoch": metrics.get("best_epoch"),
    }


def to_markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    names = [r["run"] for r in rows]
    auc = [r["roc_auc"] for r in rows]
    err = [
        [r["roc_auc"] - r["roc_auc_ci_low"] for r in rows],
        [r["roc_auc_ci_high"] - r["roc_auc"] for r in rows],
    ]
    ax.bar(names, auc, yerr=err, capsize=3, color=["grey"] + ["tab:blue"] * (len(rows) - 1))
    ax.set_ylabel("holdout ROC-AUC (95 % CI)")
    ax.set_ylim(max(0.0, min(r["roc_auc_ci_low"] for r in rows) - 0.05), 1.0)
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{flag} lists no values")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m kd_core.ablation", __doc__)
    p.add_argument("--temperatures", default="1,2", help="comma-separated KD temperatures")
    p.add_argument("--alphas", default="0.5,0.9", help="comma-separated KD weights")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"), help="output folder")
    add_training_arguments(p, "student", kd=False)
    return p


def runs(args: argparse.Namespace) -> list[tuple[str, Config, Path | None]]:
    """Every run of the grid, checked before the first one starts."""
    from kd_core.config import check_training

    if args.teacher_ckpt is None:
        raise ConfigError("--teacher-ckpt is required")
    cfg = config_from_args(args, role="student")
    planned = []
    for name, t, a in grid(_floats(args.temperatures, "--temperatures"),
                           _floats(args.alphas, "--alphas")):
        run_cfg = replace(cfg, kd=KDConfig(temperature=t, alpha=a))
        check_training(run_cfg, "student")
        planned.append((name, run_cfg, args.teacher_ckpt if a > 0 else None))
    return planned


def ablation(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every run of the grid (each resumable, skipped once finished); write the table
    and the plot; return the rows."""
    from kd_core.train import run
    from kd_core.trainer import plan_run

    planned = runs(args)
    for name, cfg, teacher in planned:  # every run checked (teacher, --out) before any work
        plan_run("student", cfg, args.out / name, teacher, force=False)
    rows = []
    for name, cfg, teacher in planned:
        log.info("== %s", name)
        run_dir = args.out / name
        run("student", cfg, run_dir, teacher)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows.append(summarize(name, cfg.kd.temperature, cfg.kd.alpha, metrics))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out / "ablation.csv", buf.getvalue())
    atomic_write_text(args.out / "ablation.md", to_markdown(rows))
    plot(rows, args.out / "ablation.png")
    return rows


def _main(args: argparse.Namespace) -> int:
    rows = ablation(args)
    print(to_markdown(rows))
    print(f"wrote {args.out / 'ablation.csv'}, ablation.md and ablation.png")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
