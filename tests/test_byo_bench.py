"""Benchmarks of models without a positive class: scored by macro ROC-AUC, top-1 and per-class
sensitivity, and gated on macro ROC-AUC, ECE and top-1 agreement with the float student."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.accuracy import agreement, score
from benchmarks.parity import Tolerances, gate_report
from kd_core.deploy import Decision
from kd_core.multiclass import macro_roc_auc, per_class_sensitivity

LABELS = ("cat", "dog", "owl")


def test_macro_auc_and_sensitivity_match_sklearn() -> None:
    from sklearn.metrics import recall_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200) + np.eye(3)[y] * 0.3
    probs /= probs.sum(1, keepdims=True)
    assert macro_roc_auc(probs, y) == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    np.testing.assert_allclose(per_class_sensitivity(probs, y),
                               recall_score(y, probs.argmax(1), average=None))
    # A class absent from the labels is left out of the mean, not counted as NaN.
    assert np.isfinite(macro_roc_auc(probs[y != 2], y[y != 2]))


def test_an_argmax_model_is_scored_without_a_threshold() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) + 2 * np.eye(3)[y]
    d = Decision(LABELS, None, temperature=1.5, threshold=None)
    m = score(logits, y, d, bootstrap=50)
    assert m["positive_index"] is None and m["threshold"] is None
    assert m["roc_auc"] == m["macro_roc_auc"] and m["roc_auc_ci_low"] <= m["roc_auc"]
    assert set(m["per_class_sensitivity"]) == set(LABELS)
    same = agreement(logits, d, logits + 0.01, d)
    assert same["argmax_agreement"] == 1.0 and same["max_abs_dp"] < 0.01


def _row(name: str, role: str, auc: float, ece: float, agree: float | None) -> dict[str, Any]:
    acc = {"roc_auc": auc, "ece": ece, "positive_index": None, "threshold": None}
    if agree is not None:
        acc["argmax_agreement_vs_student"] = agree
    return {"name": name, "role": role, "format": "tflite", "precision": "int8",
            "status": "ok", "accuracy": acc,
            "decision": Decision(LABELS, None, threshold=None).to_dict()}


def test_the_gate_holds_argmax_models_to_top1_agreement() -> None:
    rows = [_row("student", "student", 0.90, 0.05, None),
            _row("good", "artifact", 0.899, 0.052, 0.99),
            _row("flips", "artifact", 0.899, 0.052, 0.90),
            _row("worse", "artifact", 0.88, 0.05, 1.0)]
    report = gate_report({"rows": rows}, Tolerances())
    assert report.min_sensitivity is None  # no positive class: no sensitivity floor
    assert [(v.name, v.metric) for v in report.violations] == [
        ("flips", "top1_agreement"), ("worse", "roc_auc")]
    assert "top-1 agreement with the float student 0.9000 is below 0.98" in report.reasons(
        "flips")[0]
    relaxed = gate_report({"rows": rows}, Tolerances(min_top1_agreement=0.9,
                                                     max_auc_delta=0.05))
    assert relaxed.passed
