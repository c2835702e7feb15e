"""INT8 candidates: a format's planned artefacts re-exported with other options, run on the
validation split in their own runtime and judged with the parity gate's rule.

Shared by the speed objective and the repair ladder (``exporters.int8.objectives``,
``exporters.int8.repair``). A candidate is the family the recipe's plan steers
(``ExporterSpec.planned_precisions``: LiteRT's int8 artefact and anything made from it), exported
through the format's own ``export`` into a staging folder; ``adopt`` moves the chosen one (files
and sidecars) beside the other artefacts. The first artefact of the family is the one scored.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.parity import Tolerances, check_row

if TYPE_CHECKING:
    from exporters.base import Artifact, ExportSettings
    from exporters.int8.options import Int8Options
    from exporters.validation_data import ValidationSet
    from kd_core.deploy import Decision

log = logging.getLogger(__name__)
BATCH = 64
# This process's last float pass: (model key, validation set, images, float logits).
_FLOAT_PASS: list[tuple[str, ValidationSet, np.ndarray, np.ndarray]] = []


def export_candidate(fmt: str, model: Any, example: tuple[Any, ...], cfg: ExportSettings,
                     stage: Path, int8: Int8Options, decision: Decision | None = None
                     ) -> list[Artifact]:
    """``fmt``'s planned artefacts exported into ``stage`` with ``int8`` and, if given,
    ``decision`` (the artefact's own temperature and threshold) instead of the checkpoint's."""
    from exporters import get_exporter

    spec = get_exporter(fmt)
    assert spec.int8 is not None
    cand = replace(cfg, precisions=(spec.int8.plan_family,), int8=int8,
                   decision=decision or cfg.decision)
    stage.mkdir(parents=True, exist_ok=True)
    planned = spec.planned_precisions()
    return [a for a in spec.export(model, example, stage, cand) if a.precision in planned]


def adopt(arts: list[Artifact], out_dir: Path) -> list[Artifact]:
    """Move staged artefacts (and their sidecars) into ``out_dir``, replacing what is there."""

    def move(src: Path, dst: Path) -> None:
        if src.resolve() == dst.resolve():
            return
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)  # an .mlpackage folder
        os.replace(src, dst)

    out = []
    for art in arts:
        root = art.path.parent
        for sidecar in art.entry.sidecars:
            move(root / sidecar, out_dir / sidecar)
        move(art.path, art.entry.file(out_dir))
        out.append(replace(art, path=art.entry.file(out_dir)))
    return out


def float_pass(model: Any, val: ValidationSet) -> tuple[np.ndarray, np.ndarray]:
    """``val``'s images normalized and the float model's logits on them. An export worker
    repairs its formats one after another on one model and one validation set, so the last
    pass is kept, keyed by the set and by the model's code and every tensor it reads
    (``exporters.int8.observers.model_key``: a model changed in place is scored again)."""
    from exporters.int8 import sensitivity
    from exporters.int8.observers import model_key

    key = model_key(model, "float pass")
    for k, v, images, logits in _FLOAT_PASS:
        if k == key and v is val:
            return images, logits
    images = val.normalized()
    logits = sensitivity.float_logits(model, images)
    _FLOAT_PASS[:] = [(key, val, images, logits)]
    return images, logits


def near_ties(logits: np.ndarray) -> dict[str, float]:
    """How close the float model's own top-1 decisions on these images are to ties: one int8 step
    of its logits (their range over 255: the step of an INT8 output) and the share of images
    whose top two logits are closer than that. Rounding alone can flip those images, so a top-1
    agreement bar that allows fewer flips than that share sits near INT8's floor. Measured on a
    7-class MobileNetV3-Large at 64 px: 3.9 % of its validation images within a step of 0.048;
    quantizing only its logits (everything else float) flipped 0.9 % of all of them."""
    step = float(logits.max() - logits.min()) / 255
    top2 = np.sort(logits, axis=1)[:, -2:]
    share = float(np.mean(top2[:, 1] - top2[:, 0] < step)) if logits.shape[1] > 1 else 0.0
    return {"int8_logit_step": round(step, 6), "share_within_step": round(share, 6)}


def runtime_logits(art: Artifact, images: np.ndarray) -> np.ndarray:
    """Logits of normalized NCHW ``images`` from the artefact in its own runtime (1 thread);
    ``runtimes.RuntimeUnavailable`` where that runtime cannot run here."""
    from runtimes import load_runner

    runner = load_runner(art.entry, art.path.parent, threads=1)
    return np.concatenate([runner.predict(images[i : i + BATCH])
                           for i in range(0, len(images), BATCH)])


@dataclass(frozen=True)
class Scored:
    """Validation metrics of a candidate at a decision, and the gate's verdict on them."""

    metrics: dict[str, Any]
    violations: tuple[str, ...]
    shortfall: float = 0.0  # how far past their limits the violations are, summed

    @property
    def passed(self) -> bool:
        return not self.violations

    def rank(self) -> tuple[float, int]:
        """Smaller is closer to passing: a smaller shortfall (ROC-AUC, agreement, sensitivity
        and ECE are all on a 0-1 scale), then fewer violations."""
        return self.shortfall, len(self.violations)

    def to_dict(self) -> dict[str, Any]:
        from kd_core.finalize import finite

        return {**finite(self.metrics), "violations": list(self.violations),
                "passed": self.passed}


def metrics_row(logits: np.ndarray, val: ValidationSet, decision: Decision,
                student_logits: np.ndarray) -> dict[str, Any]:
    """What the gate reads of ``logits`` at ``decision`` (the metrics training reports,
    ``kd_core.finalize.evaluate``); an argmax or multi-class model also its top-1 agreement with
    the float student's ``student_logits`` on the same images."""
    from kd_core.deploy import compare_outputs
    from kd_core.finalize import evaluate

    pos = decision.positive_index
    m = evaluate(logits, val.labels, list(decision.labels), pos, decision.threshold,
                 decision.temperature, 0, 0)
    keys = ("roc_auc", "ece", "threshold", "temperature") + (
        ("sensitivity", "specificity") if pos is not None else ("accuracy",))
    row = {k: m[k] for k in keys}
    row["positive_index"] = pos
    row["num_classes"] = len(decision.labels)
    if pos is None or len(decision.labels) > 2:
        agree = compare_outputs(logits, student_logits)["top1_agreement"]
        row["argmax_agreement_vs_student"] = float(agree)
    return row


def score(logits: np.ndarray, val: ValidationSet, decision: Decision, ref: dict[str, Any],
          student_logits: np.ndarray, tol: Tolerances, floor: float | None) -> Scored:
    """Metrics at ``decision`` and the gate's rule (``kd_core.parity.check_row``) against the
    float student's ``ref`` metrics on the same images, with sensitivity ``floor``."""
    metrics = metrics_row(logits, val, decision, student_logits)
    row = {"name": "candidate", "status": "ok", "accuracy": metrics}
    violations = check_row(row, {"accuracy": ref}, tol, floor)
    shortfall = sum(abs(abs(v.value) - v.limit) if v.value is not None and v.limit is not None
                    else float("inf") for v in violations)  # ROC-AUC: |delta| past its limit
    return Scored(metrics, tuple(v.message for v in violations),
                  shortfall if np.isfinite(shortfall) else float("inf"))


def refit(logits: np.ndarray, val: ValidationSet, decision: Decision) -> Decision:
    """``decision`` with the artefact's own temperature and threshold, fitted on validation:
    the temperature that minimizes the NLL (``kd_core.calibration.fit_temperature``, as
    training fits the float model's), or the checkpoint's where that one has the lower ECE
    (the gate's calibration metric: the NLL optimum can be the worse calibrated by it), then the
    threshold reaching the float model's target sensitivity at that temperature; the
    temperature alone for an argmax model or without a target."""
    from kd_core.calibration import fit_temperature
    from kd_core.finalize import evaluate, threshold_at

    pos, labels = decision.positive_index, list(decision.labels)

    def ece(t: float) -> float:
        return float(evaluate(logits, val.labels, labels, pos, None, t, 0, 0)["ece"])

    fitted = fit_temperature(logits, val.labels)
    temperature = fitted if ece(fitted) <= ece(decision.temperature) else decision.temperature
    if pos is None or decision.target_sensitivity is None:
        return decision.with_calibration(temperature, decision.threshold)
    return decision.with_calibration(temperature, threshold_at(
        logits, val.labels, pos, temperature, decision.target_sensitivity))
