"""Command-line options of the INT8 speed objective and repair ladder, shared by every
``python -m exporters.<format>`` entry point. Parsing needs no torch; ``int8_options`` turns the
parsed flags into ``exporters.int8.options.Int8Options`` (loading the validation split).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters.calibration_data import CalibrationDataError

if TYPE_CHECKING:
    from exporters.base import ExportSettings


def add_int8_arguments(p: argparse.ArgumentParser) -> None:
    """The INT8 speed and repair options (``exporters.int8.options.Int8Options``)."""
    p.add_argument("--repair", choices=("auto", "off", "recalibrate"), default=None,
                   help="INT8 repair ladder on the validation split: recalibrate, better "
                        "calibration, mixed precision (default: auto with --val-data, else off)")
    p.add_argument("--val-data", type=Path, default=None, metavar="DIR",
                   help="labelled validation images for --repair: a prepared split folder or a "
                        "HAM10000 folder (its validation split; the holdout is never read)")
    p.add_argument("--repair-budget-min", type=float, default=10.0, metavar="N",
                   help="wall-clock minutes the repair ladder may spend per artefact "
                        "(default: %(default)s)")
    p.add_argument("--speed-plan", default="off", metavar="off|measure|FILE",
                   help="keep float the sites where INT8 is slower: measure (ExecuTorch and ONNX "
                        "Runtime profilers, on this host), FILE (site timings JSON measured "
                        "before), off (default: %(default)s)")


def int8_options(args: argparse.Namespace, cfg: ExportSettings, target_sensitivity: float
                 ) -> Any:
    """``Int8Options`` from the command line; ValueError (a ``BadInput``-like one-line message)
    for a bad combination, before any export work."""
    from exporters.int8.options import Int8Options
    from exporters.validation_data import load_validation

    repair = args.repair or ("auto" if args.val_data is not None else "off")
    if repair != "off" and args.val_data is None:
        raise ValueError(f"--repair {repair} needs labelled validation images: pass --val-data "
                         "DIR (a prepared split folder or a HAM10000 folder)")
    try:
        options = Int8Options(speed=args.speed_plan, repair=repair,
                              repair_budget_min=args.repair_budget_min,
                              target_sensitivity=target_sensitivity)
        if repair != "off":
            val = load_validation(args.val_data, cfg.preprocessing, cfg.labels)
            options = replace(options, validation=val)
    except CalibrationDataError as exc:
        raise ValueError(str(exc)) from None
    return options
