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
``GateReport``, ``check`` raises ``ParityGateError`` naming the format and the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

UNAVAILABLE_PREFIX = "needs "  # statuses such as "needs macOS": skipped, not failed


@dataclass(frozen=True)
class Tolerances:
    max_auc_delta: float = 0.005
    min_sensitivity: float | None = None  # None: the float student's Decision.min_sensitivity
    max_ece_delta: float = 0.01
    min_top1_agreement: float = 0.98  # argmax models: share of images decided as the student

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
    """``tol.min_sensitivity`` when set, else the reference's ``Decision.min_sensitivity``
    (None: the reference has no target sensitivity, so sensitivity is not gated)."""
    from kd_core.deploy import Decision

    decision = ref.get("decision")
    if not isinstance(decision, Mapping):
        raise ValueError(f"parity gate: the reference row {ref.get('name')!r} records no "
                         "decision (labels, threshold, target sensitivity)")
    ref_decision = Decision.from_dict(decision, f"row {ref.get('name')}")
    if ref_decision.positive_index is None:
        return None  # argmax: gated on top-1 agreement instead
    if tol.min_sensitivity is not None:
        return tol.min_sensitivity
    return ref_decision.min_sensitivity


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
    if acc.get("positive_index", 1) is None:
        agree = acc.get("argmax_agreement_vs_student")
        if agree is None or not agree >= tol.min_top1_agreement:
            out.append(fail("top1_agreement", agree, tol.min_top1_agreement,
                            f"top-1 agreement with the float student "
                            f"{'n/a' if agree is None else format(agree, '.4f')} is below "
                            f"{tol.min_top1_agreement:g}"))
    elif floor is not None and not acc["sensitivity"] >= floor:  # also catches nan
        out.append(fail("sensitivity", acc["sensitivity"], floor,
                        f"sensitivity {acc['sensitivity']:.4f} at threshold "
                        f"{acc['threshold']:.4g} is below {floor:g}"))
    limit = ref_acc["ece"] + tol.max_ece_delta
    if not acc["ece"] <= limit:
        out.append(fail("ece", acc["ece"], limit,
                        f"ece {acc['ece']:.4f} exceeds float student ECE "
                        f"{ref_acc['ece']:.4f} + {tol.max_ece_delta:g}"))
    return out


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
