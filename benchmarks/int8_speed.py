"""Is INT8 faster than fp32, and as accurate? Side by side, per runtime, in one run.

    python -m benchmarks.int8_speed CKPT_OR_ARCH --calib-data D [--image-size 224] \
        [--threads 1,2] [--runs 300] [--formats tflite,executorch,onnx] \
        [--eval-data D --eval-samples N] [--out DIR [--reuse]] [--json PATH]

Exports fp32 and INT8 artefacts through the real exporters (``exporters.run.export_model``), then,
for each runtime and thread count, one fresh process loads both and times them interleaved
(warm-up, then alternating single calls; median, p10 and p90 of ``--runs`` calls each). Timed is
the runtime's own call on an input already in the artefact's dtype and layout (float->int8
quantization of the input is not timed; it is the app's job and costs the same for any model).
With ``--eval-data`` (a HAM10000 folder or a prepared split folder; the holdout split is used)
every artefact also runs on real images: ROC-AUC against the float model's, and agreement of the
shipped decision (``softmax(logits / T)[positive] >= threshold``). The parity gate is the
harness's: |delta ROC-AUC| <= ``benchmarks.parity.Tolerances.max_auc_delta``.
``CKPT_OR_ARCH`` is a checkpoint or a registry architecture (random weights: speed only).
Exit codes: 0 done and every INT8 artefact within the gate, 1 a gate failure or an export or
timing error, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency import LatencySettings

MARK = "EDGEKD_INT8_SPEED "
FORMATS = ("tflite", "executorch", "onnx")
EXIT_BAD_INPUT = 2


# More runs than the harness: the fp32/INT8 ratio is the figure, and it is interleaved.
RUNS, WARMUP = 300, 30


class UsageError(ValueError):
    """Bad command-line input; the message names the file or value and the problem."""


# --- child: time one runtime's fp32 and INT8 artefacts, interleaved ---------------------------


def time_interleaved(entries: list[dict[str, Any]], root: Path, threads: int,
                     settings: LatencySettings) -> dict[str, Any]:
    """Load every entry, warm each up, then alternate single timed calls between them."""
    from runtimes import load_runner

    size = int(entries[0]["preprocessing"]["size"])
    image = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    runners = [load_runner(e, root, threads) for e in entries]
    # The artefact's own dtype and layout, one contiguous buffer as an app hands it over.
    inputs = [r.prepare(image) for r in runners]
    for r, x in zip(runners, inputs, strict=True):
        for _ in range(settings.warmup):
            r.invoke(x)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(settings.runs):
        for i, (r, x) in enumerate(zip(runners, inputs, strict=True)):
            start = time.perf_counter()
            r.invoke(x)
            times[i].append((time.perf_counter() - start) * 1e3)
    out = {}
    for e, t in zip(entries, times, strict=True):
        p10, p50, p90 = np.percentile(t, [10, 50, 90])
        out[e["precision"]] = {"p50_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90),
                               "runs": len(t)}
    return out


def _child(args: argparse.Namespace) -> int:
    manifest = json.loads(args.manifest.read_text())
    entries = [a for a in manifest["artifacts"] if a["format"] == args.child]
    settings = LatencySettings(runs=args.runs, warmup=args.warmup)
    try:
        result = {"status": "ok", **time_interleaved(entries, args.manifest.parent,
                                                     args.threads_one, settings)}
    except Exception as exc:
        result = {"status": f"error: {type(exc).__name__}: {exc}"}
    print(MARK + json.dumps(result), flush=True)
    return 0 if result["status"] == "ok" else 1


def time_isolated(manifest: Path, fmt: str, threads: int, settings: LatencySettings
                  ) -> dict[str, Any]:
    """``time_interleaved`` in a fresh process with the thread pools pinned to ``threads``."""
    from benchmarks.latency import run_child

    cmd = [sys.executable, "-m", "benchmarks.int8_speed", "--child", fmt, "--manifest",
           str(manifest), "--threads-one", str(threads), "--runs", str(settings.runs),
           "--warmup", str(settings.warmup)]
    return run_child(cmd, threads, settings.timeout_s, "timing", MARK)


# --- parent: model, export, parity --------------------------------------------------------------


def load_model(spec: str, image_size: int | None) -> tuple[Any, Any, bool]:
    """(eval model, ExportSettings, trained?) from a checkpoint path or an architecture name."""
    from exporters.base import ExportSettings
    from exporters.base import UsageError as ExportUsageError
    from exporters.job import load_settings
    from kd_core.data.transforms import Preprocessing
    from kd_core.deploy import Decision
    from kd_core.models import create_model, list_models

    path = Path(spec)
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise UsageError(f"{path}: checkpoint not found")
        try:
            model, cfg = load_settings(path, allow_uncalibrated=True)
        except ExportUsageError as exc:
            raise UsageError(str(exc)) from None
        if image_size is not None and image_size != cfg.preprocessing.size:
            cfg = replace(cfg, preprocessing=replace(cfg.preprocessing, size=image_size))
        return model, cfg, True
    if spec not in list_models():
        raise UsageError(f"{spec!r} is neither a checkpoint file nor an architecture "
                         f"({', '.join(list_models())})")
    cfg = ExportSettings(arch=spec, decision=Decision(("other", "melanoma"), 1, 1.0, 0.5),
                         preprocessing=Preprocessing(size=image_size or 224),
                         checkpoint_sha256="random-init")
    return create_model(spec, 2).eval(), cfg, False


def eval_images(source: Path, prep: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N x 3 x H x W float32, N labels: 1 = melanoma) from the holdout split of ``source``."""
    from kd_core.data.dataset import decode_images
    from kd_core.data.ham10000 import DataError, is_ham10000_dir, is_prepared_dir, load_split
    from kd_core.data.transforms import normalize

    if not source.is_dir():
        raise UsageError(f"{source}: evaluation folder not found")
    if is_ham10000_dir(source) and not is_prepared_dir(source):
        from kd_core.data.sources import resolve_prepared

        source = resolve_prepared(source)
    try:
        split = load_split(source, "holdout")
    except DataError as exc:
        raise UsageError(str(exc)) from None
    idx = np.arange(len(split))
    if 0 < n < len(split):
        idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    pixels = decode_images([split.paths[i] for i in idx], prep, desc="evaluation images")
    return normalize(pixels, prep), split.targets[idx]


def decisions(logits: np.ndarray, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(probability of the positive class at the shipped temperature, decision at threshold)."""
    z = logits / cfg.decision.temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    pos = p[:, cfg.decision.positive_index]
    return pos, pos >= cfg.decision.threshold


def parity_rows(model: Any, cfg: Any, manifest: Path, images: np.ndarray, labels: np.ndarray,
                formats: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per artefact of ``formats``: ROC-AUC, its delta to the float model, decision agreement,
    max |dlogit|."""
    import torch
    from sklearn.metrics import roc_auc_score

    from runtimes import load_runner

    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(images[i:i + 32])).double().numpy()
                              for i in range(0, len(images), 32)])
    ref_p, ref_d = decisions(ref, cfg)
    ref_auc = float(roc_auc_score(labels, ref_p))
    rows = {"torch_fp32": {"auc": ref_auc, "delta_auc": 0.0, "agreement": 1.0,
                           "max_abs_logit_diff": 0.0}}
    for entry in json.loads(manifest.read_text())["artifacts"]:
        if entry["format"] not in formats:
            continue
        logits = load_runner(entry, manifest.parent, 1).predict(images)
        p, d = decisions(logits, cfg)
        auc = float(roc_auc_score(labels, p))
        rows[entry["name"]] = {"auc": auc, "delta_auc": auc - ref_auc,
                               "agreement": float((d == ref_d).mean()),
                               "max_abs_logit_diff": float(np.abs(logits - ref).max())}
    return rows


# --- report -------------------------------------------------------------------------------------


def speed_table(timings: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (format, threads): fp32 and INT8 p50, their ratio (fp32 / INT8: > 1 is INT8
    faster) and the same ratio from the p10s (less sensitive to a busy host)."""
    rows = []
    for fmt, by_threads in timings.items():
        for threads, got in by_threads.items():
            row: dict[str, Any] = {"format": fmt, "threads": threads, "status": got["status"]}
            if got["status"] == "ok" and "fp32" in got and "int8" in got:
                f, q = got["fp32"], got["int8"]
                row.update(fp32_p50_ms=f["p50_ms"], int8_p50_ms=q["p50_ms"],
                           speedup_p50=f["p50_ms"] / q["p50_ms"],
                           speedup_p10=f["p10_ms"] / q["p10_ms"],
                           fp32_p90_ms=f["p90_ms"], int8_p90_ms=q["p90_ms"])
            rows.append(row)
    return rows


def print_report(rows: list[dict[str, Any]], manifest: dict[str, Any],
                 parity: dict[str, dict[str, Any]] | None, max_delta: float) -> None:
    print("\nlatency, one image (ms; speed-up = fp32 / INT8, > 1 means INT8 is faster)")
    print(f"{'runtime':<11} {'thr':>3} {'fp32 p50':>9} {'int8 p50':>9} {'speed-up':>9} "
          f"{'(p10)':>6} {'fp32 p90':>9} {'int8 p90':>9}")
    for r in rows:
        if "speedup_p50" not in r:
            print(f"{r['format']:<11} {r['threads']:>3}  {r['status']}")
            continue
        print(f"{r['format']:<11} {r['threads']:>3} {r['fp32_p50_ms']:9.3f} "
              f"{r['int8_p50_ms']:9.3f} {r['speedup_p50']:8.2f}x {r['speedup_p10']:5.2f}x "
              f"{r['fp32_p90_ms']:9.3f} {r['int8_p90_ms']:9.3f}")
    from exporters.int8 import graph_summary

    print("\nINT8 graphs")
    for e in manifest["artifacts"]:
        if e["precision"] == "int8":
            summary = graph_summary(e.get("graph_report"))
            print(f"  {e['name']:<36} {e['bytes'] / 1e6:5.2f} MB  {summary}")
    if parity is None:
        return
    print(f"\nparity on the holdout images (gate: |delta ROC-AUC| <= {max_delta})")
    for name, p in parity.items():
        verdict = "" if name == "torch_fp32" else (
            "  ok" if abs(p["delta_auc"]) <= max_delta else "  FAIL")
        print(f"  {name:<36} AUC {p['auc']:.4f}  delta {p['delta_auc']:+.4f}  "
              f"agreement {p['agreement']:.3f}  max|dlogit| {p['max_abs_logit_diff']:.3f}"
              f"{verdict}")


# --- CLI ------------------------------------------------------------------------------------------


def _ints(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_speed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="checkpoint (.pth) or architecture name")
    p.add_argument("--calib-data", type=Path, help="INT8 calibration images (see exporters.all)")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--threads", type=_ints, default=(1, 2), help="default: 1,2")
    p.add_argument("--runs", type=int, default=RUNS)
    p.add_argument("--warmup", type=int, default=WARMUP)
    p.add_argument("--eval-data", type=Path, help="HAM10000 or prepared folder (holdout split)")
    p.add_argument("--eval-samples", type=int, default=0, help="0: the whole holdout split")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=None, help="artefact folder (default: a temp one)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--reuse", action="store_true",
                   help="time the artefacts already in --out (skip the export)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--threads-one", type=int, default=1, help=argparse.SUPPRESS)
    return p


def _export(model: Any, cfg: Any, args: argparse.Namespace, formats: tuple[str, ...],
            out: Path) -> dict[str, Any]:
    from exporters.calibration_data import CalibrationDataError, load_calibration
    from exporters.run import export_model

    if args.calib_data is None:
        raise UsageError("INT8 needs real calibration images: pass --calib-data DIR")
    try:
        calib = load_calibration(args.calib_data, cfg.preprocessing, cfg.labels,
                                 args.calib_samples, args.seed)
    except CalibrationDataError as exc:
        raise UsageError(str(exc)) from None
    result = export_model(model, replace(cfg, calibration=calib), out, formats)
    if result.failures:
        raise RuntimeError("; ".join(f"{f.format} {f.precision}: {f.error}"
                                     for f in result.failures))
    manifest: dict[str, Any] = json.loads(result.manifest_path.read_text())
    return manifest


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from benchmarks.parity import Tolerances

    formats = tuple(f for f in args.formats.split(",") if f)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--formats: unknown {bad or 'none given'}; choose from {FORMATS}")
    model, cfg, trained = load_model(args.model, args.image_size)
    if args.eval_data is not None and not trained:
        print("note: random weights; parity figures mean little without a trained checkpoint")
    if args.reuse:
        if args.out is None or not (out / "manifest.json").is_file():
            raise UsageError("--reuse needs --out DIR with a manifest.json from an earlier run")
        manifest = json.loads((out / "manifest.json").read_text())
    else:
        manifest = _export(model, cfg, args, formats, out)
    settings = LatencySettings(runs=args.runs, warmup=args.warmup)
    timings = {f: {t: time_isolated(out / "manifest.json", f, t, settings)
                   for t in args.threads} for f in formats}
    parity = None
    if args.eval_data is not None:
        images, labels = eval_images(args.eval_data, cfg.preprocessing, args.eval_samples,
                                     args.seed)
        parity = parity_rows(model, cfg, out / "manifest.json", images, labels, formats)
    rows = speed_table(timings)
    max_delta = Tolerances().max_auc_delta
    print_report(rows, manifest, parity, max_delta)
    return {"model": args.model, "arch": cfg.arch, "image_size": cfg.preprocessing.size,
            "speed": rows, "parity": parity, "max_auc_delta": max_delta,
            "graph_reports": {e["name"]: e.get("graph_report") for e in manifest["artifacts"]},
            "recipes": {e["name"]: e.get("quantization_recipe") for e in manifest["artifacts"]
                        if e["precision"] == "int8"}}


def _failed(result: dict[str, Any]) -> bool:
    timing_error = any(r["status"] != "ok" for r in result["speed"])
    parity = result["parity"] or {}
    gate = any(abs(p["delta_auc"]) > result["max_auc_delta"] for p in parity.values())
    return timing_error or gate


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from kd_core.io import atomic_write_text

    args = build_parser().parse_args(argv)
    if args.child:
        return _child(args)
    try:
        if not args.model:
            raise UsageError("give a checkpoint or an architecture")
        if args.out is not None:
            result = run(args, args.out)
        else:
            with tempfile.TemporaryDirectory(prefix="edgekd-int8-") as tmp:
                result = run(args, Path(tmp))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 1 if _failed(result) else 0


if __name__ == "__main__":
    sys.exit(main())
