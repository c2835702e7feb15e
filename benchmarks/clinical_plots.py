"""The decision curve and the overlaid reliability diagram, drawn from ``subgroups.json``'s dict.

matplotlib is imported lazily (Agg ``Figure``, no pyplot state); each PNG is written atomically.
Both show the float models and the reduced-precision artefacts (``clinical_tables.shown``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.clinical_tables import shown
from kd_core.io import atomic_path


def _save(fig: Any, out: Path) -> Path:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out


def _shown_models(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [m for m in data["models"] if shown(m)]


def _style(i: int, model: Mapping[str, Any]) -> dict[str, Any]:
    return {"linestyle": "-" if model["role"] != "artifact" else "--", "linewidth": 1.6,
            "color": f"C{i % 10}"}


def plot_decision_curve(data: Mapping[str, Any], out: str | Path) -> Path:
    """Net benefit vs threshold probability: each model, treat all, treat none; the float
    student's shipped threshold as a dotted line."""
    from matplotlib.figure import Figure

    curve = data["decision_curve"]
    t = curve["thresholds"]
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    for i, m in enumerate(_shown_models(data)):
        ax.plot(t, curve["models"][m["name"]], label=m["name"], **_style(i, m))
    ax.plot(t, curve["treat_all"], color="0.45", linestyle="-.", linewidth=1.4,
            label="treat all")
    ax.plot(t, curve["treat_none"], color="k", linewidth=1.0, label="treat none")
    ref = next((m for m in data["models"] if m["role"] == "student"), None)
    if ref is not None and ref.get("threshold") is not None:
        ax.axvline(ref["threshold"], color="tab:red", linestyle=":", linewidth=1.2,
                   label=f"shipped threshold {ref['threshold']:.3f}")
    prevalence = float(data["meta"]["prevalence"])
    ax.set_ylim(-0.25 * prevalence, 1.15 * prevalence)
    ax.set_xlim(min(t), max(t))
    ax.set_xlabel("threshold probability (refer when P(melanoma) >= t)")
    ax.set_ylabel("net benefit (true referrals per image)")
    ax.set_title(f"Decision curve, {data['meta'].get('split')} split "
                 f"(n = {data['meta']['n']}, prevalence {prevalence:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, Path(out))


def plot_reliability_overlay(data: Mapping[str, Any], out: str | Path) -> Path:
    """Observed melanoma rate vs mean P(melanoma) per bin, every model on one panel."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="k", linewidth=0.8, label="perfect calibration")
    for i, m in enumerate(_shown_models(data)):
        table = data["reliability"][m["name"]]
        ece = next(r["ece"] for r in data["groups"]
                   if r["factor"] == "overall" and r["model"] == m["name"])
        slope, icpt = m.get("calibration_slope"), m.get("calibration_intercept")
        extra = "" if slope is None or icpt is None else \
            f", slope {slope:.2f}, intercept {icpt:+.2f}"
        ax.plot(table["confidence"], table["accuracy"], marker="o", markersize=4,
                label=f"{m['name']} (ECE {ece:.3f}{extra})", **_style(i, m))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted P(melanoma) in bin")
    ax.set_ylabel("observed melanoma rate in bin")
    ax.set_title("Reliability of P(melanoma), 10 equal-width bins")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, Path(out))
