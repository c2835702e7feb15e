"""Classification metrics on numpy arrays: discrimination, calibration, operating points.

Inputs are logits or probabilities (N x K), or positive-class scores (N,), with integer labels.
"Positive" is one class (melanoma), chosen by ``positive_index``; for K > 2 it is one-vs-rest.
Torch tensors are accepted too. Outputs are plain Python floats, lists and dicts (JSON-ready).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from kd_core.config import DEFAULT_TARGET_SENSITIVITY

Metric = Callable[[np.ndarray, np.ndarray], float]
_CHUNK_ITEMS = 2_000_000  # resampled items held in memory at once by bootstrap_ci


def to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (array-like or torch tensor) as a numpy array of ``dtype``."""
    if hasattr(x, "detach"):  # a torch tensor; no torch import needed here
        t = x.detach().cpu()
        x = (t.float() if t.is_floating_point() else t).numpy()  # numpy has no bfloat16
    return np.asarray(x, dtype=dtype)


def _binary(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    yb, s = to_numpy(y, np.int64), to_numpy(score)
    if yb.ndim != 1 or s.shape != yb.shape:
        raise ValueError(f"expected 1-D labels and scores of one length, got {yb.shape} {s.shape}")
    if not np.isin(yb, (0, 1)).all():
        raise ValueError("binary labels must be 0 or 1")
    return yb, s


# ---------------------------------------------------------------- discrimination


def average_ranks(s: Any) -> np.ndarray:
    """Ranks 1..N along the last axis, tied values sharing their average rank (as
    ``scipy.stats.rankdata(s, axis=-1)``, method "average"), in float64."""
    s = np.asarray(s)
    shape, n = s.shape, s.shape[-1]
    order = np.argsort(s, axis=-1)  # any order within ties: they share one rank
    ordered = np.take_along_axis(s, order, axis=-1).reshape(-1, n)
    starts = np.ones(ordered.shape, dtype=bool)  # first item of each run of equal values
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    flat = starts.ravel()
    first = np.flatnonzero(flat)  # flat positions where the runs start ...
    last = np.append(first[1:], flat.size) - 1  # ... and end
    average = (first + last) / 2.0 - (first // n) * n + 1.0  # 1-based, within the row
    ranks = np.empty(shape, dtype=np.float64)
    np.put_along_axis(ranks, order, average[np.cumsum(flat) - 1].reshape(shape), axis=-1)
    return ranks


def _roc_auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row (Mann-Whitney U with average ranks for ties). y, s: (R, N)."""
    ranks = average_ranks(s)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    u = (ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return u / (n_pos * n_neg)


def _ap_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Average precision of each row, as sklearn: sum over distinct thresholds of dR * P."""
    order = np.argsort(-s, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=1)
    tp = np.cumsum(np.take_along_axis(y, order, axis=1), axis=1)
    last = np.ones_like(s_sorted, dtype=bool)  # last item of each group of tied scores
    last[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    tp_end = np.where(last, tp, 0)
    tp_prev = np.zeros_like(tp)  # tp at the previous threshold (tp never decreases)
    tp_prev[:, 1:] = np.maximum.accumulate(tp_end, axis=1)[:, :-1]
    precision = tp / np.arange(1, s.shape[1] + 1)
    gain = np.where(last, tp - tp_prev, 0) * precision
    with np.errstate(invalid="ignore", divide="ignore"):
        return gain.sum(axis=1) / tp[:, -1]


def roc_auc(y: Any, score: Any) -> float:
    """Area under the ROC curve; equals ``sklearn.metrics.roc_auc_score``. Needs both classes."""
    yb, s = _binary(y, score)
    if yb.min() == yb.max():
        raise ValueError("roc_auc: needs both classes in y")
    return float(_roc_auc_rows(yb[None], s[None])[0])


def pr_auc(y: Any, score: Any) -> float:
    """Average precision; equals ``sklearn.metrics.average_precision_score``. Needs a positive."""
    yb, s = _binary(y, score)
    if yb.sum() == 0:
        raise ValueError("pr_auc: needs at least one positive in y")
    return float(_ap_rows(yb[None], s[None])[0])


_BATCHED: dict[Any, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    roc_auc: _roc_auc_rows,
    pr_auc: _ap_rows,
}


def bootstrap_ci(
    y: Any,
    score: Any,
    metric: Metric = roc_auc,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 42,
    stratified: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of ``metric(y, score)``.

    Plain resampling skips resamples with a single class (so fewer than ``n`` may count);
    ``stratified=True`` resamples positives and negatives separately, keeping their counts.
    Deterministic for a seed. ``roc_auc``/``pr_auc`` are vectorised; any other metric is
    called once per resample. Returns (nan, nan) when no resample has both classes.
    """
    yb, s = _binary(y, score)
    rng = np.random.default_rng(seed)
    batched = _BATCHED.get(metric)
    values: list[np.ndarray] = []
    rows = max(1, _CHUNK_ITEMS // max(1, len(yb)))
    for start in range(0, n, rows):
        idx = _resample(yb, min(rows, n - start), rng, stratified)
        yr, sr = yb[idx], s[idx]
        npos = yr.sum(axis=1)
        ok = (npos > 0) & (npos < yr.shape[1])
        yr, sr = yr[ok], sr[ok]
        if batched is not None:
            values.append(batched(yr, sr))
        else:
            values.append(np.array([metric(a, b) for a, b in zip(yr, sr, strict=True)]))
    vals = np.concatenate(values) if values else np.empty(0)
    if vals.size == 0:
        return (math.nan, math.nan)
    low, high = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(low), float(high))


def _resample(y: np.ndarray, rows: int, rng: np.random.Generator, stratified: bool) -> np.ndarray:
    if not stratified:
        return rng.integers(0, len(y), size=(rows, len(y)))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    parts = [g[rng.integers(0, len(g), size=(rows, len(g)))] for g in (pos, neg) if len(g)]
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------- probabilities and calibration


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax over the last axis of ``logits / temperature`` (float64)."""
    if temperature <= 0:
        raise ValueError(f"softmax: temperature must be > 0, got {temperature}")
    z = to_numpy(logits) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: Any, y: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under ``softmax(logits / temperature)``."""
    z = to_numpy(logits) / temperature
    yi = to_numpy(y, np.int64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(yi)), yi]))


def _bin_stats(
    conf: np.ndarray, hit: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (centers, mean hit, mean conf, counts); bin m holds conf in (m/M, (m+1)/M]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.searchsorted(edges[1:-1], conf, side="left")  # right-closed bins; 0 goes to bin 0
    counts = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(b, weights=hit, minlength=n_bins) / counts
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / counts
    return (edges[:-1] + edges[1:]) / 2, acc, mean_conf, counts


def _ece(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> float:
    _, acc, mean_conf, counts = _bin_stats(conf, hit, n_bins)
    keep = counts > 0
    return float(np.sum(counts[keep] / counts.sum() * np.abs(acc[keep] - mean_conf[keep])))


def _top_label(probs: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p, yi = to_numpy(probs), to_numpy(y, np.int64)
    if p.ndim != 2 or len(p) != len(yi):
        raise ValueError(f"expected probs (N, K) and labels (N,), got {p.shape} {yi.shape}")
    return p.max(axis=1), (p.argmax(axis=1) == yi).astype(np.float64)


def ece(probs: Any, y: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017), ``n_bins`` equal-width bins.

    Bin m covers confidences in (m/M, (m+1)/M] (right-closed; a confidence of exactly 0 goes to
    the first bin). ECE = sum_m |B_m|/N * |accuracy(B_m) - mean confidence(B_m)|.
    """
    conf, hit = _top_label(probs, y)
    return _ece(conf, hit, n_bins)


def ece_binary(p_pos: Any, y_pos: Any, n_bins: int = 15) -> float:
    """ECE of the positive-class probability against the 0/1 outcome (same bins as ``ece``)."""
    yb, p = _binary(y_pos, p_pos)
    return _ece(p, yb.astype(np.float64), n_bins)


def brier(p_pos: Any, y_pos: Any) -> float:
    """Brier score of the positive-class probability: mean (p - y)^2."""
    yb, p = _binary(y_pos, p_pos)
    return float(np.mean((p - yb) ** 2))


def reliability_table(p: Any, y: Any, n_bins: int = 15) -> dict[str, list[float]]:
    """Reliability diagram data over non-empty bins: bin_center, accuracy, confidence, count.

    ``p`` (N, K) probabilities: top-label (accuracy = argmax correct). ``p`` (N,) positive-class
    probabilities with 0/1 ``y``: accuracy = observed positive rate. Same bins as ``ece``.
    """
    pa = to_numpy(p)
    if pa.ndim == 2:
        conf, hit = _top_label(pa, y)
    else:
        yb, conf = _binary(y, pa)
        hit = yb.astype(np.float64)
    centers, acc, mean_conf, counts = _bin_stats(conf, hit, n_bins)
    keep = counts > 0
    return {
        "bin_center": centers[keep].tolist(),
        "accuracy": acc[keep].tolist(),
        "confidence": mean_conf[keep].tolist(),
        "count": counts[keep].tolist(),
    }


# ---------------------------------------------------------------- operating points


def threshold_for_sensitivity(y_pos: Any, p_pos: Any,
                              target: float = DEFAULT_TARGET_SENSITIVITY) -> float:
    """Largest threshold t with sensitivity(p >= t) >= ``target`` on this data."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"threshold_for_sensitivity: target must be in (0, 1], got {target}")
    yb, p = _binary(y_pos, p_pos)
    pos = np.sort(p[yb == 1])[::-1]
    if pos.size == 0:
        raise ValueError("threshold_for_sensitivity: no positives in y")
    k = max(1, math.ceil(target * pos.size - 1e-9))  # positives that must score >= t
    while k < pos.size and k / pos.size < target:
        k += 1
    return float(pos[k - 1])


def sens_spec(y_pos: Any, p_pos: Any, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) when ``p >= threshold`` is called positive; nan if undefined."""
    yb, p = _binary(y_pos, p_pos)
    pred = p >= threshold
    n_pos, n_neg = int(yb.sum()), int((1 - yb).sum())
    sens = float(np.sum(pred & (yb == 1)) / n_pos) if n_pos else math.nan
    spec = float(np.sum(~pred & (yb == 0)) / n_neg) if n_neg else math.nan
    return sens, spec


def curves(y_pos: Any, p_pos: Any) -> dict[str, Any]:
    """ROC and PR curve points for plots: {roc: {fpr, tpr}, pr: {recall, precision}, aucs}."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    yb, p = _binary(y_pos, p_pos)
    fpr, tpr, _ = roc_curve(yb, p)
    precision, recall, _ = precision_recall_curve(yb, p)
    return {
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "pr": {"recall": recall.tolist(), "precision": precision.tolist()},
        "roc_auc": roc_auc(yb, p),
        "pr_auc": pr_auc(yb, p),
    }


# ---------------------------------------------------------------- everything at once


def evaluate_predictions(
    logits: Any,
    y: Any,
    positive_index: int,
    threshold: float | None = None,
    temperature: float = 1.0,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    bootstrap: int = 1000,
    seed: int = 42,
) -> dict[str, Any]:
    """All metrics of one model on one split, as a flat JSON-ready dict.

    ``threshold=None`` finds the largest threshold reaching ``target_sensitivity`` on *this*
    data (fit it on validation and pass it in for an honest test figure). ``bootstrap=0`` skips
    the ROC-AUC confidence interval (the CI keys are then None). An argmax model (no positive
    class) is scored by ``kd_core.multiclass.evaluate_multiclass``.
    """
    z, yi = to_numpy(logits), to_numpy(y, np.int64)
    if z.ndim != 2 or len(z) != len(yi) or not 0 <= positive_index < z.shape[1]:
        raise ValueError(f"evaluate_predictions: bad shapes {z.shape} {yi.shape} / positive index")
    probs = softmax(z, temperature)
    p_pos, y_pos = probs[:, positive_index], (yi == positive_index).astype(np.int64)
    if threshold is None:
        threshold = threshold_for_sensitivity(y_pos, p_pos, target_sensitivity)
    sens, spec = sens_spec(y_pos, p_pos, threshold)
    low = high = None
    if bootstrap > 0:
        low, high = bootstrap_ci(y_pos, p_pos, roc_auc, n=bootstrap, seed=seed)
    return {
        "roc_auc": roc_auc(y_pos, p_pos),
        "roc_auc_ci_low": low,
        "roc_auc_ci_high": high,
        "pr_auc": pr_auc(y_pos, p_pos),
        "ece": ece(probs, yi),
        "ece_pos": ece_binary(p_pos, y_pos),
        "brier": brier(p_pos, y_pos),
        "nll": nll(z, yi, temperature),
        "accuracy": float(np.mean(probs.argmax(axis=1) == yi)),
        "threshold": float(threshold),
        "sensitivity": sens,
        "specificity": spec,
        "temperature": float(temperature),
        "n": len(yi),
        "n_pos": int(y_pos.sum()),
        "prevalence": float(y_pos.mean()),
    }
