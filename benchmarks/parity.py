"""The parity gate: an artefact is blessed only if it scores like the float student.

For every artefact row run on this host: |ROC-AUC - float student's| <= ``max_auc_delta``;
sensitivity at the shipped threshold >= ``min_sensitivity`` (target 0.95 - 0.02); ECE at the
shipped temperature <= float student's ECE + ``max_ece_delta``. A row that failed to run is a
violation too (metric ``status``); a row whose runtime cannot run here (Core ML off macOS) is
skipped, not failed. ``gate`` returns the violations, ``gate_report`` a JSON-ready summary,
``check`` raises ``ParityGateError`` naming the format and the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

UNAVAILABLE_PREFIX = "needs "  # statuses such as "needs macOS": skipped, not failed


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


def gate(results: Mapping[str, Any], tolerances: Tolerances | None = None) -> list[Violation]:
    """Every violation of every artefact row run on this host (skipped rows excluded)."""
    tol = tolerances or Tolerances()
    ref = reference_row(results)
    out: list[Violation] = []
    for row in _rows(results, "artifact"):
        if not is_unavailable(str(row.get("status", "ok"))):
            out.extend(check_row(row, ref, tol))
    return out


def gate_report(results: Mapping[str, Any], tolerances: Tolerances | None = None
                ) -> dict[str, Any]:
    """JSON-ready verdict: tolerances, checked and skipped rows, violations, passed."""
    tol = tolerances or Tolerances()
    rows = _rows(results, "artifact")
    violations = gate(results, tol)
    return {
        "tolerances": tol.to_dict(),
        "reference": reference_row(results)["name"],
        "checked": [r["name"] for r in rows if not is_unavailable(str(r.get("status", "ok")))],
        "skipped": [{"name": r["name"], "reason": r["status"]} for r in rows
                    if is_unavailable(str(r.get("status", "ok")))],
        "violations": [asdict(v) for v in violations],
        "passed": not violations,
    }


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
