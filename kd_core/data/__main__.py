"""``python -m kd_core.data {prepare,synth,eda}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd_core.data.ham10000 import DataError, prepare
from kd_core.data.splits import SplitError


def _add_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, required=True,
                   help="HAM10000 folder: metadata CSV plus HAM10000_images_part_1/2 or images/")
    p.add_argument("--out", type=Path, required=True, help="folder for the prepared CSVs")
    p.add_argument("--metadata", default="HAM10000_metadata.csv",
                   help="metadata file name inside --data-dir (or a path)")
    p.add_argument("--images-dir", type=Path, default=None,
                   help="image folder, if not one of the standard ones inside --data-dir")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--force", action="store_true", help="re-split even if the splits match")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip corrupt or non-RGB images (counted and listed) instead of failing")


def main(argv: list[str] | None = None) -> int:
    from kd_core.data import eda, synthetic

    parser = argparse.ArgumentParser(prog="python -m kd_core.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub.add_parser("prepare", help="check the data and write lesion-aware splits"))
    synthetic.add_arguments(sub.add_parser("synth", help="write the synthetic default dataset"))
    eda.add_arguments(sub.add_parser("eda", help="plots of a HAM10000-layout dataset"))
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.data_dir, args.out, seed=args.seed, force=args.force,
                    metadata=args.metadata, images_dir=args.images_dir,
                    skip_corrupt=args.skip_corrupt)
            return 0
        if args.command == "synth":
            return int(synthetic.run(args))
        return int(eda.run(args))
    except (DataError, SplitError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
