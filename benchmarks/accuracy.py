"""Accuracy of one model on one split, and its agreement with a reference model.

Every model is scored with its own shipped temperature and threshold (manifest entry or
checkpoint): ROC-AUC with a 95 % bootstrap CI, PR-AUC, sensitivity and specificity at the
threshold, ECE with and without the temperature, Brier. Agreement compares decisions
(``Decision.decide``, each model with its own), argmax classes and logits
(``kd_core.deploy.compare_outputs``) and the positive-class probability (max |delta p|).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.data.transforms import Preprocessing, normalize
from kd_core.deploy import Decision, compare_outputs
from kd_core.metrics import ece, ece_binary, evaluate_predictions

if TYPE_CHECKING:
    from runtimes import Runner


def decode(preps: Iterable[Preprocessing], paths: Sequence[Path], cache: Path | None
           ) -> dict[Preprocessing, np.ndarray]:
    """uint8 N x H x W x 3 pixels per distinct preprocessing, decoded once each (cached)."""
    from kd_core.data.dataset import load_images

    return {prep: load_images(paths, prep, cache, desc=f"decoding {prep.size}px")
            .permute(0, 2, 3, 1).numpy() for prep in preps}


def predict_all(runner: Runner, pixels: np.ndarray, prep: Preprocessing, batch: int = 32,
                desc: str = "") -> np.ndarray:
    """Logits of uint8 N x H x W x 3 images, normalized batch by batch (bounded memory)."""
    from tqdm import tqdm

    steps = range(0, len(pixels), batch)
    out = [runner.predict(normalize(pixels[i : i + batch], prep))
           for i in tqdm(steps, desc=desc or runner.name, unit="batch", leave=False,
                         disable=len(steps) < 4)]
    return np.concatenate(out).astype(np.float64)


def score(logits: np.ndarray, y: np.ndarray, decision: Decision, bootstrap: int = 1000,
          seed: int = 42) -> dict[str, Any]:
    """All accuracy figures of one model at its shipped temperature and threshold (without a
    positive class: macro ROC-AUC as ``roc_auc``, top-1 accuracy, per-class sensitivity)."""
    pos = decision.positive_index
    raw = replace(decision, temperature=1.0).probabilities(logits)
    if pos is None:
        from kd_core.multiclass import evaluate_multiclass

        m = evaluate_multiclass(logits, y, decision.labels, decision.temperature, bootstrap,
                                seed)
        m.update(positive_index=None, num_classes=len(decision.labels),
                 ece_uncalibrated=ece(raw, y))
        return m
    m = evaluate_predictions(logits, y, pos, threshold=decision.threshold,
                             temperature=decision.temperature, bootstrap=bootstrap, seed=seed)
    m["positive_index"] = pos
    m["num_classes"] = len(decision.labels)
    m["ece_uncalibrated"] = ece(raw, y)
    m["ece_pos_uncalibrated"] = ece_binary(raw[:, pos], (np.asarray(y) == pos).astype(np.int64))
    return m


def agreement(logits: np.ndarray, decision: Decision, ref_logits: np.ndarray,
              ref_decision: Decision) -> dict[str, Any]:
    """How closely a model follows a reference on the same images, each with its own decision
    (probabilities: of the positive class, or of every class without one)."""
    binary = decision.positive_index is not None and ref_decision.positive_index is not None
    p = decision.positive_probability(logits) if binary else decision.probabilities(logits)
    q = (ref_decision.positive_probability(ref_logits) if binary
         else ref_decision.probabilities(ref_logits))
    if p.shape != q.shape:
        p, q = np.zeros(1), np.zeros(1)  # different tasks: only decisions compare
    same = compare_outputs(logits, ref_logits) if logits.shape == ref_logits.shape else None
    return {
        "decision_agreement": float(np.mean(decision.decide(logits)
                                            == ref_decision.decide(ref_logits))),
        "argmax_agreement": None if same is None else same["top1_agreement"],
        "max_abs_dp": float(np.max(np.abs(p - q))),
        "mean_abs_dp": float(np.mean(np.abs(p - q))),
        "max_abs_logit_diff": None if same is None else same["max_abs_diff"],
        "ref_max_abs_logit": float(np.abs(ref_logits).max()) if ref_logits.size else 0.0,
    }
