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
from dataclasses import asdict
from typing import Any

from kd_core.parity import Tolerances, Violation, check_row

__all__ = ["ParityGateError", "Tolerances", "Violation", "check", "check_row", "gate",
           "gate_report", "is_unavailable", "reference_row", "row_verdict"]

UNAVAILABLE_PREFIX = "needs "  # statuses such as "needs macOS": skipped, not failed


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
