"""``python -m kd_core.data {prepare,synth,eda}``: check and split a dataset (HAM10000, an image
folder ``D/<class>/*.jpg`` or a CSV of ``path,label[,group]``), write the synthetic stand-in, or
plot a HAM10000 dataset."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kd_core import cli

METADATA_HELP = ("HAM10000 metadata CSV in --data-dir, or a path (default: the Dataverse release "
                 "when present, for its acquisition sites; else HAM10000_metadata.csv)")


def _add_prepare(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", type=Path,
                     help="HAM10000 folder (metadata CSV plus HAM10000_images_part_1/2 or "
                     "images/), or an image folder: one sub-folder of images per class")
    src.add_argument("--csv", type=Path,
                     help="CSV file with a header row path,label[,group]; paths relative to the "
                     "CSV's folder; images of one group (patient, lesion) stay in one split")
    p.add_argument("--out", type=Path, required=True, help="folder for the prepared CSVs")
    p.add_argument("--metadata", default=None, help=METADATA_HELP)
    p.add_argument("--images-dir", type=Path, default=None,
                   help="HAM10000 image folder, if not one of the standard ones in --data-dir")
    p.add_argument("--seed", type=int, default=42, help="split seed")
    p.add_argument("--force", action="store_true", help="re-split even if the splits match")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip corrupt or non-RGB images (counted and listed) instead of failing")


def _add_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to write the dataset into")
    p.add_argument("--n-images", type=int, default=2000, help="number of images")
    p.add_argument("--size", type=int, default=128, help="image width; height is 3/4")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--force", action="store_true", help="regenerate even if already complete")


def _add_eda(p: argparse.ArgumentParser) -> None:
    from kd_core.data.eda import DEFAULT_OUT

    p.add_argument("--data-dir", type=Path, required=True, help="HAM10000-layout folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG folder")
    p.add_argument("--metadata", default=None, help=METADATA_HELP)
    p.add_argument("--images-dir", type=Path, default=None, help="image folder (default: search)")
    p.add_argument("--seed", type=int, default=42, help="seed of the sample grid")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m kd_core.data", __doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(cli.add_command(sub, "prepare", "check the data and write group-aware splits"))
    _add_synth(cli.add_command(sub, "synth", "write the synthetic default dataset"))
    _add_eda(cli.add_command(sub, "eda", "plots of a HAM10000-layout dataset"))
    return parser


def _prepare(args: argparse.Namespace) -> int:
    from kd_core.data.sources import prepare_source

    prepare_source(args.csv or args.data_dir, args.out, seed=args.seed, force=args.force,
                   metadata=args.metadata, images_dir=args.images_dir,
                   skip_corrupt=args.skip_corrupt)
    return cli.EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from kd_core.data.synthetic import MARKER, generate

    start = time.perf_counter()
    out = generate(args.out, args.n_images, args.size, args.seed, args.force)
    marker = json.loads((out / MARKER).read_text())
    counts = " ".join(f"{dx}={n}" for dx, n in marker["counts"].items())
    print(f"synthetic HAM10000 in {out}: {marker['n_images']} images ({counts}), "
          f"{marker['lesions']} lesions, {marker['width']}x{marker['height']}, "
          f"{time.perf_counter() - start:.1f} s")
    return cli.EXIT_OK


def _eda(args: argparse.Namespace) -> int:
    from kd_core.data.eda import eda

    paths = eda(args.data_dir, args.out, args.metadata, args.images_dir, args.seed)
    print(f"wrote {len(paths)} plots to {args.out}: {', '.join(p.name for p in paths)}")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    body = {"prepare": _prepare, "synth": _synth, "eda": _eda}[args.command]
    return cli.run(lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
