"""Which sites does INT8 hurt most? Quantize one site at a time and score it on validation.

For each site (``exporters.int8.plan.Site``) of the float model, forward hooks simulate its INT8
kernel in torch: the input activation and the output activation fake-quantized per tensor (int8
affine, ranges observed on the calibration images) and the weight per output channel
(symmetric int8), everything else float. The per-image signal on validation images is the KL
divergence of the class probabilities from the float model's (the ranking key), with the
logit MSE beside it; the SQNR (dB) of the site's own output is a second view. The repair
ladder keeps the top-ranked sites float, fewest first, and re-verifies each candidate in its
runtime. Runtime-independent, so one ranking serves every format.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporters.int8.plan import Site

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)
# Pixels per eager forward pass on the CPU. Measured at 1 thread on 1,024 images: MobileNetV3-Small
# at 224 px took 8.9 s in batches of 64 and 3.4 s in batches of 8 (caches); at 64-96 px, batches of
# 32-64 were fastest.
BATCH_PIXELS = 300_000


@dataclass(frozen=True)
class SiteScore:
    site: str
    kl: float  # mean KL(float || site-quantized) of class probabilities per image
    logit_mse: float
    sqnr_db: float  # of the site's output, float vs fake-quantized
    macs_share: float

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "kl": round(self.kl, 8), "logit_mse": round(self.logit_mse, 8),
                "sqnr_db": round(self.sqnr_db, 3), "macs_share": round(self.macs_share, 6)}


def _fake_quant(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    zero = round(-lo / scale) - 128
    q = (x / scale).round().add(zero).clamp(-128, 127)
    return (q - zero) * scale


def _weight_fake_quant(w: torch.Tensor) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1)
    scale = (flat.abs().amax(dim=1).clamp(min=1e-8) / 127.0).reshape(-1, *[1] * (w.dim() - 1))
    return (w / scale).round().clamp(-127, 127) * scale


def batch_size(images: np.ndarray) -> int:
    """Images per eager forward pass for N x C x H x W ``images``: 8 to 64, by pixel count."""
    return max(8, min(64, BATCH_PIXELS // (images.shape[-1] * images.shape[-2])))


def _batches(images: np.ndarray) -> Iterator[torch.Tensor]:
    import torch

    n = batch_size(images)
    for i in range(0, len(images), n):
        yield torch.from_numpy(np.ascontiguousarray(images[i : i + n]))


def observe_ranges(model: nn.Module, sites: Sequence[Site], calib: np.ndarray
                   ) -> dict[str, tuple[float, float, float, float]]:
    """(input min, input max, output min, output max) of each site over ``calib``."""
    import torch

    modules = dict(model.named_modules())
    ranges: dict[str, list[float]] = {}

    def hook(name: str) -> Any:
        def record(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            x = args[0]
            new = [float(x.min()), float(x.max()), float(out.min()), float(out.max())]
            old = ranges.get(name)
            ranges[name] = new if old is None else [min(old[0], new[0]), max(old[1], new[1]),
                                                    min(old[2], new[2]), max(old[3], new[3])]
        return record

    handles = [modules[s.name].register_forward_hook(hook(s.name)) for s in sites]
    try:
        with torch.no_grad():
            for batch in _batches(calib):
                model(batch)
    finally:
        for h in handles:
            h.remove()
    return {k: (v[0], v[1], v[2], v[3]) for k, v in ranges.items()}


@contextmanager
def quantized_site(module: nn.Module, rng: tuple[float, float, float, float],
                   noise: list[float]) -> Iterator[None]:
    """Within the block, ``module`` behaves like its INT8 kernel; ``noise`` collects
    [signal power, error power] of its output."""

    param: torch.Tensor = getattr(module, "weight")  # noqa: B009 - typed access
    weight = param.data.clone()
    param.data = _weight_fake_quant(weight)

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (_fake_quant(args[0], rng[0], rng[1]), *args[1:])

    def post(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        q = _fake_quant(out, rng[2], rng[3])
        noise[0] += float(out.double().pow(2).sum())
        noise[1] += float((out - q).double().pow(2).sum())
        return q

    handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        param.data = weight


def float_logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """The float model's logits on normalized NCHW ``images`` (float64)."""
    import torch

    with torch.no_grad():
        return torch.cat([model(b) for b in _batches(images)]).double().numpy()


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))


def rank_sites(model: nn.Module, sites: Sequence[Site], calib: np.ndarray, val: np.ndarray
               ) -> list[SiteScore]:
    """Every site scored by quantizing it alone; most sensitive first (ties: site order)."""
    model = model.eval()
    ranges = observe_ranges(model, sites, calib)
    ref = float_logits(model, val)
    ref_log = _log_softmax(ref)
    modules = dict(model.named_modules())
    total = sum(s.macs for s in sites) or 1
    scores = []
    for site in sites:
        noise = [0.0, 0.0]
        with quantized_site(modules[site.name], ranges[site.name], noise):
            got = float_logits(model, val)
        kl = float(np.mean(np.sum(np.exp(ref_log) * (ref_log - _log_softmax(got)), axis=1)))
        sqnr = 10 * np.log10(noise[0] / noise[1]) if noise[1] > 0 else 99.0
        scores.append(SiteScore(site.name, max(kl, 0.0), float(np.mean((got - ref) ** 2)),
                                float(min(sqnr, 99.0)), site.macs / total))
    order = {s.name: i for i, s in enumerate(sites)}
    ranked = sorted(scores, key=lambda s: (-s.kl, order[s.site]))
    log.info("sensitivity: most sensitive %s", ", ".join(f"{s.site} (KL {s.kl:.2g})"
                                                         for s in ranked[:3]))
    return ranked


def plot_sensitivity(scores: Sequence[SiteScore], kept: Sequence[str], title: str, out: Path
                     ) -> Path:
    """Horizontal bar chart of per-site KL (log scale), float-kept sites highlighted."""
    from matplotlib.figure import Figure

    from kd_core.io import atomic_path

    shown = list(scores)[:30][::-1]
    fig = Figure(figsize=(8, 0.25 * len(shown) + 1.5), layout="constrained")
    ax = fig.subplots()
    colours = ["tab:red" if s.site in kept else "tab:blue" for s in shown]
    ax.barh([s.site for s in shown], [max(s.kl, 1e-12) for s in shown], color=colours)
    ax.set_xscale("log")
    ax.set_xlabel("KL(float || one site INT8), mean per validation image")
    ax.set_title(f"{title}: per-site INT8 sensitivity (red: kept float)", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out
