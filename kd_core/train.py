"""Train a teacher, or distil a student from one: ``python -m kd_core.train teacher|student``
(options and usage in ``kd_core.train_args``).

After training, the best epoch's model is calibrated on validation (temperature scaling), its
decision threshold is set to reach 95 % sensitivity on validation, and it is scored on holdout
with that threshold unchanged. ``OUT/best.pth`` is the deployable checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_core.checkpoint import (
    BINARY_LABELS,
    DX_LABELS,
    CheckpointError,
    build_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    plain,
    positive_index,
    save_checkpoint,
)
from kd_core.config import Config, DataConfig, StudentConfig, TeacherConfig, save_config, to_dict
from kd_core.data.dataset import Batches, load_images
from kd_core.data.ham10000 import DataError, load_split, prepare
from kd_core.data.splits import SplitError
from kd_core.data.transforms import Preprocessing
from kd_core.engine import NonFiniteLossError, Runtime, StepFn, fit, predict, resolve_runtime
from kd_core.losses import class_weights, distill_step, make_loss
from kd_core.models import PretrainedWeightsError, create_model, get_spec
from kd_core.train_args import build_parser, config_from_args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_prepared_dir(data_dir: Path) -> Path:
    tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return Path("artifacts") / "prepared" / f"{data_dir.resolve().name}-{tag}"


def load_data(
    cfg: DataConfig, rt: Runtime, batch_size: int, seed: int, max_batches: int | None = None
) -> dict[str, Any]:
    """Prepare (or reuse) the splits and hold every split in memory at training size."""
    if cfg.data_dir is None:
        raise DataError("--data-dir is required")
    data_dir = Path(cfg.data_dir)
    prepared = Path(cfg.prepared_dir) if cfg.prepared_dir else default_prepared_dir(data_dir)
    prepare(
        data_dir,
        prepared,
        seed=cfg.seed,
        metadata=cfg.metadata,
        skip_corrupt=cfg.skip_corrupt,
        images_dir=Path(cfg.images_dir) if cfg.images_dir else None,
        split=cfg.split,
        verbose=rt.is_main,
    )
    prep = Preprocessing(size=cfg.image_size, resize=cfg.resize)
    labels = BINARY_LABELS if cfg.target == "mel" else DX_LABELS
    cache = prepared / "cache" if cfg.cache else None
    out: dict[str, Any] = {"prep": prep, "labels": labels, "prepared": prepared}
    for split in ("train", "val", "holdout"):
        data = load_split(prepared, split)
        y = torch.from_numpy(data.labels_for(cfg.target))
        counts = torch.bincount(y, minlength=len(labels))
        if split == "train" and (counts == 0).any():
            empty = [labels[i] for i in range(len(labels)) if counts[i] == 0]
            raise DataError(f"{prepared}/train_data.csv: class(es) {', '.join(empty)} are empty")
        if split == "val" and counts[positive_index(labels)] == 0:
            raise DataError(
                f"{prepared}/val_data.csv: the validation split has no melanoma "
                "images, so ROC-AUC, early stopping and the threshold are undefined"
            )
        x = load_images(data.paths, prep, cache, desc=f"loading {split}")
        train = split == "train"
        out[split] = Batches(
            x,
            y,
            prep,
            batch_size=batch_size if train else max(batch_size, 128),
            device=rt.device,
            train=train,
            seed=seed,
            balanced=train and cfg.balanced_sampler,
            max_batches=max_batches if train else None,
        )
    return out


def set_bn_momentum(model: torch.nn.Module, momentum: float) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.momentum = momentum


def make_step(
    role: str,
    cfg: Config,
    labels: list[str],
    train_y: torch.Tensor,
    teacher: torch.nn.Module | None,
) -> StepFn:
    mcfg = cfg.teacher if role == "teacher" else cfg.student
    weight = class_weights(train_y.cpu(), len(labels)) if mcfg.class_weighted else None
    hard = make_loss(
        mcfg.loss, mcfg.focal_gamma, weight.to(train_y.device) if weight is not None else None
    )
    if teacher is None:

        def plain(
            model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            logits = model(x)
            loss = hard(logits.float(), y)
            return {"loss": loss, "task_loss": loss, "logits": logits.detach()}

        return plain

    def kd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return distill_step(
            model, teacher, x, y, cfg.kd.temperature, cfg.kd.alpha, lambda s, t: hard(s.float(), t)
        )

    return kd


def load_teacher(path: Path, num_classes: int, rt: Runtime) -> torch.nn.Module:
    ckpt = load_checkpoint(path)
    if int(ckpt["num_classes"]) != num_classes:
        raise CheckpointError(
            f"{path}: teacher has {ckpt['num_classes']} classes, the student "
            f"is trained for {num_classes}; use the same --target"
        )
    teacher = model_from_checkpoint(ckpt, path).to(rt.device)
    if rt.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def finalize(
    model: torch.nn.Module,
    data: dict[str, Any],
    rt: Runtime,
    out: Path,
    target_sensitivity: float = 0.95,
    seed: int = 42,
) -> dict[str, Any]:
    """Temperature on val, threshold on val, then holdout metrics with both fixed; plots."""
    from kd_core import plots
    from kd_core.calibration import calibration_report, fit_temperature
    from kd_core.metrics import evaluate_predictions, softmax, threshold_for_sensitivity

    pos = positive_index(data["labels"])
    val_logits, val_y = predict(model, data["val"], rt)
    hold_logits, hold_y = predict(model, data["holdout"], rt)
    temperature = fit_temperature(val_logits, val_y)
    p_val = softmax(val_logits, temperature)[:, pos]
    threshold = threshold_for_sensitivity(
        (val_y == pos).astype(np.int64), p_val, target_sensitivity
    )
    metrics = {
        "temperature": temperature,
        "threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "val_calibration": calibration_report(val_logits, val_y, temperature),
        "val": evaluate_predictions(val_logits, val_y, pos, threshold, temperature, bootstrap=0),
        "holdout": evaluate_predictions(
            hold_logits, hold_y, pos, threshold, temperature, seed=seed
        ),
        "holdout_uncalibrated": evaluate_predictions(
            hold_logits, hold_y, pos, threshold, 1.0, bootstrap=0
        ),
    }
    plot_dir = out / "plots"
    y_pos = (hold_y == pos).astype(np.int64)
    p_raw, p_cal = softmax(hold_logits)[:, pos], softmax(hold_logits, temperature)[:, pos]
    plots.plot_roc_pr({"holdout": (y_pos, p_cal)}, plot_dir / "roc_pr.png")
    plots.plot_reliability_grid(
        {
            "before temperature scaling": (p_raw, y_pos),
            f"after (T = {temperature:.2f})": (p_cal, y_pos),
        },
        plot_dir / "reliability.png",
    )
    return metrics


def run(
    role: str, cfg: Config, out: Path, teacher_ckpt: Path | None = None, force: bool = False
) -> Path:
    """Train ``role`` ("teacher" or "student") with ``cfg``; return the best checkpoint's path."""
    from kd_core import plots

    tcfg = cfg.training
    seed_everything(tcfg.seed)
    rt = resolve_runtime(tcfg.device, tcfg.amp, tcfg.channels_last)
    mcfg: TeacherConfig | StudentConfig = cfg.teacher if role == "teacher" else cfg.student
    spec = get_spec(mcfg.architecture)
    lr = (
        tcfg.lr if tcfg.lr is not None else (1e-4 if mcfg.pretrained != "none" else spec.default_lr)
    )
    cfg = replace(cfg, training=replace(tcfg, lr=lr))
    data = load_data(cfg.data, rt, tcfg.batch_size, tcfg.seed, tcfg.max_steps_per_epoch)
    labels = data["labels"]
    teacher = None
    if role == "student" and cfg.kd.alpha > 0:
        if teacher_ckpt is None:
            raise CheckpointError(
                "--teacher-ckpt is required for KD (or pass --alpha 0 to train "
                "the student without a teacher)"
            )
        teacher = load_teacher(teacher_ckpt, len(labels), rt)
    model = create_model(mcfg.architecture, len(labels), mcfg.pretrained)
    set_bn_momentum(model, tcfg.bn_momentum)
    step = make_step(role, cfg, labels, data["train"].labels, teacher)
    out.mkdir(parents=True, exist_ok=True)
    if force:
        for name in ("last.pth", "best.pth"):
            (out / name).unlink(missing_ok=True)
    record = {
        **to_dict(cfg),
        "role": role,
        "teacher_ckpt": str(teacher_ckpt) if teacher_ckpt else None,
    }
    key_src = {k: v for k, v in record.items() if k != "training"}
    key_src["training"] = {k: v for k, v in to_dict(cfg.training).items() if k != "device"}
    config_key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
    if rt.is_main:
        save_config(cfg, out / "config.json")
        print(
            f"{role}: {mcfg.architecture}, {len(data['train'].labels)} train images at "
            f"{cfg.data.image_size}px, lr {lr:g}, {rt.device}"
            f"{' ' + str(rt.amp_dtype).removeprefix('torch.') if rt.amp_dtype else ''}"
        )

    def save_best(m: torch.nn.Module, info: dict[str, Any]) -> None:
        save_checkpoint(
            build_checkpoint(
                m, mcfg.architecture, labels, data["prep"], config=record, metrics={"best": info}
            ),
            out / "best.pth",
        )

    result = fit(
        model,
        step,
        data["train"],
        data["val"],
        rt,
        epochs=tcfg.epochs,
        lr=lr,
        weight_decay=tcfg.weight_decay,
        scheduler=tcfg.scheduler,
        patience=tcfg.patience,
        out_dir=out,
        min_epochs=tcfg.min_epochs if tcfg.min_epochs is not None else tcfg.epochs // 2,
        positive_index=positive_index(labels),
        save_best=save_best,
        config_key=config_key,
    )
    if not rt.is_main:
        return result.best_path
    best = load_checkpoint(result.best_path)
    model = model_from_checkpoint(best, result.best_path).to(rt.device)
    metrics = finalize(model, data, rt, out, seed=tcfg.seed)
    metrics.update(
        best_epoch=result.best_epoch,
        val_roc_auc_best=result.best_auc,
        epochs_run=len(result.history),
        stopped_early=result.stopped_early,
    )
    if result.history:
        metrics["train_images_per_s"] = result.history[-1]["images_per_s"]
        plots.plot_training_curves(result.history, out / "plots" / "training_curves.png")
    ckpt = build_checkpoint(
        model,
        mcfg.architecture,
        labels,
        data["prep"],
        temperature=metrics["temperature"],
        threshold=metrics["threshold"],
        config=record,
        metrics=plain(metrics),
    )
    save_checkpoint(ckpt, result.best_path)
    from kd_core.io import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(plain(metrics), indent=2) + "\n")
    h = metrics["holdout"]
    print(
        f"holdout: ROC-AUC {h['roc_auc']:.4f} [{h['roc_auc_ci_low']:.3f}, "
        f"{h['roc_auc_ci_high']:.3f}]  PR-AUC {h['pr_auc']:.4f}  "
        f"ECE {metrics['holdout_uncalibrated']['ece']:.4f} -> {h['ece']:.4f} "
        f"(T = {metrics['temperature']:.3f})  sens {h['sensitivity']:.3f} "
        f"spec {h['specificity']:.3f} at threshold {metrics['threshold']:.4f}"
    )
    print(f"best checkpoint: {result.best_path}")
    return result.best_path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        run(args.role, cfg, args.out, getattr(args, "teacher_ckpt", None), args.force)
    except (
        DataError,
        SplitError,
        CheckpointError,
        PretrainedWeightsError,
        NonFiniteLossError,
        KeyError,
        ValueError,
        FileNotFoundError,
    ) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        if isinstance(exc, NonFiniteLossError):
            print(f"the last good checkpoint is kept in {args.out}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
