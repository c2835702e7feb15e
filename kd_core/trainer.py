"""The steps of a training run (``kd_core.train.run``): plan, load, build, calibrate and save.

``plan_run`` checks everything a run needs (every config value, the device, the output folder,
the teacher, whether ``OUT`` can be resumed) and writes nothing. ``start`` writes
``config.json`` only then. ``calibrate_and_save`` fits the temperature and the threshold of the
best weights on validation, scores holdout, and writes ``metrics.json`` and, last, ``best.pth``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kd_core.checkpoint import (
    CheckpointError,
    is_calibrated,
    load_checkpoint,
    model_from_checkpoint,
)
from kd_core.config import Config, ConfigError, StudentConfig, TeacherConfig, check_training
from kd_core.config import to_dict as config_dict
from kd_core.data.dataset import Batches, load_images
from kd_core.data.prepared import DataError, Task, load_split
from kd_core.data.transforms import Preprocessing
from kd_core.engine import FitOptions, StepFn
from kd_core.io import check_output_dir
from kd_core.losses import class_weights, distill_step, make_loss
from kd_core.model_names import describe
from kd_core.models import create_model, get_spec, is_known
from kd_core.runtime import Runtime, resolve_runtime
from kd_core.state import read_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A checked training run: its resolved config, device, run key and teacher."""

    role: str
    cfg: Config  # with the learning rate resolved
    out: Path
    force: bool
    rt: Runtime
    record: dict[str, Any]  # the config as written into checkpoints (plus role and teacher)
    key: str  # hash of ``record`` without the device: what a resumed run must match
    teacher: nn.Module | None
    done: bool  # OUT/best.pth is already this run's finished, calibrated result
    task: Task  # the labels and the positive class (None: argmax) the model is trained for

    @property
    def model_cfg(self) -> TeacherConfig | StudentConfig:
        return self.cfg.teacher if self.role == "teacher" else self.cfg.student

    @property
    def prep(self) -> Preprocessing:
        return Preprocessing(size=self.cfg.data.image_size, resize=self.cfg.data.resize)

    @property
    def best_path(self) -> Path:
        return self.out / "best.pth"

    def fit_options(self, positive: int | None) -> FitOptions:
        t = self.cfg.training
        assert t.lr is not None
        return FitOptions(epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay,
                          scheduler=t.scheduler, patience=t.patience,
                          min_epochs=t.min_epochs if t.min_epochs is not None else t.epochs // 2,
                          positive_index=positive)


def run_key(record: dict[str, Any]) -> str:
    """What a resumed or finished run must match: the record without the device."""
    src = {**record, "training": {k: v for k, v in dict(record.get("training") or {}).items()
                                  if k != "device"}}
    return hashlib.sha256(json.dumps(src, sort_keys=True, default=str).encode()).hexdigest()


def plan_run(role: str, cfg: Config, out: Path, teacher_ckpt: Path | None,
             force: bool) -> Plan:
    """Check the whole run before any work; writes nothing."""
    check_training(cfg, role)
    mcfg = cfg.teacher if role == "teacher" else cfg.student
    flag = "--architecture" if role == "teacher" else "--student-arch"
    if not is_known(mcfg.architecture):
        raise ConfigError(f"{flag} {mcfg.architecture!r} is not a known architecture; "
                          f"use {describe()}")
    unfit = get_spec(mcfg.architecture).check_size(cfg.data.image_size)
    if unfit:
        raise ConfigError(f"--image-size {cfg.data.image_size}: {unfit}")
    _check_pretrained(mcfg.pretrained, mcfg.architecture)
    if cfg.data.data_dir is None or not Path(cfg.data.data_dir).exists():
        raise DataError(f"--data-dir {cfg.data.data_dir}: data folder not found")
    task = plan_task(cfg)
    check_output_dir(out)
    rt = resolve_runtime(cfg.training.device, cfg.training.amp, cfg.training.channels_last)
    spec = get_spec(mcfg.architecture)
    lr = cfg.training.lr
    if lr is None:
        lr = 1e-4 if mcfg.pretrained != "none" else spec.default_lr
    cfg = replace(cfg, training=replace(cfg.training, lr=lr))
    record = {**config_dict(cfg), "role": role,
              "teacher_ckpt": str(teacher_ckpt) if teacher_ckpt else None}
    key = run_key(record)
    teacher = load_teacher(role, cfg, teacher_ckpt, rt, task)
    done = _check_resumable(out, key, record, force)
    return Plan(role, cfg, out, force, rt, record, key, teacher, done, task)


def plan_task(cfg: Config) -> Task:
    """The task (labels, positive class) of ``cfg.data`` on its data, found without preparing."""
    from kd_core.data.prepared import task_for
    from kd_core.data.sources import source_info

    d = cfg.data
    info = source_info(Path(str(d.data_dir)), Path(d.prepared_dir) if d.prepared_dir else None,
                       d.metadata)
    return task_for(info, d.target, d.positive)


def _check_pretrained(pretrained: str, arch: str) -> None:
    if pretrained in ("none", "imagenet"):
        if pretrained == "imagenet" and get_spec(arch).imagenet is None:
            raise ConfigError(f"--pretrained imagenet: {arch} has no ImageNet weights; use none")
        return
    if not Path(pretrained).is_file():
        raise ConfigError(f"--pretrained {pretrained}: not none, imagenet or a weights file")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for k in sorted(set(old) | set(new)):
            if k != "device":
                found += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return found
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


def _check_resumable(out: Path, key: str, record: dict[str, Any], force: bool) -> bool:
    """Refuse an ``out`` that holds another configuration's run (unless ``force``); True when
    it already holds this run's finished result."""
    if force:
        return False
    last, best = out / "last.pth", out / "best.pth"
    hint = "use another --out or pass --force to start over"
    if last.is_file():
        saved = read_state(last)
        if saved.get("config_key") != key:
            diff = "; ".join(_differences(saved.get("config"), record)[:3]) or "unknown"
            raise CheckpointError(f"{last}: was written by a run with a different "
                                  f"configuration ({diff}); {hint}")
    if not best.is_file():
        return False
    try:
        ckpt = load_checkpoint(best)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {hint}") from None
    config = ckpt.get("config") or {}
    if run_key(config) != key:
        diff = "; ".join(_differences(config, record)[:3]) or "unknown"
        raise CheckpointError(f"{best}: belongs to a run with a different configuration "
                              f"({diff}); {hint}")
    return is_calibrated(ckpt) and (out / "metrics.json").is_file()


def load_teacher(role: str, cfg: Config, path: Path | None, rt: Runtime, task: Task
                 ) -> nn.Module | None:
    """The frozen, eval-mode teacher for KD (None without KD), checked against the student:
    same labels, same preprocessing."""
    if role != "student" or cfg.kd.alpha == 0:
        return None
    if path is None:
        raise ConfigError("--teacher-ckpt is required for KD (or pass --alpha 0 to train the "
                          "student without a teacher)")
    ckpt = load_checkpoint(path)
    labels = list(task.labels)
    if len(ckpt["labels"]) != len(labels):
        raise CheckpointError(f"{path}: teacher has {ckpt['num_classes']} classes, the student "
                              f"is trained for {len(labels)}; use the same --target/--positive")
    if ckpt["labels"] != labels:
        raise CheckpointError(f"{path}: teacher labels {ckpt['labels']} differ from the "
                              f"student's {labels}")
    theirs = Preprocessing.from_dict(ckpt["preprocessing"])
    ours = Preprocessing(size=cfg.data.image_size, resize=cfg.data.resize)
    if theirs != ours:
        raise CheckpointError(
            f"{path}: the teacher takes {theirs.size} px images ({theirs.resize}), the student "
            f"--image-size {ours.size} --resize {ours.resize}; distil at the teacher's size")
    teacher = model_from_checkpoint(ckpt, path).to(rt.device)
    if rt.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@dataclass(frozen=True)
class TrainData:
    """Every split in memory at training size, with the labels and where the splits are."""

    prep: Preprocessing
    labels: list[str]
    positive_index: int | None  # None: decided by argmax
    prepared: Path
    dataset: str  # display name: "HAM10000", "synthetic demo data"
    train: Batches
    val: Batches
    holdout: Batches


def load_data(plan: Plan) -> TrainData:
    """Prepare (or reuse) the splits and hold every split in memory at training size."""
    from kd_core.data.prepared import data_info, task_for
    from kd_core.data.sources import resolve_prepared

    d, t, task = plan.cfg.data, plan.cfg.training, plan.task
    prepared = resolve_prepared(
        Path(str(d.data_dir)), Path(d.prepared_dir) if d.prepared_dir else None, seed=d.seed,
        verbose=plan.rt.is_main, metadata=d.metadata, skip_corrupt=d.skip_corrupt,
        images_dir=Path(d.images_dir) if d.images_dir else None, split=d.split)
    info = data_info(prepared)
    if task_for(info, d.target, d.positive) != task:
        raise DataError(f"{prepared}: its splits hold classes {', '.join(info.classes)}, not "
                        f"those of --data-dir {d.data_dir}; pass another --prepared-dir")
    labels = list(task.labels)
    batches = {}
    for split in ("train", "val", "holdout"):
        data = load_split(prepared, split)
        y = torch.from_numpy(data.labels_for(labels, task.positive_index))
        _check_split_labels(prepared, split, y, labels, task.positive_index)
        x = load_images(data.paths, plan.prep, prepared / "cache" if d.cache else None,
                        desc=f"loading {split}")
        train = split == "train"
        batches[split] = Batches(
            x, y, plan.prep, batch_size=t.batch_size if train else max(t.batch_size, 128),
            device=plan.rt.device, train=train, seed=t.seed,
            balanced=train and d.balanced_sampler,
            max_batches=t.max_steps_per_epoch if train else None)
    return TrainData(plan.prep, labels, task.positive_index, prepared, info.name, **batches)


def _check_split_labels(prepared: Path, split: str, y: torch.Tensor, labels: list[str],
                        pos: int | None) -> None:
    file = prepared / f"{split}_data.csv"
    counts = torch.bincount(y, minlength=len(labels))
    if split == "train" and (counts == 0).any():
        empty = [labels[i] for i in range(len(labels)) if counts[i] == 0]
        raise DataError(f"{file}: class(es) {', '.join(empty)} are empty")
    if split == "train":
        return
    what = "validation" if split == "val" else "holdout"
    if pos is None and int((counts > 0).sum()) < 2:
        raise DataError(f"{file}: the {what} split needs images of at least 2 classes, so "
                        "ROC-AUC and early stopping are defined")
    if pos is not None and not 0 < int(counts[pos]) < len(y):
        raise DataError(f"{file}: the {what} split needs both {labels[pos]} and other images "
                        f"(it has {int(counts[pos])} {labels[pos]} of {len(y)}), so ROC-AUC, "
                        "early stopping and the threshold are undefined")


def start(plan: Plan) -> None:
    """The run begins: clear a forced ``OUT`` and write the resolved config."""
    from kd_core.config import save_config

    if plan.force and plan.rt.is_main:
        for name in ("last.pth", "best.pth", "metrics.json"):
            (plan.out / name).unlink(missing_ok=True)
    if plan.rt.is_main:
        plan.out.mkdir(parents=True, exist_ok=True)
        save_config(plan.cfg, plan.out / "config.json")
        t = plan.rt
        log.info("%s: %s at %d px, lr %g, %s%s", plan.role, plan.model_cfg.architecture,
                 plan.cfg.data.image_size, plan.cfg.training.lr, t.device,
                 f" {str(t.amp_dtype).removeprefix('torch.')}" if t.amp_dtype else "")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = momentum


def build_model(plan: Plan, num_classes: int) -> nn.Module:
    """The model to train, seeded, with the configured batch-norm momentum."""
    seed_everything(plan.cfg.training.seed)
    m = plan.model_cfg
    model = create_model(m.architecture, num_classes, m.pretrained)
    set_bn_momentum(model, plan.cfg.training.bn_momentum)
    return model


def make_step(plan: Plan, data: TrainData) -> StepFn:
    """The training step: the hard-label loss, plus the KD term when there is a teacher."""
    mcfg, teacher, kd = plan.model_cfg, plan.teacher, plan.cfg.kd
    train_y = data.train.labels
    weight = class_weights(train_y.cpu(), len(data.labels)) if mcfg.class_weighted else None
    hard = make_loss(mcfg.loss, mcfg.focal_gamma,
                     weight.to(train_y.device) if weight is not None else None)
    if teacher is None:

        def plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
            logits = model(x)
            loss = hard(logits.float(), y)
            return {"loss": loss, "task_loss": loss, "logits": logits.detach()}

        return plain

    def distil(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return distill_step(model, teacher, x, y, kd.temperature, kd.alpha,
                            lambda s, t: hard(s.float(), t))

    return distil
