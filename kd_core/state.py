"""The trainer's state between epochs: ``TrainState`` and its ``EarlyStopping``, saved to and
restored from ``last.pth``.

``last.pth`` is the one in-progress file: the current weights, optimizer, scheduler and random
states to resume, and the best epoch's weights so far. It is never deployable
(``kind: training_state``); ``best.pth`` is written only once training ends and the best
weights are calibrated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd_core.checkpoint import CheckpointError, read_torch_file, save_checkpoint

STATE_VERSION = 2
STATE_KIND = "training_state"


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a gain in the watched score (validation ROC-AUC),
    never before epoch ``min_epochs``. A NaN score never counts as a gain."""

    patience: int
    min_epochs: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record ``score`` of ``epoch``; True when it is the best so far."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self, epoch: int) -> bool:
        return epoch >= self.min_epochs and self.bad_epochs >= self.patience


@dataclass
class TrainState:
    """Everything the loop carries from one epoch to the next (besides the model, optimizer
    and scheduler): finished epochs, history rows, early stopping and the best weights."""

    stopper: EarlyStopping
    epoch: int = 0  # the last finished epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    best_weights: dict[str, torch.Tensor] | None = None

    def finished(self, epochs: int) -> bool:
        return self.stopped_early or self.epoch >= epochs

    def keep_best(self, model: nn.Module) -> None:
        self.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class Resumable:
    """The objects whose state ``last.pth`` saves besides the ``TrainState``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any  # kd_core.data.dataset.Batches: its generator state


def save_state(path: Path, state: TrainState, parts: Resumable, config_key: str,
               config: dict[str, Any]) -> None:
    """Write ``last.pth`` atomically."""
    save_checkpoint({
        "format_version": STATE_VERSION,
        "kind": STATE_KIND,
        "config_key": config_key,
        "config": config,
        "epoch": state.epoch,
        "history": state.history,
        "stopped_early": state.stopped_early,
        "early_stopping": asdict(state.stopper),
        "best_weights": state.best_weights,
        "model": {k: v.detach().cpu() for k, v in parts.model.state_dict().items()},
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "sampler_rng": parts.sampler.state().cpu(),
        "torch_rng": torch.get_rng_state(),
    }, path)


def read_state(path: Path) -> dict[str, Any]:
    """The raw ``last.pth`` dict, checked to be a training state of this version."""
    try:
        saved = read_torch_file(path, "training state")
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; delete it or pass --force to start over") from None
    if not isinstance(saved, dict) or saved.get("kind") != STATE_KIND:
        raise CheckpointError(f"{path}: not a training state; delete it or pass --force")
    if saved.get("format_version") != STATE_VERSION:
        raise CheckpointError(f"{path}: a training state from another EdgeKD version "
                              f"({saved.get('format_version')!r}); pass --force to start over")
    return saved


def load_state(path: Path, config_key: str, parts: Resumable) -> TrainState:
    """Restore ``parts`` from ``last.pth`` and return its ``TrainState``; a state written for
    another configuration, or a damaged one, is a ``CheckpointError``."""
    saved = read_state(path)
    if saved.get("config_key") != config_key:
        raise CheckpointError(f"{path}: was written by a run with a different configuration; "
                              "use another --out or pass --force to start over")
    from kd_core.models import load_weights

    try:
        load_weights(parts.model, saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.scheduler.load_state_dict(saved["scheduler"])
        parts.sampler.set_state(saved["sampler_rng"])
        torch.set_rng_state(saved["torch_rng"])
        return TrainState(stopper=EarlyStopping(**saved["early_stopping"]),
                          epoch=int(saved["epoch"]), history=list(saved["history"]),
                          stopped_early=bool(saved["stopped_early"]),
                          best_weights=saved["best_weights"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: cannot resume from a damaged training state ({first}); "
                              "delete it or pass --force") from None
