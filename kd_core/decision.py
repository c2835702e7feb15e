"""The decision of the deploy contract: how logits become a decision (``Decision``), the one
comparison of two models' outputs (``compare_outputs``) and the contract's error
(``ContractError``). ``kd_core.deploy`` re-exports all of it; read it from there.

Imports numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kd_core.cli import BadInput
from kd_core.config import DEFAULT_TARGET_SENSITIVITY

SENSITIVITY_MARGIN = 0.02  # the gate accepts sensitivity >= target - margin on the test split

class ContractError(BadInput):
    """A checkpoint, manifest or verdict file that breaks the deploy contract (names the field)."""


def finite_number(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ContractError(f"{source}: {what} must be a finite number, got {value!r}")
    return float(value)


# ---- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """How logits become a decision. ``positive_index`` None: a multi-class model decides by
    argmax (no threshold); else the positive class is called when ``p >= threshold``."""

    labels: tuple[str, ...]
    positive_index: int | None
    temperature: float = 1.0
    threshold: float | None = 0.5
    target_sensitivity: float | None = DEFAULT_TARGET_SENSITIVITY

    def __post_init__(self) -> None:
        if isinstance(self.labels, list):
            object.__setattr__(self, "labels", tuple(self.labels))
        self.check("decision")

    def check(self, source: str) -> None:
        labels = self.labels
        if not isinstance(labels, tuple) or len(labels) < 2 or not all(
                isinstance(x, str) and x for x in labels):
            raise ContractError(f"{source}: labels must be at least 2 non-empty strings, "
                                f"got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ContractError(f"{source}: labels repeat a name: {list(labels)}")
        t = finite_number(self.temperature, "temperature", source)
        if not 0 < t <= 1000:
            raise ContractError(f"{source}: temperature must be in (0, 1000], got {t}")
        if self.positive_index is None:
            if self.threshold is not None:
                raise ContractError(f"{source}: a threshold needs a positive class")
            return
        if isinstance(self.positive_index, bool) or not isinstance(self.positive_index, int) \
                or not 0 <= self.positive_index < len(labels):
            raise ContractError(f"{source}: positive_index must be 0..{len(labels) - 1}, got "
                                f"{self.positive_index!r}")
        thr = finite_number(self.threshold, "threshold", source)
        if not 0.0 <= thr <= 1.0:
            raise ContractError(f"{source}: threshold must be a probability in [0, 1], got {thr}")
        if self.target_sensitivity is not None:
            ts = finite_number(self.target_sensitivity, "target_sensitivity", source)
            if not 0.0 < ts <= 1.0:
                raise ContractError(f"{source}: target_sensitivity must be in (0, 1], got {ts}")

    @property
    def positive_label(self) -> str | None:
        return None if self.positive_index is None else self.labels[self.positive_index]

    @property
    def min_sensitivity(self) -> float | None:
        """The gate's floor on test-split sensitivity: target minus ``SENSITIVITY_MARGIN``."""
        if self.target_sensitivity is None:
            return None
        return round(self.target_sensitivity - SENSITIVITY_MARGIN, 10)

    def probabilities(self, logits: Any) -> np.ndarray:
        """``softmax(logits / temperature)`` over the last axis, float64."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
        return out

    def positive_probability(self, logits: Any) -> np.ndarray:
        if self.positive_index is None:
            raise ValueError("a multi-class decision has no positive class")
        return np.asarray(self.probabilities(logits)[..., self.positive_index])

    def decide(self, logits: Any) -> np.ndarray:
        """Per image: True when the positive class is called (``p >= threshold``); for a
        multi-class decision without a positive class, the argmax class index."""
        if self.positive_index is None:
            return np.asarray(np.argmax(np.asarray(logits), axis=-1))
        assert self.threshold is not None
        return np.asarray(self.positive_probability(logits) >= self.threshold)

    def with_calibration(self, temperature: float, threshold: float | None) -> Decision:
        return replace(self, temperature=float(temperature),
                       threshold=None if threshold is None else float(threshold))

    def to_dict(self) -> dict[str, Any]:
        """The decision fields as the manifest and the checkpoint spell them."""
        return {"labels": list(self.labels), "positive_index": self.positive_index,
                "temperature": self.temperature, "threshold": self.threshold,
                "target_sensitivity": self.target_sensitivity}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> Decision:
        """Read and check the decision fields of a manifest entry or checkpoint."""
        labels = d.get("labels")
        if not isinstance(labels, list | tuple):
            raise ContractError(f"{source}: labels must be a list of strings, got {labels!r}")
        target = d.get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY)
        try:
            return cls(tuple(labels), d.get("positive_index"), d.get("temperature"),  # type: ignore[arg-type]
                       d.get("threshold"), target)
        except ContractError as exc:
            raise ContractError(str(exc).replace("decision:", f"{source}:", 1)) from None


def compare_outputs(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """The one parity comparison of two (N, K) outputs: max |difference| and top-1 agreement."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"output shapes differ: {got.shape} vs {want.shape}")
    return {"max_abs_diff": float(np.abs(got - want).max()) if got.size else 0.0,
            "top1_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1)))}


FP32_RTOL = 1e-4  # a float artefact's max |Δlogit| against its float model, per unit of logit


def fp32_tolerance(reference_max_abs: float) -> float:
    """The largest max |Δlogit| a float artefact may show against its float model, whose largest
    |logit| on the same inputs is ``reference_max_abs``: ``FP32_RTOL`` x max(1, that)."""
    return FP32_RTOL * max(1.0, float(reference_max_abs))
