"""Wrap a model trained elsewhere into an EdgeKD checkpoint (``python -m kd_core.checkpoint
import``).

    python -m kd_core.checkpoint import --arch mobilenet_v2 --weights model.pth \\
        --labels other,mel --positive mel --size 224 --val-data D --out ck.pth

The weights (a ``.pth`` state_dict, read with ``torch.load(weights_only=True)``, or a
``.safetensors`` file) must fit ``--arch`` with one output per label; the model is run once to
check that it works. With ``--val-data`` (any data source: a prepared folder, an image folder, a
CSV or a HAM10000 folder) the temperature is fitted on its validation split and, with a positive
class, the threshold reaching ``--target-sensitivity``; the checkpoint is then calibrated. Without
it the checkpoint is not calibrated, and the exporters refuse it unless ``--allow-uncalibrated``.
Standard library only at import time, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_core import cli
from kd_core.config import DEFAULT_TARGET_SENSITIVITY, IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from kd_core.data.transforms import Preprocessing

log = logging.getLogger(__name__)
PROG = "python -m kd_core.checkpoint"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class ImportInputError(cli.BadInput):
    """An import that cannot be done: a flag, the weights file or the validation data."""


@dataclass(frozen=True)
class ImportOptions:
    arch: str
    weights: Path
    labels: tuple[str, ...]
    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "squash"
    positive: str | None = None  # None: the model decides by argmax
    val_data: Path | None = None
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    dataset: str | None = None  # what the model was trained on, for the manifest and apps
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportResult:
    path: Path
    calibrated: bool
    temperature: float
    threshold: float | None
    n_val: int | None
    val_metrics: dict[str, Any] | None


def check_options(opts: ImportOptions, out: Path) -> Preprocessing:
    """Every flag, before any work; returns the preprocessing the model takes."""
    from kd_core.data.transforms import Preprocessing
    from kd_core.io import check_output_dir
    from kd_core.model_names import describe
    from kd_core.models import get_spec, is_known

    if not is_known(opts.arch):
        raise ImportInputError(f"--arch {opts.arch!r} is not a known architecture; use "
                               f"{describe()}")
    labels = opts.labels
    if len(labels) < 2 or len(set(labels)) != len(labels) or not all(labels):
        raise ImportInputError(f"--labels must name at least 2 distinct classes, got "
                               f"{list(labels)}")
    if opts.positive is not None and opts.positive not in labels:
        raise ImportInputError(f"--positive {opts.positive}: not one of --labels "
                               f"{','.join(labels)}")
    try:
        prep = Preprocessing(size=opts.size, mean=opts.mean, std=opts.std, resize=opts.resize)
    except ValueError as exc:
        raise ImportInputError(f"--size/--mean/--std/--resize: {exc}") from None
    unfit = get_spec(opts.arch).check_size(opts.size)
    if unfit:
        raise ImportInputError(f"--size {opts.size}: {unfit}")
    ts = opts.target_sensitivity
    if not (isinstance(ts, int | float) and math.isfinite(ts) and 0 < ts <= 1):
        raise ImportInputError(f"--target-sensitivity must be a number in (0, 1], got {ts!r}")
    if not opts.weights.is_file():
        raise ImportInputError(f"--weights {opts.weights}: file not found")
    if opts.weights.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ImportInputError(f"--weights {opts.weights}: expected a state_dict file "
                           f"({', '.join(WEIGHT_SUFFIXES)})")
    if out.suffix != ".pth" or out.is_dir():
        raise ImportInputError(f"--out {out}: expected a checkpoint file name ending in .pth")
    check_output_dir(out.parent, "--out")
    if opts.val_data is not None and not opts.val_data.exists():
        raise ImportInputError(f"--val-data {opts.val_data}: not found")
    return prep


def read_weights(path: Path) -> dict[str, Any]:
    """A state dict from ``path``: safetensors, or ``torch.load(weights_only=True)`` (a bare
    state dict or one under "state_dict"/"model"); a DataParallel "module." prefix is dropped."""
    from kd_core.checkpoint import CheckpointError, read_torch_file

    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ImportInputError(f"--weights {path}: not a readable safetensors file ({exc})"
                               ) from None
    else:
        try:
            state = read_torch_file(path, "weights file")
        except CheckpointError as exc:
            raise ImportInputError(f"--weights {exc}") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not state:
        raise ImportInputError(f"--weights {path}: expected a state_dict (a dict of tensors)")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def build_model(opts: ImportOptions, state: dict[str, Any], prep: Preprocessing) -> nn.Module:
    """``opts.arch`` with the weights loaded (every name and shape must fit), run once."""
    import torch

    from kd_core.checkpoint import CheckpointError, check_checkpoint, model_from_checkpoint

    probe = {"format_version": 1, "arch": opts.arch, "num_classes": len(opts.labels),
             "labels": list(opts.labels), "state_dict": state, "preprocessing": prep.to_dict(),
             "temperature": 1.0, "threshold": None, "positive_index": None}
    try:
        check_checkpoint(probe, f"--weights {opts.weights}")
        model = model_from_checkpoint(probe, f"--weights {opts.weights}")
    except CheckpointError as exc:
        raise ImportInputError(str(exc)) from None
    with torch.no_grad():
        out = model(torch.zeros(1, 3, prep.size, prep.size))
    if tuple(out.shape) != (1, len(opts.labels)) or not bool(torch.isfinite(out).all()):
        raise ImportInputError(f"--weights {opts.weights}: the model gives {tuple(out.shape)} "
                           f"outputs (finite: {bool(torch.isfinite(out).all())}) on a "
                           f"{prep.size} px image, expected 1 x {len(opts.labels)} finite logits")
    return model


def validation_logits(model: nn.Module, opts: ImportOptions, prep: Preprocessing
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """The model's logits and the labels of the validation split of ``--val-data``, and the
    data's display name."""
    import numpy as np
    import torch

    from kd_core.data.dataset import load_images, normalize_batch
    from kd_core.data.prepared import DataError, data_info, load_split
    from kd_core.data.sources import resolve_prepared

    assert opts.val_data is not None
    pos = None if opts.positive is None else opts.labels.index(opts.positive)
    try:
        prepared = resolve_prepared(opts.val_data)
        split = load_split(prepared, "val")
        y = split.labels_for(list(opts.labels), pos)
    except DataError as exc:
        raise ImportInputError(f"--val-data: {exc}") from None
    if len(y) == 0 or len(set(y.tolist())) < 2:
        raise ImportInputError(f"--val-data {opts.val_data}: the validation split needs images of "
                           "at least 2 classes to calibrate")
    images = load_images(split.paths, prep, desc="validation images")
    with torch.no_grad():
        logits = [model(normalize_batch(images[i:i + 64], prep)).float()
                  for i in range(0, len(images), 64)]
    return torch.cat(logits).numpy().astype(np.float64), y, data_info(prepared).name


def import_checkpoint(opts: ImportOptions, out: Path) -> ImportResult:
    """Check, load, run, optionally calibrate, and save ``out`` (atomically)."""
    from kd_core.checkpoint import build_checkpoint, calibration_record, save_checkpoint
    from kd_core.finalize import evaluate, finite, fit_decision
    from kd_core.io import sha256_file

    prep = check_options(opts, out)
    model = build_model(opts, read_weights(opts.weights), prep)
    pos = None if opts.positive is None else opts.labels.index(opts.positive)
    temperature, threshold = 1.0, (None if pos is None else 0.5)
    calibration = metrics = None
    n_val, dataset = None, opts.dataset
    if opts.val_data is not None:
        logits, y, name = validation_logits(model, opts, prep)
        fitted = fit_decision(logits, y, pos, opts.target_sensitivity)
        temperature, threshold, n_val = fitted["temperature"], fitted["threshold"], len(y)
        metrics = finite({**fitted, "n_val": n_val, "val": evaluate(
            logits, y, list(opts.labels), pos, threshold, temperature, 0, 0)})
        calibration = calibration_record("val", n_val, temperature, threshold,
                                         opts.target_sensitivity)
        dataset = dataset or name
    config = {"role": "imported", "import": {
        "arch": opts.arch, "weights": str(opts.weights), "weights_sha256": sha256_file(
            opts.weights), "val_data": str(opts.val_data) if opts.val_data else None,
        **opts.extra}}
    ckpt = build_checkpoint(model, opts.arch, list(opts.labels), prep, temperature, threshold,
                            config=config, metrics=metrics,
                            target_sensitivity=opts.target_sensitivity, dataset=dataset,
                            calibration=calibration, positive=pos)
    save_checkpoint(ckpt, out)
    return ImportResult(out, calibration is not None, temperature, threshold, n_val,
                        (metrics or {}).get("val"))


# ---- the command line ------------------------------------------------------------------------


def _floats(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 3 comma-separated numbers, got {text!r}"
                                         ) from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected 3 comma-separated numbers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(PROG, "Checkpoints: import a model trained elsewhere.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = cli.add_command(sub, "import", "wrap a state_dict into an EdgeKD checkpoint",
                        description=__doc__)
    p.add_argument("--arch", required=True, help="architecture the weights are for (a "
                   "torchvision classifier name, or timm:NAME)")
    p.add_argument("--weights", type=Path, required=True,
                   help="state_dict file: .pth/.pt (weights only) or .safetensors")
    p.add_argument("--labels", required=True, help="class names, comma-separated, in the "
                   "order of the model's outputs")
    p.add_argument("--size", type=int, required=True, help="input size in pixels (square)")
    p.add_argument("--mean", type=_floats, default=IMAGENET_MEAN, help="RGB mean, 3 numbers")
    p.add_argument("--std", type=_floats, default=IMAGENET_STD, help="RGB std, 3 numbers")
    p.add_argument("--resize", choices=("squash", "center_crop"), default="squash",
                   help="how an image becomes a square")
    p.add_argument("--positive", metavar="LABEL", help="the positive class of a binary "
                   "decision (threshold); default: argmax over the labels")
    p.add_argument("--val-data", type=Path, help="data to calibrate on (its validation split): "
                   "image folder, CSV, HAM10000 or prepared folder; without it the checkpoint "
                   "is not calibrated")
    p.add_argument("--target-sensitivity", type=float, default=DEFAULT_TARGET_SENSITIVITY,
                   help="the threshold reaches this sensitivity on --val-data")
    p.add_argument("--dataset", help="display name of the training data (default: the "
                   "--val-data name)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pth)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def _summary(res: ImportResult, opts: ImportOptions) -> str:
    head = f"wrote {res.path} ({opts.arch}, {len(opts.labels)} classes, {opts.size} px)"
    if not res.calibrated:
        return (f"{head}: NOT calibrated (no --val-data): temperature 1, no fitted threshold; "
                "the exporters refuse it unless --allow-uncalibrated")
    decision = ("argmax" if res.threshold is None else
                f"threshold {res.threshold:.4f} ({opts.target_sensitivity:.0%} sensitivity)")
    auc = (res.val_metrics or {}).get("roc_auc")
    return (f"{head}: calibrated on {res.n_val} validation images: T = {res.temperature:.3f}, "
            f"{decision}" + (f", val ROC-AUC {auc:.3f}" if auc is not None else ""))


def _main(args: argparse.Namespace) -> int:
    opts = ImportOptions(
        arch=args.arch, weights=args.weights, size=args.size, mean=args.mean, std=args.std,
        labels=tuple(x.strip() for x in args.labels.split(",")), resize=args.resize,
        positive=args.positive, val_data=args.val_data, dataset=args.dataset,
        target_sensitivity=args.target_sensitivity)
    print(_summary(import_checkpoint(opts, args.out), opts))
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
