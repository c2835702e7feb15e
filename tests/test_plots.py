"""Plots: each function writes a valid PNG atomically and returns its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kd_core.metrics import softmax
from kd_core.plots import (
    plot_reliability,
    plot_reliability_grid,
    plot_roc_pr,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path, min_width: int = 300) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_width and im.size[1] >= 200
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def _data(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    probs = softmax(rng.normal(size=(n, 3)) + 2 * np.eye(3)[y])
    return y, probs, (y == 1).astype(int)


def test_plot_training_curves(tmp_path: Path) -> None:
    history: list[dict[str, Any]] = [
        {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_roc_auc": 0.70},
        {"epoch": 2, "train_loss": 0.7, "val_loss": 0.75, "val_roc_auc": 0.78},
        {"epoch": 3, "train_loss": 0.6, "val_loss": None},  # missing values are skipped
    ]
    out = plot_training_curves(history, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    _check_png(out, min_width=800)


def test_plot_roc_pr_overwrites_atomically(tmp_path: Path) -> None:
    _, probs, y_pos = _data()
    target = tmp_path / "sub" / "roc_pr.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    out = plot_roc_pr({"teacher": (y_pos, probs[:, 1]), "student": (y_pos, probs[:, 0])}, target)
    _check_png(out, min_width=800)


def test_plot_reliability_top_label_and_binary(tmp_path: Path) -> None:
    y, probs, y_pos = _data(1)
    _check_png(plot_reliability(probs, y, tmp_path / "top.png", title="top-label"))
    _check_png(plot_reliability(probs[:, 1], y_pos, tmp_path / "pos.png", title="melanoma"))


def test_plot_reliability_grid(tmp_path: Path) -> None:
    y, probs, y_pos = _data(2)
    panels = {
        "teacher": (probs, y),
        "student": (probs[:, 1], y_pos),
        "student T": (softmax(np.log(probs) / 2.0), y),
        "int8": (probs, y),
    }
    _check_png(plot_reliability_grid(panels, tmp_path / "grid.png"), min_width=1000)
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_reliability_grid({}, tmp_path / "empty.png")
