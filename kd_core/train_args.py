"""The ``python -m kd_core.train`` command line: its parser and the config it resolves to.

    python -m kd_core.train teacher --data-dir D --architecture resnet34 --epochs 50 \\
        --batch-size 32 --lr 1e-4 --loss focal --patience 10 --seed 42
    python -m kd_core.train student --data-dir D --teacher-ckpt T.pth \\
        --student-arch mobilenet_v3_small --temperature 2 --alpha 0.5 --epochs 50 --seed 42

After training, the best epoch's model is calibrated on validation (temperature scaling), its
decision threshold is set to reach the target sensitivity (--target-sensitivity) on validation,
and it is scored on holdout with that threshold unchanged. Only then is ``OUT/best.pth``, the
deployable checkpoint, written; ``OUT/last.pth`` holds the run in progress (rerun the same
command to resume it). Standard library only, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kd_core import cli
from kd_core.config import (
    Config,
    DataConfig,
    KDConfig,
    StudentConfig,
    TeacherConfig,
    TrainingConfig,
)
from kd_core.model_names import describe

PROG = "python -m kd_core.train"


def _data_args(p: argparse.ArgumentParser) -> None:
    d = DataConfig()
    p.add_argument("--data-dir", type=Path, required=True,
                   help="HAM10000 folder, image folder (<class>/*.jpg) or CSV file "
                   "(path,label[,group]), prepared on first use; or a prepared split folder")
    p.add_argument("--prepared-dir", type=Path,
                   help="where splits and the image cache go (default: the user cache, "
                   "$EDGEKD_CACHE or ~/.cache/edgekd/prepared/<name>-<hash>)")
    p.add_argument("--metadata", default=d.metadata,
                   help="HAM10000 metadata CSV in --data-dir (default: the Dataverse release "
                   "when present, for its acquisition sites; else HAM10000_metadata.csv)")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images")
    p.add_argument("--no-cache", action="store_true", help="do not cache decoded images")
    p.add_argument("--image-size", type=int, default=d.image_size, help="model input, pixels")
    p.add_argument("--resize", choices=("squash", "center_crop"), default=d.resize,
                   help="how an image becomes a square")
    p.add_argument("--target", choices=("auto", "mel", "dx"), default=d.target,
                   help="auto: HAM10000 melanoma vs rest, other data every class (argmax); "
                   "HAM10000 only: mel (melanoma vs rest) or dx (the 7 diagnoses)")
    p.add_argument("--positive", metavar="CLASS",
                   help="a binary task: CLASS vs rest, with a decision threshold set for "
                   "--target-sensitivity (default: every class, decided by argmax; HAM10000: mel)")
    p.add_argument("--balanced-sampler", action="store_true", help="class-balanced batches")


def _model_args(p: argparse.ArgumentParser, role: str, kd: bool) -> None:
    t = TeacherConfig()
    if role == "teacher":
        p.add_argument("--architecture", default=t.architecture,
                       help=f"teacher architecture: {describe()}")
    else:
        p.add_argument("--teacher-ckpt", type=Path, help="teacher checkpoint (its best.pth)")
        p.add_argument("--student-arch", default=StudentConfig().architecture,
                       help="student architecture (the same choice as the teacher's)")
    if role == "student" and kd:
        k = KDConfig()
        p.add_argument("--temperature", type=float, default=k.temperature,
                       help="KD temperature T (> 0)")
        p.add_argument("--alpha", type=float, default=k.alpha,
                       help="weight of the KD term, 0 to 1; 0 trains without a teacher")
    p.add_argument("--pretrained", default=t.pretrained,
                   help="none | imagenet (torchvision's, or timm's, downloaded once) | PATH to a "
                   "state_dict (.pth or .safetensors)")
    p.add_argument("--loss", choices=("focal", "ce"), default=t.loss, help="hard-label loss")
    p.add_argument("--focal-gamma", type=float, default=t.focal_gamma, help="focal loss gamma")
    p.add_argument("--class-weighted", action="store_true", help="inverse-frequency weights")


def _optim_args(p: argparse.ArgumentParser) -> None:
    tr = TrainingConfig()
    p.add_argument("--epochs", type=int, default=tr.epochs, help="at most this many epochs")
    p.add_argument("--batch-size", type=int, default=tr.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 1e-4 with --pretrained, else 2e-3 for "
                   "ResNets and 3e-3 for MobileNets)")
    p.add_argument("--weight-decay", type=float, default=tr.weight_decay, help="AdamW decay")
    p.add_argument("--scheduler", choices=("onecycle", "cosine"), default=tr.scheduler,
                   help="learning-rate schedule")
    p.add_argument("--patience", type=int, default=tr.patience,
                   help="epochs without val ROC-AUC gain before stopping")
    p.add_argument("--min-epochs", type=int, default=None,
                   help="never stop early before this epoch (default: half of --epochs)")
    p.add_argument("--bn-momentum", type=float, default=tr.bn_momentum,
                   help="batch-norm running-statistics momentum, in (0, 1]; torchvision's "
                   "MobileNetV3 uses 0.01, which suits ImageNet-sized epochs only")
    p.add_argument("--target-sensitivity", type=float, default=tr.target_sensitivity,
                   help="the decision threshold reaches this sensitivity on validation")


def _run_args(p: argparse.ArgumentParser) -> None:
    tr = TrainingConfig()
    p.add_argument("--seed", type=int, default=tr.seed, help="seed of splits, init and batches")
    p.add_argument("--device", default=tr.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=tr.amp,
                   help="mixed precision (auto: bf16 on CUDA)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap batches per epoch (smoke runs)")
    p.add_argument("--verbose", action="store_true", help="debug logging")


def add_training_arguments(p: argparse.ArgumentParser, role: str, kd: bool = True) -> None:
    """Every option of ``kd_core.train ROLE`` (``kd=False``: without --temperature/--alpha)."""
    _data_args(p)
    _model_args(p, role, kd)
    _optim_args(p)
    _run_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(PROG, __doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("teacher", "student"):
        p = cli.add_command(sub, role, f"train the {role}")
        add_training_arguments(p, role)
        p.add_argument("--out", type=Path, default=Path("runs") / role, help="output folder")
        p.add_argument("--force", action="store_true", help="start over instead of resuming")
    return parser


def config_from_args(args: argparse.Namespace, role: str | None = None) -> Config:
    role = role or args.role
    data = DataConfig(
        data_dir=str(args.data_dir),
        prepared_dir=str(args.prepared_dir) if args.prepared_dir else None,
        metadata=args.metadata, target=args.target, positive=args.positive,
        image_size=args.image_size,
        resize=args.resize, seed=args.seed, cache=not args.no_cache,
        balanced_sampler=args.balanced_sampler, skip_corrupt=args.skip_corrupt,
    )
    model = {"pretrained": args.pretrained, "loss": args.loss, "focal_gamma": args.focal_gamma,
             "class_weighted": args.class_weighted}
    training = TrainingConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, scheduler=args.scheduler, patience=args.patience,
        min_epochs=args.min_epochs, bn_momentum=args.bn_momentum, device=args.device,
        amp=args.amp, seed=args.seed, max_steps_per_epoch=args.max_steps_per_epoch,
        target_sensitivity=args.target_sensitivity,
    )
    if role == "teacher":
        return Config(data=data, training=training,
                      teacher=TeacherConfig(architecture=args.architecture, **model))
    kd = KDConfig()
    return Config(data=data, training=training,
                  student=StudentConfig(architecture=args.student_arch, **model),
                  kd=KDConfig(temperature=getattr(args, "temperature", kd.temperature),
                              alpha=getattr(args, "alpha", kd.alpha)))
