"""Temperature scaling (Guo et al. 2017): one scalar T, fitted on validation logits.

The NLL of ``softmax(z / T)`` is convex in ``beta = 1 / T``, so a safeguarded Newton search on
beta finds the global minimum in [1/T_MAX, 1/T_MIN]: exact, deterministic and scipy-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kd_core.metrics import ece, nll, softmax, to_numpy

T_MIN, T_MAX = 0.05, 20.0


def _grad_hess(z: np.ndarray, zy: np.ndarray, beta: float) -> tuple[float, float]:
    """d/dbeta and d2/dbeta2 of mean NLL(beta): mean(E_p[z] - z_y) and mean(Var_p[z])."""
    p = softmax(z * beta)
    mean_z = (p * z).sum(axis=1)
    var_z = (p * (z - mean_z[:, None]) ** 2).sum(axis=1)
    return float(np.mean(mean_z - zy)), float(np.mean(var_z))


def fit_temperature(
    logits: Any, y: Any, init: float = 1.0, tol: float = 1e-10, max_iter: int = 100
) -> float:
    """The temperature in [0.05, 20] that minimises the mean NLL of ``y`` (Newton from ``init``)."""
    z, yi = to_numpy(logits), to_numpy(y, np.int64)
    if z.ndim != 2 or len(z) != len(yi) or len(yi) == 0:
        raise ValueError(
            f"fit_temperature: expected logits (N, K) and labels (N,), got {z.shape} {yi.shape}"
        )
    zy = z[np.arange(len(yi)), yi]
    lo, hi = 1.0 / T_MAX, 1.0 / T_MIN
    if _grad_hess(z, zy, lo)[0] >= 0:
        return T_MAX
    if _grad_hess(z, zy, hi)[0] <= 0:
        return T_MIN
    beta = float(np.clip(1.0 / init, lo, hi)) if init > 0 else 1.0
    for _ in range(max_iter):
        g, h = _grad_hess(z, zy, beta)
        if abs(g) < tol:
            break
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = beta - g / h if h > 0 else np.nan
        beta = step if lo < step < hi else (lo + hi) / 2  # bisect when Newton leaves the bracket
        if hi - lo < tol * beta:
            break
    return float(1.0 / beta)


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """``logits / temperature`` as float64 numpy."""
    if temperature <= 0:
        raise ValueError(f"apply_temperature: temperature must be > 0, got {temperature}")
    return to_numpy(logits) / temperature


def calibration_report(logits: Any, y: Any, temperature: float) -> dict[str, float]:
    """NLL and top-label ECE before (T=1) and after dividing by ``temperature``."""
    z = to_numpy(logits)
    return {
        "nll_before": nll(z, y),
        "nll_after": nll(z, y, temperature),
        "ece_before": ece(softmax(z), y),
        "ece_after": ece(softmax(z, temperature), y),
        "temperature": float(temperature),
    }
