"""Core ML (``coremltools``): predicts on macOS only; elsewhere loading raises
``RuntimeUnavailable("needs macOS")``, which the harness reports as a skipped row.

The ``.mlpackage`` takes an RGB image and returns ``softmax(logits / temperature)``; the runner
turns the normalized input back into pixels and the probabilities back into logits (up to a
constant) so that it has the same interface as every other runner.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from runtimes import Runner, RuntimeLoadError, RuntimeUnavailable, register_runtime


def available() -> bool:
    return platform.system() == "Darwin"


@register_runtime("coreml", "Core ML")
class CoreMLRunner(Runner):
    runtime = "Core ML"

    def _load(self) -> None:
        if not available():
            raise RuntimeUnavailable("needs macOS")
        import coremltools as ct

        self.runtime = f"Core ML (coremltools {ct.__version__})"
        try:
            self.model = ct.models.MLModel(str(self.path))
        except Exception as exc:
            raise RuntimeLoadError(f"{self.path}: Core ML cannot load it ({exc})") from None
        prep = self.entry.preprocessing
        self.mean = np.asarray(prep.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(prep.std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.labels = list(self.entry.decision.labels)
        self.input_name = str(self.entry.input["name"])
        self.probs_name = str(self.entry.output["name"])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        pixels = np.rint((x * self.std + self.mean) * 255.0)
        return np.clip(pixels, 0, 255).astype(np.uint8)  # NCHW uint8

    def _run(self, x: np.ndarray) -> np.ndarray:
        from PIL import Image

        rows = []
        for img in x:
            out: dict[str, Any] = self.model.predict(
                {self.input_name: Image.fromarray(np.moveaxis(img, 0, -1))})
            probs = out[self.probs_name]
            rows.append([float(probs[label]) for label in self.labels])
        return np.asarray(rows, dtype=np.float64)
