"""Checkpoints: a dict of tensors and plain types, saved atomically, loaded with weights_only=True.

A checkpoint rebuilds its model without the trainer. For torchvision architectures the
``state_dict`` loads unchanged into ``torchvision.models.<arch>(num_classes=K)``.
"""

from __future__ import annotations

import pickle
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd_core.data.transforms import Preprocessing
from kd_core.io import atomic_path

FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "format_version",
    "arch",
    "num_classes",
    "labels",
    "state_dict",
    "preprocessing",
    "temperature",
    "threshold",
)
BINARY_LABELS = ["other", "melanoma"]
DX_LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, unsafe or incomplete."""


def versions() -> dict[str, str]:
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "edgekd": _edgekd_version(),
    }


def _edgekd_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgekd")
    except PackageNotFoundError:
        return "0+unknown"


def positive_index(labels: list[str]) -> int:
    """Index of the melanoma class: ``melanoma`` (binary) or ``mel`` (7-class dx); else the last."""
    for name in ("melanoma", "mel"):
        if name in labels:
            return labels.index(name)
    return len(labels) - 1


def build_checkpoint(
    model: nn.Module,
    arch: str,
    labels: list[str],
    preprocessing: Preprocessing,
    temperature: float = 1.0,
    threshold: float = 0.5,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "num_classes": len(labels),
        "labels": list(labels),
        "positive_index": positive_index(list(labels)),
        "state_dict": state,
        "preprocessing": preprocessing.to_dict(),
        "temperature": float(temperature),
        "threshold": float(threshold),
        "config": plain(config or {}),
        "metrics": plain(metrics or {}),
        "versions": versions(),
        **extra,
    }


def plain(obj: Any) -> Any:
    """Numpy scalars and tuples to plain Python, so ``weights_only`` loading accepts them."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path: str | Path, required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Load a checkpoint safely, with an error naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects beyond tensors and plain "
            f"types, which could run code when unpickled ({str(exc).splitlines()[0]})"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if "preprocessing" in required:
        try:
            Preprocessing.from_dict(obj["preprocessing"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: bad preprocessing ({exc})") from None
    if "labels" in required and len(obj["labels"]) != obj.get("num_classes"):
        raise CheckpointError(
            f"{path}: {len(obj['labels'])} labels for num_classes={obj.get('num_classes')}"
        )
    obj.setdefault("positive_index", positive_index(list(obj.get("labels", []))))
    return obj


def decision_of(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> Any:
    """The checkpoint's ``kd_core.deploy.Decision`` (labels, positive class, temperature,
    threshold, target sensitivity), checked; ``CheckpointError`` names the file and field."""
    from kd_core.deploy import DEFAULT_TARGET_SENSITIVITY, ContractError, Decision

    metrics = ckpt.get("metrics") if isinstance(ckpt.get("metrics"), dict) else {}
    target = ckpt.get("target_sensitivity",
                      (metrics or {}).get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY))
    try:
        return Decision.from_dict({**ckpt, "target_sensitivity": target}, str(path))
    except ContractError as exc:
        raise CheckpointError(str(exc)) from None


def is_calibrated(ckpt: dict[str, Any]) -> bool:
    """True when the checkpoint records that its temperature and threshold were fitted on
    validation data and still holds those values (``calibration``; older checkpoints: the
    ``metrics`` their training run wrote)."""
    record = ckpt.get("calibration")
    if not isinstance(record, dict):
        record = ckpt.get("metrics") if isinstance(ckpt.get("metrics"), dict) else None
    if not record or "temperature" not in record or "threshold" not in record:
        return False
    return (record["temperature"] == ckpt.get("temperature")
            and record["threshold"] == ckpt.get("threshold"))


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild the eval-mode model a checkpoint describes."""
    from kd_core.models import create_model

    try:
        model = create_model(ckpt["arch"], int(ckpt["num_classes"]))
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        arch, k = ckpt["arch"], ckpt["num_classes"]
        raise CheckpointError(
            f"{path}: weights do not fit {arch} with {k} classes ({first})"
        ) from None
    return model.eval()


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, path), ckpt
