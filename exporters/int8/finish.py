"""Finishing a format's INT8 artefact: the speed objective, then the repair ladder.

``finish_format`` runs after a format's export when ``ExportSettings.int8`` asks for it
(``Int8Options.active``): for the planned precision (``candidates.PLANNED``)

1. speed (``--speed-plan measure|FILE``): per-site timings from the runtime's profiler (or a
   timings file), ``speed.speed_plan``, a re-export with those sites float, and a whole-graph
   re-timing against the all-INT8 artefact; the plan is kept only when it is faster there too;
2. repair (``--repair auto|recalibrate`` with ``--val-data``): ``repair.repair_artifact``;
3. the INT8/fp32 size ratio and 1-thread latency ratio, and for a repaired artefact a
   per-site sensitivity bar chart beside it.

The manifest entry gets ``precision_plan`` (plan, per-site gains, whole-graph check) and
``repair``. A failure in finishing is logged and recorded; the exported artefact stays.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporters.int8.candidates import PLANNED, adopt, entry_of, export_candidate

if TYPE_CHECKING:
    from torch import nn

    from exporters import Artifact
    from exporters.base import ExportSettings
    from exporters.int8.options import Int8Options
    from exporters.int8.plan import Site
    from exporters.int8.speed import SiteTimings

log = logging.getLogger(__name__)
TIMING_RUNS = 60


def finish_format(fmt: str, model: nn.Module, example: tuple[Any, ...], cfg: ExportSettings,
                  out_dir: Path, arts: list[Artifact]) -> list[Artifact]:
    """``arts`` with the planned INT8 artefact finished (see the module doc)."""
    if not cfg.int8.active() or PLANNED.get(fmt) not in {a.precision for a in arts}:
        return arts
    stage = Path(tempfile.mkdtemp(prefix=".int8-finish.", dir=out_dir))
    try:
        return [_finish_one(fmt, model, example, cfg, out_dir, stage, a, arts)
                if a.precision == PLANNED[fmt] else a for a in arts]
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _finish_one(fmt: str, model: nn.Module, example: tuple[Any, ...], cfg: ExportSettings,
                out_dir: Path, stage: Path, art: Artifact, arts: list[Artifact]) -> Artifact:
    plan_record: dict[str, Any] = {}
    if cfg.int8.speed != "off":
        try:
            art, int8, plan_record = speed_step(fmt, model, example, cfg, art, stage / "speed")
            cfg = replace(cfg, int8=int8)
        except Exception as exc:  # a profiler failure must not cost the artefact
            log.warning("%s: speed plan failed: %s", art.name, exc)
            plan_record = {"speed": {"error": f"{type(exc).__name__}: {exc}"}}
    repair_record: dict[str, Any] | None = None
    if cfg.int8.repair != "off" and cfg.int8.validation is not None:
        try:
            art, repair_record = _repair(fmt, model, example, cfg, art, stage / "repair",
                                         out_dir)
        except Exception as exc:
            log.warning("%s: repair failed: %s", art.name, exc)
            repair_record = {"mode": cfg.int8.repair, "error": f"{type(exc).__name__}: {exc}"}
    art = adopt(art, out_dir)
    plan = art.precision_plan or cfg.int8.plan.to_dict()
    fp32 = next((a for a in arts if a.precision in ("fp32", "fp16")), None)
    ratios = _ratios(art, fp32, cfg, example) if fp32 is not None else {}
    if repair_record is not None:
        repair_record.update(ratios)
    return replace(art, precision_plan={**plan, **plan_record, **ratios}, repair=repair_record)


def _repair(fmt: str, model: nn.Module, example: tuple[Any, ...], cfg: ExportSettings,
            art: Artifact, stage: Path, out_dir: Path) -> tuple[Artifact, dict[str, Any]]:
    from exporters.int8.repair import repair_artifact
    from exporters.int8.sensitivity import SiteScore, plot_sensitivity

    fixed, record = repair_artifact(fmt, model, example, cfg, art, stage)
    if record.get("sensitivity"):
        scores = [SiteScore(**s) for s in record["sensitivity"]]
        kept = [s["name"] for s in record.get("float_sites", [])]
        png = plot_sensitivity(scores, kept, art.name, out_dir / f"{art.name}_sensitivity.png")
        record["sensitivity_plot"] = png.name
    return fixed, record


def measure_timings(fmt: str, model: nn.Module, example: tuple[Any, ...], cfg: ExportSettings,
                    art: Artifact, sites: tuple[Site, ...], stage: Path) -> SiteTimings:
    """Per-site INT8 and fp32 times of ``art`` in its runtime's profiler."""
    from exporters import get_exporter
    from exporters.int8 import prepare_float_model
    from exporters.int8.profile import (
        ProfilerUnavailable,
        executorch_site_timings,
        onnx_site_timings,
    )
    from exporters.int8.speed import SiteTimings

    stage.mkdir(parents=True, exist_ok=True)
    x = np.asarray(example[0].numpy(), dtype=np.float32)
    if fmt not in ("executorch", "onnx"):
        raise ProfilerUnavailable(f"{fmt}: no per-op profiler reachable from Python; pass "
                                  "--speed-plan FILE with measured site timings")
    # The float reference is the same rewritten model, exported through the format's exporter.
    ready = prepare_float_model(model, fmt, example_inputs=example)
    (fp32,) = get_exporter(fmt).export(ready, example, stage, replace(cfg, precisions=("fp32",)))
    if fmt == "executorch":
        timed = executorch_site_timings(art.path, fp32.path, sites, x)
    else:
        config = (art.quantization_recipe or {}).get("session_config") or {}
        timed = onnx_site_timings(art.path, fp32.path, sites, x, config)
    dist = {"executorch": "executorch", "onnx": "onnxruntime"}[fmt]
    runtime = f"{dist} {art.tool_versions.get(dist, '?')}"
    return SiteTimings(fmt, runtime, 1, 30, tuple(timed), _host())


def _host() -> str:
    import platform

    return f"{platform.machine()} {platform.processor() or platform.system()}"


def speed_step(fmt: str, model: nn.Module, example: tuple[Any, ...], cfg: ExportSettings,
               art: Artifact, stage: Path) -> tuple[Artifact, Int8Options, dict[str, Any]]:
    """The speed objective for one artefact: (artefact to keep, options, plan record)."""
    from exporters.int8.plan import find_sites
    from exporters.int8.speed import load_timings, site_gains, speed_plan

    sites = find_sites(model, example)
    if cfg.int8.speed == "measure":
        timings = measure_timings(fmt, model, example, cfg, art, sites, stage / "profile")
    else:
        timings = load_timings(Path(cfg.int8.speed), fmt)
    plan = speed_plan(timings.sites, sites)
    record: dict[str, Any] = {"speed": {
        "source": cfg.int8.speed, "runtime": timings.runtime, "host": timings.host,
        "threads": timings.threads, "site_gains": site_gains(timings.sites),
        "speed_sites": [s.name for s in plan.float_sites]}}
    if not plan:
        record["speed"]["applied"] = False
        return art, cfg.int8, record
    int8 = replace(cfg.int8, plan=cfg.int8.plan.with_sites(plan.float_sites, *plan.notes))
    cand = export_candidate(fmt, model, example, cfg, stage / "candidate", int8, art.precision)
    base_ms, cand_ms = _time_pair(art, cand, cfg, example)
    from exporters.int8.speed import confirmed

    applied = confirmed(base_ms, cand_ms)
    record["speed"].update(applied=applied, whole_graph_ms={
        "all_int8_p50": round(statistics.median(base_ms), 4),
        "planned_p50": round(statistics.median(cand_ms), 4), "runs": len(base_ms)})
    log.info("%s: speed plan %s (%d sites float; p50 %.3f -> %.3f ms)", art.name,
             "kept" if applied else "dropped", len(plan.float_sites),
             statistics.median(base_ms), statistics.median(cand_ms))
    if not applied:
        return art, cfg.int8, record
    return replace(cand, precision_plan=int8.plan.to_dict()), int8, record


def _time_pair(a: Artifact, b: Artifact, cfg: ExportSettings, example: tuple[Any, ...]
               ) -> tuple[list[float], list[float]]:
    from exporters.int8.profile import time_interleaved
    from runtimes import load_runner

    runners = [load_runner(entry_of(x, cfg), x.path.parent, threads=1) for x in (a, b)]
    first, second = time_interleaved(runners, example[0].numpy(), TIMING_RUNS)
    return first, second


def _ratios(art: Artifact, fp32: Artifact, cfg: ExportSettings, example: tuple[Any, ...]
            ) -> dict[str, Any]:
    """Size and 1-thread p50 latency of ``art`` relative to the fp32 artefact."""
    from kd_core.io import path_bytes
    from runtimes import RuntimeUnavailable

    out: dict[str, Any] = {"size_ratio_vs_fp32": round(path_bytes(art.path) /
                                                        max(path_bytes(fp32.path), 1), 4)}
    try:
        q_ms, f_ms = _time_pair(art, fp32, cfg, example)
        out["latency_ratio_1t_vs_fp32"] = round(statistics.median(q_ms) /
                                                statistics.median(f_ms), 4)
    except RuntimeUnavailable as exc:
        out["latency_ratio_1t_vs_fp32"] = None
        out["latency_note"] = str(exc)
    return out


def summary_lines(arts: list[Artifact]) -> list[str]:
    """One line per finished INT8 artefact for the export summary."""
    lines = []
    for a in arts:
        plan, rep = a.precision_plan or {}, a.repair or {}
        if not plan and not rep:
            continue
        sites = plan.get("float_sites", [])
        kept = ", ".join(f"{s['name']} ({s['reason']}, {100 * s['macs_share']:.1f}% MACs)"
                         for s in sites) or "none"
        text = f"  {a.name}: float sites: {kept}"
        if rep.get("before") and rep.get("after"):
            b, f = rep["before"], rep["after"]
            text += (f"; repair rung {rep.get('rung')}: val AUC {b['roc_auc']:.4f} -> "
                     f"{f['roc_auc']:.4f}, sensitivity {b['sensitivity']:.3f} -> "
                     f"{f['sensitivity']:.3f}, ECE {b['ece']:.4f} -> {f['ece']:.4f}")
        elif rep.get("error"):
            text += f"; repair error: {rep['error'][:80]}"
        if plan.get("size_ratio_vs_fp32") is not None:
            text += f"; size x{plan['size_ratio_vs_fp32']:.2f}"
        if plan.get("latency_ratio_1t_vs_fp32") is not None:
            text += f", 1-thread latency x{plan['latency_ratio_1t_vs_fp32']:.2f} of fp32"
        lines.append(text)
    return lines
