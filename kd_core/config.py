"""Frozen configuration dataclasses, with the seed project's defaults.

Every CLI builds one of these from its arguments and writes the resolved config next to its
results (``save_config``), so a run can be reproduced from its output folder alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_SEED = 42


@dataclass(frozen=True)
class DataConfig:
    """Where the images are, how they are split and how they are fed to a model."""

    data_dir: str | None = None  # HAM10000 layout: metadata CSV plus image folder(s)
    prepared_dir: str | None = None  # where splits go; default <data_dir>/../<name>_prepared
    metadata: str = "HAM10000_metadata.csv"
    images_dir: str | None = None  # default: search part_1/part_2/images/flat
    target: str = "mel"  # "mel": melanoma vs rest (2 classes); "dx": the 7 diagnoses
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
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
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

    atomic_write_text(Path(path), json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")
