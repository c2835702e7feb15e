"""Measure per-site INT8 vs fp32 timings once (on a quiet machine) for ``--speed-plan FILE``.

    python -m benchmarks.studies.site_timings CKPT --calib-data D --out timings.json \
        [--formats executorch,onnx] [--repeat 3]

Exports the checkpoint's all-INT8 artefact per format into a scratch folder (no plan), profiles
every site in the runtime's own profiler (``exporters.int8.finish.measure_timings``) ``--repeat``
times and keeps, per site, the median of the repeats. The file holds one ``SiteTimings`` per
format; ``python -m exporters.all CKPT --speed-plan timings.json`` then derives the same plan from
it on any machine (``exporters.int8.speed.speed_plan`` is a pure function of the timings).
Exit codes: 0 written, 1 a format failed, 2 bad input.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from kd_core import cli

log = logging.getLogger(__name__)


def build_parser() -> Any:
    p = cli.parser("python -m benchmarks.studies.site_timings",
                   "Per-site INT8/fp32 timings for --speed-plan FILE.")
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument("--calib-data", type=Path, required=True, metavar="DIR")
    p.add_argument("--calib-samples", type=int, default=256, metavar="N")
    p.add_argument("--formats", default="executorch,onnx")
    p.add_argument("--repeat", type=int, default=3, metavar="N")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--verbose", action="store_true")
    return p


def measure(checkpoint: Path, calib_data: Path, samples: int, formats: tuple[str, ...],
            repeat: int) -> list[dict[str, Any]]:
    """One ``SiteTimings`` dict per format, per-site medians over ``repeat`` profiles."""
    import torch

    from exporters import get_exporter
    from exporters.all import load_settings
    from exporters.calibration_data import load_calibration
    from exporters.int8.finish import measure_timings
    from exporters.int8.plan import find_sites
    from exporters.int8.speed import SiteTiming

    torch.set_num_threads(1)
    model, cfg, _ = load_settings(checkpoint)
    cfg = replace(cfg, calibration=load_calibration(calib_data, cfg.preprocessing, cfg.labels,
                                                    samples))
    example = (torch.from_numpy(cfg.calibration.normalized()[:1]),)  # type: ignore[union-attr]
    sites = find_sites(model, example)
    out = []
    for fmt in formats:
        with tempfile.TemporaryDirectory() as tmp:
            (art,) = get_exporter(fmt).export(model, example, Path(tmp),
                                              replace(cfg, precisions=("int8",)))
            runs = [measure_timings(fmt, model, example, cfg, art, sites, Path(tmp) / str(i))
                    for i in range(repeat)]
        merged = tuple(SiteTiming(t.site, *(statistics.median(getattr(r.sites[i], f)
                                                              for r in runs)
                                            for f in ("int8_us", "fp32_us", "boundary_us")))
                       for i, t in enumerate(runs[0].sites))
        out.append(replace(runs[0], sites=merged, runs=runs[0].runs * repeat).to_dict())
        log.info("%s: %d sites timed", fmt, len(merged))
    return out


def _main(args: Any) -> int:
    from kd_core.io import write_json

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in ("executorch", "onnx")]
    if bad or args.repeat < 1 or not args.checkpoint.is_file():
        raise cli.BadInput(f"--formats takes executorch,onnx (got {args.formats}); --repeat >= 1;"
                           f" the checkpoint must exist ({args.checkpoint})")
    write_json(args.out, measure(args.checkpoint, args.calib_data, args.calib_samples, formats,
                                 args.repeat))
    print(f"site timings: {args.out}")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    raise SystemExit(main())
