"""Helpers for the runtime and benchmark tests: a tiny student whose threshold reaches 95 %
sensitivity on the synthetic holdout, a weight-perturbed copy, and real exports of both."""

from __future__ import annotations

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
from kd_core.deploy import load_manifest, write_manifest
from kd_core.metrics import softmax, threshold_for_sensitivity

SIZE = 32
TEMPERATURE = 1.5


def holdout_inputs(prepared: Path, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    split = load_split(prepared, "holdout")
    return normalize(decode_images(split.paths, prep), prep), np.asarray(split.targets)


def student_checkpoint(path: Path, prepared: Path, arch: str = "tiny_mobilenet",
                       size: int = SIZE, seed: int = 0, target: float = 0.95) -> Path:
    """A decisive tiny model whose shipped threshold gives ``target`` sensitivity on the holdout,
    recorded as calibrated (the exporters refuse uncalibrated checkpoints)."""
    prep = Preprocessing(size=size)
    model = decisive_model(arch, 2, size, seed)
    x, y = holdout_inputs(prepared, prep)
    with torch.no_grad():
        p = softmax(model(torch.from_numpy(x)).numpy(), TEMPERATURE)[:, 1]
    at = threshold_for_sensitivity(y, p, target)
    below = p[p < at]  # halfway to the next score down: runtimes' 1e-7 noise keeps decisions
    threshold = float((at + below.max()) / 2) if below.size else at
    calibration = {"split": "val", "n": len(y), "temperature": TEMPERATURE,
                   "threshold": threshold, "target_sensitivity": target}
    ckpt = build_checkpoint(model, arch, BINARY_LABELS, prep, temperature=TEMPERATURE,
                            threshold=threshold, metrics={"target_sensitivity": target},
                            target_sensitivity=target, calibration=calibration)
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
    """Real exports of ``ckpt`` with the exporters; returns the folder holding the manifest."""
    from exporters.run import ExportOptions, export_checkpoint

    options = ExportOptions(formats=formats, precisions=families, calib_data=calib,
                            calib_samples=32, seed=0, jobs=1, threads=1)
    result = export_checkpoint(ckpt, out, options)
    assert result.ok, result.failures
    return out


def add_renamed(into: Path, source: Path, suffix: str) -> str:
    """Copy ``source``'s first artefact into ``into``'s manifest as ``<name><suffix>``."""
    src = load_manifest(source).artifacts[0]
    name = src.name + suffix
    target = Path(src.path).with_stem(Path(src.path).stem + suffix).as_posix()
    shutil.copy(source / src.path, into / target)
    manifest = load_manifest(into)
    entries = (*manifest.artifacts, replace(src, name=name, path=target))
    write_manifest(replace(manifest, artifacts=entries), into)
    return name
