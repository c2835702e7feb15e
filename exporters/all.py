"""``python -m exporters.all CKPT``: one checkpoint -> every on-device format plus manifest.json.

A thin command line over ``exporters.run.export_checkpoint``; ``python -m exporters.<format>``
runs one format with the same options. Importing this module (and ``--help``) imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from exporters import get_exporter, list_exporters, precision_families
from exporters.calibration_data import DEFAULT_SAMPLES, MIN_SAMPLES
from exporters.run import (
    DEFAULT_BUDGET_MIN,
    DEFAULT_SPEED_PLAN,
    REPAIR_MODES,
    ExportOptions,
    ExportResult,
    export_checkpoint,
)
from kd_core import cli
from kd_core.parity import add_tolerance_arguments, tolerances_from_args

DEFAULT_FAMILIES = "fp32,int8"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _precisions_help() -> str:
    """What each family makes, per format, from the registry."""
    parts = []
    for fam in precision_families():
        makers = [f for f in list_exporters() if fam in get_exporter(f).precisions]
        own = [f"{f}: {'/'.join(get_exporter(f).precisions[fam])}" for f in makers
               if get_exporter(f).precisions[fam] != (fam,)]
        only = f"{', '.join(makers)} only" if len(makers) < len(list_exporters()) else ""
        note = "; ".join(x for x in (only, *own) if x)
        parts.append(f"{fam} ({note})" if note else fam)
    return "comma-separated precision families: " + ", ".join(parts)


def build_parser(prog: str = "python -m exporters.all", fixed_format: str | None = None
                 ) -> argparse.ArgumentParser:
    what = f"the {fixed_format} format" if fixed_format else "every on-device format"
    p = cli.parser(
        prog, f"Export a calibrated KD checkpoint to {what}, each artefact verified in its "
        "runtime, with manifest.json.",
        "INT8 needs real calibration images (--calib-data; Core ML's 8-bit weights do not): "
        "without them the command stops before any work, so pass --calib-data or --precisions "
        "fp32. A failed format does not stop the others; manifest.json lists both.")
    p.add_argument("checkpoint", type=Path, metavar="CKPT",
                   help="a calibrated checkpoint .pth (arch, labels, weights, preprocessing, "
                        "temperature, threshold and their calibration record)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: <CKPT folder>/<CKPT name>_export); an existing "
                        "manifest there keeps the entries this run does not replace")
    if fixed_format is None:
        p.add_argument("--formats", default=",".join(list_exporters()),
                       help="comma-separated formats")
    p.add_argument("--precisions", default=DEFAULT_FAMILIES, help=_precisions_help())
    p.add_argument("--calib-data", type=Path, default=None, metavar="DIR",
                   help="INT8 calibration images: a prepared split folder (train split), a "
                        "HAM10000 folder (splits prepared, train split used) or a plain image "
                        "folder (no class balancing)")
    p.add_argument("--calib-samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help=f"calibration images, class-balanced when labels are known (at least "
                        f"{MIN_SAMPLES})")
    p.add_argument("--allow-few-calib-images", action="store_true",
                   help=f"calibrate INT8 on fewer than {MIN_SAMPLES} images")
    p.add_argument("--allow-uncalibrated", action="store_true",
                   help="export a checkpoint whose temperature and threshold were not fitted "
                        "on validation data; every manifest entry then says calibrated: false")
    p.add_argument("--seed", type=int, default=42, metavar="S",
                   help="seed of the calibration sample and of torch")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads for calibration and tracing; 1 avoids thread "
                        "oversubscription on a shared machine")
    p.add_argument("--jobs", default="auto", metavar="N",
                   help="worker processes exporting formats at once (a crash there fails only "
                        "the format it was on; their converters' output goes to a log shown on "
                        "failure); 1 runs everything in this process; auto: the usable cores, "
                        "at most 2")
    add_int8_arguments(p)
    p.add_argument("--verbose", action="store_true",
                   help="debug logging, and the converters' own output instead of a log tail")
    return p


def add_int8_arguments(p: argparse.ArgumentParser) -> None:
    """The INT8 repair and speed flags (also ``benchmarks.studies.export_check``'s); read them
    with ``int8_options``."""
    p.add_argument("--repair", choices=REPAIR_MODES, default=None,
                   help="repair an INT8 artefact that drifts from the float model, judged on "
                        "the validation split with the parity gate's rule: recalibrate its "
                        "temperature and threshold, better calibration, float sites ranked by "
                        "sensitivity (auto), or only the first (recalibrate); off keeps the "
                        "artefacts as exported (default: auto with --val-data, else off)")
    p.add_argument("--val-data", type=Path, default=None, metavar="DIR",
                   help="labelled images for --repair: a prepared split folder or a HAM10000 "
                        "folder, of which only the validation split is read (never the holdout)")
    p.add_argument("--repair-budget-min", type=float, default=DEFAULT_BUDGET_MIN, metavar="N",
                   help="wall-clock minutes the repair ladder may spend per format: a "
                        "try that would end past them (taking as long as the last) is not "
                        "started")
    p.add_argument("--qat-steps", type=int, default=0, metavar="N",
                   help="opt-in last repair rung (LiteRT, ExecuTorch): N steps (batch 32) of "
                        "quantization-aware fine-tuning, distilled from the float model's own "
                        "logits on training images (the --calib-data folder's), with a budget "
                        "of its own; about 0.3 s a step for MobileNetV3-Large at 64 px on 2 "
                        "cores (default 0: off)")
    add_tolerance_arguments(p)  # the gate the ladder aims at (as benchmarks.run's)
    p.add_argument("--speed-plan", default=DEFAULT_SPEED_PLAN,
                   metavar="auto|measure|off|FILE",
                   help="keep float the INT8 sites whose int8 kernel is slower than float: "
                        "auto (the site timings a format's recipe ships for this architecture, "
                        "e.g. ExecuTorch's 5x5 depthwise convs in MobileNetV3; none: all INT8), "
                        "measure (each runtime's own profiler on this host: ExecuTorch, ONNX "
                        "Runtime; kept only when the whole graph is faster; one more INT8 "
                        "export per format with a plan), FILE (timings from python -m "
                        "benchmarks.studies.site_timings), off (every site INT8)")


def int8_options(args: argparse.Namespace) -> dict[str, Any]:
    """``ExportOptions`` fields from ``add_int8_arguments``' flags (checked by the export)."""
    return {"val_data": args.val_data, "repair": args.repair,
            "repair_budget_min": args.repair_budget_min, "qat_steps": args.qat_steps,
            "repair_tolerances": tolerances_from_args(args), "speed_plan": args.speed_plan}


def _jobs(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise cli.BadInput(f"--jobs must be a positive number or auto, got {value!r}")
    return int(value)


def _main(args: argparse.Namespace, fixed: tuple[str, ...] | None) -> int:
    options = ExportOptions(
        formats=fixed or _csv(args.formats), precisions=_csv(args.precisions),
        calib_data=args.calib_data, calib_samples=args.calib_samples, seed=args.seed,
        jobs=_jobs(args.jobs), threads=args.threads, verbose=args.verbose,
        allow_uncalibrated=args.allow_uncalibrated,
        allow_few_calib_images=args.allow_few_calib_images,
        **int8_options(args))
    ckpt: Path = args.checkpoint
    out = args.out if args.out is not None else ckpt.parent / f"{ckpt.stem}_export"
    result = export_checkpoint(ckpt, out, options)
    int8 = int8_summary(result)
    if int8:
        print("\nINT8 precision plans and repairs:\n" + "\n".join(int8), flush=True)
    print(f"\n{summary_table(result)}\n\nmanifest: {result.manifest_path}  "
          f"({len(result.artifacts)} written, {len(result.failures)} failed; "
          f"{result.seconds:.1f} s)", flush=True)
    return cli.EXIT_FAILED if result.failures else cli.EXIT_OK


def summary_table(result: ExportResult) -> str:
    rows = [(a.format, a.precision, "ok", f"{(a.entry.bytes or 0) / 1e6:.2f}",
             f"{a.entry.export_seconds or 0:.1f}", a.path.name) for a in result.artifacts]
    rows += [(f.format, f.precision, "FAILED", "-", "-", f.error[:60]) for f in result.failures]
    head = ("format", "precision", "status", "MB", "seconds", "file / error")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt_row.format(*head), fmt_row.format(*("-" * w for w in widths))]
    return "\n".join([*lines, *(fmt_row.format(*r) for r in rows)])


def int8_summary(result: ExportResult) -> list[str]:
    """Per INT8 artefact with a plan or a repair: float sites, rung, validation metrics before
    and after, size and 1-thread latency relative to fp32."""
    lines = []
    for a in result.artifacts:
        plan, rep = a.entry.precision_plan or {}, a.entry.repair or {}
        if not plan and not rep:
            continue
        kept = ", ".join(f"{s['name']} ({s['reason']}, {100 * s['macs_share']:.1f}% MACs)"
                         for s in plan.get("float_sites", [])) or "none"
        text = f"  {a.name}: float sites: {kept}" + (repair_text(rep) if rep else "")
        if plan.get("size_ratio_vs_fp32") is not None:
            text += f"; size x{plan['size_ratio_vs_fp32']:.2f} of fp32"
        if plan.get("latency_ratio_1t_vs_fp32") is not None:
            text += f", 1-thread latency x{plan['latency_ratio_1t_vs_fp32']:.2f}"
        lines.append(text)
    return lines


def repair_text(rep: dict[str, Any]) -> str:
    """The summary's words for a manifest entry's ``repair`` record: the rung and the validation
    metrics before and after; for a failed repair judged on top-1 agreement, the share of
    images whose float top two logits are within one int8 step (rounding alone can flip them)."""
    if not (rep.get("before") and rep.get("after")):
        return f"; repair {rep.get('rung', 'error')}: {rep.get('note') or rep.get('error')}"
    b, f = rep["before"], rep["after"]
    text = f"; repair {rep.get('rung')}: validation " + ", ".join(
        f"{label} {_num(b.get(key))} -> {_num(f.get(key))}"
        for key, label in (("roc_auc", "ROC-AUC"), ("sensitivity", "sensitivity"),
                           ("argmax_agreement_vs_student", "top-1 agreement"),
                           ("ece", "ECE")) if key in b)
    ties = rep.get("near_ties")
    if rep.get("rung") == "failed" and ties:
        text += (f" ({100 * ties['share_within_step']:.1f} % of the validation images have "
                 f"their float top two logits within one int8 step, "
                 f"{ties['int8_logit_step']:.3g}: rounding alone can flip them)")
    return text


def _num(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def main(argv: list[str] | None = None, formats: tuple[str, ...] | None = None) -> int:
    fixed = formats[0] if formats and len(formats) == 1 else None
    prog = f"python -m exporters.{fixed}" if fixed else "python -m exporters.all"
    args = build_parser(prog, fixed).parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args, formats))


if __name__ == "__main__":
    sys.exit(main())
