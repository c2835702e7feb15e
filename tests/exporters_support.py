"""Helpers for the exporter tests: small decisive models, checkpoints and image folders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd_core.checkpoint import BINARY_LABELS, DX_LABELS, build_checkpoint, save_checkpoint
from kd_core.data.transforms import Preprocessing, normalize
from kd_core.models import create_model


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """N x size x size x 3 uint8 images with smooth colour blobs (not white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = np.full((size, size, 3), rng.uniform(0.3, 0.9, 3))
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.35)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - blob) + rng.uniform(0, 1, 3) * blob
        img += rng.normal(0, 0.02, img.shape)
        out[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def decisive_model(arch: str, num_classes: int, size: int, seed: int = 0) -> nn.Module:
    """Random weights, BatchNorm statistics from images and a head scaled to O(1) logits."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes)
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0, 2.0 / math.sqrt(mod.in_features))
        elif isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None  # cumulative average over the batches below
    prep = Preprocessing(size=size)
    x = torch.from_numpy(normalize(smooth_images(32, size, seed + 1), prep))
    model.train()
    with torch.no_grad():
        for batch in x.split(8):
            model(batch)
    return model.eval()


def colour_labels(images: np.ndarray, num_classes: int) -> np.ndarray:
    """A learnable rule: the class is the bin of (mean red - mean blue)."""
    score = images[..., 0].mean(axis=(1, 2)) - images[..., 2].mean(axis=(1, 2))
    edges = np.quantile(score, np.linspace(0, 1, num_classes + 1)[1:-1])
    return np.digitize(score, edges).astype(np.int64)


def trained_model(arch: str, num_classes: int, size: int, seed: int = 0, steps: int = 60
                  ) -> nn.Module:
    """A few Adam steps on ``colour_labels``: decisive logits, as a trained model has."""
    model = decisive_model(arch, num_classes, size, seed)
    images = smooth_images(256, size, seed + 2)
    x = torch.from_numpy(normalize(images, Preprocessing(size=size)))
    y = torch.from_numpy(colour_labels(images, num_classes))
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 0.1
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def write_checkpoint(path: Path, arch: str = "tiny_mobilenet", num_classes: int = 2,
                     size: int = 64, drop: tuple[str, ...] = (), seed: int = 0,
                     steps: int = 0, calibrated: bool = True, **extra: object) -> Path:
    """A checkpoint as training writes it (temperature 1.5, threshold 0.3 and, unless
    ``calibrated`` is False, the record of their calibration); ``extra`` keys override."""
    model = (trained_model(arch, num_classes, size, seed, steps) if steps
             else decisive_model(arch, num_classes, size, seed))
    labels = BINARY_LABELS if num_classes == 2 else DX_LABELS[:num_classes]
    record = {"split": "val", "n": 100, "temperature": 1.5, "threshold": 0.3,
              "target_sensitivity": 0.95}
    ckpt = build_checkpoint(model, arch, labels, Preprocessing(size=size), temperature=1.5,
                            threshold=0.3, target_sensitivity=0.95,
                            **({"calibration": record} if calibrated else {}))
    ckpt.update(extra)
    for key in drop:
        ckpt.pop(key)
    return save_checkpoint(ckpt, path)


def write_image_folder(folder: Path, n: int, size: int = 48, seed: int = 0) -> Path:
    """A plain folder of JPEG and PNG images (alternating), in two sub-folders."""
    from PIL import Image

    for i, img in enumerate(smooth_images(n, size, seed)):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}")
    return folder


def prepared_synthetic(root: Path, n_images: int = 80, size: int = 64) -> Path:
    """A synthetic HAM10000-layout dataset and its prepared splits: (prepared folder)."""
    from kd_core.data.ham10000 import prepare
    from kd_core.data.synthetic import generate

    data = generate(root / "synth", n_images=n_images, size=size, seed=3)
    return prepare(data, root / "prepared", verbose=False)
