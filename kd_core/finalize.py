"""The end of a training run: calibrate the best weights, score them, write ``best.pth``.

Temperature scaling and the decision threshold are fitted on validation, then holdout is scored
with both fixed. ``metrics.json`` and the plots are written first and ``best.pth`` last, so a
``best.pth`` always holds calibrated weights and its ``calibration`` record.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from kd_core.checkpoint import (
    build_checkpoint,
    calibration_record,
    check_checkpoint,
    plain,
    positive_index,
    save_checkpoint,
)
from kd_core.engine import FitResult, predict
from kd_core.io import write_json
from kd_core.runtime import Runtime
from kd_core.trainer import Plan, TrainData

log = logging.getLogger(__name__)


def calibrate(model: nn.Module, data: TrainData, rt: Runtime, out: Path,
              target_sensitivity: float, seed: int) -> dict[str, Any]:
    """Temperature on val, threshold on val, then holdout metrics with both fixed; plots."""
    from kd_core.calibration import calibration_report, fit_decision
    from kd_core.metrics import evaluate_predictions

    pos = positive_index(data.labels)
    val_logits, val_y = predict(model, data.val, rt)
    hold_logits, hold_y = predict(model, data.holdout, rt)
    temperature, threshold = fit_decision(val_logits, val_y, pos, target_sensitivity)
    metrics = {
        "temperature": temperature,
        "threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "n_val": len(val_y),
        "val_calibration": calibration_report(val_logits, val_y, temperature),
        "val": evaluate_predictions(val_logits, val_y, pos, threshold, temperature, bootstrap=0),
        "holdout": evaluate_predictions(hold_logits, hold_y, pos, threshold, temperature,
                                        seed=seed),
        "holdout_uncalibrated": evaluate_predictions(hold_logits, hold_y, pos, threshold, 1.0,
                                                     bootstrap=0),
    }
    _plots(hold_logits, hold_y, pos, temperature, out / "plots")
    return metrics


def _plots(logits: np.ndarray, y: np.ndarray, pos: int, temperature: float,
           folder: Path) -> None:
    from kd_core import plots
    from kd_core.metrics import softmax

    y_pos = (y == pos).astype(np.int64)
    p_raw, p_cal = softmax(logits)[:, pos], softmax(logits, temperature)[:, pos]
    plots.plot_roc_pr({"holdout": (y_pos, p_cal)}, folder / "roc_pr.png")
    plots.plot_reliability_grid(
        {"before temperature scaling": (p_raw, y_pos),
         f"after (T = {temperature:.2f})": (p_cal, y_pos)},
        folder / "reliability.png")


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None, for strict JSON."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def calibrate_and_save(plan: Plan, model: nn.Module, data: TrainData, result: FitResult
                       ) -> Path:
    """Calibrate the best epoch's weights, write metrics.json, the plots and, last, best.pth."""
    from kd_core import plots

    out, t = plan.out, plan.cfg.training
    model.load_state_dict(result.best_weights)
    metrics = calibrate(model, data, plan.rt, out, t.target_sensitivity, t.seed)
    metrics.update(best_epoch=result.best_epoch, val_roc_auc_best=result.best_auc,
                   epochs_run=len(result.history), stopped_early=result.stopped_early)
    if result.history:
        metrics["train_images_per_s"] = result.history[-1]["images_per_s"]
        plots.plot_training_curves(result.history, out / "plots" / "training_curves.png")
    metrics = finite(plain(metrics))
    ckpt = build_checkpoint(
        model, plan.model_cfg.architecture, data.labels, data.prep,
        temperature=metrics["temperature"], threshold=metrics["threshold"],
        config=plan.record, metrics=metrics, target_sensitivity=t.target_sensitivity,
        dataset=data.dataset,
        calibration=calibration_record("val", metrics["n_val"], metrics["temperature"],
                                       metrics["threshold"], t.target_sensitivity))
    check_checkpoint(ckpt, plan.best_path)  # what any reader will check, before writing it
    write_json(out / "metrics.json", metrics)
    save_checkpoint(ckpt, plan.best_path)
    _report(metrics, plan.best_path)
    return plan.best_path


def _report(metrics: dict[str, Any], best: Path) -> None:
    h = metrics["holdout"]

    def num(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    log.info("holdout: ROC-AUC %s [%s, %s]  PR-AUC %s  ECE %s -> %s (T = %.3f)  sens %s "
             "spec %s at threshold %.4f", num(h["roc_auc"], ".4f"),
             num(h["roc_auc_ci_low"], ".3f"), num(h["roc_auc_ci_high"], ".3f"),
             num(h["pr_auc"], ".4f"), num(metrics["holdout_uncalibrated"]["ece"], ".4f"),
             num(h["ece"], ".4f"), metrics["temperature"], num(h["sensitivity"], ".3f"),
             num(h["specificity"], ".3f"), metrics["threshold"])
    log.info("best checkpoint: %s", best)
