"""``subgroups.md`` and ``subgroups.csv``, rendered from the dict ``subgroups.json`` holds.

Markdown shows the float models and the reduced-precision artefacts (INT8, fp16, w8); fp32
artefacts, identical to the float student up to rounding, are in the CSV and JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

FLOAT_PRECISIONS = ("fp32",)
NO_REFERENCE = "none (the float student did not run)"


def num(v: Any, digits: int = 3, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def with_ci(d: Mapping[str, Any], key: str, digits: int = 3, signed: bool = False) -> str:
    low, high = d.get(f"{key}_ci_low"), d.get(f"{key}_ci_high")
    point = num(d.get(key), digits, signed)
    if low is None or high is None:
        return point
    return f"{point} [{num(low, digits, signed)}, {num(high, digits, signed)}]"


def p_value(v: Any) -> str:
    if v is None:
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def shown(row: Mapping[str, Any]) -> bool:
    """Float models and reduced-precision artefacts go into the Markdown."""
    return row.get("role") != "artifact" or row.get("precision") not in FLOAT_PRECISIONS


def _delta_cells(row: Mapping[str, Any]) -> list[str]:
    d = row.get("delta")
    if not d:
        return ["reference" if row.get("role") == "student" else "-", "-", "-", "-"]
    return [with_ci(d, "delta_auc", 4, signed=True), num(d.get("delta_sensitivity"), 3, True),
            num(d.get("delta_specificity"), 3, True), p_value(d.get("mcnemar_p"))]


def overall_table(data: Mapping[str, Any]) -> str:
    head = ["Model", "Precision", "ROC-AUC [95% CI]", "Within-site AUC", "Sensitivity [95% CI]",
            "Specificity [95% CI]", "ECE", "Cal. slope", "Cal. intercept",
            "ΔAUC vs float student [95% CI]", "ΔSens", "ΔSpec", "McNemar p"]
    rows = {r["model"]: r for r in data["groups"] if r["factor"] == "overall"}
    body = []
    for m in data["models"]:
        o = rows[m["name"]]
        body.append([m["name"], str(m["precision"]), with_ci(o, "roc_auc"),
                     num(m.get("within_site_roc_auc")), with_ci(o, "sensitivity"),
                     with_ci(o, "specificity"), num(o.get("ece")),
                     num(m.get("calibration_slope"), 2), num(m.get("calibration_intercept"), 2),
                     *_delta_cells(o)])
    return md_table(head, body)


def factor_table(data: Mapping[str, Any], factor: str) -> str:
    head = ["Group", "n", "Melanomas", "Model", "ROC-AUC [95% CI]", "Sensitivity [95% CI]",
            "Specificity [95% CI]", "ECE", "ΔAUC vs float student [95% CI]", "ΔSens", "ΔSpec",
            "McNemar p", "Note"]
    body = []
    for r in data["groups"]:
        if r["factor"] != factor or not shown(r):
            continue
        note = f"< {data['meta']['min_melanomas']} melanomas" if r["underpowered"] else ""
        body.append([str(r["value"]), str(r["n"]), str(r["n_pos"]), r["model"],
                     with_ci(r, "roc_auc"), with_ci(r, "sensitivity"),
                     with_ci(r, "specificity"), num(r.get("ece")), *_delta_cells(r), note])
    return md_table(head, body)


def baseline_line(data: Mapping[str, Any]) -> list[str]:
    b = data.get("site_baseline")
    if not b:
        return []
    prev = ", ".join(f"{s} {v:.3f}" for s, v in b["train_prevalence"].items())
    return ["", f"Site-only baseline (each image scores its site's training-split melanoma "
                f"prevalence: {prev}): ROC-AUC {with_ci(b, 'roc_auc')}. A model's overall AUC "
                "above this is what it adds beyond recognising the acquisition site; the "
                "within-site AUC counts only pairs from the same site."]


def render_markdown(data: Mapping[str, Any]) -> str:
    m = data["meta"]
    lines = ["# Clinical evaluation: subgroups, paired deltas, calibration", "",
             f"- data: `{m.get('data')}`, split `{m.get('split')}`: {m['n']} images, "
             f"{m['n_pos']} melanomas (prevalence {m['prevalence']:.3f})",
             f"- reference for deltas: {m.get('reference') or NO_REFERENCE}; "
             f"{round(100 * m['confidence'])} % intervals",
             *[f"- {k.replace('_', ' ')}: {v}" for k, v in m["methods"].items()],
             *[f"- note: {n}" for n in data.get("notes", [])], "",
             "## Overall", "", overall_table(data), *baseline_line(data)]
    if data.get("warnings"):
        lines += ["", "## Underpowered groups", "",
                  *[f"- {w}" for w in data["warnings"]]]
    for f in m["factors"]:
        lines += ["", f"## By {f['name']} (`{f['column']}`)", "", factor_table(data, f["name"])]
    lines += ["", "## Plots", "", "![decision curve](plots/decision_curve.png)",
              "![reliability](plots/reliability_overlay.png)", ""]
    return "\n".join(lines)


CSV_FIRST = ["factor", "column", "value", "model", "role", "precision", "n", "n_pos",
             "prevalence", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "sensitivity",
             "sensitivity_ci_low", "sensitivity_ci_high", "specificity", "specificity_ci_low",
             "specificity_ci_high", "referred", "ece", "underpowered"]


def render_rows_csv(rows: Sequence[Mapping[str, Any]], first: Sequence[str]) -> str:
    """CSV of flat dict rows: the ``first`` columns, then the rest sorted; None is empty."""
    cols = list(first) + sorted({k for r in rows for k in r} - set(first))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return buf.getvalue()


def render_csv(data: Mapping[str, Any]) -> str:
    """One row per (factor, group, model); the paired delta's fields prefixed ``vs_ref_``."""
    rows = []
    for r in data["groups"]:
        flat = {k: v for k, v in r.items() if k != "delta"}
        flat.update({f"vs_ref_{k}": v for k, v in (r.get("delta") or {}).items()})
        rows.append(flat)
    return render_rows_csv(rows, CSV_FIRST)
