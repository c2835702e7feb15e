"""Checkpoints: a dict of tensors and plain types, saved atomically, loaded with weights_only=True.

A checkpoint rebuilds its model without the trainer. For torchvision architectures the
``state_dict`` loads unchanged into ``torchvision.models.<arch>(num_classes=K)``.

``load_checkpoint`` checks every field before anyone uses it (format version, types, the
decision, preprocessing, that the weights fit the architecture) and raises ``CheckpointError``
naming the file and the field, so no caller needs to guard against a damaged file. A deployable
checkpoint (``best.pth``) also records its calibration (``is_calibrated``).
"""

from __future__ import annotations

import math
import pickle
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_core.cli import BadInput
from kd_core.config import DEFAULT_TARGET_SENSITIVITY
from kd_core.data.ham10000 import DX_CLASSES, MEL_CLASSES
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
OPTIONAL_DICTS = ("config", "metrics", "versions")
# Aliases of the class names defined in kd_core.data.ham10000 (their one home).
BINARY_LABELS = list(MEL_CLASSES)
DX_LABELS = list(DX_CLASSES)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format; legacy files start with a pickle opcode

if TYPE_CHECKING:
    from torch import nn


class CheckpointError(BadInput):
    """A checkpoint file that is missing, corrupt, unsafe, incomplete or inconsistent."""


def versions() -> dict[str, str]:
    import torch
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


def calibration_record(split: str, n: int, temperature: float, threshold: float | None,
                       target_sensitivity: float) -> dict[str, Any]:
    """The ``calibration`` entry: where and on how many images temperature and threshold were
    fitted, and the values fitted (they must equal the checkpoint's own; no threshold for a
    model decided by argmax)."""
    return {"split": split, "n": int(n), "temperature": float(temperature),
            "threshold": None if threshold is None else float(threshold),
            "target_sensitivity": float(target_sensitivity)}


def build_checkpoint(
    model: nn.Module,
    arch: str,
    labels: list[str],
    preprocessing: Preprocessing,
    temperature: float = 1.0,
    threshold: float | None = 0.5,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    dataset: str | None = None,
    calibration: dict[str, Any] | None = None,
    positive: int | str | None = "from labels",
    **extra: Any,
) -> dict[str, Any]:
    """A checkpoint dict. Without ``calibration`` (see ``calibration_record``) it is not
    deployable: ``is_calibrated`` is False and the exporters refuse it by default.
    ``positive``: the index of the positive class (None: decided by argmax, no threshold); by
    default melanoma's index, else the last class (``positive_index``)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    pos = positive_index(list(labels)) if isinstance(positive, str) else positive
    ckpt = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "num_classes": len(labels),
        "labels": list(labels),
        "positive_index": pos,
        "state_dict": state,
        "preprocessing": preprocessing.to_dict(),
        "temperature": float(temperature),
        "threshold": None if threshold is None else float(threshold),
        "target_sensitivity": float(target_sensitivity),
        "config": plain(config or {}),
        "metrics": plain(metrics or {}),
        "versions": versions(),
        **extra,
    }
    if dataset is not None:
        ckpt["dataset"] = dataset
    if calibration is not None:
        ckpt["calibration"] = plain(calibration)
    return ckpt


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
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def read_torch_file(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors: not found, not a torch file,
    unsafe (Python objects that could run code), truncated or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head != ZIP_MAGIC and not head.startswith(b"\x80"):
        kind = "an empty file" if not head else "neither a zip archive nor a pickle"
        raise CheckpointError(f"{path}: not a torch {what} ({kind}; torch.save writes a zip "
                              "archive)")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path}: refused to load: the file holds Python objects beyond tensors and "
                f"plain types ({found.group(1)}), which could run code when unpickled") from None
        raise CheckpointError(f"{path}: truncated or corrupt {what} (not a readable pickle)"
                              ) from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({first})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely and check every field; ``CheckpointError`` names the file and
    the problem."""
    path = Path(path)
    obj = read_torch_file(path)
    check_checkpoint(obj, path)
    return obj


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(path: Path | str, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {field} {problem}")


def check_checkpoint(ckpt: Any, path: Path | str = "<checkpoint>") -> None:
    """Refuse anything but a complete, well-typed, consistent checkpoint dict (fills in
    ``positive_index`` for files written before it was recorded)."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    if ckpt.get("kind") == "training_state":
        raise CheckpointError(f"{path}: a training state (the resume file), not a deployable "
                              "checkpoint; use best.pth from the same folder once training ends")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    version = ckpt["format_version"]
    if not _int(version) or version != FORMAT_VERSION:
        raise _fail(path, "format_version", f"{version!r} is not supported (this EdgeKD reads "
                                            f"{FORMAT_VERSION})")
    _check_fields(ckpt, path)
    ckpt.setdefault("positive_index", positive_index(list(ckpt["labels"])))
    decision_of(ckpt, path)
    _check_calibration(ckpt.get("calibration"), path)
    _check_state_dict(ckpt["state_dict"], path)
    _check_weights_fit(ckpt, path)


def _check_fields(ckpt: dict[str, Any], path: Path | str) -> None:
    if not isinstance(ckpt["arch"], str) or not ckpt["arch"]:
        raise _fail(path, "arch", f"must be an architecture name, got {ckpt['arch']!r}")
    k = ckpt["num_classes"]
    if not _int(k) or k < 2:
        raise _fail(path, "num_classes", f"must be an integer >= 2, got {k!r}")
    labels = ckpt["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise _fail(path, "labels", f"must be a list of non-empty strings, got {labels!r:.80}")
    if len(labels) != k:
        raise _fail(path, "labels", f"has {len(labels)} names for num_classes={k}")
    try:
        Preprocessing.from_dict(ckpt["preprocessing"])
    except (TypeError, ValueError) as exc:
        raise _fail(path, "preprocessing", f"is malformed ({exc})") from None
    for key in OPTIONAL_DICTS:
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise _fail(path, key, f"must be a dict, got {type(ckpt[key]).__name__}")
    if ckpt.get("dataset") is not None and not isinstance(ckpt["dataset"], str):
        raise _fail(path, "dataset", f"must be a name, got {ckpt['dataset']!r:.80}")


def _check_calibration(record: Any, path: Path | str) -> None:
    if record is None:
        return
    if not isinstance(record, dict):
        raise _fail(path, "calibration", f"must be a dict, got {type(record).__name__}")
    for key in ("temperature", "threshold", "target_sensitivity"):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            raise _fail(path, f"calibration.{key}", f"must be a finite number, got {value!r}")
    if not isinstance(record.get("split", ""), str):
        raise _fail(path, "calibration.split", f"must be a split name, got {record['split']!r}")
    n = record.get("n", 1)
    if not _int(n) or n < 1:
        raise _fail(path, "calibration.n", f"must be a positive integer, got {n!r}")


def _check_state_dict(state: Any, path: Path | str) -> None:
    import torch

    if not isinstance(state, dict) or not state:
        raise _fail(path, "state_dict", "must be a non-empty dict of tensors")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise _fail(path, "state_dict", f"entry {name!r} is a {type(value).__name__}, not a "
                                            "tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _fail(path, "state_dict", f"entry {name!r} holds NaN or infinite values")


def _check_weights_fit(ckpt: dict[str, Any], path: Path | str) -> None:
    """The weights' names and shapes are the architecture's (built on the meta device: free)."""
    import torch

    from kd_core.model_names import describe
    from kd_core.models import create_model, is_known

    arch, k = ckpt["arch"], ckpt["num_classes"]
    if not is_known(arch):
        raise _fail(path, "arch", f"{arch!r} is not a known architecture (use {describe()})")
    try:
        with torch.device("meta"):
            model = create_model(arch, k)
    except NotImplementedError:  # it computes its widths with tensors (RegNet): build it for real
        model = create_model(arch, k)
    want = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    got = {n: tuple(t.shape) for n, t in ckpt["state_dict"].items()}
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    shapes = [f"{n} {got[n]} vs {want[n]}" for n in want if n in got and got[n] != want[n]]
    problems = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
        [f"unexpected {', '.join(extra[:3])}"] if extra else []) + (
        [f"shape {', '.join(shapes[:3])}"] if shapes else [])
    if problems:
        raise CheckpointError(f"{path}: weights do not fit {arch} with {k} classes "
                              f"({'; '.join(problems)})")


def decision_of(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> Any:
    """The checkpoint's ``kd_core.deploy.Decision`` (labels, positive class, temperature,
    threshold, target sensitivity), checked; ``CheckpointError`` names the file and field."""
    from kd_core.decision import ContractError, Decision

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
    same_target = ("target_sensitivity" not in record or "target_sensitivity" not in ckpt
                   or record["target_sensitivity"] == ckpt["target_sensitivity"])
    return (record["temperature"] == ckpt.get("temperature")
            and record["threshold"] == ckpt.get("threshold") and same_target)


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild the eval-mode model a checkpoint (from ``load_checkpoint``) describes."""
    from kd_core.models import create_model, load_weights

    try:
        model = create_model(ckpt["arch"], int(ckpt["num_classes"]))
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from None
    try:
        load_weights(model, ckpt["state_dict"])
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


if __name__ == "__main__":  # python -m kd_core.checkpoint import ...: kd_core.importer's CLI
    import runpy

    runpy.run_module("kd_core.importer", run_name="__main__", alter_sys=True)
