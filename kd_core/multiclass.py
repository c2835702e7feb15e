"""Metrics of a model without a positive class (decided by argmax): top-1 accuracy, macro ROC-AUC
(the mean of the one-vs-rest ROC-AUCs of the classes that have both positives and negatives) and
per-class sensitivity (recall of the argmax decision). Numpy only; JSON-ready outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kd_core.metrics import _roc_auc_rows, ece, nll, softmax, to_numpy


def _checked(probs: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p, yi = to_numpy(probs), to_numpy(y, np.int64)
    if p.ndim != 2 or yi.ndim != 1 or len(p) != len(yi):
        raise ValueError(f"expected probabilities (N, K) and labels (N,), got {p.shape} "
                         f"{yi.shape}")
    if len(yi) and (yi.min() < 0 or yi.max() >= p.shape[1]):
        raise ValueError(f"labels must be class indices 0..{p.shape[1] - 1}")
    return p, yi


def one_vs_rest_aucs(probs: Any, y: Any) -> np.ndarray:
    """ROC-AUC of each class against the rest (NaN for a class without positives or negatives)."""
    p, yi = _checked(probs, y)
    onehot = (yi[None, :] == np.arange(p.shape[1])[:, None]).astype(np.int64)
    return _roc_auc_rows(onehot, p.T)


def macro_roc_auc(probs: Any, y: Any) -> float:
    """Mean one-vs-rest ROC-AUC over the classes where it is defined (NaN when none is)."""
    aucs = one_vs_rest_aucs(probs, y)
    defined = aucs[np.isfinite(aucs)]
    return float(defined.mean()) if defined.size else math.nan


def per_class_sensitivity(probs: Any, y: Any) -> np.ndarray:
    """For each class, the share of its images that argmax assigns to it (NaN if it has none)."""
    p, yi = _checked(probs, y)
    pred = p.argmax(axis=1)
    counts = np.bincount(yi, minlength=p.shape[1]).astype(np.float64)
    hits = np.bincount(yi[pred == yi], minlength=p.shape[1]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(hits / counts)


def macro_auc_ci(probs: Any, y: Any, n: int = 1000, alpha: float = 0.05, seed: int = 42
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of ``macro_roc_auc`` (resamples of images; deterministic)."""
    p, yi = _checked(probs, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(yi), size=(n, len(yi)))
    total, counted = np.zeros(n), np.zeros(n)
    for k in range(p.shape[1]):
        aucs = _roc_auc_rows((yi[idx] == k).astype(np.int64), p[idx, k])
        ok = np.isfinite(aucs)
        total[ok] += aucs[ok]
        counted[ok] += 1
    values = total[counted > 0] / counted[counted > 0]
    if values.size == 0:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(low), float(high))


def evaluate_multiclass(logits: Any, y: Any, labels: Sequence[str] | None = None,
                        temperature: float = 1.0, bootstrap: int = 1000, seed: int = 42
                        ) -> dict[str, Any]:
    """Every metric of an argmax model on one split, as a flat JSON-ready dict. ``roc_auc`` is
    the macro ROC-AUC (the figure early stopping and the reports read); NaN values are kept
    (``kd_core.finalize.finite`` turns them into None for JSON)."""
    z, yi = to_numpy(logits), to_numpy(y, np.int64)
    probs = softmax(z, temperature)
    _checked(probs, yi)
    names = list(labels) if labels is not None else [str(k) for k in range(z.shape[1])]
    low = high = None
    if bootstrap > 0:
        low, high = macro_auc_ci(probs, yi, n=bootstrap, seed=seed)
    auc = macro_roc_auc(probs, yi)
    return {
        "roc_auc": auc,
        "macro_roc_auc": auc,
        "roc_auc_ci_low": low,
        "roc_auc_ci_high": high,
        "accuracy": float(np.mean(probs.argmax(axis=1) == yi)),
        "per_class_roc_auc": dict(zip(names, one_vs_rest_aucs(probs, yi).tolist(), strict=True)),
        "per_class_sensitivity": dict(zip(names, per_class_sensitivity(probs, yi).tolist(),
                                          strict=True)),
        "ece": ece(probs, yi),
        "nll": nll(z, yi, temperature),
        "threshold": None,
        "temperature": float(temperature),
        "n": len(yi),
        "class_counts": dict(zip(names, np.bincount(yi, minlength=z.shape[1]).tolist(),
                                 strict=True)),
    }
