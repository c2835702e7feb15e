"""Every artefact is loaded in its real runtime and compared with torch before it is kept.

fp32 artefacts must match the float model within ``FP32_ATOL`` (scaled by the logit magnitude
when logits exceed 1); a miss is an ``ExportError`` and the artefact is not written. INT8
artefacts are compared with their torch reference (PT2E's converted, fake-quantized model, or the
float model for ONNX Runtime's QDQ) and the figures are recorded, not enforced: quantized models
are judged on task metrics by the benchmark harness.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters import Artifact
from exporters.base import ExportError, ExportSettings

FP32_ATOL = 1e-4
CHECK_IMAGES = 8

RunFn = Callable[[Path, np.ndarray], np.ndarray]


def check_images(cfg: ExportSettings, n: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Up to ``n`` calibration images (real, preprocessed), else a fixed random batch."""
    if cfg.calibration is not None and len(cfg.calibration) > 0:
        return cfg.calibration.normalized()[:n], "calibration images"
    size = cfg.preprocessing.size
    gen = np.random.default_rng(0)
    return gen.standard_normal((2, 3, size, size)).astype(np.float32), "random inputs"


def reference_outputs(reference: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        rows = [reference(torch.from_numpy(x[None].copy()))[0] for x in images]
    return torch.stack(rows).float().numpy()


def compare(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    return {
        "max_abs_diff": float(np.abs(got - want).max()),
        "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
    }


def verify_artifact(art: Artifact, path: Path, run: RunFn, cfg: ExportSettings) -> dict[str, Any]:
    """Run the artefact at ``path`` and its torch reference on the same images; see module doc."""
    if art.reference is None:
        raise ExportError(f"{art.name}: no torch reference to verify against")
    images, source = check_images(cfg)
    got = run(path, images)
    want = reference_outputs(art.reference, images)
    if got.shape != want.shape:
        raise ExportError(f"{art.name}: output shape {got.shape} != torch's {want.shape}")
    if not np.isfinite(got).all():
        raise ExportError(f"{art.name}: non-finite outputs in the runtime")
    result = {"images": len(images), "inputs": source, **compare(got, want)}
    if art.precision == "fp32":
        tol = FP32_ATOL * max(1.0, float(np.abs(want).max()))
        result["tolerance"] = tol
        if result["max_abs_diff"] > tol:
            raise ExportError(
                f"{art.name}: runtime output differs from torch by {result['max_abs_diff']:.3g} "
                f"(tolerance {tol:.3g})")
    return result
