"""The training loop as plain functions: ``train_one_epoch``, ``predict`` and ``fit``.

``fit`` trains with early stopping on validation ROC-AUC and writes ``last.pth`` (everything
needed to resume, including the best epoch's weights so far) and ``history.csv`` after every
epoch, atomically: a ``kill -9`` or Ctrl-C loses at most the epoch in flight. It returns the
best weights; calibrating them and writing ``best.pth`` is the caller's job (``kd_core.train``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kd_core.cli import JobFailed
from kd_core.data.dataset import Batches
from kd_core.io import atomic_write_text
from kd_core.metrics import roc_auc, softmax
from kd_core.runtime import Runtime, resolve_runtime
from kd_core.state import EarlyStopping, Resumable, TrainState, load_state, save_state

__all__ = ["FitOptions", "FitResult", "NonFiniteLossError", "Runtime", "StepFn", "fit",
           "make_scheduler", "predict", "resolve_runtime", "train_one_epoch", "val_auc"]

log = logging.getLogger(__name__)
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class NonFiniteLossError(JobFailed):
    """The loss became NaN or inf; ``last.pth`` keeps the last finished epoch."""


def _shard(batches: Batches, rt: Runtime) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in batches:
        if rt.world_size > 1:
            x, y = x[rt.rank :: rt.world_size], y[rt.rank :: rt.world_size]
        yield x, y


def train_one_epoch(
    model: nn.Module,
    step: StepFn,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rt: Runtime,
    scaler: torch.amp.GradScaler | None = None,
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``batches``; returns mean losses and images/s. Raises on NaN/inf loss."""
    from tqdm import tqdm

    model.train()
    totals: dict[str, torch.Tensor] = {}
    seen, start = 0, time.perf_counter()
    bar = tqdm(
        _shard(batches, rt),
        total=len(batches),
        desc=desc,
        leave=False,
        unit="batch",
        disable=not rt.is_main,
    )
    for i, (x, y) in enumerate(bar):
        with rt.autocast():
            out = step(model, rt.prepare(x), y)
        loss = out["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        for k in ("loss", "task_loss", "kd_loss"):  # summed on device: no sync per step
            if k in out:
                totals[k] = totals.get(k, 0) + out[k].detach().float() * len(y)
        seen += len(y)
        if i % 25 == 0 or i == len(batches) - 1:  # a sync now and then, to catch NaN early
            mean = float(totals["loss"]) / seen
            if not math.isfinite(mean):
                raise NonFiniteLossError(f"loss became {mean} by batch {i + 1} of {desc}")
            bar.set_postfix(loss=f"{mean:.4f}")
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        **{k: float(v) / max(seen, 1) for k, v in totals.items()},
        "images_per_s": seen * rt.world_size / seconds,
        "train_seconds": seconds,
    }


@torch.no_grad()
def predict(model: nn.Module, batches: Batches, rt: Runtime) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits and labels of every sample, in order."""
    model.eval()
    logits, labels = [], []
    for x, y in batches:
        with rt.autocast():
            out = model(rt.prepare(x))
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def val_auc(
    model: nn.Module, val: Batches, rt: Runtime, positive_index: int | None
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Validation ROC-AUC (the positive class vs rest; without one, the macro one-vs-rest
    ROC-AUC over the classes), loss, logits and labels."""
    logits, labels = predict(model, val, rt)
    if positive_index is None:
        from kd_core.multiclass import macro_roc_auc

        auc = macro_roc_auc(softmax(logits), labels)
    else:
        y_pos = (labels == positive_index).astype(np.int64)
        auc = (roc_auc(y_pos, softmax(logits)[:, positive_index])
               if 0 < y_pos.sum() < len(y_pos) else math.nan)
    t = torch.from_numpy(logits)
    loss = float(torch.nn.functional.cross_entropy(t, torch.from_numpy(labels)))
    return auc, loss, logits, labels


def make_scheduler(
    name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if name == "onecycle":
        # OneCycleLR needs a few steps per phase; tiny smoke runs just stop early in the cycle.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=max(total_steps, 8), pct_start=0.25
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    raise ValueError(f"unknown scheduler {name!r}; use 'onecycle' or 'cosine'")


def _broadcast(value: float, rt: Runtime) -> float:
    if rt.world_size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], device=rt.device, dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


@dataclass(frozen=True)
class FitOptions:
    """How ``fit`` trains: epochs, optimizer, schedule and early stopping."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    scheduler: str = "onecycle"
    patience: int = 10
    min_epochs: int = 0  # no early stop before this epoch
    # The class whose one-vs-rest validation ROC-AUC is watched; None: the macro ROC-AUC.
    positive_index: int | None = 1


@dataclass(frozen=True)
class FitResult:
    best_weights: dict[str, torch.Tensor]
    best_epoch: int
    best_auc: float
    history: list[dict[str, Any]]
    stopped_early: bool


@dataclass
class Loop:
    """What ``setup`` builds: the model to train (DDP-wrapped when distributed), its plain
    module, the optimizer, the scheduler and the fp16 gradient scaler."""

    model: nn.Module
    core: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None


def setup(model: nn.Module, train: Batches, rt: Runtime, opts: FitOptions) -> Loop:
    """Move ``model`` to the device (channels-last, DDP) and build its optimizer and schedule."""
    core = model.to(rt.device)
    if rt.channels_last:
        core = core.to(memory_format=torch.channels_last)
    wrapped = core
    if rt.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            core, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    opt = torch.optim.AdamW(core.parameters(), lr=opts.lr, weight_decay=opts.weight_decay,
                            fused=rt.device.type == "cuda")
    sched = make_scheduler(opts.scheduler, opt, opts.lr, opts.epochs * len(train))
    scaler = torch.amp.GradScaler() if rt.amp_dtype == torch.float16 else None
    return Loop(wrapped, core, opt, sched, scaler)


def run_epoch(loop: Loop, step: StepFn, train: Batches, val: Batches, rt: Runtime,
              opts: FitOptions, state: TrainState) -> None:
    """Train one epoch, validate, update ``state`` (history, early stopping, best weights)."""
    epoch = state.epoch + 1
    stats = train_one_epoch(loop.model, step, train, loop.optimizer, loop.scheduler, rt,
                            loop.scaler, desc=f"epoch {epoch}/{opts.epochs}")
    auc, loss, _, _ = val_auc(loop.core, val, rt, opts.positive_index)
    auc = _broadcast(auc, rt)
    improved = state.stopper.update(epoch, auc)
    if improved:
        state.keep_best(loop.core)
    state.history.append({
        "epoch": epoch, **{k: round(v, 6) for k, v in stats.items()},
        "val_loss": round(loss, 6), "val_roc_auc": round(auc, 6),
        "lr": loop.optimizer.param_groups[0]["lr"]})
    state.epoch = epoch
    # While the learning rate is high, validation AUC swings; stop only once it anneals.
    state.stopped_early = state.stopper.should_stop(epoch)
    if rt.is_main:
        log.info("epoch %d/%d: loss %.4f  val loss %.4f  val ROC-AUC %.4f%s  %.0f img/s", epoch,
                 opts.epochs, stats["loss"], loss, auc, "  *" if improved else "",
                 stats["images_per_s"])


def fit(model: nn.Module, step: StepFn, train: Batches, val: Batches, rt: Runtime,
        opts: FitOptions, out_dir: Path, config_key: str,
        config: dict[str, Any] | None = None, resume: bool = True) -> FitResult:
    """Train with early stopping on validation ROC-AUC; resumable from ``out_dir/last.pth``
    when it was written for the same ``config_key``. Returns the best epoch's weights."""
    loop = setup(model, train, rt, opts)
    parts = Resumable(loop.core, loop.optimizer, loop.scheduler, train)
    last = out_dir / "last.pth"
    state = TrainState(EarlyStopping(opts.patience, opts.min_epochs))
    if resume and last.is_file():
        state = load_state(last, config_key, parts)
        if rt.is_main:
            log.info("resuming from %s after epoch %d", last, state.epoch)
    while not state.finished(opts.epochs):
        run_epoch(loop, step, train, val, rt, opts, state)
        if rt.is_main:
            save_state(last, state, parts, config_key, config or {})
            write_history(state.history, out_dir / "history.csv")
    stop = state.stopper
    if state.stopped_early and rt.is_main:
        log.info("early stop: no val ROC-AUC gain in %d epochs (best %.4f at epoch %d)",
                 opts.patience, stop.best_score, stop.best_epoch)
    if state.best_weights is None:
        raise JobFailed(f"{last}: no epoch reached a finite validation ROC-AUC; nothing to keep")
    return FitResult(state.best_weights, stop.best_epoch, stop.best_score, state.history,
                     state.stopped_early)
