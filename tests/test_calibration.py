"""Temperature scaling: recovers a known miscalibration and lowers NLL and ECE."""

from __future__ import annotations

import numpy as np
import pytest

from kd_core.calibration import T_MAX, T_MIN, apply_temperature, calibration_report, fit_temperature
from kd_core.metrics import ece, nll, softmax


def _calibrated(n: int = 4000, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (labels drawn from it)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 1.5
    p = softmax(logits)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, y


def test_fit_temperature_recovers_overconfidence() -> None:
    logits, y = _calibrated()
    hot = logits * 4.0  # 4x overconfident
    t = fit_temperature(hot, y)
    assert t == pytest.approx(4.0, rel=0.1)
    report = calibration_report(hot, y, t)
    assert report["temperature"] == t
    assert report["nll_after"] < report["nll_before"] - 0.2
    assert report["ece_after"] < report["ece_before"] / 3
    assert report["nll_before"] == pytest.approx(nll(hot, y))
    assert report["ece_after"] == pytest.approx(ece(softmax(hot / t), y))


def test_fit_temperature_is_the_minimum_and_deterministic() -> None:
    logits, y = _calibrated(seed=1)
    cold = logits * 0.5  # underconfident -> T < 1
    t = fit_temperature(cold, y)
    assert t < 1.0
    best = nll(cold, y, t)
    grid = np.exp(np.linspace(np.log(0.1), np.log(10), 401))
    assert best <= min(nll(cold, y, g) for g in grid) + 1e-12
    assert nll(cold, y, t * 1.01) > best and nll(cold, y, t / 1.01) > best
    assert fit_temperature(cold, y) == t
    assert fit_temperature(cold, y, init=15.0) == pytest.approx(t, rel=1e-8)


def test_fit_temperature_bounds() -> None:
    y = np.array([0, 1, 0, 1])
    separable = np.array([[1.0, -1.0], [-1.0, 1.0], [2.0, 0.0], [0.0, 2.0]])
    assert fit_temperature(separable, y) == T_MIN  # NLL keeps falling as T -> 0
    assert fit_temperature(-separable, y) == T_MAX  # always wrong: flattest is best
    with pytest.raises(ValueError, match="expected logits"):
        fit_temperature(np.zeros(4), y)


def test_apply_temperature() -> None:
    z = np.array([[2.0, -4.0]])
    np.testing.assert_allclose(apply_temperature(z, 2.0), [[1.0, -2.0]])
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(z, 0.0)
