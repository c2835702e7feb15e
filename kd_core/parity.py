"""The parity gate's rule for one artefact, shared by the benchmark harness's gate
(``benchmarks.parity``, on the holdout split) and the INT8 repair ladder (``exporters.int8.repair``,
on the validation split): one definition, whatever the split.

An artefact row passes when |ROC-AUC - float student's| <= ``max_auc_delta``, sensitivity at its
threshold >= the sensitivity floor (``sensitivity_floor``: ``Tolerances.min_sensitivity`` when
set, else the float student's ``Decision.min_sensitivity``) and ECE <= the float student's ECE +
``max_ece_delta``. Rows and the reference are mappings with ``name``, ``status`` and ``accuracy``
(``roc_auc``, ``sensitivity``, ``threshold``, ``ece``), as ``kd_core.metrics.evaluate_predictions``
gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kd_core.deploy import Decision


@dataclass(frozen=True)
class Tolerances:
    max_auc_delta: float = 0.005
    min_sensitivity: float | None = None  # None: the float student's Decision.min_sensitivity
    max_ece_delta: float = 0.01

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class Violation:
    name: str
    format: str
    precision: str
    metric: str
    value: float | None
    limit: float | None
    message: str

    def __str__(self) -> str:
        return f"FAIL {self.name}: {self.message}"


def sensitivity_floor(decision: Decision | None, tol: Tolerances) -> float | None:
    """``tol.min_sensitivity`` when set, else the float student's ``Decision.min_sensitivity``
    (None: no target sensitivity, so sensitivity is not gated)."""
    if tol.min_sensitivity is not None:
        return tol.min_sensitivity
    return None if decision is None else decision.min_sensitivity


def check_row(row: Mapping[str, Any], ref: Mapping[str, Any], tol: Tolerances,
              floor: float | None) -> list[Violation]:
    """The violations of one artefact row against the float student row."""

    def fail(metric: str, value: float | None, limit: float | None, msg: str) -> Violation:
        return Violation(str(row["name"]), str(row.get("format")), str(row.get("precision")),
                         metric, value, limit, msg)

    status = str(row.get("status", "ok"))
    if status != "ok":
        return [fail("status", None, None, f"did not run ({status})")]
    acc, ref_acc = row["accuracy"], ref["accuracy"]
    out = []
    delta = acc["roc_auc"] - ref_acc["roc_auc"]
    if not abs(delta) <= tol.max_auc_delta:
        out.append(fail("roc_auc", delta, tol.max_auc_delta,
                        f"roc_auc delta {delta:+.4f} exceeds {tol.max_auc_delta:g} "
                        f"({acc['roc_auc']:.4f} vs float student {ref_acc['roc_auc']:.4f})"))
    if floor is not None and not acc["sensitivity"] >= floor:  # also catches nan
        out.append(fail("sensitivity", acc["sensitivity"], floor,
                        f"sensitivity {acc['sensitivity']:.4f} at threshold "
                        f"{acc['threshold']:.4g} is below {floor:g}"))
    limit = ref_acc["ece"] + tol.max_ece_delta
    if not acc["ece"] <= limit:
        out.append(fail("ece", acc["ece"], limit,
                        f"ece {acc['ece']:.4f} exceeds float student ECE "
                        f"{ref_acc['ece']:.4f} + {tol.max_ece_delta:g}"))
    return out
