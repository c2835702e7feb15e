"""Render a results folder: ``results.md``, ``results.csv``, plots, and the README's table.

    python -m benchmarks.report R [--update-readme [README.md]]

Everything is derived from ``R/results.json`` (and ``R/predictions.npz`` for the plots), so the
same results give the same bytes. ``--update-readme`` replaces the text between
``<!-- deployment-metrics:start -->`` and ``<!-- deployment-metrics:end -->`` with the
"Deployment metrics" table; a README without both markers is an error, nothing is created.
Phone rows (``location: android``, merged in by ``benchmarks.android``) and the web demo's row
(``location: browser``, merged in by ``benchmarks.browser``) are shown in the deployment table too.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.parity import row_verdict
from kd_core import cli
from kd_core.cli import BadInput
from kd_core.io import atomic_write_text

START, END = "<!-- deployment-metrics:start -->", "<!-- deployment-metrics:end -->"
DEVICE_LOCATIONS = ("android", "browser")  # on-device rows, after the host's


class ReportError(BadInput):
    """A results folder or README that cannot be rendered; names the file."""


def load(out_dir: Path) -> dict[str, Any]:
    from benchmarks.android.results import ResultsError, load_results

    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise ReportError(f"{path}: results not found (run python -m benchmarks.run)")
    try:
        return load_results(path)
    except ResultsError as exc:
        raise ReportError(str(exc)) from None


# ---- number formatting ----------------------------------------------------------------------


def num(v: Any, digits: int = 3, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def size_mb(row: Mapping[str, Any]) -> str:
    b = row.get("size_bytes")
    return "-" if b is None else f"{b / 1e6:.2f}"


def host_threads(results: Mapping[str, Any]) -> list[str]:
    keys = {k for r in rows_of(results, "host") for k in (r.get("latency") or {})}
    return sorted(keys, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))


def p50s(row: Mapping[str, Any], threads: list[str]) -> str:
    lat = row.get("latency") or {}
    if not lat:
        return "-"
    if set(lat) <= set(threads):
        return " / ".join(num(lat[k]["p50_ms"], 2) if k in lat else "-" for k in threads)
    return ", ".join(f"{num(v.get('p50_ms'), 2)} ({k}T)" for k, v in sorted(lat.items()))


def roc_auc(row: Mapping[str, Any]) -> float | None:
    acc = row.get("accuracy") or {}
    v = acc.get("roc_auc", acc.get("auc"))
    return None if v is None else float(v)


def rows_of(results: Mapping[str, Any], location: str | None = None) -> list[dict[str, Any]]:
    rows = [r for r in results.get("rows", []) if isinstance(r, dict)]
    return [r for r in rows if location is None or r.get("location", "host") == location]


def student_auc(results: Mapping[str, Any]) -> float | None:
    ref = next((r for r in rows_of(results, "host") if r.get("role") == "student"), None)
    return None if ref is None else roc_auc(ref)


# ---- tables ---------------------------------------------------------------------------------


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def deployment_table(results: Mapping[str, Any]) -> str:
    """The README's "Deployment metrics" table (host rows, then phone and browser rows)."""
    threads = host_threads(results)
    ref_auc, gate = student_auc(results), results.get("gate")
    head = ["Model", "Format", "Precision", "Runtime", "Device", "Size (MB)",
            f"Latency p50 (ms, {' / '.join(threads) or '-'} threads)", "ROC-AUC",
            "ΔROC-AUC vs float student", "ECE", "Gate", "INT8 repair (float sites)"]
    body = []
    for r in [r for loc in ("host", *DEVICE_LOCATIONS) for r in rows_of(results, loc)]:
        auc, acc = roc_auc(r), r.get("accuracy") or {}
        delta = None if auc is None or ref_auc is None else auc - ref_auc
        status = str(r.get("status", "ok"))
        verdict = row_verdict(r, gate)
        if status != "ok" and verdict == "-":
            verdict = status[:40]
        body.append([str(r.get("name")), str(r.get("format")), str(r.get("precision")),
                     str(r.get("runtime")), f"{r.get('location', 'host')}: {r.get('device')}",
                     size_mb(r), p50s(r, threads), num(auc), num(delta, 4, signed=True),
                     num(acc.get("ece")), verdict, int8_cell(r)])
    return _md_table(head, body)


def int8_cell(row: Mapping[str, Any]) -> str:
    """The repair rung and float sites the export recorded (``harness.int8_fields``)."""
    rung, sites = row.get("repair_rung"), row.get("float_sites") or []
    if rung is None and not sites:
        return "-"
    shown = ", ".join(sites[:3]) + (f" +{len(sites) - 3}" if len(sites) > 3 else "")
    return f"{rung or 'not repaired'} ({shown or 'all INT8'})"


summary_table = deployment_table


def positives(meta: Mapping[str, Any]) -> str:
    """"166 melanoma" (the positive class's images), or "7 classes" for an argmax model."""
    if "positive" in meta and meta["positive"] is None:
        return f"{len(meta.get('labels') or [])} classes, argmax"
    return f"{meta.get('n_pos', '?')} {meta.get('positive') or 'melanoma'}"


def caption(results: Mapping[str, Any]) -> str:
    """One line saying what the table measured: data, split, image size, host, date."""
    meta = results.get("meta") or {}
    data = Path(str(meta.get("data") or "?")).name
    parts = [f"{meta.get('split', '?')} split of `{data}`: {meta.get('n', '?')} images "
             f"({positives(meta)})"]
    if meta.get("image_size"):
        parts.append(f"{meta['image_size']} px")
    lat = meta.get("latency") or {}
    parts.append(f"latency: median of {lat.get('runs') or '?'} single-image runs{floors(lat)} on "
                 f"{meta.get('host', '?')}")
    if meta.get("created"):
        parts.append(f"measured {str(meta['created'])[:10]}")
    return "_" + "; ".join(parts) + "._"


def readme_block(results: Mapping[str, Any]) -> str:
    """What ``--update-readme`` puts between the markers."""
    return f"{caption(results)}\n\n{deployment_table(results)}"


def accuracy_table(results: Mapping[str, Any]) -> str:
    head = ["Model", "Status", "ROC-AUC [95% CI]", "PR-AUC", "Sens @thr", "Spec @thr",
            "ECE (T)", "ECE (T=1)", "Brier", "Agree student", "max |Δp| student",
            "Agree teacher", "max |Δp| teacher", "Gate"]
    body = []
    for r in rows_of(results, "host"):
        a = r.get("accuracy") or {}
        ci = (f" [{num(a.get('roc_auc_ci_low'))}, {num(a.get('roc_auc_ci_high'))}]"
              if a.get("roc_auc_ci_low") is not None else "")
        body.append([str(r["name"]), str(r.get("status")), num(a.get("roc_auc")) + ci,
                     num(a.get("pr_auc")), num(a.get("sensitivity")), num(a.get("specificity")),
                     num(a.get("ece")), num(a.get("ece_uncalibrated")), num(a.get("brier")),
                     num(a.get("decision_agreement_vs_student")),
                     num(a.get("max_abs_dp_vs_student"), 4),
                     num(a.get("decision_agreement_vs_teacher")),
                     num(a.get("max_abs_dp_vs_teacher"), 4), row_verdict(r, results.get("gate"))])
    return _md_table(head, body)


def cost_table(results: Mapping[str, Any]) -> str:
    threads = host_threads(results)
    head = ["Model", "Runtime", "Size (MB)", "Load (ms)", "Peak RSS (MB)"]
    head += [f"p50 / p90 / p99 ms ({t}T)" for t in threads]
    body = []
    for r in rows_of(results, "host"):
        lat = r.get("latency") or {}
        cells = [" / ".join(num(lat[t][k], 2) for k in ("p50_ms", "p90_ms", "p99_ms"))
                 if t in lat else "-" for t in threads]
        body.append([str(r["name"]), str(r.get("runtime")), size_mb(r), num(r.get("load_ms"), 1),
                     num(r.get("peak_memory_mb"), 0), *cells])
    return _md_table(head, body)


def gate_lines(gate: Mapping[str, Any] | None) -> list[str]:
    if gate is None:
        return ["gate FAILED: not evaluated (the float student did not run)"]
    tol = gate["tolerances"]
    lines = [f"FAIL {v['name']}: {v['message']}" for v in gate["violations"]]
    lines += [f"SKIP {s['name']}: {s['reason']}" for s in gate["skipped"]]
    lines += [f"FAIL: {note}" for note in gate.get("notes", [])]
    verdict = "PASSED" if gate["passed"] else "FAILED"
    enforced = "" if gate.get("enforced", True) else " (not enforced: --no-gate)"
    floor = tol.get("min_sensitivity")
    sens = "" if floor is None else f", sensitivity >= {floor:g}"
    lines.append(f"gate {verdict}{enforced}: {len(gate['checked'])} artefact(s) checked against "
                 f"{gate['reference']} (|ΔROC-AUC| <= {tol['max_auc_delta']:g}{sens}, "
                 f"ECE <= float + {tol['max_ece_delta']:g})")
    return lines


def floors(lat: Mapping[str, Any]) -> str:
    """The latency time floors, where the results record them (older results do not)."""
    if lat.get("min_seconds") is None:
        return ""
    warmup = lat.get("warmup_seconds") or 0
    return f" (at least {warmup:g} s of warm-up and {lat['min_seconds']:g} s timed)"


def render_markdown(results: Mapping[str, Any]) -> str:
    m = results.get("meta", {})
    lat = m.get("latency") or {}
    parts = [
        "# Benchmark results", "",
        f"- data: `{m.get('data')}` split `{m.get('split')}`: {m.get('n')} images, "
        f"{positives(m)} (prevalence {num(m.get('prevalence'))})",
        f"- host: {m.get('host')}; threads {m.get('threads')}; latency: batch 1, "
        f"{lat.get('warmup')} warm-up + {lat.get('runs')} timed runs{floors(lat)}, one process "
        "per run",
        f"- created {m.get('created')}", *[f"- warning: {w}" for w in m.get("warnings", [])],
        "", "## Deployment metrics", "", deployment_table(results),
        "", "## Accuracy (each model at its shipped temperature and threshold)", "",
        accuracy_table(results), "", "## Cost on this host", "", cost_table(results),
        "", "## Parity gate", "", "```", *gate_lines(results.get("gate")), "```", "",
    ]
    return "\n".join(parts)


def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def csv_text(results: Mapping[str, Any]) -> str:
    rows = [flat(r) for r in rows_of(results)]
    first = ["name", "role", "format", "precision", "runtime", "device", "location", "status"]
    cols = first + sorted({k for r in rows for k in r} - set(first))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ---- files ----------------------------------------------------------------------------------


def update_readme(readme: Path, table: str, markers: tuple[str, str] = (START, END),
                  generator: str = "benchmarks.report") -> bool:
    """Replace the marked block of ``readme`` with ``table``; True if the file changed."""
    if not readme.is_file():
        raise ReportError(f"{readme}: README not found")
    text = readme.read_text(encoding="utf-8")
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < 0 or end < start:
        raise ReportError(f"{readme}: markers {first} and {last} not found (in that order); "
                          "add them where the table belongs")
    block = f"{first}\n<!-- generated by python -m {generator}; do not edit -->\n\n" \
            f"{table}\n\n"
    new = text[:start] + block + text[end:]
    if new != text:
        atomic_write_text(readme, new)
    return new != text


def _scored(results: Mapping[str, Any], npz: Path) -> dict[str, tuple[Any, Any, Any, int]]:
    """Row name -> (0/1 melanoma labels, class labels, probabilities under the row's decision,
    positive index) for host rows; class labels: melanoma (2 classes) or dx indices."""
    import numpy as np

    from kd_core.deploy import Decision

    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    y_pos = arrays["y_pos"]
    out = {}
    for r in rows_of(results, "host"):
        z = arrays.get(f"logits__{r['name']}")
        if z is not None and r.get("accuracy") and isinstance(r.get("decision"), dict):
            decision = Decision.from_dict(r["decision"], f"row {r['name']}")
            if decision.positive_index is None:
                continue
            y = y_pos if z.shape[1] == 2 else arrays.get("y_dx")
            out[str(r["name"])] = (y_pos, y, decision.probabilities(z), decision.positive_index)
    return out


def plot_cost(results: Mapping[str, Any], out: Path) -> Path:
    """Size (x, log) vs 1-thread p50 latency (y); colour and label = ROC-AUC."""
    from matplotlib.figure import Figure

    from kd_core.io import atomic_path

    threads = host_threads(results)
    key = threads[0] if threads else "1"
    pts: list[tuple[str, float, float, float]] = []  # name, MB, p50 ms, ROC-AUC
    for r in rows_of(results, "host"):
        lat, auc = (r.get("latency") or {}).get(key), roc_auc(r)
        if lat and auc is not None and r.get("size_bytes"):
            pts.append((str(r["name"]), r["size_bytes"] / 1e6, float(lat["p50_ms"]), auc))
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    if pts:
        sc = ax.scatter([p[1] for p in pts], [p[2] for p in pts], c=[p[3] for p in pts],
                        cmap="viridis", s=80, edgecolor="black")
        fig.colorbar(sc, ax=ax, label="ROC-AUC")
        for i, (name, mb, ms, auc) in enumerate(pts):  # staggered labels: fewer overlaps
            ax.annotate(f"{name}\nAUC {auc:.3f}", (mb, ms), fontsize=7,
                        xytext=(6, 4 - 16 * (i % 3)), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set(xlabel="size (MB, log)", ylabel=f"p50 latency (ms, log; {key} thread(s), batch 1)",
           title="ROC-AUC vs size vs latency")
    ax.grid(alpha=0.3)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out


def write_plots(results: Mapping[str, Any], npz: Path, plots: Path) -> list[Path]:
    from kd_core.plots import plot_reliability_grid, plot_roc_pr

    scored = _scored(results, npz)
    written = [plot_cost(results, plots / "auc_size_latency.png")]
    if scored:  # top-label reliability: its ECE is the gated one, as in the tables
        rel = {name: (p, y) for name, (_, y, p, _) in scored.items() if y is not None}
        written.append(plot_reliability_grid(rel, plots / "reliability.png"))
        roc = {name: (y_pos, p[:, pos]) for name, (y_pos, _, p, pos) in scored.items()}
        written.append(plot_roc_pr(roc, plots / "roc.png"))
    return written


def write_report(out_dir: Path) -> list[Path]:
    """results.md, results.csv and plots (when predictions.npz is there) from results.json."""
    out_dir = Path(out_dir)
    results = load(out_dir)
    atomic_write_text(out_dir / "results.md", render_markdown(results))
    atomic_write_text(out_dir / "results.csv", csv_text(results))
    written = [out_dir / "results.md", out_dir / "results.csv"]
    if (out_dir / "predictions.npz").is_file():
        written += write_plots(results, out_dir / "predictions.npz", out_dir / "plots")
        from benchmarks.clinical import write_clinical  # clinical (#17)

        written += write_clinical(out_dir, required=False)  # clinical (#17): subgroups, card
    return written


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.report",
                   "Render R/results.json as Markdown, CSV and plots.")
    p.add_argument("results_dir", type=Path, metavar="R", help="folder with results.json")
    p.add_argument("--update-readme", nargs="?", const=Path("README.md"), type=Path,
                   metavar="README", help="replace the Deployment metrics block of README "
                   "(README.md when given without a path)")
    return p


def _main(args: argparse.Namespace) -> int:
    written = write_report(args.results_dir)
    if args.update_readme is not None:
        changed = update_readme(args.update_readme, readme_block(load(args.results_dir)))
        print(f"{args.update_readme}: {'updated' if changed else 'already up to date'}")
    for path in written:
        print(path)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
