"""The INT8 repair ladder: instead of refusing a drifted artefact, fix it, cheapest rung first.

On the validation split only (``exporters.validation_data``; the holdout is never read), each
candidate runs in its own runtime and is judged with the parity gate's rule
(``kd_core.parity.check_row``, the floor ``kd_core.parity.sensitivity_floor`` of the checkpoint's
decision; an argmax model: top-1 agreement) against the float student on the same images:

0. as exported: if it passes, nothing changes (the artefact stays byte-identical);
1. recalibrate: the artefact's own temperature and threshold (``kd_core.finalize.fit_decision``
   at the checkpoint's target sensitivity; an argmax model: the temperature), embedded in it and
   in its manifest entry;
2. better calibration: ``MORE_CALIBRATION`` x the calibration images, then the recipe's other
   activation observer (``Int8Recipe.alt_observer``) on whichever images came closer;
3. mixed precision, on top of the best candidate so far (its calibration images and observer):
   sites ranked by ``exporters.int8.sensitivity`` (KL on validation), the top k kept float (on
   top of any speed-plan sites, each with its tail: ``exporters.int8.plan``) for k in 1, 2, 4,
   ... and the most sites under ``MAX_FLOAT_MACS`` of the model's MACs (past it the artefact is
   no longer an INT8 model). ``fewest_passing`` picks the order: the top site alone (often
   enough), then the most sites (if even that fails, the rung stops: fewer float sites bring
   the artefact no closer to float), then a binary search between them for the fewest that pass.
   Its tries reuse the observers rung 2 fitted on these images (ONNX Runtime: its tensor
   ranges); only an observer a float site adds calibrates (``exporters.int8.observers``; the
   artefact is the same bit for bit).

4. QAT (opt-in: ``Int8Options.qat_steps``; the PT2E quantizers of LiteRT and ExecuTorch): the
   float model fine-tuned under fake quantization on ``MORE_CALIBRATION`` x the calibration
   images (training images), distilled from its own logits (``exporters.int8.qat``); first
   with no accuracy float sites, then on top of each plan rung 3 tried, the one that came
   closest to passing first.
   It has a budget of its own and its time is recorded apart (``qat_seconds``).

Every rung after 0 is recalibrated too; the kept candidate gets its own decision embedded in
its files as tried (``exporters.finish.restamp``; a format without one exports it again).
The ladder stops at the first passing candidate, or before a try that would end past
``repair_budget_min`` (judged by how long the last try took), keeping the candidate closest to
passing (the smallest sum of how far each violation is past its limit, then the
fewest violations); rung 3 builds on the closest one so far.
``--repair recalibrate`` stops after rung 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporters import get_exporter
from exporters.int8.candidates import (
    Scored,
    export_candidate,
    float_pass,
    metrics_row,
    near_ties,
    refit,
    runtime_logits,
    score,
)
from exporters.int8.plan import PrecisionPlan, find_sites, float_site
from kd_core.parity import Tolerances, sensitivity_floor

if TYPE_CHECKING:
    from exporters.base import Artifact, ExportSettings
    from exporters.int8.options import Int8Options
    from exporters.validation_data import ValidationSet
    from kd_core.deploy import Decision

log = logging.getLogger(__name__)
MORE_CALIBRATION = 4
RANKING_IMAGES = 256
MAX_FLOAT_MACS = 0.5  # rung 3 keeps at most this share of the MACs float


@dataclass
class Candidate:
    """What a rung tried: its options and calibration, its own decision and its score."""

    int8: Int8Options
    cfg: ExportSettings
    decision: Decision
    scored: Scored
    arts: list[Artifact] | None = None  # exported with ``decision`` embedded (None: not yet)
    staged: list[Artifact] | None = None  # its files as tried, the checkpoint's decision in them


@dataclass
class Ladder:
    fmt: str
    model: Any
    example: tuple[Any, ...]
    stage: Path
    val: ValidationSet
    images: np.ndarray
    student: np.ndarray  # the float student's logits on ``images``
    ref: dict[str, Any]
    tol: Tolerances
    floor: float | None
    budget_s: float
    start: float = field(default_factory=time.monotonic)
    budget_start: float = field(default_factory=time.monotonic)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    best: Candidate | None = None
    ranking: list[dict[str, Any]] | None = None
    # What rung 3 tried, with how close each came (``Scored.rank``; a failed export: last).
    mixed_plans: list[tuple[PrecisionPlan, tuple[float, int]]] = field(default_factory=list)
    last: Candidate | None = None  # the candidate ``try_options`` scored last
    last_try_s: float = 0.0  # how long the last export-and-score try took

    def out_of_time(self) -> bool:
        """True when another try, taking as long as the last one, would end past the budget."""
        return time.monotonic() - self.budget_start + self.last_try_s > self.budget_s

    def passed(self) -> bool:
        return any(a.get("passed") for a in self.attempts)

    def consider(self, rung: str, detail: str, cand: Candidate, seconds: float) -> bool:
        self.attempts.append({"rung": rung, "detail": detail, "seconds": round(seconds, 1),
                              **cand.scored.to_dict()})
        self.last = cand
        log.info("%s repair, %s (%s): %s", self.fmt, rung, detail,
                 "passes" if cand.scored.passed else "; ".join(cand.scored.violations))
        if self.best is None or cand.scored.rank() < self.best.scored.rank():
            self.best = cand
        return cand.scored.passed

    def try_options(self, rung: str, detail: str, cfg: ExportSettings, int8: Int8Options
                    ) -> bool:
        """Export with ``int8`` (and ``cfg``'s calibration), refit its decision, score it."""
        clock = time.monotonic()
        self.last = None
        sub = self.stage / f"{len(self.attempts)}-{rung}"
        try:
            arts = export_candidate(self.fmt, self.model, self.example, cfg, sub, int8)
            logits = runtime_logits(arts[0], self.images)
        except Exception as exc:  # a candidate that fails to export is one failed attempt
            log.debug("%s candidate failed", rung, exc_info=True)
            self.last_try_s = time.monotonic() - clock
            self.attempts.append({"rung": rung, "detail": detail,
                                  "error": f"{type(exc).__name__}: {exc}"})
            return False
        decision = refit(logits, self.val, cfg.decision)
        scored = score(logits, self.val, decision, self.ref, self.student, self.tol,
                       self.floor)
        self.last_try_s = time.monotonic() - clock
        return self.consider(rung, detail, Candidate(int8, cfg, decision, scored, staged=arts),
                             self.last_try_s)


def repair(fmt: str, model: Any, example: tuple[Any, ...], cfg: ExportSettings,
           arts: list[Artifact], stage: Path) -> tuple[list[Artifact], Int8Options,
                                                       dict[str, Any]]:
    """Run the ladder on ``arts`` (the planned family, the scored one first): the artefacts to
    keep (``arts`` themselves, or candidates in ``stage``), their options and the record for
    the manifest entries' ``repair``."""
    int8 = cfg.int8
    assert int8 is not None and int8.validation is not None
    val, decision = int8.validation, cfg.decision
    record: dict[str, Any] = {"mode": int8.repair, "validation": val.to_manifest()}
    images, student = float_pass(model, val)
    tol = int8.tolerances
    floor = sensitivity_floor(decision, tol)
    ref = metrics_row(student, val, decision, student)
    budget = int8.repair_budget_min
    ladder = Ladder(fmt, model, example, stage, val, images, student, ref, tol, floor,
                    float("inf") if budget is None else 60 * budget)
    logits = runtime_logits(arts[0], images)
    before = score(logits, val, decision, ref, student, tol, floor)
    record.update(tolerances=tol.to_dict(), sensitivity_floor=floor, float_student=ref,
                  before=before.to_dict(), attempts=ladder.attempts)
    if "argmax_agreement_vs_student" in ref:  # judged on top-1 agreement: how near its floor
        record["near_ties"] = near_ties(student)
    if before.passed:
        return arts, int8, {**record, "rung": "none", "after": before.to_dict()}
    ladder.best = Candidate(int8, cfg, decision, before, arts)
    _climb(ladder, cfg, arts, logits)
    if int8.qat_steps > 0 and not ladder.passed() and int8.repair == "auto":
        _qat(ladder, cfg)
    best = ladder.best
    if best.arts is None:  # the kept candidate, now with its own decision embedded
        best.arts = _with_own_decision(ladder, best)
    rung = next((a["rung"] for a in ladder.attempts if a.get("passed")), "failed")
    record.update(rung=rung, after=best.scored.to_dict(),
                  seconds=round(time.monotonic() - ladder.start, 1),
                  float_sites=[s.to_dict() for s in best.int8.plan.float_sites])
    if int8.qat_steps > 0:
        record["qat_seconds"] = round(sum(a.get("seconds", 0.0) for a in ladder.attempts
                                          if a["rung"] == "qat"), 1)
    if ladder.ranking is not None:
        record.update(sensitivity=ladder.ranking, max_float_macs=MAX_FLOAT_MACS)
    return best.arts, best.int8, record


def _with_own_decision(ladder: Ladder, cand: Candidate) -> list[Artifact]:
    """``cand``'s artefacts with its own decision embedded: its files as tried, restamped
    (``exporters.finish.restamp``: the same graph, no second export) where the format can,
    else exported again."""
    from exporters.finish import restamp

    if cand.staged is not None and get_exporter(ladder.fmt).restamp is not None:
        stamped = [restamp(a, cand.decision) for a in cand.staged]
        return [a for a in stamped if a is not None]
    return export_candidate(ladder.fmt, ladder.model, ladder.example, cand.cfg,
                            ladder.stage / "kept", cand.int8, cand.decision)


def _climb(ladder: Ladder, cfg: ExportSettings, arts: list[Artifact], logits: np.ndarray
           ) -> None:
    int8 = cfg.int8
    assert int8 is not None
    # Rung 1: the artefact's own decision; same graph, so no export unless it is kept.
    clock = time.monotonic()
    decision = refit(logits, ladder.val, cfg.decision)
    scored = score(logits, ladder.val, decision, ladder.ref, ladder.student, ladder.tol,
                   ladder.floor)
    detail = f"T={decision.temperature:.4g}" + (
        "" if decision.threshold is None else f", threshold={decision.threshold:.4g}")
    if ladder.consider("recalibrate", detail, Candidate(int8, cfg, decision, scored,
                                                        staged=arts),
                       time.monotonic() - clock) or int8.repair == "recalibrate":
        return
    if _better_calibration(ladder, cfg) or ladder.out_of_time():
        return
    base = ladder.best  # rung 3 builds on the best calibration found so far
    assert base is not None
    _mixed_precision(ladder, base.cfg, base.int8)


def _better_calibration(ladder: Ladder, cfg: ExportSettings) -> bool:
    from exporters.calibration_data import load_calibration

    int8, calib = cfg.int8, cfg.calibration
    assert int8 is not None and calib is not None
    more = load_calibration(calib.source, calib.prep, cfg.labels,
                            MORE_CALIBRATION * len(calib), calib.seed, allow_few=True)
    if len(more) > len(calib):
        if ladder.try_options("better_calibration", f"{len(more)} calibration images",
                              replace(cfg, calibration=more), int8):
            return True
        if ladder.last is not None and ladder.best is ladder.last:  # more images came closer
            cfg = replace(cfg, calibration=more)
    if ladder.out_of_time():
        return False
    recipe = get_exporter(ladder.fmt).int8
    assert recipe is not None
    alt = replace(int8, observer=recipe.alt_observer)
    return ladder.try_options("better_calibration", f"observer {alt.observer}, "
                              f"{len(cfg.calibration or ())} images", cfg, alt)


def _mixed_precision(ladder: Ladder, cfg: ExportSettings, int8: Int8Options) -> bool:
    """Rung 3 on top of ``cfg``'s calibration and ``int8``'s observer and speed plan."""
    from exporters.int8.sensitivity import rank_sites

    calib = cfg.calibration
    assert calib is not None
    sites = find_sites(ladder.model, ladder.example)
    pick = np.sort(np.random.default_rng(0).permutation(len(ladder.images))[:RANKING_IMAGES])
    ranked = rank_sites(ladder.model, sites, calib.normalized(RANKING_IMAGES),
                        ladder.images[pick])
    ladder.ranking = [s.to_dict() for s in ranked]
    by_name = {s.name: s for s in sites}
    plans = [int8.plan.with_sites(
        [float_site(by_name[s.site], sites, "accuracy",
                    {"kl": round(s.kl, 8), "sqnr_db": round(s.sqnr_db, 2)}) for s in ranked[:k]],
        f"accuracy: top {k} of {len(ranked)} sites by KL on validation")
        for k in range(1, len(ranked) + 1)]
    sizes = plan_sizes([p.float_macs_share() for p in plans])
    if not sizes or sizes[-1] < len(plans):
        log.info("%s repair: at most %d float sites (more would keep over %.0f %% of the MACs "
                 "float)", ladder.fmt, sizes[-1] if sizes else 0, 100 * MAX_FLOAT_MACS)
    passing: dict[int, Candidate] = {}

    def attempt(k: int) -> bool | None:
        if ladder.out_of_time():
            return None
        passed = ladder.try_options("mixed_precision", f"{k} most sensitive sites float", cfg,
                                    replace(int8, plan=plans[k - 1]))
        ladder.mixed_plans.append(
            (plans[k - 1], ladder.last.scored.rank() if ladder.last else (float("inf"), 0)))
        if passed and ladder.last is not None:
            passing[k] = ladder.last
        return passed

    k = fewest_passing(sizes, attempt)
    if k is None:
        return False
    ladder.best = passing[k]  # every passing candidate ranks alike: keep the fewest float sites
    return True


def fewest_passing(sizes: list[int], passes: Callable[[int], bool | None]) -> int | None:
    """The smallest of ``sizes`` (ascending) that ``passes``, or None: the smallest first, then
    the largest (if it fails too, none is tried between: more float sites only bring the
    artefact closer to float), then a binary search between the two. ``passes`` returns None
    when there is no time for the try: the search stops at the fewest found passing so far."""
    if not sizes:
        return None
    first = passes(sizes[0])
    if first or first is None or len(sizes) == 1:
        return sizes[0] if first else None
    lo, hi = 0, len(sizes) - 1
    if not passes(sizes[hi]):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = passes(sizes[mid])
        if got is None:
            break
        lo, hi = (lo, mid) if got else (mid, hi)
    return sizes[hi]


def plan_sizes(float_macs: list[float], limit: float = MAX_FLOAT_MACS) -> list[int]:
    """Rung 3's plan sizes: 1, 2, 4, ... sites while ``float_macs[k - 1]`` (the float MACs
    share of the top-k plan) stays within ``limit``, then the largest k within it."""
    within = [k for k in range(1, len(float_macs) + 1) if float_macs[k - 1] <= limit]
    if not within:
        return []
    sizes = [k for k in (2**i for i in range(len(float_macs).bit_length())) if k <= within[-1]]
    return sizes if sizes[-1] == within[-1] else [*sizes, within[-1]]


def _qat(ladder: Ladder, cfg: ExportSettings) -> None:
    """Rung 4 on ``MORE_CALIBRATION`` x ``cfg``'s calibration images (the training split), with a
    budget of its own: no accuracy float sites first, then each plan rung 3 tried."""
    from exporters.calibration_data import load_calibration
    from exporters.int8.qat import QatSpec
    from exporters.int8.quantize import QAT_QUANTIZERS

    int8, calib, recipe = cfg.int8, cfg.calibration, get_exporter(ladder.fmt).int8
    assert int8 is not None and calib is not None and recipe is not None
    if recipe.quantizer not in QAT_QUANTIZERS:
        ladder.attempts.append({"rung": "qat", "detail": "skipped", "error": f"QAT needs a "
                                f"PT2E quantizer; {ladder.fmt} uses {recipe.quantizer}"})
        return
    train = load_calibration(calib.source, calib.prep, cfg.labels,
                             MORE_CALIBRATION * len(calib), calib.seed, allow_few=True)
    base = replace(int8, observer=None, qat=QatSpec(int8.qat_steps, seed=calib.seed))
    ladder.budget_start = time.monotonic()
    closest_first = [p for p, _ in sorted(ladder.mixed_plans, key=lambda t: t[1])]
    for plan in [int8.plan, *closest_first]:
        sites = len(plan.float_sites) - len(int8.plan.float_sites)
        detail = f"{int8.qat_steps} steps on {len(train)} images" + (
            f", {sites} most sensitive sites float" if sites else "")
        if ladder.try_options("qat", detail, replace(cfg, calibration=train),
                              replace(base, plan=plan)) or ladder.out_of_time():
            return
