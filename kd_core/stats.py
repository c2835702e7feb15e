"""Statistics for clinical reporting: intervals, paired comparisons, decision curves, calibration.

- ``wilson``: Wilson score interval of a proportion (sensitivity, specificity).
- ``delong``: ROC-AUCs of several scores on the same images with DeLong's covariance (fast
  midrank algorithm of Sun & Xu 2014); ``auc_ci`` and ``paired_auc_delta`` build on it.
- ``mcnemar``: paired decisions of two models on the same images (exact binomial below 25
  discordant pairs, else chi-square with continuity correction).
- ``net_benefit`` / ``decision_curve``: decision curve analysis (Vickers & Elkin 2006).
- ``calibration_fit``: logistic recalibration: calibration slope, and the calibration intercept
  (calibration-in-the-large, slope fixed at 1).

Undefined values (a group without positives, a separable fit) are ``None``, never NaN, so that
results stay strict JSON. Imports numpy and the standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

EXACT_BELOW = 25  # McNemar: exact binomial test when fewer discordant pairs than this


def z_value(alpha: float = 0.05) -> float:
    """The two-sided standard normal quantile, e.g. 1.96 for alpha = 0.05."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def two_sided_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def _binary(y: Any, *scores: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    yb = np.asarray(y)
    if yb.ndim != 1 or not np.isin(yb, (0, 1)).all():
        raise ValueError("labels must be a 1-D array of 0/1")
    out = [np.asarray(s, dtype=np.float64) for s in scores]
    for s in out:
        if s.shape != yb.shape:
            raise ValueError(f"scores {s.shape} and labels {yb.shape} differ in shape")
        if not np.isfinite(s).all():
            raise ValueError("scores must be finite")
    return yb.astype(bool), out


# ---- proportions -----------------------------------------------------------------------------


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Wilson score interval (no continuity correction) of ``k`` successes in ``n``; None when
    ``n == 0``. Equals ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    z = z_value(alpha)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


# ---- ROC-AUC with DeLong's covariance --------------------------------------------------------


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0
    return np.asarray(average[inverse], dtype=np.float64)


@dataclass(frozen=True)
class DeLong:
    """ROC-AUCs of k scores on the same images and their k x k DeLong covariance."""

    aucs: np.ndarray
    cov: np.ndarray
    n_pos: int
    n_neg: int


def delong(y: Any, *scores: Any) -> DeLong:
    """DeLong et al. (1988) estimates for ``scores`` (each N,) against 0/1 labels ``y``.

    Needs at least two positives and two negatives (the covariance has n - 1 denominators).
    """
    yb, ss = _binary(y, *scores)
    if not ss:
        raise ValueError("delong: give at least one score vector")
    m, n = int(yb.sum()), int((~yb).sum())
    if m < 2 or n < 2:
        raise ValueError(f"delong: needs >= 2 positives and >= 2 negatives, got {m} and {n}")
    v01, v10, aucs = [], [], []
    for s in ss:
        pos, neg = s[yb], s[~yb]
        tz = midranks(np.concatenate([pos, neg]))
        tx, ty = midranks(pos), midranks(neg)
        aucs.append((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
        v01.append((tz[:m] - tx) / n)  # per positive: share of negatives scored below it
        v10.append(1.0 - (tz[m:] - ty) / m)  # per negative: share of positives scored above
    cov = np.atleast_2d(np.cov(np.array(v01))) / m + np.atleast_2d(np.cov(np.array(v10))) / n
    return DeLong(np.array(aucs), cov, m, n)


@dataclass(frozen=True)
class Estimate:
    """A point value with its standard error and two-sided interval."""

    value: float
    se: float
    low: float
    high: float

    def to_dict(self, prefix: str) -> dict[str, float]:
        return {prefix: self.value, f"{prefix}_se": self.se, f"{prefix}_ci_low": self.low,
                f"{prefix}_ci_high": self.high}


def auc_ci(y: Any, score: Any, alpha: float = 0.05) -> Estimate | None:
    """ROC-AUC with its DeLong standard error and Wald interval (clipped to [0, 1]); None when
    a class has fewer than two images."""
    yb, (s,) = _binary(y, score)
    if min(int(yb.sum()), int((~yb).sum())) < 2:
        return None
    d = delong(yb, s)
    auc, se = float(d.aucs[0]), math.sqrt(max(float(d.cov[0, 0]), 0.0))
    z = z_value(alpha)
    return Estimate(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se))


@dataclass(frozen=True)
class PairedDelta:
    """AUC(a) - AUC(b) on the same images, with DeLong's paired interval and test."""

    delta: float
    se: float
    low: float
    high: float
    p_value: float | None  # None when both AUCs agree exactly with zero variance

    def to_dict(self) -> dict[str, float | None]:
        return {"delta_auc": self.delta, "delta_auc_se": self.se, "delta_auc_ci_low": self.low,
                "delta_auc_ci_high": self.high, "delta_auc_p": self.p_value}


def paired_auc_delta(y: Any, score_a: Any, score_b: Any, alpha: float = 0.05
                     ) -> PairedDelta | None:
    """DeLong's test of AUC(a) - AUC(b) for two models scored on the same images."""
    yb, (a, b) = _binary(y, score_a, score_b)
    if min(int(yb.sum()), int((~yb).sum())) < 2:
        return None
    d = delong(yb, a, b)
    delta = float(d.aucs[0] - d.aucs[1])
    var = float(d.cov[0, 0] + d.cov[1, 1] - 2 * d.cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    z = z_value(alpha)
    if se > 0:
        p: float | None = two_sided_p(delta / se)
    else:
        p = 1.0 if delta == 0 else None
    return PairedDelta(delta, se, delta - z * se, delta + z * se, p)


def within_group_auc(y: Any, score: Any, groups: Any) -> float | None:
    """ROC-AUC counting only (positive, negative) pairs from the same group (e.g. the same
    acquisition site): what is left once the groups' base rates cannot help. None when no group
    has both classes."""
    yb, (s,) = _binary(y, score)
    g = np.asarray(groups)
    wins = pairs = 0.0
    for value in np.unique(g):
        mask = g == value
        m, n = int(yb[mask].sum()), int((~yb[mask]).sum())
        if m and n:
            ranks = midranks(s[mask])
            wins += ranks[yb[mask]].sum() - m * (m + 1) / 2.0
            pairs += m * n
    return wins / pairs if pairs else None


# ---- paired decisions ------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemar:
    """McNemar's test of two paired 0/1 decision vectors. ``only_a``: images a calls positive
    and b does not; ``only_b``: the reverse."""

    only_a: int
    only_b: int
    statistic: float | None  # chi-square statistic (None for the exact test)
    p_value: float
    method: str  # "exact" | "chi2-cc" | "none" (no discordant pairs)

    def to_dict(self) -> dict[str, Any]:
        return {"only_a": self.only_a, "only_b": self.only_b, "statistic": self.statistic,
                "p_value": self.p_value, "method": self.method}


def binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar(a: Any, b: Any) -> McNemar:
    """McNemar's test on paired decisions: exact two-sided binomial test when the discordant
    pairs are fewer than ``EXACT_BELOW``, else chi-square with continuity correction (1 df)."""
    da, db = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if da.shape != db.shape or da.ndim != 1:
        raise ValueError(f"mcnemar: decisions must be 1-D of one length, got {da.shape} "
                         f"{db.shape}")
    only_a, only_b = int(np.sum(da & ~db)), int(np.sum(~da & db))
    n = only_a + only_b
    if n == 0:
        return McNemar(0, 0, None, 1.0, "none")
    if n < EXACT_BELOW:
        return McNemar(only_a, only_b, None, min(1.0, 2 * binom_cdf(min(only_a, only_b), n)),
                       "exact")
    stat = (abs(only_a - only_b) - 1) ** 2 / n
    return McNemar(only_a, only_b, stat, math.erfc(math.sqrt(stat / 2.0)), "chi2-cc")


# ---- decision curves -------------------------------------------------------------------------


def net_benefit(y: Any, p: Any, thresholds: Any) -> np.ndarray:
    """Net benefit of treating when ``p >= t``, at each threshold probability t in (0, 1):
    TP/n - FP/n * t / (1 - t)."""
    yb, (prob,) = _binary(y, p)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or not ((t > 0) & (t < 1)).all():
        raise ValueError("thresholds must be a 1-D array in (0, 1)")
    treat = prob[None, :] >= t[:, None]
    tp = (treat & yb[None, :]).sum(axis=1)
    fp = (treat & ~yb[None, :]).sum(axis=1)
    n = len(yb)
    return np.asarray(tp / n - fp / n * t / (1 - t), dtype=np.float64)


def treat_all(prevalence: float, thresholds: Any) -> np.ndarray:
    """Net benefit of treating everyone: prevalence - (1 - prevalence) * t / (1 - t)."""
    t = np.asarray(thresholds, dtype=np.float64)
    return np.asarray(prevalence - (1 - prevalence) * t / (1 - t), dtype=np.float64)


def decision_curve(y: Any, probs: dict[str, Any], thresholds: Any) -> dict[str, Any]:
    """Net benefit vs threshold probability for each model, treat-all and treat-none."""
    yb = np.asarray(y)
    t = np.asarray(thresholds, dtype=np.float64)
    return {"thresholds": t.tolist(),
            "models": {name: net_benefit(yb, p, t).tolist() for name, p in probs.items()},
            "treat_all": treat_all(float(np.mean(yb)), t).tolist(),
            "treat_none": [0.0] * len(t)}


# ---- calibration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Logistic recalibration of P(positive): ``slope`` from logit P(y) = a + b * logit(p);
    ``intercept`` (calibration-in-the-large) from logit P(y) = a + logit(p). Ideal: 1 and 0."""

    slope: float | None
    intercept: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"calibration_slope": self.slope, "calibration_intercept": self.intercept}


def logit(p: Any, eps: float = 1e-12) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.asarray(np.log(q) - np.log1p(-q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def _newton(x: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 100
            ) -> np.ndarray | None:
    """Maximum-likelihood logistic coefficients for y ~ x @ beta + offset; None when the fit
    does not converge (separable data)."""
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        mu = _sigmoid(x @ beta + offset)
        hess = x.T @ (x * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(hess, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if not np.isfinite(beta).all() or np.abs(beta).max() > 1e6:
            return None
        if np.abs(step).max() < 1e-10:
            return beta
    return None


def calibration_fit(y: Any, p: Any) -> Calibration:
    """Calibration slope and intercept of probabilities ``p`` for 0/1 outcomes ``y``."""
    yb, (prob,) = _binary(y, p)
    if yb.all() or not yb.any():
        return Calibration(None, None)
    lp, yf = logit(prob), yb.astype(np.float64)
    both = _newton(np.column_stack([np.ones_like(lp), lp]), yf, np.zeros_like(lp))
    citl = _newton(np.ones((len(lp), 1)), yf, lp)
    return Calibration(None if both is None else float(both[1]),
                       None if citl is None else float(citl[0]))
