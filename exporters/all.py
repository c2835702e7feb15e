"""``python -m exporters.all CKPT``: one checkpoint -> every on-device format plus manifest.json.

A thin command line over ``exporters.run.export_checkpoint``; ``python -m exporters.<format>``
runs one format with the same options. Importing this module (and ``--help``) imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporters import get_exporter, list_exporters, precision_families
from exporters.calibration_data import DEFAULT_SAMPLES, MIN_SAMPLES
from exporters.run import ExportOptions, ExportResult, export_checkpoint
from kd_core import cli

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
    p.add_argument("--verbose", action="store_true",
                   help="debug logging, and the converters' own output instead of a log tail")
    return p


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
        allow_few_calib_images=args.allow_few_calib_images)
    ckpt: Path = args.checkpoint
    out = args.out if args.out is not None else ckpt.parent / f"{ckpt.stem}_export"
    result = export_checkpoint(ckpt, out, options)
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


def main(argv: list[str] | None = None, formats: tuple[str, ...] | None = None) -> int:
    fixed = formats[0] if formats and len(formats) == 1 else None
    prog = f"python -m exporters.{fixed}" if fixed else "python -m exporters.all"
    args = build_parser(prog, fixed).parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args, formats))


if __name__ == "__main__":
    sys.exit(main())
