"""Clinical evaluation of a results folder: subgroups with intervals, paired INT8-vs-float
deltas, decision curves and calibration.

    python -m benchmarks.subgroups R [--group-by COLUMN[,COLUMN...]]

For the float teacher, the float student and every artefact the harness scored: metrics by
acquisition site (the Dataverse metadata's ``dataset`` column; "n/a" when the metadata lacks
it, never inferred), sex, age band, localization and dx_type (or the ``--group-by`` columns of
any other dataset), each with n, melanomas, ROC-AUC with a DeLong 95 % CI, sensitivity and
specificity at the shipped threshold with Wilson intervals, and ECE of P(melanoma); a warning on
groups with fewer than 30 melanomas; per group, each artefact against the float student: the
paired ΔROC-AUC (DeLong, same images), Δsensitivity, Δspecificity and McNemar's test on the
decisions. Writes ``R/subgroups.json`` (strict), ``R/subgroups.md``, ``R/subgroups.csv``,
``R/plots/decision_curve.png`` and ``R/plots/reliability_overlay.png``.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.clinical_inputs import ClinicalError, ScoredModel, ScoredRun, load_scored_run
from kd_core import cli

log = logging.getLogger(__name__)
MIN_MELANOMAS = 30  # below this a group's sensitivity and AUC are flagged as underpowered
ALPHA = 0.05
SITE_COLUMN = "dataset"
AGE_BANDS = ((0, 20, "0-19"), (20, 40, "20-39"), (40, 60, "40-59"), (60, 80, "60-79"),
             (80, 1000, "80+"))
DECISION_THRESHOLDS = np.round(np.arange(0.01, 0.51, 0.01), 2)


@dataclass(frozen=True)
class Factor:
    name: str  # what the tables call it
    column: str  # the metadata column
    age_bands: bool = False


HAM_FACTORS = (Factor("site", SITE_COLUMN), Factor("sex", "sex"),
               Factor("age band", "age", age_bands=True), Factor("localization", "localization"),
               Factor("dx_type", "dx_type"))


def age_band(value: str) -> str:
    try:
        age = float(value)
    except ValueError:
        return "missing"
    return next((label for lo, hi, label in AGE_BANDS if lo <= age < hi), "missing")


def group_labels(run: ScoredRun, factor: Factor) -> list[str]:
    values = run.column(factor.column)
    if factor.age_bands:
        return [age_band(v) for v in values]
    return [v if v else "missing" for v in values]


def ordered_groups(labels: Sequence[str], factor: Factor) -> list[str]:
    counts = Counter(labels)
    if factor.age_bands:
        order = [b[2] for b in AGE_BANDS] + ["missing"]
        return [g for g in order if g in counts]
    return sorted(counts, key=lambda g: (g == "missing", -counts[g], g))


def factors_for(run: ScoredRun, group_by: Sequence[str] | None) -> tuple[list[Factor], list[str]]:
    """The factors to tabulate, and a note for each default one the metadata lacks."""
    if group_by:
        missing = [c for c in group_by if c not in run.columns]
        if missing:
            raise ClinicalError(f"--group-by {','.join(missing)}: no such column in the split's "
                                f"metadata ({', '.join(run.columns)})")
        return [Factor(c, c) for c in group_by], []
    present = [f for f in HAM_FACTORS if f.column in run.columns]
    notes = []
    for f in HAM_FACTORS:
        if f.column not in run.columns:
            why = (" (the Kaggle release lacks it; use the Dataverse metadata; sites are never "
                   "inferred)") if f.column == SITE_COLUMN else ""
            notes.append(f"{f.name}: n/a, the metadata has no `{f.column}` column{why}")
    return present, notes


# ---- metrics ---------------------------------------------------------------------------------


def _rate(k: int, n: int) -> tuple[float | None, float | None, float | None]:
    from kd_core.stats import wilson

    ci = wilson(k, n, ALPHA)
    return (None, None, None) if ci is None else (k / n, ci[0], ci[1])


def group_metrics(y: np.ndarray, p: np.ndarray, calls: np.ndarray) -> dict[str, Any]:
    """n, melanomas, ROC-AUC [DeLong CI], sensitivity and specificity [Wilson], ECE."""
    from kd_core.metrics import ece_binary, roc_auc
    from kd_core.stats import auc_ci

    pos = y.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    est = auc_ci(pos, p, ALPHA)  # None below two images per class: then the point value only
    auc = est.value if est is not None else (roc_auc(pos, p) if n_pos and n_neg else None)
    sens = _rate(int((calls & pos).sum()), n_pos)
    spec = _rate(int((~calls & ~pos).sum()), n_neg)
    return {
        "n": len(y), "n_pos": n_pos, "prevalence": n_pos / len(y) if len(y) else None,
        "roc_auc": auc, "roc_auc_ci_low": None if est is None else est.low,
        "roc_auc_ci_high": None if est is None else est.high,
        "sensitivity": sens[0], "sensitivity_ci_low": sens[1], "sensitivity_ci_high": sens[2],
        "specificity": spec[0], "specificity_ci_low": spec[1], "specificity_ci_high": spec[2],
        "referred": int(calls.sum()),
        "ece": ece_binary(p, pos.astype(np.int64)) if len(y) else None,
        "underpowered": n_pos < MIN_MELANOMAS,
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def paired_delta(model: ScoredModel, ref: ScoredModel, y: np.ndarray, mask: np.ndarray,
                 mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """``model`` against ``ref`` on the same images: ΔAUC with DeLong's paired CI, Δsens,
    Δspec, McNemar on the decisions, and melanomas one refers and the other misses."""
    from kd_core.stats import mcnemar, paired_auc_delta

    pos = y[mask].astype(bool)
    d = paired_auc_delta(pos, model.p[mask], ref.p[mask], ALPHA)
    a, b = model.calls[mask], ref.calls[mask]
    test = mcnemar(a, b)
    out: dict[str, Any] = {"reference": ref.name}
    out.update(d.to_dict() if d is not None else dict.fromkeys(
        ("delta_auc", "delta_auc_se", "delta_auc_ci_low", "delta_auc_ci_high", "delta_auc_p")))
    out.update({
        "delta_sensitivity": _diff(mine["sensitivity"], theirs["sensitivity"]),
        "delta_specificity": _diff(mine["specificity"], theirs["specificity"]),
        "mcnemar_p": test.p_value, "mcnemar_method": test.method,
        "referred_only_by_model": test.only_a, "referred_only_by_reference": test.only_b,
        "melanomas_missed_only_by_model": int((pos & b & ~a).sum()),
        "melanomas_caught_only_by_model": int((pos & a & ~b).sum()),
    })
    return out


# ---- the tables ------------------------------------------------------------------------------


def group_rows(run: ScoredRun, factors: Sequence[Factor]
               ) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """One row per (factor, group, model), with the paired delta against the float student;
    plus a warning and a record per underpowered group."""
    ref, rows, warnings = run.reference, [], []
    underpowered: list[dict[str, Any]] = []
    for factor in [Factor("overall", ""), *factors]:
        labels = ["all"] * len(run.y) if factor.name == "overall" else group_labels(run, factor)
        arr = np.asarray(labels)
        for value in ordered_groups(labels, factor):
            mask = arr == value
            y = run.y[mask]
            if int(y.sum()) < MIN_MELANOMAS:
                underpowered.append({"factor": factor.name, "value": value,
                                     "n": int(mask.sum()), "n_pos": int(y.sum())})
                warnings.append(f"{factor.name} = {value}: {int(y.sum())} melanoma(s) among "
                                f"{int(mask.sum())} images (< {MIN_MELANOMAS}): underpowered")
            stats = {m.name: group_metrics(y, m.p[mask], m.calls[mask]) for m in run.models}
            for m in run.models:
                row = {"factor": factor.name, "column": factor.column or None, "value": value,
                       "model": m.name, "role": m.role, "precision": m.precision,
                       **stats[m.name]}
                if ref is not None and m.name != ref.name:
                    row["delta"] = paired_delta(m, ref, run.y, mask, stats[m.name],
                                                stats[ref.name])
                rows.append(row)
    return rows, warnings, underpowered


def site_baseline(run: ScoredRun) -> dict[str, Any] | None:
    """A predictor that sees only the acquisition site: each image scores its site's melanoma
    prevalence in the training split. Its ROC-AUC is what site alone explains."""
    from kd_core.stats import auc_ci

    if SITE_COLUMN not in run.columns or not run.train_metadata:
        return None
    train = Counter(r.get(SITE_COLUMN, "") for r in run.train_metadata)
    train_pos = Counter(r.get(SITE_COLUMN, "") for r in run.train_metadata
                        if r.get("target") == "1")
    prevalence = {s: train_pos[s] / n for s, n in train.items() if n}
    overall = sum(train_pos.values()) / max(1, sum(train.values()))
    p = np.array([prevalence.get(s, overall) for s in run.column(SITE_COLUMN)])
    est = auc_ci(run.y, p, ALPHA)
    return {"train_prevalence": dict(sorted(prevalence.items())),
            "roc_auc": None if est is None else est.value,
            "roc_auc_ci_low": None if est is None else est.low,
            "roc_auc_ci_high": None if est is None else est.high}


def model_summaries(run: ScoredRun, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from kd_core.stats import calibration_fit, within_group_auc

    sites = run.column(SITE_COLUMN) if SITE_COLUMN in run.columns else None
    out = []
    for m in run.models:
        overall = next(r for r in rows if r["factor"] == "overall" and r["model"] == m.name)
        out.append({
            "name": m.name, "role": m.role, "format": m.format, "precision": m.precision,
            "threshold": m.decision.threshold, "temperature": m.decision.temperature,
            "overall": {k: v for k, v in overall.items()
                        if k not in ("factor", "column", "value", "model", "role", "precision")},
            **calibration_fit(run.y, m.p).to_dict(),
            "within_site_roc_auc": within_group_auc(run.y, m.p, sites) if sites else None,
            "repair": m.repair, "gate": (run.results.get("gate") or {}).get("passed"),
        })
    return out


def compute_clinical(run: ScoredRun, group_by: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything ``subgroups.json`` holds (JSON-ready; undefined values are None)."""
    from kd_core.metrics import reliability_table
    from kd_core.stats import decision_curve

    factors, notes = factors_for(run, group_by)
    rows, warnings, underpowered = group_rows(run, factors)
    ref = run.reference
    meta = run.meta
    return {
        "version": 1,
        "meta": {"results": str(run.results_dir), "data": meta.get("data"),
                 "prepared": meta.get("prepared"), "split": meta.get("split"),
                 "n": len(run.y), "n_pos": int(run.y.sum()),
                 "prevalence": float(run.y.mean()), "reference": ref.name if ref else None,
                 "min_melanomas": MIN_MELANOMAS, "confidence": 1 - ALPHA,
                 "methods": {"roc_auc_ci": "DeLong (Wald, clipped to [0, 1])",
                             "proportion_ci": "Wilson score",
                             "paired_delta_auc": "DeLong paired test on the same images",
                             "decisions": "McNemar (exact binomial below 25 discordant pairs, "
                                          "else chi-square with continuity correction)",
                             "calibration": "logistic recalibration: slope; intercept with "
                                            "the slope fixed at 1"},
                 "factors": [{"name": f.name, "column": f.column} for f in factors],
                 "created": datetime.now(UTC).isoformat(timespec="seconds")},
        "notes": [*run.notes, *notes],
        "warnings": warnings,
        "underpowered": underpowered,
        "models": model_summaries(run, rows),
        "site_baseline": site_baseline(run),
        "groups": rows,
        "decision_curve": decision_curve(run.y, {m.name: m.p for m in run.models},
                                         DECISION_THRESHOLDS),
        "reliability": {m.name: reliability_table(m.p, run.y, n_bins=10) for m in run.models},
    }


def write_subgroups(results_dir: str | Path, group_by: Sequence[str] | None = None
                   ) -> list[Path]:
    """Compute the clinical evaluation of ``results_dir`` and write its tables and plots;
    returns the files written. Raises ``ClinicalError`` (a ``BadInput``) before writing
    anything when the folder cannot be evaluated."""
    from benchmarks.clinical_plots import plot_decision_curve, plot_reliability_overlay
    from benchmarks.clinical_tables import render_csv, render_markdown
    from kd_core.io import atomic_write_text, write_json

    out = Path(results_dir)
    data = compute_clinical(load_scored_run(out), group_by)
    write_json(out / "subgroups.json", data)
    atomic_write_text(out / "subgroups.md", render_markdown(data))
    atomic_write_text(out / "subgroups.csv", render_csv(data))
    written = [out / "subgroups.json", out / "subgroups.md", out / "subgroups.csv",
               plot_decision_curve(data, out / "plots" / "decision_curve.png"),
               plot_reliability_overlay(data, out / "plots" / "reliability_overlay.png")]
    for w in data["warnings"]:
        log.info("warning: %s", w)
    return written


def _columns(value: str) -> list[str]:
    cols = [c.strip() for c in value.split(",") if c.strip()]
    if not cols:
        raise argparse.ArgumentTypeError(f"no column names in {value!r}")
    return cols


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.subgroups",
                   "Subgroup metrics with intervals, paired artefact-vs-float deltas, decision "
                   "curves and calibration for a benchmark results folder.")
    p.add_argument("results_dir", type=Path, metavar="R",
                   help="results folder of python -m benchmarks.run")
    p.add_argument("--group-by", type=_columns, metavar="COLUMN[,COLUMN...]",
                   help="metadata columns to group by (default: HAM10000's site, sex, age band, "
                        "localization and dx_type)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _main(args: argparse.Namespace) -> int:
    for path in write_subgroups(args.results_dir, args.group_by):
        print(path)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    raise SystemExit(main())
