"""Stage an export for the web demo: one TFLite artefact that LiteRT.js can run, and a manifest.

    python -m exporters.web EXPORT_DIR [--artifact NAME] [--dest web_demo/model]

LiteRT.js takes float32, int32 and uint8 tensors only, so the default artefact is the INT8 graph
with float32 I/O (``int8_float_io``), else the fp32 one. ``stage_web_demo`` copies it into
``web_demo/model/`` (git-ignored) beside ``manifest.json`` trimmed to the top-level fields and that
one entry (its path made the file name), checked against the manifest's sha256 and written
atomically; the previously staged model is removed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from kd_core import cli
from kd_core.deploy import Manifest, ManifestEntry, load_manifest, write_manifest
from kd_core.io import atomic_path, sha256_file

ROOT = Path(__file__).resolve().parents[1]
WEB_MODEL_DIR = ROOT / "web_demo" / "model"
PREFERRED = ("int8_float_io", "fp32")  # first present wins
TENSOR_TYPES = ("float32", "int32", "uint8")  # what LiteRT.js takes


class StageError(cli.BadInput):
    """An export folder, manifest or artefact that cannot be staged for the web demo."""


def choose_entry(manifest: Manifest, name: str | None, source: str) -> ManifestEntry:
    """The TFLite entry named ``name``, else the first of ``PREFERRED`` present."""
    entries = [e for e in manifest.artifacts if e.format == "tflite"]
    names = ", ".join(e.name for e in entries) or "none"
    if name is not None:
        entry = next((e for e in entries if e.name == name), None)
        if entry is None:
            raise StageError(f"{source}: no tflite artefact named {name!r} (available: {names})")
    else:
        entry = next((e for p in PREFERRED for e in entries if e.precision == p), None)
        if entry is None:
            raise StageError(f"{source}: no tflite artefact of precision "
                             f"{' or '.join(PREFERRED)} (available: {names})")
    bad = [f"{k} {s.get('dtype')}" for k, s in (("input", entry.input), ("output", entry.output))
           if s.get("dtype") not in TENSOR_TYPES]
    if bad:
        raise StageError(f"{source}: {entry.name} has {' and '.join(bad)}; LiteRT.js takes "
                         f"{', '.join(TENSOR_TYPES)} tensors (stage the int8_float_io artefact)")
    return entry


def trimmed_manifest(manifest: Manifest, entry: ManifestEntry, export_dir: Path) -> Manifest:
    """The top-level fields plus ``entry`` alone, its path the file's name."""
    one = replace(entry, path=Path(entry.path).name)
    synced = {"dir": str(export_dir), "artifact": entry.name}
    return replace(manifest, artifacts=(one,), failures=(),
                   extra={**manifest.extra, "synced_from": synced})


def _remove_previous(dest: Path, keep: str) -> None:
    try:
        old = load_manifest(dest).artifacts[0].path
    except (cli.BadInput, IndexError):
        return
    stale = dest / old
    if old != keep and stale.is_file():
        stale.unlink()


def stage_web_demo(export_dir: Path, dest: Path = WEB_MODEL_DIR, name: str | None = None
                   ) -> list[Path]:
    """Copy the chosen artefact and its trimmed manifest into ``dest``; return both paths."""
    manifest = load_manifest(export_dir)
    source = str(Path(export_dir) / "manifest.json")
    entry = choose_entry(manifest, name, source)
    src = entry.file(export_dir)
    if not src.is_file():
        raise StageError(f"{src}: artefact {entry.name} named by {source} is missing")
    if entry.sha256 and sha256_file(src) != entry.sha256:
        raise StageError(f"{src}: sha256 differs from {source}; the file changed after export, "
                         "re-run exporters.all")
    dest.mkdir(parents=True, exist_ok=True)
    _remove_previous(dest, keep=src.name)
    with atomic_path(dest / src.name) as tmp:
        shutil.copyfile(src, tmp)
    path = write_manifest(trimmed_manifest(manifest, entry, Path(export_dir)), dest)
    return [dest / src.name, path]


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m exporters.web",
                   "Stage a TFLite artefact and a trimmed manifest.json for web_demo/.")
    p.add_argument("export_dir", type=Path, metavar="DIR", help="exporters.all output folder")
    p.add_argument("--artifact", metavar="NAME",
                   help="TFLite artefact (default: the int8_float_io one, else fp32)")
    p.add_argument("--dest", type=Path, default=WEB_MODEL_DIR, metavar="PATH",
                   help="the web demo's model folder")
    return p


def _main(args: argparse.Namespace) -> int:
    model, manifest = stage_web_demo(args.export_dir, args.dest, args.artifact)
    print(f"web: {model.name} and {manifest.name} -> {args.dest}")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(lambda: _main(args), bad_input=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
