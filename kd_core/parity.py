"""The parity gate's per-artefact checks, shared by the benchmark harness (``benchmarks.parity``)
and the INT8 repair ladder (``exporters.int8.repair``, on the validation split).

An artefact row passes when |ROC-AUC - float student's| <= ``max_auc_delta``, sensitivity at its
threshold >= ``min_sensitivity`` and ECE <= the float student's ECE + ``max_ece_delta``. Rows and
the reference are dicts with ``status`` and ``accuracy`` (``roc_auc``, ``sensitivity``,
``threshold``, ``ece``), as ``kd_core.metrics.evaluate_predictions`` gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Tolerances:
    max_auc_delta: float = 0.005
    min_sensitivity: float = 0.93  # target sensitivity 0.95 - 0.02
    max_ece_delta: float = 0.01

    def to_dict(self) -> dict[str, float]:
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


def check_row(row: Mapping[str, Any], ref: Mapping[str, Any], tol: Tolerances) -> list[Violation]:
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
    if abs(delta) > tol.max_auc_delta:
        out.append(fail("roc_auc", delta, tol.max_auc_delta,
                        f"roc_auc delta {delta:+.4f} exceeds {tol.max_auc_delta:g} "
                        f"({acc['roc_auc']:.4f} vs float student {ref_acc['roc_auc']:.4f})"))
    if not acc["sensitivity"] >= tol.min_sensitivity:  # also catches nan
        out.append(fail("sensitivity", acc["sensitivity"], tol.min_sensitivity,
                        f"sensitivity {acc['sensitivity']:.4f} at threshold "
                        f"{acc['threshold']:.4g} is below {tol.min_sensitivity:g}"))
    limit = ref_acc["ece"] + tol.max_ece_delta
    if not acc["ece"] <= limit:
        out.append(fail("ece", acc["ece"], limit,
                        f"ece {acc['ece']:.4f} exceeds float student ECE "
                        f"{ref_acc['ece']:.4f} + {tol.max_ece_delta:g}"))
    return out
