"""PNG figures for training runs and evaluation reports.

matplotlib is imported lazily and used through ``Figure`` objects (Agg canvas, no pyplot state),
so plotting is safe in headless runs and threads. Every function writes its PNG atomically and
returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.io import atomic_path
from kd_core.metrics import curves, ece, ece_binary, reliability_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, out: str | Path, dpi: int = 120) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:  # the temp name ends in .tmp: give the format explicitly
        fig.savefig(tmp, format="png", dpi=dpi)
    return out


def plot_training_curves(history: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Loss (train_loss, val_loss) and val_roc_auc per epoch; missing keys are skipped.

    Each history entry is one epoch's dict; ``epoch`` is used as x if present, else 1, 2, ...
    """
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(10, 4, ncols=2)
    xs = [float(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    for ax, keys, ylabel in (
        (axes[0, 0], ("train_loss", "val_loss"), "loss"),
        (axes[0, 1], ("val_roc_auc",), "ROC-AUC"),
    ):
        for key in keys:
            pts = [
                (x, float(h[key]))
                for x, h in zip(xs, history, strict=True)
                if h.get(key) is not None
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, out)


def plot_roc_pr(curves_by_name: Mapping[str, tuple[Any, Any]], out: str | Path) -> Path:
    """ROC (left) and precision-recall (right) curves of several models; AUCs in the legends.

    ``curves_by_name``: name -> (binary labels, positive-class scores).
    """
    fig, axes = _figure(11, 4.8, ncols=2)
    roc_ax, pr_ax = axes[0, 0], axes[0, 1]
    for name, (y, p) in curves_by_name.items():
        c = curves(y, p)
        roc_ax.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=f"{name} (AUC {c['roc_auc']:.3f})")
        pr_ax.step(
            c["pr"]["recall"],
            c["pr"]["precision"],
            where="post",
            label=f"{name} (AP {c['pr_auc']:.3f})",
        )
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_ax.set(
        xlabel="false positive rate",
        ylabel="sensitivity (TPR)",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    pr_ax.set(
        xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01)
    )
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize=8)
    return _save(fig, out)


def _reliability_axes(ax: Axes, p: Any, y: Any, title: str, n_bins: int) -> None:
    table = reliability_table(p, y, n_bins)
    ece_value = ece(p, y, n_bins) if np.ndim(p) == 2 else ece_binary(p, y, n_bins)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    ax.bar(
        table["bin_center"],
        table["accuracy"],
        width=1.0 / n_bins,
        alpha=0.6,
        edgecolor="black",
        label="observed",
    )
    ax.plot(table["confidence"], table["accuracy"], marker="o", markersize=3, label="at mean conf.")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"{title} (ECE {ece_value:.3f})".strip(),
        xlabel="confidence",
        ylabel="accuracy / observed rate",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def plot_reliability(p: Any, y: Any, out: str | Path, title: str = "", n_bins: int = 15) -> Path:
    """Reliability diagram: (N, K) probs -> top-label; (N,) positive-class probs with 0/1 y."""
    fig, axes = _figure(5, 5)
    _reliability_axes(axes[0, 0], p, y, title, n_bins)
    return _save(fig, out)


def plot_reliability_grid(
    by_name: Mapping[str, tuple[Any, Any]], out: str | Path, n_bins: int = 15
) -> Path:
    """One reliability panel per name -> (p, y), up to 3 panels a row."""
    if not by_name:
        raise ValueError("plot_reliability_grid: nothing to plot")
    ncols = min(3, len(by_name))
    nrows = math.ceil(len(by_name) / ncols)
    fig, axes = _figure(4.2 * ncols, 4.2 * nrows, ncols=ncols, nrows=nrows)
    flat = axes.ravel()
    for ax, (name, (p, y)) in zip(flat, by_name.items(), strict=False):
        _reliability_axes(ax, p, y, name, n_bins)
    for ax in flat[len(by_name) :]:
        ax.set_visible(False)
    return _save(fig, out)
