"""A tiny real export for the app and parity tests: a calibrated tiny_mobilenet checkpoint at
32 px, exported by ``exporters.all`` (TFLite INT8 in tens of seconds; Core ML on request)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ["other", "melanoma"]
TEMPERATURE, THRESHOLD = 1.3, 0.4
CALIB_IMAGES = 32


def tiny_checkpoint(path: Path, size: int = 32) -> Path:
    """A tiny_mobilenet checkpoint whose decision is recorded as calibrated on validation."""
    import torch

    from kd_core.checkpoint import build_checkpoint, save_checkpoint
    from kd_core.data.transforms import Preprocessing
    from kd_core.models import create_model

    torch.manual_seed(0)
    calibration = {"split": "val", "n": 64, "temperature": TEMPERATURE, "threshold": THRESHOLD,
                   "target_sensitivity": 0.95}
    ckpt = build_checkpoint(create_model("tiny_mobilenet", len(LABELS)), "tiny_mobilenet", LABELS,
                            Preprocessing(size=size), temperature=TEMPERATURE,
                            threshold=THRESHOLD, calibration=calibration,
                            target_sensitivity=0.95, dataset="synthetic demo data")
    return save_checkpoint(ckpt, path)


def tiny_export(root: Path, *, coreml: bool = False) -> Path:
    """``root/out``: TFLite INT8 (calibrated on 32 random images, the exporters' minimum) and,
    with ``coreml``, Core ML."""
    from exporters.all import main as export_main

    calib = root / "calib"
    calib.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(CALIB_IMAGES):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    ckpt = tiny_checkpoint(root / "tiny.pth")
    out = root / "out"
    common = [str(ckpt), "--out", str(out)]
    assert export_main([*common, "--formats", "tflite", "--precisions", "int8",
                        "--calib-data", str(calib), "--calib-samples", str(CALIB_IMAGES)]) == 0
    if coreml:
        assert export_main([*common, "--formats", "coreml", "--precisions", "fp32"]) == 0
    return out
