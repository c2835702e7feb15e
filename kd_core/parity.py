"""The parity gate's rule for one artefact, shared by the benchmark harness's gate
(``benchmarks.parity``, on the holdout split) and the INT8 repair ladder (``exporters.int8.repair``,
on the validation split): one definition, whatever the split.

An artefact row passes when |ROC-AUC - float student's| <= ``max_auc_delta``, sensitivity at its
threshold >= the sensitivity floor (``sensitivity_floor``: ``Tolerances.min_sensitivity`` when
set, else the float student's ``Decision.min_sensitivity``) and ECE <= the float student's ECE +
``max_ece_delta``. A model without a positive class (decided by argmax) is held to its macro
ROC-AUC (the ``roc_auc`` it reports) and to top-1 agreement with the float student >=
``min_top1_agreement`` instead of sensitivity. Rows and the reference are mappings with ``name``,
``status`` and ``accuracy`` (``roc_auc``, ``sensitivity``, ``threshold``, ``ece``,
``positive_index``, ``num_classes``; argmax and multi-class: ``argmax_agreement_vs_student``),
as the benchmark harness records them. A multi-class model with a positive class (e.g. seven
diagnoses, melanoma called at a threshold) is held to both: the positive class's rule and top-1
agreement.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kd_core.deploy import Decision


@dataclass(frozen=True)
class Tolerances:
    max_auc_delta: float = 0.005
    min_sensitivity: float | None = None  # None: the float student's Decision.min_sensitivity
    max_ece_delta: float = 0.01
    min_top1_agreement: float = 0.98  # argmax models: share of images decided as the student

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def add_tolerance_arguments(p: argparse.ArgumentParser) -> None:
    """The gate's tolerances as flags (``benchmarks.run``, and ``exporters.all`` for its repair
    ladder, which aims at the gate that will be run)."""
    t = Tolerances()
    p.add_argument("--max-auc-delta", type=float, default=t.max_auc_delta,
                   help="largest |ROC-AUC - float student's|")
    p.add_argument("--min-sensitivity", type=float, default=None,
                   help="sensitivity floor (default: the float student's target sensitivity "
                        "minus the contract's margin, kd_core.deploy.Decision.min_sensitivity)")
    p.add_argument("--max-ece-delta", type=float, default=t.max_ece_delta,
                   help="largest ECE above the float student's")
    p.add_argument("--min-top1-agreement", type=float, default=t.min_top1_agreement,
                   help="argmax and multi-class models: smallest share of images whose most "
                   "probable class is the float student's")


def tolerances_from_args(args: argparse.Namespace) -> Tolerances:
    """``Tolerances`` from ``add_tolerance_arguments``'s flags, each checked (BadInput)."""
    from kd_core.cli import BadInput

    for flag, value, low, high in (("--max-auc-delta", args.max_auc_delta, 0.0, 1.0),
                                   ("--min-sensitivity", args.min_sensitivity, 0.0, 1.0),
                                   ("--max-ece-delta", args.max_ece_delta, 0.0, 1.0),
                                   ("--min-top1-agreement", args.min_top1_agreement, 0.0, 1.0)):
        if value is not None and not low <= value <= high:
            raise BadInput(f"{flag} must be between {low:g} and {high:g}, got {value}")
    return Tolerances(args.max_auc_delta, args.min_sensitivity, args.max_ece_delta,
                      args.min_top1_agreement)


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


def sensitivity_floor(decision: Decision, tol: Tolerances) -> float | None:
    """The float student's floor on sensitivity: ``tol.min_sensitivity`` when set, else its
    ``Decision.min_sensitivity`` (None: no target sensitivity, or an argmax model, which is
    gated on top-1 agreement instead)."""
    if decision.positive_index is None:
        return None
    if tol.min_sensitivity is not None:
        return tol.min_sensitivity
    return decision.min_sensitivity


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
    argmax = acc.get("positive_index", 1) is None
    if argmax or acc.get("num_classes", 2) > 2:  # every multi-class model: top-1 agreement
        agree = acc.get("argmax_agreement_vs_student")
        if agree is None or not agree >= tol.min_top1_agreement:
            out.append(fail("top1_agreement", agree, tol.min_top1_agreement,
                            f"top-1 agreement with the float student "
                            f"{'n/a' if agree is None else format(agree, '.4f')} is below "
                            f"{tol.min_top1_agreement:g}"))
    if not argmax and floor is not None and not acc["sensitivity"] >= floor:  # catches nan
        out.append(fail("sensitivity", acc["sensitivity"], floor,
                        f"sensitivity {acc['sensitivity']:.4f} at threshold "
                        f"{acc['threshold']:.4g} is below {floor:g}"))
    limit = ref_acc["ece"] + tol.max_ece_delta
    if not acc["ece"] <= limit:
        out.append(fail("ece", acc["ece"], limit,
                        f"ece {acc['ece']:.4f} exceeds float student ECE "
                        f"{ref_acc['ece']:.4f} + {tol.max_ece_delta:g}"))
    return out
