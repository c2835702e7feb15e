"""Measure per-site INT8 vs fp32 timings once (on a quiet machine) for ``--speed-plan FILE``.

    python -m benchmarks.studies.site_timings CKPT --calib-data D --out timings.json \\
        [--formats executorch,onnx] [--repeat 3]

Exports the checkpoint's fp32 and all-INT8 artefacts per format into a scratch folder (no plan)
and profiles every site ``--repeat`` times with the profiler on the format's INT8 recipe
(``exporters.Int8Recipe.profiler``), keeping per site the median of the repeats. The file holds
one ``SiteTimings`` per format; ``python -m exporters.all CKPT --speed-plan timings.json`` then
derives the same plan from it on any machine (``exporters.int8.speed.speed_plan`` is a pure
function of the timings). ``CKPT_OR_ARCH`` is a checkpoint or a registry architecture (random
weights: kernel times do not depend on them), at ``--image-size`` (as
``benchmarks.studies.int8_speed``). The timings a format's recipe ships
(``Int8Recipe.stored_timings``, used by ``--speed-plan auto``) are made with this command.
Exit codes: 0 written, 1 a format failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from kd_core import cli

log = logging.getLogger(__name__)


def profiled_formats() -> list[str]:
    """Formats whose INT8 recipe has a per-site profiler."""
    from exporters import get_exporter, list_exporters

    return [f for f in list_exporters()
            if (recipe := get_exporter(f).int8) is not None and recipe.profiler is not None]


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.studies.site_timings",
                   "Per-site INT8/fp32 timings of a checkpoint, for exporters.all --speed-plan "
                   "FILE.")
    p.add_argument("model", metavar="CKPT_OR_ARCH",
                   help="a checkpoint .pth or a registry architecture (random weights)")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="input size (default: the checkpoint's; 224 for an architecture)")
    p.add_argument("--calib-data", type=Path, required=True, metavar="DIR",
                   help="INT8 calibration images (as exporters.all --calib-data)")
    p.add_argument("--calib-samples", type=int, default=256, metavar="N",
                   help="calibration images")
    p.add_argument("--formats", default="executorch,onnx",
                   help="comma-separated formats with a per-site profiler")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="profiles per format; each site keeps the median")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the site-timings JSON to write")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def measure(checkpoint: Path, trained: bool, calib_data: Path, samples: int,
            formats: tuple[str, ...], repeat: int) -> list[dict[str, Any]]:
    """One ``SiteTimings`` dict per format, per-site medians over ``repeat`` profiles."""
    import torch

    from exporters.calibration_data import load_calibration
    from exporters.int8.plan import find_sites
    from exporters.job import example_inputs, load_settings

    torch.set_num_threads(1)
    model, cfg = load_settings(checkpoint, allow_uncalibrated=not trained)
    cfg = replace(cfg, calibration=load_calibration(calib_data, cfg.preprocessing, cfg.labels,
                                                    samples))
    example = example_inputs(cfg)
    sites = find_sites(model, example)
    return [_format_timings(fmt, model, example, cfg, sites, repeat) for fmt in formats]


def _format_timings(fmt: str, model: Any, example: tuple[Any, ...], cfg: Any, sites: Any,
                    repeat: int) -> dict[str, Any]:
    from exporters import get_exporter
    from exporters.int8.speed import SiteTiming

    spec = get_exporter(fmt)
    assert spec.int8 is not None and spec.int8.profiler is not None
    x = example[0].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        arts = spec.export(model, example, Path(tmp),
                           replace(cfg, precisions=("fp32", spec.int8.plan_family)))
        int8 = next(a for a in arts if a.precision == spec.planned_precisions()[0])
        fp32 = next(a for a in arts if a.precision == "fp32")
        session = (int8.entry.quantization_recipe or {}).get("session_config") or {}
        runs = [spec.int8.profiler(int8.path, fp32.path, sites, x, session)
                for _ in range(repeat)]
    merged = tuple(SiteTiming(t.site, *(statistics.median(getattr(r.sites[i], f) for r in runs)
                                        for f in ("int8_us", "fp32_us", "boundary_us")))
                   for i, t in enumerate(runs[0].sites))
    log.info("%s: %d sites timed", fmt, len(merged))
    result: dict[str, Any] = replace(runs[0], sites=merged, runs=runs[0].runs * repeat,
                                     arch=cfg.arch, image_size=cfg.preprocessing.size).to_dict()
    return result


def _main(args: argparse.Namespace) -> int:
    from benchmarks.studies.int8_speed import study_checkpoint
    from kd_core.io import check_output_dir, write_json

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    known = profiled_formats()
    bad = [f for f in formats if f not in known]
    if bad or not formats:
        raise cli.BadInput(f"--formats: {', '.join(bad) or '(none)'} has no per-site profiler; "
                           f"use {', '.join(known)}")
    if args.repeat < 1:
        raise cli.BadInput(f"--repeat must be >= 1, got {args.repeat}")
    check_output_dir(args.out.parent)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, trained = study_checkpoint(args.model, args.image_size, Path(tmp))
        write_json(args.out, measure(ckpt, trained, args.calib_data, args.calib_samples,
                                     formats, args.repeat))
    print(f"site timings: {args.out}")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
