"""Training throughput: images/s of the teacher step, the student step and the KD step.

    python -m benchmarks.studies.train_speed [--device auto] [--image-size 224] [--batch-size 128]

Runs the real training code path (in-memory uint8 images, on-device augmentation, AdamW,
one-cycle, bf16 autocast and channels_last on CUDA) on synthetic pixels, after a warm-up, and
prints one row per step kind. A figure-printing script, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time

from kd_core import cli


def measure(kind: str, args: argparse.Namespace) -> float:
    import torch

    from kd_core.data.dataset import Batches
    from kd_core.data.transforms import Preprocessing
    from kd_core.engine import make_scheduler, resolve_runtime, train_one_epoch
    from kd_core.losses import distill_step, make_loss
    from kd_core.models import create_model

    rt = resolve_runtime(args.device, args.amp)
    prep = Preprocessing(size=args.image_size)
    n = args.batch_size * args.steps
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, args.image_size, args.image_size), dtype=torch.uint8,
                           generator=gen)
    labels = (torch.rand(n, generator=gen) < 0.11).long()
    batches = Batches(images, labels, prep, batch_size=args.batch_size, device=rt.device,
                      train=True, seed=0)
    arch = args.teacher if kind == "teacher" else args.student
    model = create_model(arch, 2).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    hard = make_loss("focal", 2.0)
    teacher = None
    if kind == "kd":
        teacher = create_model(args.teacher, 2).to(rt.device).eval()
        if rt.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)

    def step(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if teacher is not None:
            return distill_step(m, teacher, x, y, 2.0, 0.5, lambda s, t: hard(s.float(), t))
        logits = m(x)
        return {"loss": hard(logits.float(), y)}

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = make_scheduler("onecycle", opt, 1e-3, 10 * len(batches))
    train_one_epoch(model, step, batches, opt, sched, rt, desc=f"{kind} warm-up")
    rates = [train_one_epoch(model, step, batches, opt, sched, rt, desc=kind)["images_per_s"]
             for _ in range(args.repeats)]
    return sorted(rates)[len(rates) // 2]


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.studies.train_speed", __doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision")
    p.add_argument("--teacher", default="resnet34", help="teacher architecture")
    p.add_argument("--student", default="mobilenet_v3_small", help="student architecture")
    p.add_argument("--image-size", type=int, default=224, help="pixels")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--steps", type=int, default=20, help="batches per timed pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; the median is printed")
    p.add_argument("--kinds", default="teacher,student,kd", help="steps to time")
    return p


def _main(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.inputs import check_counts, check_known, csv_list
    from kd_core.engine import resolve_runtime
    from kd_core.models import list_models

    check_counts(image_size=(args.image_size, 16), batch_size=(args.batch_size, 1),
                 steps=(args.steps, 1), repeats=(args.repeats, 1))
    check_known("--kinds", csv_list(args.kinds), ("teacher", "student", "kd"))
    check_known("--teacher", (args.teacher,), list_models())
    check_known("--student", (args.student,), list_models())
    rt = resolve_runtime(args.device, args.amp)
    name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else (
        f"CPU, {torch.get_num_threads()} threads")
    print(f"device: {name}; {args.image_size}px, batch {args.batch_size}, "
          f"amp {rt.amp_dtype}, channels_last {rt.channels_last}")
    print(f"{'step':<10}{'model':<40}{'images/s':>10}")
    for kind in csv_list(args.kinds):
        start = time.perf_counter()
        rate = measure(kind, args)
        model = {"teacher": args.teacher, "student": args.student,
                 "kd": f"{args.student} <- {args.teacher}"}[kind]
        print(f"{kind:<10}{model:<40}{rate:>10.0f}   ({time.perf_counter() - start:.0f} s)")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
