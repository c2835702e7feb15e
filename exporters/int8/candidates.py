"""INT8 candidates: re-export one format's INT8 artefact with other options, run it on the
validation split in its own runtime, score it with the parity gate's checks.

Shared by the speed objective and the repair ladder (``exporters.int8.finish``,
``exporters.int8.repair``). Candidates are written to a staging folder; ``adopt`` moves the
chosen one (and its sidecars) next to the other artefacts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.metrics import evaluate_predictions
from kd_core.parity import Tolerances, check_row

if TYPE_CHECKING:
    from torch import nn

    from exporters import Artifact
    from exporters.base import ExportSettings
    from exporters.int8.options import Int8Options
    from exporters.validation_data import ValidationSet

log = logging.getLogger(__name__)
# The precision whose quantization a plan steers, per format (Core ML's w8 has float activations).
PLANNED = {"tflite": "int8", "executorch": "int8", "onnx": "int8", "coreml": "w8a8"}
FAMILY = {"int8": "int8", "w8a8": "w8a8"}


def export_candidate(fmt: str, model: nn.Module, example: tuple[Any, ...], cfg: ExportSettings,
                     stage: Path, int8: Int8Options, precision: str,
                     decision: tuple[float, float] | None = None) -> Artifact:
    """The ``precision`` artefact of ``fmt`` exported into ``stage`` with ``int8`` options and,
    if given, the (temperature, threshold) embedded instead of the checkpoint's."""
    from exporters import get_exporter

    cand = replace(cfg, precisions=(FAMILY[precision],), int8=int8)
    if decision is not None:
        cand = replace(cand, temperature=decision[0], threshold=decision[1])
    stage.mkdir(parents=True, exist_ok=True)
    arts = get_exporter(fmt).export(model, example, stage, cand)
    art = next(a for a in arts if a.precision == precision)
    if decision is not None:
        art = replace(art, decision={"temperature": decision[0], "threshold": decision[1]})
    return art


def adopt(art: Artifact, out_dir: Path) -> Artifact:
    """Move a staged artefact (and its sidecars) into ``out_dir``, replacing what is there."""
    import shutil

    def move(path: Path) -> Path:
        dst = out_dir / path.name
        if path.resolve() == dst.resolve():
            return dst
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(path, dst)
        return dst

    return replace(art, path=move(art.path), extra_files=tuple(move(p) for p in art.extra_files))


def entry_of(art: Artifact, cfg: ExportSettings) -> dict[str, Any]:
    """The manifest entry of ``art`` (its folder is the root)."""
    from exporters.manifest import artifact_entry

    return artifact_entry(art, cfg, art.path.parent)


def runtime_logits(art: Artifact, cfg: ExportSettings, images: np.ndarray) -> np.ndarray:
    """Logits of normalized NCHW ``images`` from the artefact in its own runtime (1 thread);
    ``RuntimeUnavailable`` where the runtime cannot run here."""
    from runtimes import load_runner

    runner = load_runner(entry_of(art, cfg), art.path.parent, threads=1)
    return np.concatenate([runner.predict(images[i : i + 64])
                           for i in range(0, len(images), 64)])


def float_logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(images[i : i + 64]))
                          for i in range(0, len(images), 64)]).double().numpy()


@dataclass(frozen=True)
class Scored:
    """Validation metrics of a candidate at a (temperature, threshold) and the gate's verdict."""

    metrics: dict[str, float]
    violations: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "violations": list(self.violations), "passed": self.passed}


def metrics_row(logits: np.ndarray, val: ValidationSet, positive_index: int, temperature: float,
                threshold: float) -> dict[str, float]:
    m = evaluate_predictions(logits, val.labels, positive_index, threshold=threshold,
                             temperature=temperature, bootstrap=0)
    return {k: float(m[k]) for k in ("roc_auc", "sensitivity", "specificity", "ece",
                                     "threshold", "temperature")}


def score(logits: np.ndarray, val: ValidationSet, cfg: ExportSettings, ref: dict[str, float],
          decision: tuple[float, float], tol: Tolerances) -> Scored:
    """Metrics at ``decision`` and the gate's checks against the float student's ``ref``."""
    metrics = metrics_row(logits, val, cfg.positive_index, *decision)
    row = {"name": "candidate", "status": "ok", "accuracy": metrics}
    violations = check_row(row, {"accuracy": ref}, tol)
    return Scored(metrics, tuple(v.message for v in violations))


def refit(logits: np.ndarray, val: ValidationSet, positive_index: int, target: float
          ) -> tuple[float, float]:
    """The artefact's own temperature (NLL on validation) and the threshold reaching
    ``target`` sensitivity on validation at that temperature."""
    from kd_core.calibration import fit_temperature
    from kd_core.metrics import softmax, threshold_for_sensitivity

    temperature = fit_temperature(logits, val.labels)
    p = softmax(logits, temperature)[:, positive_index]
    threshold = threshold_for_sensitivity((val.labels == positive_index).astype(np.int64), p,
                                          target)
    return float(temperature), float(threshold)
