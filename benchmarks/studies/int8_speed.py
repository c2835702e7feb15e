"""Is INT8 faster than fp32, and as accurate? Side by side, per runtime, in one run.

    python -m benchmarks.studies.int8_speed CKPT_OR_ARCH --calib-data D [--image-size 224] \\
        [--threads 1,2] [--runs 300] [--formats tflite,executorch,onnx] \\
        [--eval-data D --eval-samples N] [--out DIR [--reuse]] [--json PATH]

Exports fp32 and INT8 artefacts through the exporters' library (``exporters.run``), then, for
each runtime and thread count, one fresh process loads both and times them interleaved (warm-up,
then alternating single calls; median, p10 and p90 of ``--runs`` calls each). Timed is the
runtime's own call on an input already in the artefact's dtype and layout (float->int8
quantization of the input is not timed; it is the app's job and costs the same for any model).
With ``--eval-data`` (a HAM10000 folder or a prepared split folder; the holdout split is used)
every artefact also runs on real images: ROC-AUC against the float model's, and agreement of the
shipped decision (``kd_core.deploy.Decision``). The parity gate is the harness's:
|delta ROC-AUC| <= ``benchmarks.parity.Tolerances.max_auc_delta``. ``CKPT_OR_ARCH`` is a
checkpoint or a registry architecture (random weights, exported uncalibrated: speed only).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from benchmarks.inputs import BenchInputError, csv_list, thread_list
from exporters.calibration_data import DEFAULT_SAMPLES
from kd_core import cli

log = logging.getLogger(__name__)
MARK = "EDGEKD_INT8_SPEED "
FORMATS = ("tflite", "executorch", "onnx")
RUNS, WARMUP = 300, 30  # more runs than the harness: the fp32/INT8 ratio is the figure


# --- child: time one runtime's fp32 and INT8 artefacts, interleaved ---------------------------


def time_interleaved(entries: list[Any], root: Path, threads: int, runs: int, warmup: int
                     ) -> dict[str, Any]:
    """Load every entry, warm each up, then alternate single timed calls between them
    (``exporters.int8.profile.time_interleaved``, the loop the exporters' speed plans use)."""
    import numpy as np

    from exporters.int8.profile import time_interleaved as interleave
    from runtimes import load_runner

    size = entries[0].preprocessing.size
    image = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    runners = [load_runner(e, root, threads) for e in entries]
    times = interleave(runners, image, runs, warmup)  # on the artefact's own dtype and layout
    out = {}
    for e, t in zip(entries, times, strict=True):
        p10, p50, p90 = np.percentile(t, [10, 50, 90])
        out[e.precision] = {"p50_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90),
                            "runs": len(t)}
    return out


def _child(args: argparse.Namespace) -> int:
    from kd_core.deploy import load_manifest

    entries = [e for e in load_manifest(args.manifest).artifacts if e.format == args.child]
    try:
        result = {"status": "ok", **time_interleaved(entries, args.manifest.parent,
                                                     args.threads_one, args.runs, args.warmup)}
    except Exception as exc:
        result = {"status": f"error: {type(exc).__name__}: {exc}"}
    print(MARK + json.dumps(result), flush=True)
    return cli.EXIT_OK if result["status"] == "ok" else cli.EXIT_FAILED


def time_isolated(manifest: Path, fmt: str, threads: int, runs: int, warmup: int
                  ) -> dict[str, Any]:
    """``time_interleaved`` in a fresh process with the thread pools pinned to ``threads``."""
    from benchmarks.latency import LatencySettings, run_child

    cmd = [sys.executable, "-m", "benchmarks.studies.int8_speed", "--child", fmt,
           "--manifest", str(manifest), "--threads-one", str(threads), "--runs", str(runs),
           "--warmup", str(warmup)]
    return run_child(cmd, threads, LatencySettings.timeout_s, "timing", MARK)


# --- parent: checkpoint, export, parity ---------------------------------------------------------


def study_checkpoint(spec: str, image_size: int | None, out: Path) -> tuple[Path, bool]:
    """(checkpoint, trained?) from a checkpoint path or an architecture name (random weights,
    written to ``out``); ``image_size`` other than the checkpoint's: a resized copy in ``out``."""
    from kd_core.checkpoint import BINARY_LABELS, build_checkpoint, load_checkpoint
    from kd_core.checkpoint import save_checkpoint as save
    from kd_core.data.transforms import Preprocessing
    from kd_core.models import create_model, list_models

    path = Path(spec)
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise BenchInputError(f"{path}: checkpoint not found")
        if image_size is None:
            return path, True
        ckpt = load_checkpoint(path)
        ckpt["preprocessing"] = {**ckpt["preprocessing"], "size": image_size}
        return save(ckpt, out / f"{path.stem}_{image_size}px.pth"), True
    if spec not in list_models():
        raise BenchInputError(f"{spec!r} is neither a checkpoint file nor an architecture "
                              f"({', '.join(list_models())})")
    ckpt = build_checkpoint(create_model(spec, 2).eval(), spec, BINARY_LABELS,
                            Preprocessing(size=image_size or 224))
    return save(ckpt, out / f"{spec}_random.pth"), False


def export(ckpt: Path, trained: bool, args: argparse.Namespace, formats: tuple[str, ...],
           out: Path) -> None:
    from exporters.run import ExportOptions, export_checkpoint

    if args.calib_data is None:
        raise BenchInputError("INT8 needs real calibration images: pass --calib-data DIR")
    options = ExportOptions(formats=formats, precisions=("fp32", "int8"),
                            calib_data=args.calib_data, calib_samples=args.calib_samples,
                            seed=args.seed, jobs=1, threads=1, allow_uncalibrated=not trained,
                            speed_plan=args.speed_plan)
    result = export_checkpoint(ckpt, out, options)
    if not result.ok:
        raise cli.JobFailed("; ".join(f"{f.format} {f.precision}: {f.error}"
                                      for f in result.failures))


def eval_images(source: Path, prep: Any, n: int, seed: int) -> tuple[Any, Any]:
    """(N x 3 x H x W float32, N labels: 1 = melanoma) from the holdout split of ``source``."""
    import numpy as np

    from kd_core.data.dataset import decode_images
    from kd_core.data.ham10000 import DataError, load_split
    from kd_core.data.sources import resolve_prepared
    from kd_core.data.transforms import normalize

    try:
        split = load_split(resolve_prepared(source), "holdout")
    except DataError as exc:
        raise BenchInputError(f"--eval-data: {exc}") from None
    idx = np.arange(len(split))
    if 0 < n < len(split):
        idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    pixels = decode_images([split.paths[i] for i in idx], prep, desc="evaluation images")
    return normalize(pixels, prep), split.targets[idx]


def parity_rows(ckpt: Path, manifest: Any, root: Path, images: Any, labels: Any,
                formats: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per artefact of ``formats``: ROC-AUC, its delta to the float model's, agreement of the
    shipped decisions, max |dlogit| (``kd_core.deploy.compare_outputs``)."""
    from kd_core.deploy import compare_outputs
    from kd_core.metrics import roc_auc
    from runtimes import load_runner
    from runtimes.torch_eager import checkpoint_entry

    ref_entry = checkpoint_entry(ckpt)
    ref = load_runner(ref_entry, ckpt.parent, 1).predict(images)
    ref_auc = roc_auc(labels, ref_entry.decision.positive_probability(ref))
    rows = {"torch_fp32": {"auc": ref_auc, "delta_auc": 0.0, "agreement": 1.0,
                           "max_abs_logit_diff": 0.0}}
    for entry in manifest.artifacts:
        if entry.format not in formats:
            continue
        logits = load_runner(entry, root, 1).predict(images)
        auc = roc_auc(labels, entry.decision.positive_probability(logits))
        same = entry.decision.decide(logits) == ref_entry.decision.decide(ref)
        rows[entry.name] = {"auc": auc, "delta_auc": auc - ref_auc,
                            "agreement": float(same.mean()),
                            "max_abs_logit_diff": compare_outputs(logits, ref)["max_abs_diff"]}
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


def report_lines(rows: list[dict[str, Any]], manifest: Any,
                 parity: dict[str, dict[str, Any]] | None, max_delta: float) -> list[str]:
    from exporters.int8.report import graph_summary

    lines = ["", "latency, one image (ms; speed-up = fp32 / INT8, > 1 means INT8 is faster)",
             f"{'runtime':<11} {'thr':>3} {'fp32 p50':>9} {'int8 p50':>9} {'speed-up':>9} "
             f"{'(p10)':>6} {'fp32 p90':>9} {'int8 p90':>9}"]
    for r in rows:
        lines.append(f"{r['format']:<11} {r['threads']:>3}  {r['status']}" if "speedup_p50"
                     not in r else
                     f"{r['format']:<11} {r['threads']:>3} {r['fp32_p50_ms']:9.3f} "
                     f"{r['int8_p50_ms']:9.3f} {r['speedup_p50']:8.2f}x {r['speedup_p10']:5.2f}x "
                     f"{r['fp32_p90_ms']:9.3f} {r['int8_p90_ms']:9.3f}")
    lines += ["", "INT8 graphs"] + [
        f"  {e.name:<36} {(e.bytes or 0) / 1e6:5.2f} MB  {graph_summary(e.graph_report)}"
        for e in manifest.artifacts if e.precision == "int8"]
    if parity is not None:
        lines += ["", f"parity on the holdout images (gate: |delta ROC-AUC| <= {max_delta})"]
        for name, p in parity.items():
            verdict = "" if name == "torch_fp32" else (
                "  ok" if abs(p["delta_auc"]) <= max_delta else "  FAIL")
            lines.append(f"  {name:<36} AUC {p['auc']:.4f}  delta {p['delta_auc']:+.4f}  "
                         f"agreement {p['agreement']:.3f}  max|dlogit| "
                         f"{p['max_abs_logit_diff']:.3f}{verdict}")
    return lines


# --- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from exporters.run import DEFAULT_SPEED_PLAN

    p = cli.parser("python -m benchmarks.studies.int8_speed", (__doc__ or "").split("\n\n")[0],
                   "Exit 1: an INT8 artefact is outside the gate, or an export or timing failed.")
    p.add_argument("model", nargs="?", help="checkpoint (.pth) or architecture name")
    p.add_argument("--calib-data", type=Path, help="INT8 calibration images (see exporters.all)")
    p.add_argument("--calib-samples", type=int, default=DEFAULT_SAMPLES,
                   help="INT8 calibration images")
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--formats", type=csv_list, default=",".join(FORMATS),
                   help="runtimes to compare")
    p.add_argument("--threads", type=thread_list, default="1,2", help="thread counts")
    p.add_argument("--runs", type=int, default=RUNS, help="timed calls per model")
    p.add_argument("--warmup", type=int, default=WARMUP, help="discarded calls per model")
    p.add_argument("--eval-data", type=Path, help="HAM10000 or prepared folder (holdout split)")
    p.add_argument("--eval-samples", type=int, default=0, help="0: the whole holdout split")
    p.add_argument("--seed", type=int, default=42, help="calibration and sample seed")
    p.add_argument("--out", type=Path, default=None, help="artefact folder (default: a temp one)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--speed-plan", default=DEFAULT_SPEED_PLAN, metavar="auto|measure|off|FILE",
                   help="the INT8 exports' per-site speed plan (as exporters.all --speed-plan)")
    p.add_argument("--reuse", action="store_true",
                   help="time the artefacts already in --out (skip the export)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--threads-one", type=int, default=1, help=argparse.SUPPRESS)
    return p


def check_args(args: argparse.Namespace) -> None:
    from benchmarks.inputs import check_counts, check_known, check_threads
    from kd_core.io import check_output_dir

    if not args.model:
        raise BenchInputError("give a checkpoint or an architecture")
    check_known("--formats", args.formats, FORMATS)
    check_threads(args.threads)
    check_counts(runs=(args.runs, 1), warmup=(args.warmup, 0), image_size=(args.image_size, 16),
                 calib_samples=(args.calib_samples, 1), eval_samples=(args.eval_samples, 0))
    if args.reuse and args.out is None:
        raise BenchInputError("--reuse needs --out DIR holding an earlier export")
    if args.out is not None:
        check_output_dir(args.out, "--out")
    if args.json is not None:
        check_output_dir(args.json.parent, "--json")


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from benchmarks.parity import Tolerances
    from kd_core.deploy import load_manifest, manifest_path

    ckpt, trained = study_checkpoint(args.model, args.image_size, out)
    if args.eval_data is not None and not trained:
        log.warning("note: random weights; parity figures mean little without a trained "
                    "checkpoint")
    if not args.reuse:
        export(ckpt, trained, args, args.formats, out)
    manifest = load_manifest(out)
    timings = {f: {t: time_isolated(manifest_path(out), f, t, args.runs, args.warmup)
                   for t in args.threads} for f in args.formats}
    parity = None
    if args.eval_data is not None:
        images, labels = eval_images(args.eval_data, manifest.preprocessing, args.eval_samples,
                                     args.seed)
        parity = parity_rows(ckpt, manifest, out, images, labels, args.formats)
    rows, max_delta = speed_table(timings), Tolerances().max_auc_delta
    print("\n".join(report_lines(rows, manifest, parity, max_delta)))
    return {"model": args.model, "image_size": manifest.preprocessing.size, "speed": rows,
            "parity": parity, "max_auc_delta": max_delta,
            "graph_reports": {e.name: e.graph_report for e in manifest.artifacts},
            "recipes": {e.name: e.quantization_recipe for e in manifest.artifacts
                        if e.precision == "int8"}}


def failed(result: dict[str, Any]) -> bool:
    timing_error = any(r["status"] != "ok" for r in result["speed"])
    gate = any(abs(p["delta_auc"]) > result["max_auc_delta"]
               for p in (result["parity"] or {}).values())
    return timing_error or gate


def _main(args: argparse.Namespace) -> int:
    import tempfile

    from kd_core.io import write_json

    if args.child:
        return _child(args)
    check_args(args)
    if args.out is not None:
        result = run(args, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="edgekd-int8-") as tmp:
            result = run(args, Path(tmp))
    if args.json is not None:
        write_json(args.json, result)
    return cli.EXIT_FAILED if failed(result) else cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
