"""Helpers for the runtime and benchmark tests: a tiny student whose threshold reaches 95 %
sensitivity on the synthetic holdout, a weight-perturbed copy, and real exports of both."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from exporters_support import decisive_model

from kd_core.checkpoint import BINARY_LABELS, build_checkpoint, load_checkpoint, save_checkpoint
from kd_core.data.dataset import decode_images
from kd_core.data.ham10000 import load_split
from kd_core.data.transforms import Preprocessing, normalize
from kd_core.metrics import softmax, threshold_for_sensitivity

SIZE = 32
TEMPERATURE = 1.5


def holdout_inputs(prepared: Path, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    split = load_split(prepared, "holdout")
    return normalize(decode_images(split.paths, prep), prep), np.asarray(split.targets)


def student_checkpoint(path: Path, prepared: Path, arch: str = "tiny_mobilenet",
                       size: int = SIZE, seed: int = 0) -> Path:
    """A decisive tiny model whose shipped threshold gives 95 % sensitivity on the holdout."""
    prep = Preprocessing(size=size)
    model = decisive_model(arch, 2, size, seed)
    x, y = holdout_inputs(prepared, prep)
    with torch.no_grad():
        p = softmax(model(torch.from_numpy(x)).numpy(), TEMPERATURE)[:, 1]
    at = threshold_for_sensitivity(y, p, 0.95)
    below = p[p < at]  # halfway to the next score down: runtimes' 1e-7 noise keeps decisions
    threshold = float((at + below.max()) / 2) if below.size else at
    ckpt = build_checkpoint(model, arch, BINARY_LABELS, prep, temperature=TEMPERATURE,
                            threshold=threshold, metrics={"target_sensitivity": 0.95},
                            calibration={"split": "holdout", "n": len(y),
                                         "temperature": TEMPERATURE, "threshold": threshold,
                                         "target_sensitivity": 0.95})
    return save_checkpoint(ckpt, path)


def perturbed_checkpoint(src: Path, out: Path, scale: float = 0.5, seed: int = 1) -> Path:
    """``src`` with Gaussian noise (``scale`` x each tensor's std) added to every float weight."""
    ckpt = load_checkpoint(src)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in ckpt["state_dict"].items():
        if t.is_floating_point() and t.numel() > 1 and "running" not in key:
            t = t + scale * t.std() * torch.randn(t.shape, generator=gen)
        state[key] = t
    return save_checkpoint({**ckpt, "state_dict": state}, out)


def export(ckpt: Path, out: Path, formats: tuple[str, ...], families: tuple[str, ...] = ("fp32",),
           calib: Path | None = None) -> Path:
    """Real exports of ``ckpt`` with the exporters; returns the folder holding manifest.json."""
    from exporters.calibration_data import load_calibration
    from exporters.job import load_settings
    from exporters.run import export_model

    model, cfg = load_settings(ckpt, families)
    if "int8" in families:
        assert calib is not None
        cal = load_calibration(calib, cfg.preprocessing, cfg.labels, 32, 0)
        cfg = replace(cfg, calibration=cal)
    result = export_model(model, cfg, out, formats)
    assert not result.failures, result.failures
    return out


def add_renamed(into: Path, source: Path, suffix: str) -> str:
    """Copy ``source``'s first artefact into ``into``'s manifest as ``<name><suffix>``."""
    src = json.loads((source / "manifest.json").read_text())["artifacts"][0]
    name = src["name"] + suffix
    target = Path(src["path"]).with_stem(Path(src["path"]).stem + suffix).as_posix()
    shutil.copy(source / src["path"], into / target)
    manifest = json.loads((into / "manifest.json").read_text())
    manifest["artifacts"].append({**src, "name": name, "path": target})
    (into / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return name
