"""The INT8 repair ladder: instead of refusing a drifted artefact, fix it, cheapest rung first.

On the validation split only (``exporters.validation_data``; the holdout is never read), each
candidate runs in its own runtime and is judged with the parity gate's checks
(``kd_core.parity.check_row``) against the float student on the same images:

0. as exported (passes: nothing changes, the artefact stays byte-identical);
1. recalibrate: the artefact's own temperature (NLL) and threshold (the checkpoint's target
   sensitivity), embedded in its metadata and its manifest entry;
2. better calibration: 4x the calibration images, then another activation observer;
3. mixed precision: sites ranked by ``exporters.int8.sensitivity`` (KL on validation), the top
   1, 2, 4, ... kept float (with any speed-plan sites) until the gate passes;
4. QAT: not built yet (``qat_steps`` is recorded; see the report).

Every rung after 1 is recalibrated too. The ladder stops at the first passing candidate, or when
``repair_budget_min`` is spent, keeping the candidate with the fewest violations.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporters.int8.candidates import (
    Scored,
    export_candidate,
    float_logits,
    refit,
    runtime_logits,
    score,
)
from exporters.int8.plan import find_sites, float_site
from kd_core.parity import Tolerances

if TYPE_CHECKING:
    from torch import nn

    from exporters import Artifact
    from exporters.base import ExportSettings
    from exporters.int8.options import Int8Options

log = logging.getLogger(__name__)
ALT_OBSERVER = {"tflite": "minmax", "executorch": "minmax", "coreml": "minmax",
                "onnx": "Percentile"}
MORE_CALIBRATION = 4
RANKING_IMAGES = 256


@dataclass
class Ladder:
    """State of one artefact's ladder: inputs, the budget clock and what was tried."""

    fmt: str
    model: nn.Module
    example: tuple[Any, ...]
    cfg: ExportSettings
    stage: Path
    precision: str
    images: np.ndarray
    ref: dict[str, float]
    tol: Tolerances
    start: float
    attempts: list[dict[str, Any]]
    best: tuple[Artifact, Scored, Int8Options] | None = None
    ranking: list[dict[str, Any]] | None = None

    def out_of_time(self) -> bool:
        return time.monotonic() - self.start > 60 * self.cfg.int8.repair_budget_min

    def consider(self, rung: str, detail: str, art: Artifact, scored: Scored,
                 int8: Int8Options, seconds: float) -> bool:
        self.attempts.append({"rung": rung, "detail": detail, "seconds": round(seconds, 1),
                              **scored.to_dict()})
        log.info("%s %s: %s %s", art.name, rung, detail,
                 "passes" if scored.passed else "; ".join(scored.violations))
        if self.best is None or len(scored.violations) < len(self.best[1].violations):
            self.best = (art, scored, int8)
        return scored.passed

    def try_options(self, rung: str, detail: str, int8: Int8Options) -> bool:
        """Export with ``int8``, refit the decision on validation, re-export with it, score."""
        clock = time.monotonic()
        sub = self.stage / f"{rung}-{len(self.attempts)}"
        art = export_candidate(self.fmt, self.model, self.example, self.cfg, sub, int8,
                               self.precision)
        logits = runtime_logits(art, self.cfg, self.images)
        decision = refit(logits, self.cfg.int8.validation, self.cfg.positive_index,  # type: ignore[arg-type]
                         self.cfg.int8.target_sensitivity)
        art = export_candidate(self.fmt, self.model, self.example, self.cfg, sub, int8,
                               self.precision, decision)
        scored = score(logits, self.cfg.int8.validation, self.cfg, self.ref,  # type: ignore[arg-type]
                       decision, self.tol)
        return self.consider(rung, detail, art, scored, int8, time.monotonic() - clock)


def repair_artifact(fmt: str, model: nn.Module, example: tuple[Any, ...], cfg: ExportSettings,
                    art: Artifact, stage: Path) -> tuple[Artifact, dict[str, Any]]:
    """Run the ladder on ``art``; returns the artefact to keep (possibly ``art`` itself) and the
    record for the manifest's ``repair`` field."""
    val = cfg.int8.validation
    assert val is not None
    images = val.normalized()
    tol = Tolerances(min_sensitivity=cfg.int8.target_sensitivity - 0.02)
    ref = _metrics(float_logits(model, images), cfg, (cfg.temperature, cfg.threshold))
    ladder = Ladder(fmt, model, example, cfg, stage, art.precision, images, ref, tol,
                    time.monotonic(), [])
    logits = runtime_logits(art, cfg, images)
    before = score(logits, val, cfg, ref, (cfg.temperature, cfg.threshold), tol)
    record: dict[str, Any] = {"mode": cfg.int8.repair, "validation": val.to_manifest(),
                              "tolerances": tol.to_dict(), "float_student": ref,
                              "before": before.to_dict(), "attempts": ladder.attempts}
    if before.passed:
        return art, {**record, "rung": "none", "after": before.to_dict()}
    ladder.best = (art, before, cfg.int8)
    _climb(ladder, logits)
    assert ladder.best is not None
    best, scored, int8 = ladder.best
    rung = next((a["rung"] for a in ladder.attempts if a["passed"]), "failed")
    record.update(rung=rung, after=scored.to_dict(),
                  seconds=round(time.monotonic() - ladder.start, 1),
                  float_sites=[s.to_dict() for s in int8.plan.float_sites])
    if ladder.ranking is not None:
        record["sensitivity"] = ladder.ranking
    return replace(best, precision_plan=int8.plan.to_dict() if int8.plan else None), record


def _metrics(logits: np.ndarray, cfg: ExportSettings, decision: tuple[float, float]
             ) -> dict[str, float]:
    from exporters.int8.candidates import metrics_row

    assert cfg.int8.validation is not None
    return metrics_row(logits, cfg.int8.validation, cfg.positive_index, *decision)


def _climb(ladder: Ladder, logits: np.ndarray) -> None:
    cfg = ladder.cfg
    # Rung 1: the artefact's own decision, re-exported with it embedded.
    clock = time.monotonic()
    assert cfg.int8.validation is not None
    decision = refit(logits, cfg.int8.validation, cfg.positive_index, cfg.int8.target_sensitivity)
    scored = score(logits, cfg.int8.validation, cfg, ladder.ref, decision, ladder.tol)
    if scored.passed or cfg.int8.repair == "recalibrate":
        art = export_candidate(ladder.fmt, ladder.model, ladder.example, cfg,
                               ladder.stage / "recalibrate", cfg.int8, ladder.precision, decision)
        if ladder.consider("recalibrate", f"T={decision[0]:.4g}, threshold={decision[1]:.4g}",
                           art, scored, cfg.int8, time.monotonic() - clock) \
                or cfg.int8.repair == "recalibrate":
            return
    else:
        ladder.attempts.append({"rung": "recalibrate", "detail": "not enough alone",
                                **scored.to_dict()})
    if _better_calibration(ladder) or ladder.out_of_time():
        return
    _mixed_precision(ladder)


def _better_calibration(ladder: Ladder) -> bool:
    from exporters.calibration_data import load_calibration

    cfg, calib = ladder.cfg, ladder.cfg.calibration
    if calib is None:
        return False
    more = load_calibration(calib.source, calib.prep, cfg.labels,
                            MORE_CALIBRATION * len(calib), calib.seed)
    if len(more) > len(calib):
        ladder.cfg = replace(cfg, calibration=more)
        if ladder.try_options("better_calibration", f"{len(more)} calibration images",
                              cfg.int8):
            return True
    if ladder.out_of_time():
        return False
    alt = replace(cfg.int8, observer=ALT_OBSERVER[ladder.fmt])
    return ladder.try_options("better_calibration", f"observer {alt.observer}, "
                              f"{len(ladder.cfg.calibration or [])} images", alt)


def _mixed_precision(ladder: Ladder) -> bool:
    from exporters.int8.sensitivity import rank_sites

    cfg = ladder.cfg
    sites = find_sites(ladder.model, ladder.example)
    calib = cfg.calibration.normalized() if cfg.calibration is not None else ladder.images
    pick = np.random.default_rng(0).permutation(len(ladder.images))[:RANKING_IMAGES]
    ranked = rank_sites(ladder.model, sites, calib[:RANKING_IMAGES], ladder.images[np.sort(pick)])
    ladder.ranking = [s.to_dict() for s in ranked]
    by_name = {s.name: s for s in sites}
    k = 1
    while k <= len(ranked) and not ladder.out_of_time():
        chosen = [float_site(by_name[s.site], sites, "accuracy",
                             {"kl": round(s.kl, 8), "sqnr_db": round(s.sqnr_db, 2)})
                  for s in ranked[:k]]
        int8 = replace(cfg.int8, plan=cfg.int8.plan.with_sites(
            chosen, f"accuracy: top {k} of {len(ranked)} sites by KL on validation"))
        if ladder.try_options("mixed_precision", f"{k} most sensitive sites float", int8):
            return True
        k *= 2
    return False
