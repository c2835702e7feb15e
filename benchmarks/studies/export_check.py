"""Real-model export check: export a MobileNetV3 checkpoint to every format
(``exporters.run.export_checkpoint``, in this process), then run every artefact in its runtime
against torch on real HAM10000 holdout images.

    python -m benchmarks.studies.export_check --data ../shared/data/ham10000 \\
        [--arch mobilenet_v3_small] [--num-classes 2] [--checkpoint CKPT] \\
        [--out artifacts/export_check] [--images 200] [--formats tflite,executorch] \\
        [--val-data DIR --min-top1-agreement 0.99 --qat-steps N]

``exporters.all``'s INT8 repair and speed flags pass through (``--val-data`` runs the repair
ladder, which reads only the validation split; the parity images are holdout images).

Without ``--checkpoint`` it builds a random-init checkpoint whose BatchNorm statistics come from
real training images and whose head gives O(1) logits (a plain random init gives ~1e-7 logits,
which makes agreement figures meaningless), optionally fine-tuned ``--train-steps`` steps; it is
exported as uncalibrated. A random deep network is chaotic (tiny float differences grow layer by
layer), so its INT8 figures say little; a trained checkpoint (``--checkpoint``) gives the
meaningful ones.

Prints the export's wall and CPU time and per-format seconds, sizes (INT8 <= 2.0 MB for
mobilenet_v3_small), fp32 max |logit diff| vs torch, INT8 top-1 and decision agreement with
torch's fake-quantized (PT2E) model (ONNX INT8, quantized by ONNX Runtime, against the float
model) and, for every INT8 artefact, against the float model; Core ML is checked by spec
inspection at export. Writes ``export_check.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.inputs import BenchInputError, csv_list
from exporters.all import add_int8_arguments
from kd_core import cli

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from exporters.run import ExportOptions

log = logging.getLogger(__name__)
SIZE_LIMIT_MB = {"mobilenet_v3_small": 2.0}


def finetune(model: nn.Module, x: Any, y: Any, steps: int) -> None:
    """A few AdamW steps (batch 16) so the weights are shaped by data, not purely random."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            log.info("finetune step %d/%d: loss %.3f", step, steps, float(loss))
    model.eval()


def build_checkpoint(arch: str, num_classes: int, images: np.ndarray, out: Path,
                     targets: np.ndarray | None = None, steps: int = 0) -> Path:
    """Random weights, BatchNorm statistics from ``images``, head rescaled to logit std 3;
    then ``steps`` fine-tuning steps on (images, targets) when asked."""
    import torch
    from torch import nn

    from kd_core.checkpoint import BINARY_LABELS, DX_LABELS, save_checkpoint
    from kd_core.checkpoint import build_checkpoint as build
    from kd_core.data.transforms import Preprocessing
    from kd_core.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, num_classes)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0, 1.0 / math.sqrt(mod.in_features))
        elif isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None
    x = torch.from_numpy(images)
    model.train()
    with torch.no_grad():
        for batch in x.split(16):
            model(batch)
        model.eval()
        scale = 3.0 / float(torch.cat([model(b) for b in x.split(16)]).std())
        linears[-1].weight.mul_(scale)
        linears[-1].bias.mul_(scale)
    if steps and targets is not None:
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.momentum = 0.1
        finetune(model, x, torch.from_numpy(targets), steps)
    labels = BINARY_LABELS if num_classes == 2 else DX_LABELS
    return save_checkpoint(build(model, arch, labels, Preprocessing(size=224), temperature=1.3,
                                 threshold=0.3), out)


def study_checkpoint(args: argparse.Namespace, prepared: Path, out: Path) -> Path:
    """``--checkpoint``, or a data-shaped random one built from training images."""
    from exporters.calibration_data import balanced_indices
    from kd_core.data.dataset import decode_images
    from kd_core.data.ham10000 import load_split
    from kd_core.data.transforms import Preprocessing, normalize

    if args.checkpoint is not None:
        return Path(args.checkpoint)
    prep = Preprocessing(size=224)
    train = load_split(prepared, "train")
    y = train.labels_for("mel" if args.num_classes == 2 else "dx")
    idx = balanced_indices(y, 512 if args.train_steps else 128, seed=1)
    images = normalize(decode_images([train.paths[i] for i in idx], prep, "images"), prep)
    return build_checkpoint(args.arch, args.num_classes, images, out / "checkpoint.pth", y[idx],
                            args.train_steps)


def export_options(args: argparse.Namespace) -> ExportOptions:
    """The export's options from the flags (its checks run before any work: ``check_args``)."""
    from exporters.all import int8_options
    from exporters.run import ExportOptions

    return ExportOptions(formats=args.formats, precisions=("fp32", "int8"),
                         calib_data=args.data, calib_samples=args.calib_samples, seed=42,
                         jobs=1, threads=args.threads,
                         allow_uncalibrated=args.checkpoint is None, **int8_options(args))


def export(ckpt: Path, out: Path, options: ExportOptions) -> tuple[Any, float, float]:
    """(ExportResult, wall seconds, CPU seconds) of one in-process export of every format.
    One process (jobs=1), so every artefact comes back with its torch reference."""
    import resource
    import time

    from exporters.run import export_checkpoint

    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = export_checkpoint(ckpt, out, options)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return result, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def parity_images(prepared: Path, n: int, prep: Any) -> np.ndarray:
    import numpy as np

    from kd_core.data.dataset import decode_images
    from kd_core.data.ham10000 import load_split
    from kd_core.data.transforms import normalize

    split = load_split(prepared, "holdout")
    idx = np.random.default_rng(7).permutation(len(split))[:n]
    return normalize(decode_images([split.paths[i] for i in idx], prep, "parity images"), prep)


def agreement(got: np.ndarray, want: np.ndarray, decision: Any) -> dict[str, Any]:
    import numpy as np

    from kd_core.deploy import compare_outputs

    same = decision.decide(got) == decision.decide(want)
    return {**compare_outputs(got, want), "decision_agreement": float(np.mean(same))}


def torch_outputs(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """A torch reference module on each image (batch 1, as the artefacts were traced)."""
    import torch

    with torch.no_grad():
        rows = [module(torch.from_numpy(img[None].copy()))[0] for img in x]
    return torch.stack(rows).double().numpy()


def parity(ckpt: Path, result: Any, out: Path, x: np.ndarray) -> list[dict[str, Any]]:
    """fp32 artefacts vs the float checkpoint; INT8 ones vs their own torch reference (the
    kernels' parity) and vs the float checkpoint (what quantization cost)."""
    from kd_core.deploy import load_manifest
    from runtimes import load_runner
    from runtimes.torch_eager import checkpoint_entry

    manifest = load_manifest(out)
    float_logits = load_runner(checkpoint_entry(ckpt), ckpt.parent, 1).predict(x)
    rows = []
    for entry in manifest.artifacts:
        if entry.format == "coreml":
            continue  # predicts on macOS only; checked by spec inspection at export
        got = load_runner(entry, out, 1).predict(x)
        if entry.precision == "fp32":
            rows.append({"name": entry.name, "vs": "torch float",
                         **agreement(got, float_logits, manifest.decision)})
            continue
        art = next((a for a in result.artifacts if a.name == entry.name), None)
        if art is None or art.reference is None:
            continue
        vs = "torch float" if entry.format == "onnx" else "torch PT2E fake-quantized"
        rows.append({"name": entry.name, "vs": vs,
                     **agreement(got, torch_outputs(art.reference, x), manifest.decision)})
        if vs != "torch float":
            rows.append({"name": entry.name, "vs": "torch float",
                         **agreement(got, float_logits, manifest.decision)})
    return rows


def report_lines(sizes: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    verdict = {None: "", True: "size ok", False: "TOO BIG"}
    lines = [f"{r['name']:<40} {r['MB']:6.2f} MB {r['seconds'] or 0:6.1f} s "
             f"{verdict[r['within_limit']]}" for r in sizes]
    lines += [f"{r['name']:<40} vs {r['vs']:<26} max|diff| {r['max_abs_diff']:.3g}  "
              f"top-1 agreement {100 * r['top1_agreement']:.1f} %  "
              f"decision agreement {100 * r['decision_agreement']:.1f} %" for r in rows]
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.studies.export_check", (__doc__ or "").split("\n\n")[0],
                   "Exit 1: an export failed.")
    p.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"),
                   help="HAM10000 or prepared split folder")
    p.add_argument("--arch", default="mobilenet_v3_small", help="architecture")
    p.add_argument("--num-classes", type=int, default=2, help="2 (melanoma) or 7 (dx)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a trained checkpoint (default: a data-shaped random one)")
    p.add_argument("--out", type=Path, default=Path("artifacts/export_check"),
                   help="output folder")
    p.add_argument("--images", type=int, default=200, help="holdout images for parity")
    p.add_argument("--calib-samples", type=int, default=256, help="INT8 calibration images")
    p.add_argument("--train-steps", type=int, default=0,
                   help="without --checkpoint: fine-tune the random model this many steps")
    p.add_argument("--formats", type=csv_list, default=None,
                   help="comma-separated formats (default: every registered one)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the export")
    add_int8_arguments(p)  # exporters.all's repair and speed flags
    return p


def check_args(args: argparse.Namespace) -> ExportOptions:
    """The export's options, every flag checked (``BadInput``) before any work."""
    from benchmarks.inputs import check_counts, check_known
    from exporters.run import check_options
    from kd_core.io import check_output_dir
    from kd_core.models import list_models

    check_counts(images=(args.images, 1), calib_samples=(args.calib_samples, 1),
                 train_steps=(args.train_steps, 0), num_classes=(args.num_classes, 2),
                 threads=(args.threads, 1))
    if args.num_classes not in (2, 7):
        raise BenchInputError(f"--num-classes must be 2 or 7, got {args.num_classes}")
    check_known("--arch", (args.arch,), list_models())
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise BenchInputError(f"--checkpoint {args.checkpoint}: checkpoint not found")
    check_output_dir(args.out, "--out")
    options = export_options(args)
    check_options(options, args.out / f"{args.arch}_{args.num_classes}" / "export")
    return options


def _main(args: argparse.Namespace) -> int:
    import torch

    from kd_core.data.ham10000 import DataError
    from kd_core.data.sources import resolve_prepared
    from kd_core.deploy import load_manifest
    from kd_core.io import write_json

    options = check_args(args)
    torch.set_num_threads(args.threads)  # default 1: no oversubscription on a shared machine
    out = args.out / f"{args.arch}_{args.num_classes}"
    try:
        prepared = resolve_prepared(args.data)
    except DataError as exc:
        raise BenchInputError(f"--data: {exc}") from None
    ckpt = study_checkpoint(args, prepared, out)
    result, seconds, cpu = export(ckpt, out / "export", options)
    print(f"export: {len(result.artifacts)} written, {len(result.failures)} failed; "
          f"{seconds:.1f} s wall, {cpu:.1f} s CPU")
    manifest = load_manifest(out / "export")
    limit = SIZE_LIMIT_MB.get(args.arch)
    sizes = [{"name": e.name, "MB": (e.bytes or 0) / 1e6, "seconds": e.export_seconds,
              "within_limit": None if limit is None or e.precision in ("fp32", "fp16")
              else (e.bytes or 0) / 1e6 <= limit} for e in manifest.artifacts]
    x = parity_images(prepared, args.images, manifest.preprocessing)
    rows = parity(ckpt, result, out / "export", x)
    write_json(out / "export_check.json", {
        "arch": args.arch, "num_classes": args.num_classes, "export_ok": result.ok,
        "export_seconds": round(seconds, 1), "export_cpu_seconds": round(cpu, 1),
        "checkpoint": str(ckpt), "images": len(x), "sizes": sizes, "parity": rows,
        "failures": list(manifest.failures)})
    print("\n".join(report_lines(sizes, rows)))
    return cli.EXIT_OK if result.ok else cli.EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
