"""The coverage matrix's cells and tables: one cell per architecture x format x precision, from
the export's result (what was made, or the converter's exact error) and the benchmark harness's
rows (parity with the float model, latency, size, graph report, gate verdict).

``zoo.json`` holds every cell; ``zoo.md``/``zoo.csv`` and the README block between
``<!-- zoo-matrix:start -->`` and ``<!-- zoo-matrix:end -->`` are generated from it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from kd_core.deploy import fp32_tolerance

START, END = "<!-- zoo-matrix:start -->", "<!-- zoo-matrix:end -->"
COLUMNS = ("arch", "format", "precision", "status", "max_abs_logit_diff", "top1_agreement",
           "roc_auc_delta", "p50_ms_1t", "int8_vs_fp32", "size_bytes", "graph", "repair",
           "gate", "note", "error")


def expected_cells(formats: Sequence[str], families: Sequence[str]) -> list[tuple[str, str]]:
    """(format, artefact precision) of every cell an export of ``formats`` should make."""
    from exporters import get_exporter

    return [(f, p) for f in formats for p in get_exporter(f).artefact_precisions(tuple(families))]


def _p50(row: Mapping[str, Any]) -> float | None:
    lat = (row.get("latency") or {}).get("1")
    return None if not lat else float(lat["p50_ms"])


def artefact_cell(arch: str, row: Mapping[str, Any], entry: Any, reasons: Sequence[str]
                  ) -> dict[str, Any]:
    """A cell of an exported artefact from its benchmark row and manifest entry."""
    from benchmarks.report import int8_cell
    from exporters.int8.report import graph_summary

    acc = row.get("accuracy") or {}
    status = str(row.get("status", "ok"))
    return {
        "arch": arch, "format": row["format"], "precision": row["precision"],
        "status": "ok" if status == "ok" else status,
        "max_abs_logit_diff": acc.get("max_abs_logit_diff_vs_student"),
        # the exporters' fp32 rule, scaled by the float model's largest |logit| on these images
        "fp32_tolerance": fp32_tolerance(acc.get("ref_max_abs_logit_vs_student") or 0.0),
        "top1_agreement": acc.get("argmax_agreement_vs_student"),
        "roc_auc_delta": acc.get("roc_auc_delta_vs_student"),
        "p50_ms_1t": _p50(row), "int8_vs_fp32": None, "size_bytes": row.get("size_bytes"),
        "graph": graph_summary(getattr(entry, "graph_report", None)) if entry else "-",
        "repair": int8_cell(row),  # the ladder's rung and float sites; "-" for fp32
        "gate": "skipped" if status.startswith("needs ") else (
            "FAIL: " + "; ".join(reasons) if reasons else "pass"),
        "note": "", "error": None if status == "ok" else status,
    }


def failed_cell(arch: str, fmt: str, precision: str, error: str) -> dict[str, Any]:
    """A cell that was not exported: the converter's (or the model's) exact error."""
    return {**dict.fromkeys(COLUMNS), "arch": arch, "format": fmt, "precision": precision,
            "status": "failed", "graph": "-", "repair": "-", "gate": "-", "note": "",
            "error": error}


def add_speed_notes(cells: list[dict[str, Any]]) -> None:
    """INT8/fp32 1-thread latency ratio on each quantized cell; a note where INT8 is slower or
    a float artefact drifts beyond its ``fp32_tolerance`` (``kd_core.deploy.fp32_tolerance``)."""
    fp32 = {(c["arch"], c["format"]): c for c in cells if c["precision"] in ("fp32", "fp16")}
    for c in cells:
        ref = fp32.get((c["arch"], c["format"]))
        if c["precision"] not in ("fp32", "fp16") and ref and c["p50_ms_1t"] and \
                ref["p50_ms_1t"]:
            c["int8_vs_fp32"] = c["p50_ms_1t"] / ref["p50_ms_1t"]
            if c["int8_vs_fp32"] > 1:
                c["note"] = (f"INT8 slower than fp32 ({c['p50_ms_1t']:.2f} vs "
                             f"{ref['p50_ms_1t']:.2f} ms)")
        diff = c["max_abs_logit_diff"]
        if c["precision"] == "fp32" and diff is not None and diff > _tolerance(c):
            c["note"] = f"fp32 drifts: max |Δlogit| {diff:.2e} > {_tolerance(c):.2g}"


def _tolerance(cell: Mapping[str, Any]) -> float:
    """The cell's fp32 tolerance (cells kept from before it was recorded: the unscaled one)."""
    return float(cell.get("fp32_tolerance") or fp32_tolerance(0.0))


def summary(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The matrix's headline figures: fp32 cells within tolerance, INT8 cells exported."""
    fp32 = [c for c in cells if c["precision"] == "fp32"]
    exact = [c for c in fp32 if c["max_abs_logit_diff"] is not None
             and c["max_abs_logit_diff"] <= _tolerance(c)]
    int8 = [c for c in cells if c["precision"] == "int8"]
    return {"archs": len({c["arch"] for c in cells}), "fp32_cells": len(fp32),
            "fp32_within_tolerance": len(exact),
            "fp32_share": round(len(exact) / len(fp32), 4) if fp32 else None,
            "int8_cells": len(int8), "int8_exported": sum(c["status"] != "failed" for c in int8),
            "int8_gate_pass": sum(c["gate"] == "pass" for c in int8),
            "int8_slower": sum(bool(c["int8_vs_fp32"] and c["int8_vs_fp32"] > 1) for c in int8)}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _status(c: Mapping[str, Any]) -> str:
    if c["status"] == "failed":
        return f"failed: `{str(c['error']).splitlines()[0][:160]}`"
    return "ok" if c["status"] == "ok" else str(c["status"])


def markdown_table(cells: Sequence[Mapping[str, Any]]) -> str:
    head = ["Arch", "Format", "Precision", "Exported", "max abs Δlogit (fp32)",
            "Top-1 agreement", "ΔROC-AUC", "p50 ms (1 thread)", "INT8 / fp32", "Size (MB)",
            "Graph (INT8)", "Repair (INT8)", "Gate", "Note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        size = None if c["size_bytes"] is None else c["size_bytes"] / 1e6
        lines.append("| " + " | ".join([
            c["arch"], c["format"], c["precision"], _status(c),
            _fmt(c["max_abs_logit_diff"], ".1e"), _fmt(c["top1_agreement"], ".3f"),
            _fmt(c["roc_auc_delta"], "+.4f"), _fmt(c["p50_ms_1t"], ".2f"),
            _fmt(c["int8_vs_fp32"], ".2f"), _fmt(size, ".2f"), str(c["graph"] or "-"),
            str(c.get("repair") or "-"), str(c["gate"] or "-"),
            str(c["note"] or "")]).replace("\n", " ") + " |")
    return "\n".join(lines)


def caption(meta: Mapping[str, Any], totals: Mapping[str, Any]) -> str:
    share = totals.get("fp32_share")
    return (f"_{totals['archs']} architectures on `{meta.get('data_name')}` "
            f"({meta.get('n_eval')} {meta.get('split')} images, {meta.get('image_size')} px, "
            f"{meta.get('prepare')}, INT8 repair {meta.get('repair', 'off')}); "
            f"fp32 cells with max |Δlogit| <= 1e-4 x max(1, max |logit|): "
            f"{totals['fp32_within_tolerance']} of {totals['fp32_cells']}"
            + (f" ({100 * share:.0f} %)" if share is not None else "")
            + f"; INT8 exported {totals['int8_exported']} of {totals['int8_cells']}, gate "
            f"passed {totals['int8_gate_pass']}, slower than fp32 {totals['int8_slower']}; "
            f"latency: median of {meta.get('runs')} runs on {meta.get('host')}; "
            f"measured {str(meta.get('created', ''))[:10]}._")


def render_markdown(data: Mapping[str, Any]) -> str:
    meta, cells = data["meta"], data["cells"]
    return (f"# Coverage matrix\n\n{caption(meta, data['summary'])}\n\n"
            f"{markdown_table(cells)}\n\nCommand: `{meta.get('command')}`\n")


def csv_text(cells: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(cells)
    return buf.getvalue()


def readme_block(data: Mapping[str, Any]) -> str:
    return f"{caption(data['meta'], data['summary'])}\n\n{markdown_table(data['cells'])}"
