"""Frozen configuration dataclasses, with the seed project's defaults, and their checks.

Every CLI builds one of these from its arguments and writes the resolved config next to its
results (``save_config``), so a run can be reproduced from its output folder alone.
``check_training(cfg, role)`` refuses a bad value before any work, naming its command-line flag.
Standard library only (``--help`` stays fast).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd_core.cli import BadInput

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_SEED = 42
# Sensitivity the decision threshold is chosen for on validation (``kd_core.deploy`` reads it).
DEFAULT_TARGET_SENSITIVITY = 0.95
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048  # pixels, both sides of the model input


@dataclass(frozen=True)
class DataConfig:
    """Where the images are, how they are split and how they are fed to a model."""

    # A HAM10000 folder, an image folder (<class>/*.jpg), a CSV file (path,label[,group]) or a
    # prepared split folder (kd_core.data.sources answers which).
    data_dir: str | None = None
    # Where the splits go; default: the user cache, kd_core.data.sources.default_prepared_dir.
    prepared_dir: str | None = None
    metadata: str | None = None  # HAM10000 metadata CSV; None: ham10000.metadata_path picks
    images_dir: str | None = None  # default: search part_1/part_2/images/flat
    # "auto": HAM10000 melanoma vs rest, other data every class (argmax); HAM10000 only: "mel"
    # (melanoma vs rest) or "dx" (the 7 diagnoses, melanoma the positive class).
    target: str = "auto"
    positive: str | None = None  # a binary task: this class vs rest (kd_core.data.prepared)
    image_size: int = 224
    resize: str = "squash"  # "squash" (whole image to size x size) or "center_crop"
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = DEFAULT_SEED
    cache: bool = True  # decode once into a uint8 cache at training size
    balanced_sampler: bool = False
    skip_corrupt: bool = False


@dataclass(frozen=True)
class TeacherConfig:
    architecture: str = "resnet34"
    pretrained: str = "none"  # "imagenet", "none" or a path to a state_dict file
    loss: str = "focal"  # "focal" or "ce"
    focal_gamma: float = 2.0
    class_weighted: bool = False


@dataclass(frozen=True)
class StudentConfig:
    architecture: str = "mobilenet_v3_small"
    pretrained: str = "none"
    loss: str = "focal"
    focal_gamma: float = 2.0
    class_weighted: bool = False


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float | None = None  # None: 1e-4 when fine-tuning pretrained weights, else per model
    weight_decay: float = 0.05
    scheduler: str = "onecycle"  # "onecycle" or "cosine"
    patience: int = 10  # early stopping on validation ROC-AUC
    min_epochs: int | None = None  # no early stop before this; None: half of epochs
    # Batch-norm running-statistics momentum (PyTorch's default). torchvision's MobileNetV3 ships
    # 0.01, tuned for ImageNet's ~5,000 steps per epoch: on a few thousand images its running
    # statistics lag the weights for epochs and the eval-mode model collapses to one output.
    bn_momentum: float = 0.1
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  # "auto" (bf16 on CUDA), "bf16", "fp16", "off"
    channels_last: bool = True  # on CUDA only
    seed: int = DEFAULT_SEED
    max_steps_per_epoch: int | None = None  # for smoke runs
    log_every: int = 0
    # The threshold is set on validation to reach this sensitivity; recorded in the checkpoint.
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY


@dataclass(frozen=True)
class KDConfig:
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft (teacher) term


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = ("tflite", "executorch", "coreml", "onnx")
    calib_samples: int = 256
    seed: int = DEFAULT_SEED
    int8: bool = True
    fp32: bool = True


@dataclass(frozen=True)
class Config:
    """Everything a training run needs, as one object."""

    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys; nested dicts recurse."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in values.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON, atomically."""
    from kd_core.io import atomic_write_text

    text = json.dumps(to_dict(cfg), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(Path(path), text + "\n")


class ConfigError(BadInput):
    """A configuration value out of range; the message names its command-line flag."""


def _need(ok: bool, flag: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{flag} must be {rule}, got {value!r}")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return _int(value) or (isinstance(value, float) and math.isfinite(value))


def check_data(d: DataConfig) -> None:
    size = d.image_size
    _need(_int(size) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE, "--image-size",
          f"an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}", size)
    _need(d.resize in ("squash", "center_crop"), "--resize", "squash or center_crop", d.resize)
    _need(d.target in ("auto", "mel", "dx"), "--target", "auto, mel or dx", d.target)
    _need(d.positive is None or (isinstance(d.positive, str) and bool(d.positive.strip())),
          "--positive", "a class name", d.positive)
    _need(len(d.split) == 3 and all(_number(f) and f > 0 for f in d.split)
          and abs(sum(d.split) - 1) < 1e-6, "data.split", "three positive fractions summing to 1",
          d.split)
    _need(_int(d.seed) and 0 <= d.seed < 2**32, "--seed", "an integer from 0 to 2**32 - 1", d.seed)
    _need(d.metadata is None or bool(d.metadata), "--metadata", "a file name", d.metadata)


def check_model(m: TeacherConfig | StudentConfig, flag: str) -> None:
    _need(bool(m.architecture), flag, "an architecture name", m.architecture)
    _need(m.loss in ("focal", "ce"), "--loss", "focal or ce", m.loss)
    _need(_number(m.focal_gamma) and 0 <= m.focal_gamma <= 100, "--focal-gamma",
          "a number from 0 to 100", m.focal_gamma)
    _need(bool(m.pretrained), "--pretrained", "none, imagenet or a weights file", m.pretrained)


def check_training_config(t: TrainingConfig) -> None:
    _need(_int(t.epochs) and t.epochs >= 1, "--epochs", "at least 1", t.epochs)
    _need(_int(t.batch_size) and t.batch_size >= 1, "--batch-size", "at least 1", t.batch_size)
    _need(t.lr is None or (_number(t.lr) and 0 < t.lr <= 10), "--lr", "a number in (0, 10]",
          t.lr)
    _need(_number(t.weight_decay) and 0 <= t.weight_decay <= 10, "--weight-decay",
          "a number from 0 to 10", t.weight_decay)
    _need(t.scheduler in ("onecycle", "cosine"), "--scheduler", "onecycle or cosine", t.scheduler)
    _need(_int(t.patience) and t.patience >= 0, "--patience", "0 or more", t.patience)
    _need(t.min_epochs is None or (_int(t.min_epochs) and t.min_epochs >= 0), "--min-epochs",
          "0 or more", t.min_epochs)
    _need(_number(t.bn_momentum) and 0 < t.bn_momentum <= 1, "--bn-momentum",
          "a number in (0, 1]", t.bn_momentum)
    _need(t.amp in ("auto", "bf16", "fp16", "off"), "--amp", "auto, bf16, fp16 or off", t.amp)
    _need(bool(t.device), "--device", "auto, cpu, cuda or cuda:N", t.device)
    _need(_int(t.seed) and 0 <= t.seed < 2**32, "--seed", "an integer from 0 to 2**32 - 1", t.seed)
    _need(t.max_steps_per_epoch is None or (_int(t.max_steps_per_epoch)
                                            and t.max_steps_per_epoch >= 1),
          "--max-steps-per-epoch", "at least 1", t.max_steps_per_epoch)
    _need(_int(t.log_every) and t.log_every >= 0, "training.log_every", "0 or more", t.log_every)
    _need(_number(t.target_sensitivity) and 0 < t.target_sensitivity <= 1,
          "--target-sensitivity", "a number in (0, 1]", t.target_sensitivity)


def check_kd(kd: KDConfig) -> None:
    _need(_number(kd.alpha) and 0 <= kd.alpha <= 1, "--alpha", "a number from 0 to 1", kd.alpha)
    _need(_number(kd.temperature) and 0 < kd.temperature <= 100, "--temperature",
          "a number in (0, 100]", kd.temperature)


def check_training(cfg: Config, role: str) -> None:
    """Refuse a bad training config before any work (``ConfigError`` names the flag)."""
    if role not in ("teacher", "student"):
        raise ConfigError(f"role must be teacher or student, got {role!r}")
    check_data(cfg.data)
    check_training_config(cfg.training)
    if role == "teacher":
        check_model(cfg.teacher, "--architecture")
    else:
        check_model(cfg.student, "--student-arch")
        check_kd(cfg.kd)
