"""KD ablation: temperature x alpha grid plus a no-KD baseline, on one data split.

    python -m kd_core.ablation --data-dir D --teacher-ckpt T.pth [--temperatures 1,2]
        [--alphas 0.5,0.9] [--epochs 10] [--image-size 96] [--out runs/ablation]

Each run is a normal ``kd_core.train student`` run in ``OUT/<name>/`` (resumable, skipped when
finished); the table goes to ``OUT/ablation.csv`` and ``OUT/ablation.md`` and the plot to
``OUT/ablation.png``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from kd_core.config import KDConfig
from kd_core.io import atomic_path, atomic_write_text
from kd_core.train import run
from kd_core.train_args import build_parser, config_from_args

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
        "roc_auc": h["roc_auc"],
        "roc_auc_ci_low": h["roc_auc_ci_low"],
        "roc_auc_ci_high": h["roc_auc_ci_high"],
        "pr_auc": h["pr_auc"],
        "ece_raw": metrics["holdout_uncalibrated"]["ece"],
        "ece": h["ece"],
        "sensitivity": h["sensitivity"],
        "specificity": h["specificity"],
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kd_core.ablation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--temperatures", default="1,2", help="comma-separated KD temperatures")
    p.add_argument("--alphas", default="0.5,0.9", help="comma-separated KD weights")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    own, rest = p.parse_known_args(argv)
    base = build_parser().parse_args(["student", *rest, "--out", str(own.out)])
    if base.teacher_ckpt is None:
        p.error("--teacher-ckpt is required")
    cfg = config_from_args(base)
    rows = []
    for name, t, a in grid(
        [float(v) for v in own.temperatures.split(",")], [float(v) for v in own.alphas.split(",")]
    ):
        run_dir = own.out / name
        print(f"== {name}")
        run(
            "student",
            replace(cfg, kd=KDConfig(temperature=t, alpha=a)),
            run_dir,
            base.teacher_ckpt if a > 0 else None,
        )
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows.append(summarize(name, t, a, metrics))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(own.out / "ablation.csv", buf.getvalue())
    atomic_write_text(own.out / "ablation.md", to_markdown(rows))
    plot(rows, own.out / "ablation.png")
    print(to_markdown(rows))
    print(f"wrote {own.out / 'ablation.csv'}, ablation.md and ablation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
