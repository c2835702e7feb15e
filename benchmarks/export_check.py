"""Real-model export check: ``python -m exporters.all`` on a MobileNetV3 checkpoint, then every
artefact in its runtime against torch on real HAM10000 holdout images.

    python -m benchmarks.export_check --data ../shared/data/ham10000 [--arch mobilenet_v3_small]
        [--num-classes 2] [--checkpoint CKPT] [--out artifacts/export_check] [--images 200]

Without ``--checkpoint`` it builds a random-init checkpoint whose BatchNorm statistics come from
real training images and whose head gives O(1) logits (a plain random init gives ~1e-7 logits,
which makes agreement figures meaningless), optionally fine-tuned ``--train-steps`` steps. A
random deep network is chaotic (tiny float differences grow layer by layer), so its INT8 figures
say little; a trained checkpoint (``--checkpoint``) gives the meaningful ones.

Prints the CLI's wall and CPU time and per-format seconds, sizes (INT8 <= 2.0 MB for
mobilenet_v3_small), fp32 max |logit diff| vs torch, INT8 top-1 and decision agreement with
torch's fake-quantized (PT2E) model (ONNX INT8, quantized by ONNX Runtime, against the float
model); Core ML is checked by spec inspection at export. Writes ``export_check.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SIZE_LIMIT_MB = {"mobilenet_v3_small": 2.0}


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """A few AdamW steps (batch 16) so the weights are shaped by data, not purely random."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            print(f"finetune step {step}/{steps}: loss {float(loss):.3f}", flush=True)
    model.eval()


def build_checkpoint(arch: str, num_classes: int, images: np.ndarray, out: Path,
                     targets: np.ndarray | None = None, steps: int = 0) -> Path:
    """Random weights, BatchNorm statistics from ``images``, head rescaled to logit std 3;
    then ``steps`` fine-tuning steps on (images, targets) when asked."""
    from kd_core.checkpoint import BINARY_LABELS, DX_LABELS, build_checkpoint, save_checkpoint
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
    ckpt = build_checkpoint(model, arch, labels, Preprocessing(size=224),
                            temperature=1.3, threshold=0.3)
    return save_checkpoint(ckpt, out)


def run_cli(ckpt: Path, out: Path, data: Path, samples: int) -> tuple[float, float, str, int]:
    """(wall seconds, CPU seconds, output, exit code) of ``python -m exporters.all``."""
    import resource

    cmd = [sys.executable, "-m", "exporters.all", str(ckpt), "--out", str(out),
           "--calib-data", str(data), "--calib-samples", str(samples)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout + proc.stderr, proc.returncode


def parity_images(prepared: Path, n: int, prep: Any) -> np.ndarray:
    from kd_core.data.dataset import decode_images
    from kd_core.data.ham10000 import load_split
    from kd_core.data.transforms import normalize

    split = load_split(prepared, "holdout")
    idx = np.random.default_rng(7).permutation(len(split))[:n]
    return normalize(decode_images([split.paths[i] for i in idx], prep, "parity images"), prep)


def decisions(logits: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
    """The app's decision: softmax(logits / T)[positive] >= threshold."""
    z = logits / manifest["temperature"]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return np.asarray(p[:, manifest["positive_index"]] >= manifest["threshold"])


def agreement(got: np.ndarray, want: np.ndarray, manifest: dict[str, Any]) -> dict[str, Any]:
    from kd_core.deploy import compare_outputs

    same = decisions(got, manifest) == decisions(want, manifest)
    return {**compare_outputs(got, want), "decision_agreement": float(same.mean())}


def run_artefact(entry: Any, root: Path, x: np.ndarray) -> np.ndarray:
    from runtimes import load_runner

    return load_runner(entry, root).predict(x)


def fp32_parity(manifest: dict[str, Any], out: Path, model: nn.Module, x: np.ndarray
                ) -> list[dict[str, Any]]:
    from exporters.finish import reference_outputs

    want = reference_outputs(model, x)
    rows = []
    for entry in manifest["artifacts"]:
        if entry["precision"] != "fp32":
            continue
        got = run_artefact(entry, out, x)
        rows.append({"name": entry["name"], "vs": "torch float",
                     **agreement(got, want, manifest)})
    return rows


def int8_parity(ckpt_path: Path, manifest: dict[str, Any], out: Path, data: Path, samples: int,
                x: np.ndarray) -> list[dict[str, Any]]:
    """Re-export INT8 in-process (same calibration) to get torch's fake-quantized reference;
    the CLI's artefact is the same file when the sha256 matches."""
    from exporters import get_exporter
    from exporters.calibration_data import load_calibration
    from exporters.finish import reference_outputs
    from exporters.job import load_settings
    from kd_core.io import sha256_file

    model, cfg = load_settings(ckpt_path, ("int8",), allow_uncalibrated=True)
    calib = load_calibration(data, cfg.preprocessing, cfg.labels, samples, 42)
    cfg = replace(cfg, calibration=calib, precisions=("int8",))
    shas = {a["name"]: a["sha256"] for a in manifest["artifacts"]}
    scratch = out.parent / "int8_reference"
    example = (torch.from_numpy(calib.normalized()[:1]),)
    rows = []
    for fmt in ("tflite", "executorch", "onnx"):
        for art in get_exporter(fmt).export(model, example, scratch, cfg):
            got = run_artefact(art.entry, scratch, x)
            assert art.reference is not None
            want = reference_outputs(art.reference, x)
            vs = "torch float" if fmt == "onnx" else "torch PT2E fake-quantized"
            rows.append({"name": art.name, "vs": vs, **agreement(got, want, manifest),
                         "same_file_as_cli": sha256_file(art.path) == shas.get(art.name)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from kd_core.data.dataset import decode_images
    from kd_core.data.ham10000 import load_split, prepare
    from kd_core.data.transforms import Preprocessing, normalize
    from kd_core.train import default_prepared_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("artifacts/export_check"))
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--train-steps", type=int, default=0,
                   help="without --checkpoint: fine-tune the random model this many steps")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the CLI: no thread oversubscription on a shared machine
    out = args.out / f"{args.arch}_{args.num_classes}"
    prepared = prepare(args.data, default_prepared_dir(args.data), verbose=False)
    prep = Preprocessing(size=224)
    ckpt = args.checkpoint
    if ckpt is None:
        from exporters.calibration_data import balanced_indices

        train = load_split(prepared, "train")
        y = train.labels_for("mel" if args.num_classes == 2 else "dx")
        idx = balanced_indices(y, 512 if args.train_steps else 128, seed=1)
        images = normalize(decode_images([train.paths[i] for i in idx], prep, "images"), prep)
        ckpt = build_checkpoint(args.arch, args.num_classes, images, out / "checkpoint.pth",
                                y[idx], args.train_steps)
    seconds, cpu, log, rc = run_cli(ckpt, out / "export", args.data, args.calib_samples)
    print(log)
    print(f"python -m exporters.all: exit {rc}, {seconds:.1f} s wall, {cpu:.1f} s CPU")
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    from kd_core.checkpoint import load_model

    model, meta = load_model(ckpt)
    prep = Preprocessing.from_dict(meta["preprocessing"])  # a checkpoint's own size
    x = parity_images(prepared, args.images, prep)
    limit = SIZE_LIMIT_MB.get(args.arch)
    sizes = [{"name": a["name"], "MB": a["bytes"] / 1e6, "seconds": a["export_seconds"],
              "within_limit": None if limit is None or a["precision"] in ("fp32", "fp16")
              else a["bytes"] / 1e6 <= limit} for a in manifest["artifacts"]]
    parity = fp32_parity(manifest, out / "export", model, x)
    parity += int8_parity(ckpt, manifest, out / "export", args.data, args.calib_samples, x)
    report = {"arch": args.arch, "num_classes": args.num_classes, "cli_exit": rc,
              "cli_seconds": round(seconds, 1), "cli_cpu_seconds": round(cpu, 1),
              "checkpoint": str(ckpt), "images": len(x), "sizes": sizes,
              "parity": parity, "failures": manifest.get("failures", [])}
    (out / "export_check.json").write_text(json.dumps(report, indent=2) + "\n")
    verdict = {None: "", True: "size ok", False: "TOO BIG"}
    for row in sizes:
        print(f"{row['name']:<40} {row['MB']:6.2f} MB {row['seconds']:6.1f} s "
              f"{verdict[row['within_limit']]}")
    for row in parity:
        print(f"{row['name']:<40} vs {row['vs']:<26} max|diff| {row['max_abs_diff']:.3g}  "
              f"top-1 agreement {100 * row['top1_agreement']:.1f} %  "
              f"decision agreement {100 * row['decision_agreement']:.1f} %"
              + (f"  same file as CLI: {row['same_file_as_cli']}" if "same_file_as_cli" in row
                 else ""))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
