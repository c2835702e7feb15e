"""Golden, reference (scikit-learn) and property tests of kd_core.metrics."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from kd_core import metrics as M


def _scores(n: int, seed: int, prevalence: float = 0.11, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    s = rng.normal(size=n) + 1.2 * y
    return y, (np.round(s, 1) if ties else s)


# --------------------------------------------------------------------------- discrimination


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_roc_pr_auc_equal_sklearn(seed: int, ties: bool) -> None:
    y, s = _scores(300 + 97 * seed, seed, prevalence=0.05 + 0.1 * seed, ties=ties)
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.pr_auc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_auc_hand_values_and_errors() -> None:
    # positives {0.8, 0.4}, negatives {0.6, 0.2}: pairs won 3 of 4 -> AUC 0.75
    # ranked 0.8(+) 0.6(-) 0.4(+) 0.2(-): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    y, s = [1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2]
    assert M.roc_auc(y, s) == pytest.approx(0.75)
    assert M.pr_auc(y, s) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="both classes"):
        M.roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0 or 1"):
        M.roc_auc([0, 2], [0.1, 0.2])


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    y, s = _scores(1500, 7)
    auc = M.roc_auc(y, s)
    low, high = M.bootstrap_ci(y, s, M.roc_auc, n=1000, seed=42)
    assert low < auc < high and high - low < 0.2
    assert M.bootstrap_ci(y, s, M.roc_auc, n=1000, seed=42) == (low, high)
    assert M.bootstrap_ci(y, s, M.roc_auc, n=1000, seed=43) != (low, high)
    ap = M.pr_auc(y, s)
    ap_low, ap_high = M.bootstrap_ci(y, s, M.pr_auc, n=300)
    assert ap_low < ap < ap_high


def test_bootstrap_ci_fast_enough() -> None:
    y, s = _scores(1500, 8)
    start = time.process_time()  # CPU time: robust to other jobs on a shared machine
    M.bootstrap_ci(y, s, M.roc_auc, n=1000)
    assert time.process_time() - start < 1.0


def test_bootstrap_vectorised_equals_per_resample_loop() -> None:
    # a wrapped metric takes the generic (one call per resample) path; same seed, same resamples
    y, s = _scores(200, 9, ties=True)
    for metric in (M.roc_auc, M.pr_auc):

        def wrapped(a: np.ndarray, b: np.ndarray, m: M.Metric = metric) -> float:
            return m(a, b)

        fast = M.bootstrap_ci(y, s, metric, n=60, seed=1)
        slow = M.bootstrap_ci(y, s, wrapped, n=60, seed=1)
        assert fast == pytest.approx(slow, abs=1e-12)


def test_bootstrap_skips_single_class_and_stratifies() -> None:
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.95, 0.4])
    low, high = M.bootstrap_ci(y, s, n=200)  # about a third of resamples lack the positive
    assert 0.0 <= low <= high <= 1.0
    strat = M.bootstrap_ci(y, s, n=200, stratified=True)
    assert 0.0 <= strat[0] <= strat[1] <= 1.0
    assert all(math.isnan(v) for v in M.bootstrap_ci(np.zeros(5), np.arange(5.0), n=20))


# --------------------------------------------------------------------------- calibration


# (probs, label): top-label confidence, correct?, bin of 15 (bin m holds (m/15, (m+1)/15])
ECE_TABLE = [
    ([0.90, 0.05, 0.05], 0),  # 0.90 correct  bin 13
    ([0.05, 0.90, 0.05], 0),  # 0.90 wrong    bin 13
    ([0.10, 0.70, 0.20], 1),  # 0.70 correct  bin 10
    ([0.72, 0.18, 0.10], 2),  # 0.72 wrong    bin 10
    ([0.50, 0.30, 0.20], 2),  # 0.50 wrong    bin 7
    ([0.20, 0.35, 0.45], 2),  # 0.45 correct  bin 6
]


def test_ece_golden_hand_computed() -> None:
    probs = np.array([p for p, _ in ECE_TABLE])
    y = np.array([label for _, label in ECE_TABLE])
    # bin 13: acc 1/2, conf 0.90, |gap| 0.40, n 2    bin 10: acc 1/2, conf 0.71, |gap| 0.21, n 2
    # bin 7: acc 0, conf 0.50, |gap| 0.50, n 1       bin 6: acc 1, conf 0.45, |gap| 0.55, n 1
    # ECE = (2*0.40 + 2*0.21 + 0.50 + 0.55) / 6 = 2.27 / 6 = 0.37833333333333335
    assert M.ece(probs, y) == pytest.approx(0.37833333333333335, abs=1e-12)
    # one bin: |mean acc 3/6 - mean conf 4.17/6| = 0.195
    assert M.ece(probs, y, n_bins=1) == pytest.approx(0.195, abs=1e-12)
    table = M.reliability_table(probs, y)
    assert table["count"] == [1.0, 1.0, 2.0, 2.0]
    assert table["accuracy"] == pytest.approx([1.0, 0.0, 0.5, 0.5])
    assert table["confidence"] == pytest.approx([0.45, 0.50, 0.71, 0.90])
    assert table["bin_center"] == pytest.approx([6.5 / 15, 7.5 / 15, 10.5 / 15, 13.5 / 15])


def test_bins_are_right_closed() -> None:
    edges = np.linspace(0.0, 1.0, 4)  # 1/3 and 2/3 exactly as the bin edges
    p = np.array([0.0, edges[1], edges[1] + 1e-9, edges[2], 1.0])
    table = M.reliability_table(p, np.array([0, 1, 0, 1, 1]), n_bins=3)
    assert table["count"] == [2.0, 2.0, 1.0]


def test_ece_binary_and_brier_hand_values() -> None:
    p, y = np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 1, 1, 1])
    # bins of 2: [0.1, 0.2] -> rate 1/2 conf 0.15; [0.8, 0.9] -> rate 1 conf 0.85
    # ECE = 1/2 * 0.35 + 1/2 * 0.15 = 0.25; Brier = (0.01 + 0.64 + 0.04 + 0.01) / 4 = 0.175
    assert M.ece_binary(p, y, n_bins=2) == pytest.approx(0.25)
    assert M.brier(p, y) == pytest.approx(0.175)


def test_softmax_stable_and_nll_matches_sklearn() -> None:
    z = np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]])
    p = M.softmax(z)
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(1 / (1 + math.exp(-1)))
    np.testing.assert_allclose(M.softmax(z, 2.0), M.softmax(z / 2.0))
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(50, 4)) * 3, rng.integers(0, 4, 50)
    ref = log_loss(y, M.softmax(logits), labels=range(4))
    assert M.nll(logits, y) == pytest.approx(ref, abs=1e-9)
    assert M.nll(logits * 2, y, temperature=2.0) == pytest.approx(ref, abs=1e-9)


# --------------------------------------------------------------------------- operating points


@pytest.mark.parametrize("ties", [False, True])
def test_threshold_for_sensitivity_is_largest_reaching_target(ties: bool) -> None:
    y, s = _scores(2000, 11, ties=ties)
    t = M.threshold_for_sensitivity(y, s, target=0.95)
    assert M.sens_spec(y, s, t)[0] >= 0.95
    assert M.sens_spec(y, s, float(np.nextafter(t, np.inf)))[0] < 0.95


def test_threshold_and_sens_spec_hand_values() -> None:
    y = [1, 1, 1, 1, 0, 0, 0]
    p = [0.9, 0.8, 0.7, 0.6, 0.75, 0.5, 0.1]
    # 3 of 4 positives needed for 0.75 -> third highest positive score
    assert M.threshold_for_sensitivity(y, p, 0.75) == 0.7
    assert M.threshold_for_sensitivity(y, p, 0.76) == 0.6
    assert M.threshold_for_sensitivity(y, p, 1.0) == 0.6
    # p >= 0.7: TP 3 of 4; negatives called positive: 0.75 -> TN 2 of 3
    assert M.sens_spec(y, p, 0.7) == pytest.approx((0.75, 2 / 3))
    # 20 positives at 0.95: exactly 19 must pass (float 0.95 * 20 must not round to 20)
    pos = np.linspace(1.0, 0.05, 20)
    assert M.threshold_for_sensitivity(np.ones(20), pos, 0.95) == pytest.approx(pos[18])
    with pytest.raises(ValueError, match="no positives"):
        M.threshold_for_sensitivity([0, 0], [0.1, 0.2])


def test_curves_endpoints() -> None:
    y, s = _scores(200, 12)
    c = M.curves(y, s)
    assert (c["roc"]["fpr"][0], c["roc"]["tpr"][0]) == (0.0, 0.0)
    assert (c["roc"]["fpr"][-1], c["roc"]["tpr"][-1]) == (1.0, 1.0)
    assert c["pr"]["recall"][0] == 1.0 and c["pr"]["recall"][-1] == 0.0
    assert c["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    json.dumps(c, allow_nan=False)


# --------------------------------------------------------------------------- evaluate_predictions


@pytest.mark.parametrize("k,pos", [(2, 1), (7, 4)])
def test_evaluate_predictions_binary_and_multiclass(k: int, pos: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 600)
    logits = rng.normal(size=(600, k)) + 2.0 * np.eye(k)[y]
    out = M.evaluate_predictions(logits, y, positive_index=pos, bootstrap=200)
    json.dumps(out, allow_nan=False)
    p_pos, y_pos = M.softmax(logits)[:, pos], (y == pos).astype(int)
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y_pos, p_pos))
    assert out["pr_auc"] == pytest.approx(average_precision_score(y_pos, p_pos))
    assert out["roc_auc_ci_low"] < out["roc_auc"] < out["roc_auc_ci_high"]
    assert out["nll"] == pytest.approx(log_loss(y, M.softmax(logits), labels=range(k)))
    assert out["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    assert out["sensitivity"] >= 0.95 and 0.0 < out["specificity"] < 1.0
    assert (out["n"], out["n_pos"]) == (600, int(y_pos.sum()))
    assert out["prevalence"] == pytest.approx(y_pos.mean())
    assert out["ece"] == pytest.approx(M.ece(M.softmax(logits), y))


def test_evaluate_predictions_given_threshold_temperature_and_torch_input() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    logits = (rng.normal(size=(300, 2)) + np.eye(2)[y]).astype(np.float32)
    out = M.evaluate_predictions(logits, y, 1, threshold=0.5, temperature=2.0, bootstrap=0)
    p = M.softmax(logits, 2.0)[:, 1]
    assert out["threshold"] == 0.5 and out["temperature"] == 2.0
    assert (out["sensitivity"], out["specificity"]) == M.sens_spec(y, p, 0.5)
    assert out["roc_auc_ci_low"] is None and out["roc_auc_ci_high"] is None
    same = M.evaluate_predictions(
        torch.from_numpy(logits), torch.from_numpy(y), 1, 0.5, 2.0, bootstrap=0
    )
    assert same == pytest.approx(out)
    with pytest.raises(ValueError, match="bad shapes"):
        M.evaluate_predictions(logits, y, positive_index=2)


@pytest.mark.parametrize("seed", range(3))
def test_average_ranks_equal_scipy_rankdata(seed: int) -> None:
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    for _ in range(50):
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 40)))
        x = rng.integers(0, int(rng.integers(1, 8)), size=shape).astype(np.float64)  # many ties
        np.testing.assert_array_equal(M.average_ranks(x), rankdata(x, axis=-1))
        np.testing.assert_array_equal(M.average_ranks(x[0]), rankdata(x[0]))
    y = rng.normal(size=(7, 300))  # no ties
    np.testing.assert_array_equal(M.average_ranks(y), rankdata(y, axis=-1))
