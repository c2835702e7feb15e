"""After a format's export: the speed objective and the repair ladder on the artefacts its
precision plan steers (``ExporterSpec.planned_precisions``: the INT8 recipe's ``plan_family``;
LiteRT's int8 artefact and anything made from it, Core ML's w8a8).

``apply_objectives`` runs in ``exporters.job.run_format`` when ``ExportSettings.int8`` asks for
it (``Int8Options.active``):

1. speed: with ``--speed-plan measure``, per-site timings from the recipe's ``profiler`` on
   this host, ``speed.speed_plan``, a re-export with those sites float, kept only when the
   whole graph is faster too (interleaved 1-thread runs). Timings measured before (``auto``:
   the recipe's ``stored_timings`` for this architecture; ``FILE``) were already applied by
   the export itself (``plan_ahead``, in ``exporters.job.run_format``): the same timings
   always give the same artefact, at no extra cost; this step records them;
2. repair (``--repair auto|recalibrate`` with ``--val-data``): ``exporters.int8.repair``;
3. the size and 1-thread latency of the scored artefact relative to the format's fp32 one, and
   for a ladder that ranked sites, a sensitivity bar chart ``<name>_sensitivity.png`` beside it.

Every artefact of the family gets the same ``precision_plan`` (the plan, plus the measured
``speed`` record and the ratios) and ``repair`` record in its manifest entry: they are the same
graph. A failing step is logged and recorded; the exported artefacts then stay as they were.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters import FLOAT_PRECISIONS, get_exporter
from exporters.base import describe, staging_dir
from exporters.int8.candidates import adopt, export_candidate

if TYPE_CHECKING:
    from exporters.base import Artifact, ExportSettings
    from exporters.int8.options import Int8Options
    from exporters.int8.speed import SiteTimings

log = logging.getLogger(__name__)
TIMING_RUNS = 60


def apply_objectives(fmt: str, model: Any, example: tuple[Any, ...], cfg: ExportSettings,
                     out_dir: Path, arts: list[Artifact]) -> list[Artifact]:
    """``arts`` with the planned family finished (see the module docstring)."""
    planned = get_exporter(fmt).planned_precisions()
    group = [a for a in arts if a.precision in planned]
    if cfg.int8 is None or not cfg.int8.active() or not group or group[0].precision != planned[0]:
        return arts
    int8: Int8Options = cfg.int8
    plan_record: dict[str, Any] = {}
    repair_record: dict[str, Any] | None = None
    with staging_dir(out_dir) as stage:
        if int8.speed != "off":
            try:
                group, int8, plan_record = _speed(fmt, model, example, cfg, arts, group, stage)
            except Exception as exc:  # a profiler failure must not cost the artefact
                log.warning("%s: speed plan failed: %s", group[0].name, describe(exc))
                plan_record = {"speed": {"source": int8.speed, "error": describe(exc)}}
        if int8.repair != "off" and int8.validation is not None:
            group, int8, repair_record = _repair(fmt, model, example, replace(cfg, int8=int8),
                                                 group, stage, out_dir)
        group = adopt(group, out_dir)
    fp32 = next((a for a in arts if a.precision in FLOAT_PRECISIONS), None)
    ratios = _ratios(group[0], fp32) if fp32 is not None else {}
    plan = {**int8.plan.to_dict(), **plan_record, **ratios}
    done = {a.precision: replace(a, entry=replace(a.entry, precision_plan=plan,
                                                  repair=repair_record)) for a in group}
    return [done.get(a.precision, a) for a in arts]


def _repair(fmt: str, model: Any, example: tuple[Any, ...], cfg: ExportSettings,
            group: list[Artifact], stage: Path, out_dir: Path
            ) -> tuple[list[Artifact], Int8Options, dict[str, Any]]:
    from exporters.int8.repair import repair
    from exporters.int8.sensitivity import SiteScore, plot_sensitivity
    from runtimes import RuntimeUnavailable

    assert cfg.int8 is not None
    try:
        group, int8, record = repair(fmt, model, example, cfg, group, stage / "repair")
    except RuntimeUnavailable as exc:
        return group, cfg.int8, {"mode": cfg.int8.repair, "rung": "not run",
                                 "note": f"cannot be scored on this host ({exc})"}
    except Exception as exc:
        log.warning("%s: repair failed: %s", group[0].name, describe(exc))
        return group, cfg.int8, {"mode": cfg.int8.repair, "error": describe(exc)}
    if record.get("sensitivity"):
        kept = [s["name"] for s in record.get("float_sites", [])]
        png = plot_sensitivity([SiteScore(**s) for s in record["sensitivity"]], kept,
                               group[0].name,
                               out_dir / f"{group[0].name}_sensitivity.png")
        record["sensitivity_plot"] = png.name
    return group, int8, record


def plan_ahead(fmt: str, model: Any, example: tuple[Any, ...], cfg: ExportSettings
               ) -> ExportSettings:
    """``cfg`` with the speed plan of timings measured before (``--speed-plan auto|FILE``)
    added to its precision plan, so that the format's one export applies it."""
    from exporters.int8.plan import find_sites
    from exporters.int8.speed import speed_plan

    int8 = cfg.int8
    if int8 is None or int8.speed in ("off", "measure"):
        return cfg
    timings = int8.timings_for(fmt, cfg.arch, cfg.preprocessing.size)
    if timings is None:
        return cfg
    try:
        plan = speed_plan(timings.sites, find_sites(model, example))
    except Exception as exc:  # e.g. timings of another model: recorded by the speed step
        log.warning("%s %s: speed plan not applied: %s", cfg.arch, fmt, describe(exc))
        return cfg
    return replace(cfg, int8=replace(int8, plan=int8.plan.with_sites(plan.float_sites,
                                                                     *plan.notes)))


def _speed(fmt: str, model: Any, example: tuple[Any, ...], cfg: ExportSettings,
           arts: list[Artifact], group: list[Artifact], stage: Path
           ) -> tuple[list[Artifact], Int8Options, dict[str, Any]]:
    """The speed objective: (artefacts to keep, their options, the ``speed`` record)."""
    from exporters.int8.plan import find_sites
    from exporters.int8.speed import confirmed, site_gains, speed_plan

    int8 = cfg.int8
    assert int8 is not None
    sites = find_sites(model, example)
    timings = _timings(fmt, model, example, cfg, arts, group, sites, stage)
    if isinstance(timings, str):
        return group, int8, {"speed": {"source": int8.speed, "applied": False, "note": timings}}
    plan = speed_plan(timings.sites, sites)
    record: dict[str, Any] = {
        "source": int8.speed, "measured": timings.describe(), "site_gains":
        site_gains(timings.sites), "speed_sites": [s.name for s in plan.float_sites]}
    if int8.speed != "measure":  # applied in the export itself (plan_ahead), not re-timed
        record["applied"] = bool(plan) and plan.names() <= int8.plan.names()
        return group, int8, {"speed": record}
    record["applied"] = bool(plan)
    if not plan:
        return group, int8, {"speed": record}
    planned = replace(int8, plan=int8.plan.with_sites(plan.float_sites, *plan.notes))
    cand = export_candidate(fmt, model, example, cfg, stage / "speed", planned)
    base_ms, cand_ms = _time_pair(group[0], cand[0])  # the whole graph, on this host
    record["applied"] = confirmed(base_ms, cand_ms)
    record["whole_graph_ms"] = {"all_int8_p50": round(statistics.median(base_ms), 4),
                                "planned_p50": round(statistics.median(cand_ms), 4),
                                "runs": len(base_ms)}
    log.info("%s: speed plan %s (%d sites float)", group[0].name,
             "kept" if record["applied"] else "dropped", len(plan.float_sites))
    return (cand, planned, {"speed": record}) if record["applied"] else \
        (group, int8, {"speed": record})


def _timings(fmt: str, model: Any, example: tuple[Any, ...], cfg: ExportSettings,
             arts: list[Artifact], group: list[Artifact], sites: Any, stage: Path
             ) -> SiteTimings | str:
    """This format's site timings, or why there are none."""
    import numpy as np

    assert cfg.int8 is not None
    if cfg.int8.speed != "measure":
        found = cfg.int8.timings_for(fmt, cfg.arch, cfg.preprocessing.size)
        return found if found is not None else \
            f"no {fmt} timings for {cfg.arch} ({cfg.int8.speed})"
    recipe = get_exporter(fmt).int8
    assert recipe is not None
    if recipe.profiler is None:
        return (f"{fmt}: its runtime has no per-op profiler reachable from Python; pass "
                "--speed-plan FILE (python -m benchmarks.studies.site_timings)")
    fp32 = next((a for a in arts if a.precision == "fp32"), None)
    if fp32 is None:  # the same model in float, exported here
        fp32 = get_exporter(fmt).export(model, example, stage / "fp32",
                                        replace(cfg, precisions=("fp32",), int8=None))[0]
    session = (group[0].entry.quantization_recipe or {}).get("session_config") or {}
    x = np.asarray(example[0].numpy(), dtype=np.float32)
    result: SiteTimings = recipe.profiler(group[0].path, fp32.path, sites, x, session)
    return result


def _time_pair(a: Artifact, b: Artifact) -> tuple[list[float], list[float]]:
    """Interleaved single-image 1-thread times (ms) of two artefacts on a fixed input."""
    import numpy as np

    from exporters.int8.profile import time_interleaved
    from runtimes import load_runner

    runners = [load_runner(x.entry, x.path.parent, threads=1) for x in (a, b)]
    size = a.entry.preprocessing.size
    image = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    first, second = time_interleaved(runners, image, TIMING_RUNS)
    return first, second


def _ratios(art: Artifact, fp32: Artifact) -> dict[str, Any]:
    """Size and 1-thread p50 latency of ``art`` relative to the format's float artefact."""
    from kd_core.io import path_bytes
    from runtimes import RuntimeUnavailable

    out: dict[str, Any] = {"size_ratio_vs_fp32": round(path_bytes(art.path) /
                                                        max(path_bytes(fp32.path), 1), 4)}
    try:
        q_ms, f_ms = _time_pair(art, fp32)
        out["latency_ratio_1t_vs_fp32"] = round(statistics.median(q_ms) /
                                                statistics.median(f_ms), 4)
    except Exception as exc:  # e.g. RuntimeUnavailable (Core ML off macOS): recorded, not fatal
        out["latency_ratio_1t_vs_fp32"] = None
        out["latency_note"] = str(exc) if isinstance(exc, RuntimeUnavailable) else describe(exc)
    return out
