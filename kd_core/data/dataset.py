"""Images held in memory as uint8 at training size, fed in batches with on-device augmentation.

JPEG decoding dominates CPU time, so every image is decoded and resized once (through the eval
preprocessing of ``transforms.py``) into a uint8 tensor, optionally cached on disk as ``.npy``.
Batches are then cut from that tensor and augmented on the training device (flips, rotation,
random resized crop, colour jitter), which keeps a GPU fed without a DataLoader.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kd_core.data.transforms import Preprocessing, preprocess_uint8
from kd_core.io import atomic_path, thread_pool

log = logging.getLogger(__name__)


def _cache_key(paths: Sequence[Path], prep: Preprocessing) -> str:
    digest = hashlib.sha256(f"{prep.size}|{prep.resize}|{prep.interpolation}".encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_images(paths: Sequence[Path], prep: Preprocessing, desc: str = "decoding") -> np.ndarray:
    """N x size x size x 3 uint8, decoded and resized in a thread pool with a progress bar."""
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    out = np.empty((len(paths), prep.size, prep.size, 3), dtype=np.uint8)
    workers = min(16, os.cpu_count() or 2)
    # One BLAS thread per worker: the pool already uses every core.
    with threadpool_limits(limits=1), thread_pool(workers) as pool:
        jobs = pool.map(lambda p: preprocess_uint8(p, prep), paths)
        for i, img in enumerate(tqdm(jobs, total=len(paths), desc=desc, unit="img",
                                     leave=False, disable=len(paths) < 200)):
            out[i] = img
    return out


def load_images(paths: Sequence[Path], prep: Preprocessing, cache_dir: Path | None = None,
                desc: str = "decoding") -> torch.Tensor:
    """N x 3 x size x size uint8 tensor; reads or writes ``cache_dir`` when given."""
    arr = cached_images(paths, prep, cache_dir, desc)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def cached_images(paths: Sequence[Path], prep: Preprocessing, cache_dir: Path | None = None,
                  desc: str = "decoding") -> np.ndarray:
    """``decode_images``, read from ``cache_dir`` when it holds these files at this
    preprocessing (keyed by path, size and mtime), else written there (an unwritable cache
    folder only costs the next run the decoding)."""
    paths = [Path(p) for p in paths]
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"images_{prep.size}_{prep.resize}_{_cache_key(paths, prep)}.npy"
        if cache.is_file():
            arr: np.ndarray = np.load(cache)
            if arr.shape == (len(paths), prep.size, prep.size, 3) and arr.dtype == np.uint8:
                return arr
    arr = decode_images(paths, prep, desc)
    if cache is not None:
        try:
            with atomic_path(cache) as tmp, tmp.open("wb") as fh:
                np.save(fh, arr)
        except OSError as exc:
            log.warning("decoded images not cached in %s: %s", cache.parent, exc)
    return arr


def normalize_batch(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 (or [0, 255] float) N x 3 x H x W -> float32 normalized, as transforms.normalize."""
    mean = torch.tensor(prep.mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augment(images: torch.Tensor, gen: torch.Generator, *, scale: tuple[float, float] = (0.8, 1.0),
            max_rotation: float = 180.0, jitter: float = 0.2) -> torch.Tensor:
    """Random flips, rotation, resized crop (area fraction in ``scale``) and brightness/contrast/
    saturation jitter on a uint8 batch; returns floats in [0, 255]. One affine warp per image."""
    n, _, h, w = images.shape
    dev = images.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=dev) * (hi - lo) + lo

    area = uniform(*scale)
    aspect = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    sx = torch.sqrt(area * aspect).clamp(max=1.0)
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx, ty = (1 - sx) * uniform(-1, 1), (1 - sy) * uniform(-1, 1)
    angle = uniform(-max_rotation, max_rotation) * math.pi / 180
    flip = torch.where(torch.rand(n, generator=gen, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * sx * flip, -sin * sy, tx], 1),
                         torch.stack([sin * sx * flip, cos * sy, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection",
                      align_corners=False)
    if jitter > 0:
        b = uniform(1 - jitter, 1 + jitter).view(n, 1, 1, 1)
        c = uniform(1 - jitter, 1 + jitter).view(n, 1, 1, 1)
        s = uniform(1 - jitter, 1 + jitter).view(n, 1, 1, 1)
        grey = (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, True)
        x = grey + (x - grey) * s
        x = (x - x.mean((1, 2, 3), keepdim=True)) * c + x.mean((1, 2, 3), keepdim=True)
        x = x * b
    return x.clamp(0, 255)


class Batches:
    """Iterate over (normalized images, labels) batches of an in-memory uint8 dataset."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, prep: Preprocessing, *,
                 batch_size: int, device: torch.device, train: bool = False, seed: int = 0,
                 balanced: bool = False, max_batches: int | None = None) -> None:
        self.images, self.labels = images.to(device), labels.to(device)
        self.prep, self.batch_size, self.device = prep, batch_size, device
        self.train, self.balanced, self.max_batches = train, balanced, max_batches
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        full = n // self.batch_size if self.train and n >= self.batch_size else math.ceil(
            n / self.batch_size)
        return min(full, self.max_batches) if self.max_batches else full

    def order(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n, device=self.device)
        if self.balanced:
            counts = torch.bincount(self.labels).float()
            weights = (1.0 / counts)[self.labels]
            return torch.multinomial(weights, n, replacement=True, generator=self.gen)
        return torch.randperm(n, generator=self.gen, device=self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.order()
        for b in range(len(self)):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[sel]
            x = augment(x, self.gen) if self.train else x.float()
            yield normalize_batch(x, self.prep), self.labels[sel]

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)
