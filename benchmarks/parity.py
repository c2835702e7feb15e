"""The parity gate: an artefact is blessed only if it scores like the float student.

For every artefact row run on this host: |ROC-AUC - float student's| <= ``max_auc_delta``;
sensitivity at the shipped threshold >= the float student's ``Decision.min_sensitivity`` (its
target sensitivity minus the contract's margin; ``Tolerances.min_sensitivity`` overrides it);
ECE at the shipped temperature <= float student's ECE + ``max_ece_delta``. A model without a
positive class (decided by argmax) is held to its macro ROC-AUC (the ``roc_auc`` it reports)
and to top-1 agreement with the float student >= ``min_top1_agreement`` instead of sensitivity.
A row that failed to run (or whose file does not match the manifest's sha256) is a violation
too (metric ``status``); a row whose runtime cannot run here (Core ML off macOS) is skipped, not
failed. A gate that checked no artefact has not passed. ``gate_report`` returns a typed
``GateReport``, ``check`` raises ``ParityGateError`` naming the format and the numbers. The rule
for one row (``Tolerances``, ``check_row``, ``sensitivity_floor``) is ``kd_core.parity``'s,
shared with the exporters' INT8 repair ladder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kd_core.parity import Tolerances, Violation, check_row
from kd_core.parity import sensitivity_floor as floor_of_decision

__all__ = ["GateReport", "ParityGateError", "Tolerances", "Violation", "check", "check_row",
           "gate", "gate_report", "is_unavailable", "reference_row", "row_verdict",
           "sensitivity_floor"]

UNAVAILABLE_PREFIX = "needs "  # statuses such as "needs macOS": skipped, not failed


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict: what was checked against which reference, with which limits."""

    tolerances: Tolerances
    min_sensitivity: float | None  # the sensitivity floor applied
    reference: str
    checked: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (name, reason)
    violations: tuple[Violation, ...]
    enforced: bool = True
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True only when at least one artefact was checked and none violated a limit."""
        return bool(self.checked) and not self.violations

    def reasons(self, name: str) -> tuple[str, ...]:
        return tuple(v.message for v in self.violations if v.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"tolerances": {**self.tolerances.to_dict(),
                               "min_sensitivity": self.min_sensitivity},
                "reference": self.reference, "checked": list(self.checked),
                "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
                "violations": [asdict(v) for v in self.violations],
                "passed": self.passed, "enforced": self.enforced, "notes": list(self.notes)}


class ParityGateError(AssertionError):
    """One or more artefacts drifted from the float student; ``violations`` says which and how."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("\n".join(str(v) for v in violations))
        self.violations = violations


def is_unavailable(status: str) -> bool:
    return status.startswith(UNAVAILABLE_PREFIX)


def _rows(results: Mapping[str, Any], role: str) -> list[dict[str, Any]]:
    return [r for r in results.get("rows", [])
            if r.get("role") == role and r.get("location", "host") == "host"]


def reference_row(results: Mapping[str, Any]) -> dict[str, Any]:
    refs = [r for r in _rows(results, "student") if r.get("status") == "ok"]
    if not refs:
        raise ValueError("parity gate: no scored float student row in the results")
    return refs[0]


def sensitivity_floor(ref: Mapping[str, Any], tol: Tolerances) -> float | None:
    """``kd_core.parity.sensitivity_floor`` of the reference row's recorded decision."""
    from kd_core.deploy import Decision

    decision = ref.get("decision")
    if not isinstance(decision, Mapping):
        raise ValueError(f"parity gate: the reference row {ref.get('name')!r} records no "
                         "decision (labels, threshold, target sensitivity)")
    return floor_of_decision(Decision.from_dict(decision, f"row {ref.get('name')}"), tol)


def gate_report(results: Mapping[str, Any], tolerances: Tolerances | None = None,
                enforced: bool = True) -> GateReport:
    """The verdict on every artefact row run on this host (unavailable runtimes skipped)."""
    tol = tolerances or Tolerances()
    ref = reference_row(results)
    floor = sensitivity_floor(ref, tol)
    rows = _rows(results, "artifact")
    checked = [r for r in rows if not is_unavailable(str(r.get("status", "ok")))]
    violations = [v for r in checked for v in check_row(r, ref, tol, floor)]
    notes = () if checked else ("no artefact was checked (none selected, or none can run "
                                "here); a gate that checked nothing fails",)
    return GateReport(tol, floor, str(ref["name"]), tuple(str(r["name"]) for r in checked),
                      tuple((str(r["name"]), str(r["status"])) for r in rows
                            if is_unavailable(str(r.get("status", "ok")))),
                      tuple(violations), enforced, notes)


def gate(results: Mapping[str, Any], tolerances: Tolerances | None = None) -> list[Violation]:
    """Every violation of every artefact row run on this host (skipped rows excluded)."""
    return list(gate_report(results, tolerances).violations)


def check(results: Mapping[str, Any], tolerances: Tolerances | None = None) -> None:
    """Raise ``ParityGateError`` when any artefact violates the tolerances."""
    violations = gate(results, tolerances)
    if violations:
        raise ParityGateError(violations)


def row_verdict(row: Mapping[str, Any], report: Mapping[str, Any] | None) -> str:
    """One word for tables: reference, pass, FAIL (metrics), skipped (reason), or -."""
    role, status = row.get("role"), str(row.get("status", "ok"))
    if role == "student":
        return "reference"
    if role != "artifact" or row.get("location", "host") != "host" or report is None:
        return "-"
    if is_unavailable(status):
        return f"skipped ({status})"
    metrics = [v["metric"] for v in report.get("violations", []) if v["name"] == row["name"]]
    return f"FAIL ({', '.join(metrics)})" if metrics else "pass"
