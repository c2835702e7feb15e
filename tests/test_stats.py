"""kd_core.stats against scipy, brute-force definitions and published worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from kd_core import stats as ks


def hanley_mcneil_1982() -> tuple[np.ndarray, np.ndarray]:
    """Hanley & McNeil, Radiology 1982;143:29-36, Table 1: CT ratings (1 definitely normal ..
    5 definitely abnormal) of 58 normal and 51 abnormal patients; published W = 0.893."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    y = np.repeat([0, 1], [sum(normal), sum(abnormal)])
    score = np.concatenate([np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6),
                                                                          abnormal)])
    return y, score.astype(float)


def brute_delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components straight from the definition, O(m n) per score."""
    pos, neg = y == 1, y == 0
    v10, v01, aucs = [], [], []
    for s in scores:
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))  # per positive
        v01.append(psi.mean(axis=0))  # per negative
    cov = np.atleast_2d(np.cov(v10)) / pos.sum() + np.atleast_2d(np.cov(v01)) / neg.sum()
    return np.array(aucs), cov


def sample(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    a = y * 1.2 + rng.normal(size=n)
    b = 0.7 * a + y * 0.3 + rng.normal(size=n) * 0.8
    return y, np.round(a, 1), np.round(b, 1)  # rounded: ties on purpose


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (7, 10), (10, 10), (83, 97), (3, 1000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert ks.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    ci90 = stats.binomtest(k, n).proportion_ci(confidence_level=0.90, method="wilson")
    assert ks.wilson(k, n, alpha=0.10) == pytest.approx((ci90.low, ci90.high), abs=1e-12)


def test_wilson_of_an_empty_group_is_none_and_bad_counts_raise() -> None:
    assert ks.wilson(0, 0) is None
    with pytest.raises(ValueError, match="0 <= k <= n"):
        ks.wilson(5, 3)


def test_delong_matches_the_definition_and_mann_whitney() -> None:
    y, a, b = sample()
    got = ks.delong(y, a, b)
    aucs, cov = brute_delong(y, [a, b])
    assert got.aucs == pytest.approx(aucs, abs=1e-12)
    assert got.cov == pytest.approx(cov, rel=1e-9, abs=1e-15)
    u = stats.mannwhitneyu(a[y == 1], a[y == 0]).statistic
    assert got.aucs[0] == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)


def test_hanley_mcneil_worked_example() -> None:
    y, score = hanley_mcneil_1982()
    est = ks.auc_ci(y, score)
    assert est is not None
    assert round(est.value, 3) == 0.893  # published W
    # DeLong's nonparametric SE; Hanley-McNeil's exponential approximation printed 0.032.
    assert est.se == pytest.approx(0.032, abs=0.003)
    assert est.low == pytest.approx(est.value - 1.959964 * est.se, abs=1e-6)


def test_paired_delta_matches_the_definition_and_a_paired_bootstrap() -> None:
    y, a, b = sample(n=400, seed=3)
    got = ks.paired_auc_delta(y, a, b)
    assert got is not None
    aucs, cov = brute_delong(y, [a, b])
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert got.delta == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    assert got.se == pytest.approx(se, rel=1e-9)
    assert got.p_value == pytest.approx(2 * stats.norm.sf(abs(got.delta) / se), rel=1e-9)
    assert (got.low, got.high) == pytest.approx((got.delta - 1.959964 * se,
                                                 got.delta + 1.959964 * se), abs=1e-6)
    rng = np.random.default_rng(0)  # stratified paired bootstrap: same images for both models
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    deltas = []
    for _ in range(1000):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        d = ks.delong(y[idx], a[idx], b[idx])
        deltas.append(d.aucs[0] - d.aucs[1])
    assert np.std(deltas) == pytest.approx(se, rel=0.15)


def test_identical_models_have_zero_paired_variance() -> None:
    y, a, _ = sample()
    got = ks.paired_auc_delta(y, a, a.copy())
    assert got is not None and got.delta == 0 and got.se == 0 and got.p_value == 1.0


def test_groups_without_both_classes_give_none() -> None:
    y = np.zeros(20, dtype=int)
    s = np.linspace(0, 1, 20)
    assert ks.auc_ci(y, s) is None and ks.paired_auc_delta(y, s, s) is None
    assert ks.auc_ci(np.r_[y, 1], np.r_[s, 0.5]) is None  # one positive: no DeLong variance
    assert ks.calibration_fit(y, s) == ks.Calibration(None, None)
    assert ks.within_group_auc(y, s, ["a"] * 20) is None
    with pytest.raises(ValueError, match=">= 2 positives"):
        ks.delong(y, s)


def test_within_group_auc_counts_only_same_group_pairs() -> None:
    y, a, _ = sample(n=200, seed=5)
    groups = np.where(np.arange(200) % 3 == 0, "x", "y")
    wins = pairs = 0.0
    for g in ("x", "y"):
        m = groups == g
        psi = ((a[m & (y == 1)][:, None] > a[m & (y == 0)][None, :])
               + 0.5 * (a[m & (y == 1)][:, None] == a[m & (y == 0)][None, :]))
        wins, pairs = wins + psi.sum(), pairs + psi.size
    assert ks.within_group_auc(y, a, groups) == pytest.approx(wins / pairs, abs=1e-12)
    # a score that only knows the group: perfect overall separation is impossible within groups
    site_only = np.where(groups == "x", 0.9, 0.1)
    assert ks.within_group_auc(y, site_only, groups) == 0.5


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 3), (2, 9), (12, 12), (5, 19), (30, 12),
                                                (100, 140)])
def test_mcnemar_matches_scipy(only_a: int, only_b: int) -> None:
    a = np.r_[np.ones(only_a), np.zeros(only_b), np.ones(40), np.zeros(60)].astype(bool)
    b = np.r_[np.zeros(only_a), np.ones(only_b), np.ones(40), np.zeros(60)].astype(bool)
    got = ks.mcnemar(a, b)
    n = only_a + only_b
    assert (got.only_a, got.only_b) == (only_a, only_b)
    if n < ks.EXACT_BELOW:
        assert got.method == "exact"
        assert got.p_value == pytest.approx(stats.binomtest(only_a, n, 0.5).pvalue, rel=1e-12)
    else:
        stat = (abs(only_a - only_b) - 1) ** 2 / n
        assert got.method == "chi2-cc" and got.statistic == pytest.approx(stat)
        assert got.p_value == pytest.approx(stats.chi2.sf(stat, 1), rel=1e-9)


def test_mcnemar_without_discordant_pairs() -> None:
    same = np.array([True, False, True])
    assert ks.mcnemar(same, same) == ks.McNemar(0, 0, None, 1.0, "none")


def test_net_benefit_hand_worked_example() -> None:
    # 100 lesions, 10 melanomas. At t = 0.2 the model treats 8 melanomas and 12 others:
    # NB = 8/100 - 12/100 * 0.2/0.8 = 0.08 - 0.03 = 0.05. Treat all: 0.10 - 0.90 * 0.25 = -0.125.
    y = np.r_[np.ones(10), np.zeros(90)].astype(int)
    p = np.r_[np.full(8, 0.6), np.full(2, 0.1), np.full(12, 0.3), np.full(78, 0.05)]
    assert ks.net_benefit(y, p, [0.2]) == pytest.approx([0.05])
    # at t = 0.5 only the 8 melanomas at 0.6 are treated: 0.08
    assert ks.net_benefit(y, p, [0.2, 0.5]) == pytest.approx([0.05, 0.08])
    curve = ks.decision_curve(y, {"m": p}, [0.2, 0.5])
    assert curve["treat_all"] == pytest.approx([-0.125, 0.1 - 0.9])
    assert curve["treat_none"] == [0.0, 0.0] and curve["models"]["m"] == pytest.approx(
        [0.05, 0.08])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        ks.net_benefit(y, p, [0.0, 0.5])


def _reference_fit(y: np.ndarray, lp: np.ndarray, slope_free: bool) -> np.ndarray:
    def nll(beta: np.ndarray) -> float:
        z = beta[0] + (beta[1] * lp if slope_free else lp)
        return float(np.sum(np.logaddexp(0, z) - y * z))

    start = np.zeros(2 if slope_free else 1)
    return np.asarray(optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-10}).x)


def test_calibration_fit_matches_scipy_optimize() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0.02, 0.6, size=2000)
    y = (rng.random(2000) < true).astype(int)
    overconfident = 1 / (1 + np.exp(-2.0 * ks.logit(true)))  # logits doubled: slope ~0.5
    got = ks.calibration_fit(y, overconfident)
    lp = ks.logit(overconfident)
    ref2, ref1 = _reference_fit(y, lp, True), _reference_fit(y, lp, False)
    assert got.slope == pytest.approx(ref2[1], abs=1e-5)
    assert got.intercept == pytest.approx(ref1[0], abs=1e-5)
    assert 0.4 < got.slope < 0.6  # type: ignore[operator]
    honest = ks.calibration_fit(y, true)
    assert honest.slope == pytest.approx(1.0, abs=0.15)
    assert honest.intercept == pytest.approx(0.0, abs=0.15)


def test_separable_outcomes_give_no_slope() -> None:
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    p = np.r_[np.full(50, 0.1), np.full(50, 0.9)]
    assert ks.calibration_fit(y, p).slope is None
