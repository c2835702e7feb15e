"""The ``python -m kd_core.train`` command line: its parser and the config it resolves to.

    python -m kd_core.train teacher --data-dir D --architecture resnet34 --epochs 50 \\
        --batch-size 32 --lr 1e-4 --loss focal --patience 10 --seed 42
    python -m kd_core.train student --data-dir D --teacher-ckpt T.pth \\
        --student-arch mobilenet_v3_small --temperature 2 --alpha 0.5 --epochs 50 --seed 42

After training, the best epoch's model is calibrated on validation (temperature scaling), its
decision threshold is set to reach 95 % sensitivity on validation, and it is scored on holdout
with that threshold unchanged. ``OUT/best.pth`` is the deployable checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kd_core.config import (
    Config,
    DataConfig,
    KDConfig,
    StudentConfig,
    TeacherConfig,
    TrainingConfig,
)


def build_parser() -> argparse.ArgumentParser:
    d, t, tr, kd = DataConfig(), TeacherConfig(), TrainingConfig(), KDConfig()
    parser = argparse.ArgumentParser(
        prog="python -m kd_core.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("teacher", "student"):
        p = sub.add_parser(role, help=f"train the {role}")
        p.add_argument("--data-dir", type=Path, required=True, help="HAM10000-layout folder")
        p.add_argument("--out", type=Path, default=Path("runs") / role, help="output folder")
        if role == "teacher":
            p.add_argument("--architecture", default=t.architecture, help="teacher architecture")
        else:
            p.add_argument("--teacher-ckpt", type=Path, help="teacher checkpoint (best.pth)")
            p.add_argument("--student-arch", default=StudentConfig().architecture)
            p.add_argument("--temperature", type=float, default=kd.temperature, help="KD T")
            p.add_argument(
                "--alpha",
                type=float,
                default=kd.alpha,
                help="weight of the KD term; 0 trains without a teacher",
            )
        p.add_argument("--pretrained", default="none", help="none | imagenet | PATH to weights")
        p.add_argument("--epochs", type=int, default=tr.epochs)
        p.add_argument("--batch-size", type=int, default=tr.batch_size)
        p.add_argument(
            "--lr",
            type=float,
            default=None,
            help="peak learning rate (default 1e-4 with --pretrained, else 2e-3 "
            "for ResNets and 3e-3 for MobileNets)",
        )
        p.add_argument("--weight-decay", type=float, default=tr.weight_decay)
        p.add_argument("--scheduler", choices=("onecycle", "cosine"), default=tr.scheduler)
        p.add_argument(
            "--patience",
            type=int,
            default=tr.patience,
            help="epochs without val ROC-AUC gain before stopping",
        )
        p.add_argument(
            "--min-epochs",
            type=int,
            default=None,
            help="never stop early before this epoch (default: half of --epochs)",
        )
        p.add_argument(
            "--bn-momentum",
            type=float,
            default=tr.bn_momentum,
            help="batch-norm running-statistics momentum (default: %(default)s; torchvision's "
            "MobileNetV3 uses 0.01, which suits ImageNet-sized epochs only)",
        )
        p.add_argument("--loss", choices=("focal", "ce"), default=t.loss)
        p.add_argument("--focal-gamma", type=float, default=t.focal_gamma)
        p.add_argument("--class-weighted", action="store_true", help="inverse-frequency weights")
        p.add_argument("--balanced-sampler", action="store_true", help="class-balanced batches")
        p.add_argument("--image-size", type=int, default=d.image_size)
        p.add_argument("--resize", choices=("squash", "center_crop"), default=d.resize)
        p.add_argument(
            "--target",
            choices=("mel", "dx"),
            default=d.target,
            help="mel: melanoma vs rest; dx: the 7 diagnoses",
        )
        p.add_argument("--prepared-dir", type=Path, help="where splits and the image cache go")
        p.add_argument("--metadata", default=d.metadata, help="metadata CSV in --data-dir")
        p.add_argument("--skip-corrupt", action="store_true")
        p.add_argument("--no-cache", action="store_true", help="do not cache decoded images")
        p.add_argument("--seed", type=int, default=tr.seed)
        p.add_argument("--device", default=tr.device, help="auto | cpu | cuda | cuda:N")
        p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=tr.amp)
        p.add_argument("--max-steps-per-epoch", type=int, help="cap batches per epoch (smoke)")
        p.add_argument("--force", action="store_true", help="start over instead of resuming")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    data = DataConfig(
        data_dir=str(args.data_dir),
        prepared_dir=str(args.prepared_dir) if args.prepared_dir else None,
        metadata=args.metadata,
        target=args.target,
        image_size=args.image_size,
        resize=args.resize,
        seed=args.seed,
        cache=not args.no_cache,
        balanced_sampler=args.balanced_sampler,
        skip_corrupt=args.skip_corrupt,
    )
    model = {
        "pretrained": args.pretrained,
        "loss": args.loss,
        "focal_gamma": args.focal_gamma,
        "class_weighted": args.class_weighted,
    }
    training = TrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        scheduler=args.scheduler,
        patience=args.patience,
        min_epochs=args.min_epochs,
        bn_momentum=args.bn_momentum,
        device=args.device,
        amp=args.amp,
        seed=args.seed,
        max_steps_per_epoch=args.max_steps_per_epoch,
    )
    if args.role == "teacher":
        return Config(
            data=data,
            teacher=TeacherConfig(architecture=args.architecture, **model),
            training=training,
        )
    return Config(
        data=data,
        student=StudentConfig(architecture=args.student_arch, **model),
        training=training,
        kd=KDConfig(temperature=args.temperature, alpha=args.alpha),
    )
