"""The training loop as plain functions: ``train_one_epoch``, ``predict`` and ``fit``.

``fit`` does early stopping on validation ROC-AUC, writes ``best.pth`` (weights of the best epoch)
and ``last.pth`` (everything needed to resume) after every epoch, atomically, and logs each epoch
to ``history.csv``. A ``kill -9`` therefore loses at most the epoch in flight.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kd_core.data.dataset import Batches
from kd_core.io import atomic_write_text
from kd_core.metrics import roc_auc

StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs: device, mixed precision, memory format, DDP rank."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resolve_runtime(device: str = "auto", amp: str = "auto", channels_last: bool = True) -> Runtime:
    """Pick the device (and join a torchrun DDP group when WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            device = f"cuda:{local}"
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype = {
        "auto": torch.bfloat16 if dev.type == "cuda" else None,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "off": None,
    }[amp]
    return Runtime(dev, amp_dtype, channels_last and dev.type == "cuda", rank, world)


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


def positive_scores(logits: np.ndarray, positive_index: int) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return np.asarray(p[:, positive_index] / p.sum(axis=1))


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
    model: nn.Module, val: Batches, rt: Runtime, positive_index: int
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Validation ROC-AUC (melanoma one-vs-rest), loss, logits and labels."""
    logits, labels = predict(model, val, rt)
    y_pos = (labels == positive_index).astype(np.int64)
    auc = (
        roc_auc(y_pos, positive_scores(logits, positive_index))
        if 0 < y_pos.sum() < len(y_pos)
        else math.nan
    )
    t = torch.from_numpy(logits)
    loss = float(torch.nn.functional.cross_entropy(t, torch.from_numpy(labels)))
    return auc, loss, logits, labels


@dataclass(frozen=True)
class FitResult:
    best_path: Path
    best_epoch: int
    best_auc: float
    history: list[dict[str, Any]]
    stopped_early: bool


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


def fit(
    model: nn.Module,
    step: StepFn,
    train: Batches,
    val: Batches,
    rt: Runtime,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    scheduler: str,
    patience: int,
    min_epochs: int,
    out_dir: Path,
    positive_index: int,
    save_best: Callable[[nn.Module, dict[str, Any]], None],
    config_key: str,
    resume: bool = True,
) -> FitResult:
    """Train with early stopping on validation ROC-AUC; resumable from ``out_dir/last.pth``.

    Early stopping needs ``patience`` epochs without a gain and at least ``min_epochs`` epochs.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    core = model
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rt.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    opt = torch.optim.AdamW(
        core.parameters(), lr=lr, weight_decay=weight_decay, fused=rt.device.type == "cuda"
    )
    sched = make_scheduler(scheduler, opt, lr, epochs * len(train))
    scaler = torch.amp.GradScaler() if rt.amp_dtype == torch.float16 else None
    state: dict[str, Any] = {
        "epoch": 0,
        "best_auc": -1.0,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "done": False,
    }
    last = out_dir / "last.pth"
    if resume and last.is_file():
        state = _load_state(last, config_key, core, opt, sched, train)
        if rt.is_main:
            print(f"resuming from {last} after epoch {state['epoch']}")
    from kd_core.checkpoint import save_checkpoint

    while not state["done"] and state["epoch"] < epochs:
        epoch = state["epoch"] + 1
        stats = train_one_epoch(
            model, step, train, opt, sched, rt, scaler, desc=f"epoch {epoch}/{epochs}"
        )
        auc, loss, _, _ = val_auc(core, val, rt, positive_index)
        auc = _broadcast(auc, rt)
        row = {
            "epoch": epoch,
            **{k: round(v, 6) for k, v in stats.items()},
            "val_loss": round(loss, 6),
            "val_roc_auc": round(auc, 6),
            "lr": opt.param_groups[0]["lr"],
        }
        state["history"].append(row)
        improved = auc > state["best_auc"]
        if improved:
            state.update(best_auc=auc, best_epoch=epoch, bad_epochs=0)
            if rt.is_main:
                save_best(core, {"epoch": epoch, "val_roc_auc": auc})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        # While the learning rate is high, validation AUC swings; stop only once it anneals.
        state["done"] = epoch >= min_epochs and state["bad_epochs"] >= patience
        if rt.is_main:
            print(
                f"epoch {epoch}/{epochs}: loss {stats['loss']:.4f}  val loss {loss:.4f}  "
                f"val ROC-AUC {auc:.4f}{'  *' if improved else ''}  "
                f"{stats['images_per_s']:.0f} img/s"
            )
            save_checkpoint(_training_state(state, config_key, core, opt, sched, train), last)
            write_history(state["history"], out_dir / "history.csv")
    if state["done"] and rt.is_main:
        print(
            f"early stop: no val ROC-AUC gain in {patience} epochs "
            f"(best {state['best_auc']:.4f} at epoch {state['best_epoch']})"
        )
    return FitResult(
        out_dir / "best.pth",
        state["best_epoch"],
        state["best_auc"],
        state["history"],
        bool(state["done"]),
    )


def _training_state(
    state: dict[str, Any],
    config_key: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    train: Batches,
) -> dict[str, Any]:
    return {
        "format_version": 1,
        "kind": "training_state",
        "config_key": config_key,
        **state,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sampler_rng": train.state().cpu(),
        "torch_rng": torch.get_rng_state(),
    }


def _load_state(
    path: Path,
    config_key: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    train: Batches,
) -> dict[str, Any]:
    from kd_core.checkpoint import CheckpointError

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot resume from a corrupt training state ({exc}); "
            "delete it or pass --force"
        ) from None
    if saved.get("config_key") != config_key:
        raise CheckpointError(
            f"{path}: was written by a run with a different configuration; "
            "use another --out or pass --force to start over"
        )
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    train.set_state(saved["sampler_rng"])
    torch.set_rng_state(saved["torch_rng"])
    return {
        k: saved[k] for k in ("epoch", "best_auc", "best_epoch", "bad_epochs", "history", "done")
    }
