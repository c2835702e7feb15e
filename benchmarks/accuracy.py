"""Accuracy of one model on one split, and its agreement with a reference model.

Every model is scored with its own shipped temperature and threshold (manifest entry or
checkpoint): ROC-AUC with a 95 % bootstrap CI, PR-AUC, sensitivity and specificity at the
threshold, ECE with and without the temperature, Brier. Agreement compares decisions
(``p[positive] >= threshold``, each model with its own), argmax classes, and the positive-class
probability (max |delta p|).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.data.transforms import Preprocessing, normalize
from kd_core.metrics import ece, ece_binary, evaluate_predictions, softmax
from runtimes import Runner


def decode(preps: Iterable[Preprocessing], paths: Sequence[Path], cache: Path | None
           ) -> dict[Preprocessing, np.ndarray]:
    """uint8 N x H x W x 3 pixels per distinct preprocessing, decoded once each (cached)."""
    from kd_core.data.dataset import load_images

    return {prep: load_images(paths, prep, cache, desc=f"decoding {prep.size}px")
            .permute(0, 2, 3, 1).numpy() for prep in preps}


def predict_all(runner: Runner, pixels: np.ndarray, prep: Preprocessing, batch: int = 32,
                desc: str = "") -> np.ndarray:
    """Logits of uint8 N x H x W x 3 images, normalized batch by batch (bounded memory)."""
    from tqdm import tqdm

    steps = range(0, len(pixels), batch)
    out = [runner.predict(normalize(pixels[i : i + batch], prep))
           for i in tqdm(steps, desc=desc or runner.name, unit="batch", leave=False,
                         disable=len(steps) < 4)]
    return np.concatenate(out).astype(np.float64)


def positive_probability(logits: np.ndarray, entry: Mapping[str, Any]) -> np.ndarray:
    """p[positive_index] of ``softmax(logits / temperature)``, with the entry's temperature."""
    probs = softmax(logits, float(entry.get("temperature", 1.0)))
    return np.asarray(probs[:, int(entry.get("positive_index", 1))])


def score(logits: np.ndarray, y: np.ndarray, entry: Mapping[str, Any], bootstrap: int = 1000,
          seed: int = 42) -> dict[str, Any]:
    """All accuracy figures of one model at its shipped temperature and threshold."""
    pos = int(entry.get("positive_index", 1))
    m = evaluate_predictions(logits, y, pos, threshold=float(entry["threshold"]),
                             temperature=float(entry.get("temperature", 1.0)),
                             bootstrap=bootstrap, seed=seed)
    m["positive_index"] = pos
    raw = softmax(logits, 1.0)
    m["ece_uncalibrated"] = ece(raw, y)
    m["ece_pos_uncalibrated"] = ece_binary(raw[:, pos], (np.asarray(y) == pos).astype(np.int64))
    return m


def agreement(logits: np.ndarray, entry: Mapping[str, Any], ref_logits: np.ndarray,
              ref_entry: Mapping[str, Any]) -> dict[str, Any]:
    """How closely a model follows a reference on the same images."""
    p, q = positive_probability(logits, entry), positive_probability(ref_logits, ref_entry)
    decide = p >= float(entry["threshold"])
    ref_decide = q >= float(ref_entry["threshold"])
    same_space = logits.shape == ref_logits.shape
    return {
        "decision_agreement": float(np.mean(decide == ref_decide)),
        "argmax_agreement": (float(np.mean(logits.argmax(1) == ref_logits.argmax(1)))
                             if same_space else None),
        "max_abs_dp": float(np.max(np.abs(p - q))),
        "mean_abs_dp": float(np.mean(np.abs(p - q))),
        "max_abs_logit_diff": (float(np.max(np.abs(logits - ref_logits)))
                               if same_space else None),
    }
