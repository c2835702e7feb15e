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
    save_checkpoint,
)
from kd_core.engine import FitResult, predict
from kd_core.io import write_json
from kd_core.models import load_weights
from kd_core.runtime import Runtime
from kd_core.trainer import Plan, TrainData

log = logging.getLogger(__name__)


def calibrate(model: nn.Module, data: TrainData, rt: Runtime, out: Path,
              target_sensitivity: float, seed: int) -> dict[str, Any]:
    """Temperature on val, threshold on val, then holdout metrics with both fixed; plots."""
    pos = data.positive_index
    val_logits, val_y = predict(model, data.val, rt)
    hold_logits, hold_y = predict(model, data.holdout, rt)
    fitted = fit_decision(val_logits, val_y, pos, target_sensitivity)
    temperature, threshold = fitted["temperature"], fitted["threshold"]

    def score(logits: np.ndarray, y: np.ndarray, t: float, bootstrap: int = 0
              ) -> dict[str, Any]:
        return evaluate(logits, y, data.labels, pos, threshold, t, bootstrap, seed)

    metrics = {
        **fitted,
        "target_sensitivity": target_sensitivity,
        "n_val": len(val_y),
        "val": score(val_logits, val_y, temperature),
        "holdout": score(hold_logits, hold_y, temperature, bootstrap=1000),
        "holdout_uncalibrated": score(hold_logits, hold_y, 1.0),
    }
    _plots(hold_logits, hold_y, pos, temperature, out / "plots")
    return metrics


def fit_decision(logits: np.ndarray, y: np.ndarray, pos: int | None,
                 target_sensitivity: float) -> dict[str, Any]:
    """Temperature scaling on ``logits``, then (with a positive class) the largest threshold
    reaching ``target_sensitivity`` at that temperature: {temperature, threshold,
    val_calibration}. Without a positive class the threshold is None (argmax decides)."""
    from kd_core.calibration import calibration_report, fit_temperature

    temperature = fit_temperature(logits, y)
    threshold = None
    if pos is not None:
        threshold = threshold_at(logits, y, pos, temperature, target_sensitivity)
    return {"temperature": temperature, "threshold": threshold,
            "val_calibration": calibration_report(logits, y, temperature)}


def threshold_at(logits: np.ndarray, y: np.ndarray, pos: int, temperature: float,
                 target_sensitivity: float) -> float:
    """The largest threshold on the positive class's probability at ``temperature`` that
    reaches ``target_sensitivity`` on (``logits``, ``y``)."""
    from kd_core.metrics import softmax, threshold_for_sensitivity

    return threshold_for_sensitivity((y == pos).astype(np.int64),
                                     softmax(logits, temperature)[:, pos], target_sensitivity)


def evaluate(logits: np.ndarray, y: np.ndarray, labels: list[str], pos: int | None,
             threshold: float | None, temperature: float, bootstrap: int, seed: int
             ) -> dict[str, Any]:
    """The metrics of one split: positive-class metrics, or the argmax model's (macro ROC-AUC,
    top-1, per-class sensitivity)."""
    from kd_core.metrics import evaluate_predictions
    from kd_core.multiclass import evaluate_multiclass

    if pos is None:
        return evaluate_multiclass(logits, y, labels, temperature, bootstrap, seed)
    return evaluate_predictions(logits, y, pos, threshold, temperature, bootstrap=bootstrap,
                                seed=seed)


def _plots(logits: np.ndarray, y: np.ndarray, pos: int | None, temperature: float,
           folder: Path) -> None:
    from kd_core import plots
    from kd_core.metrics import softmax

    if pos is None:  # reliability of the top label: confidence vs correct
        p_raw, p_cal = softmax(logits), softmax(logits, temperature)
        y_raw = (p_raw.argmax(1) == y).astype(np.int64)
        y_cal = (p_cal.argmax(1) == y).astype(np.int64)
        pairs = {"before temperature scaling": (p_raw.max(1), y_raw),
                 f"after (T = {temperature:.2f})": (p_cal.max(1), y_cal)}
    else:
        y_pos = (y == pos).astype(np.int64)
        p_cal = softmax(logits, temperature)[:, pos]
        plots.plot_roc_pr({"holdout": (y_pos, p_cal)}, folder / "roc_pr.png")
        pairs = {"before temperature scaling": (softmax(logits)[:, pos], y_pos),
                 f"after (T = {temperature:.2f})": (p_cal, y_pos)}
    plots.plot_reliability_grid(pairs, folder / "reliability.png")


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
    load_weights(model, result.best_weights)
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
        dataset=data.dataset, positive=data.positive_index,
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

    if metrics["threshold"] is None:
        sens = ", ".join(f"{k} {num(v, '.2f')}" for k, v in h["per_class_sensitivity"].items())
        log.info("holdout: macro ROC-AUC %s [%s, %s]  top-1 %s  ECE %s -> %s (T = %.3f)  "
                 "sensitivity per class: %s", num(h["roc_auc"], ".4f"),
                 num(h["roc_auc_ci_low"], ".3f"), num(h["roc_auc_ci_high"], ".3f"),
                 num(h["accuracy"], ".3f"), num(metrics["holdout_uncalibrated"]["ece"], ".4f"),
                 num(h["ece"], ".4f"), metrics["temperature"], sens)
        log.info("best checkpoint: %s", best)
        return

    log.info("holdout: ROC-AUC %s [%s, %s]  PR-AUC %s  ECE %s -> %s (T = %.3f)  sens %s "
             "spec %s at threshold %.4f", num(h["roc_auc"], ".4f"),
             num(h["roc_auc_ci_low"], ".3f"), num(h["roc_auc_ci_high"], ".3f"),
             num(h["pr_auc"], ".4f"), num(metrics["holdout_uncalibrated"]["ece"], ".4f"),
             num(h["ece"], ".4f"), metrics["temperature"], num(h["sensitivity"], ".3f"),
             num(h["specificity"], ".3f"), metrics["threshold"])
    log.info("best checkpoint: %s", best)
