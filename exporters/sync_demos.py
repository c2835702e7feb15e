"""``python -m exporters.sync_demos DIR``: copy exported artefacts and their manifest into the apps.

DIR is an ``exporters.all`` output folder. Android gets one TFLite artefact (default: the INT8 one)
in ``android_demo/app/src/main/assets/``; iOS gets one Core ML ``.mlpackage`` (default: 8-bit
weights, else INT8, else fp16) in ``ios_demo/EdgeKDDemo/Model/``. Each app also gets
``manifest.json`` trimmed to the top-level fields plus the chosen artefact (docs/MANIFEST.md), so
the app reads exactly one entry. Files are checked against the manifest's sha256 and written
atomically; the previously synced model is removed. The copies are git-ignored.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_core.io import atomic_path, atomic_write_text, sha256_file

ROOT = Path(__file__).resolve().parents[1]
ANDROID_ASSETS = ROOT / "android_demo" / "app" / "src" / "main" / "assets"
IOS_MODEL_DIR = ROOT / "ios_demo" / "EdgeKDDemo" / "Model"
MANIFEST_NAME = "manifest.json"
# Default artefact per app: the first precision present, in this order.
PREFERRED = {"tflite": ("int8",), "coreml": ("w8", "int8", "fp16")}


class SyncError(ValueError):
    """A missing or inconsistent export folder, manifest or artefact."""


@dataclass(frozen=True)
class Target:
    app: str  # "android" | "ios"
    format: str  # "tflite" | "coreml"
    dest: Path
    name: str | None  # artefact name asked for, or None for the default


def load_export_manifest(export_dir: Path) -> dict[str, Any]:
    path = export_dir / MANIFEST_NAME
    if not path.is_file():
        raise SyncError(f"{path}: no manifest; run `python -m exporters.all CKPT --out "
                        f"{export_dir}` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SyncError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise SyncError(f"{path}: not an exporters.all manifest (no artifacts list)")
    if manifest.get("manifest_version") != 1:
        raise SyncError(f"{path}: manifest_version {manifest.get('manifest_version')!r}, "
                        "the apps read version 1")
    return manifest


def choose_artifact(manifest: dict[str, Any], fmt: str, name: str | None,
                    source: str) -> dict[str, Any]:
    """The entry named ``name``, or the default precision for ``fmt``; errors list the choices."""
    entries = [a for a in manifest["artifacts"] if isinstance(a, dict) and a.get("format") == fmt]
    names = ", ".join(str(a.get("name")) for a in entries) or "none"
    if name is not None:
        for entry in entries:
            if entry.get("name") == name:
                return entry
        raise SyncError(f"{source}: no {fmt} artefact named {name!r} (available: {names})")
    for precision in PREFERRED[fmt]:
        for entry in entries:
            if entry.get("precision") == precision:
                return entry
    raise SyncError(f"{source}: no {fmt} artefact of precision {'/'.join(PREFERRED[fmt])} "
                    f"(available: {names}); pick one with --{fmt} NAME")


def trimmed_manifest(manifest: dict[str, Any], entry: dict[str, Any],
                     export_dir: Path) -> dict[str, Any]:
    """Top-level fields plus only ``entry``, its path made relative to the app's copy."""
    out = {k: v for k, v in manifest.items() if k not in ("artifacts", "failures")}
    out["artifacts"] = [{**entry, "path": Path(entry["path"]).name}]
    out["synced_from"] = {"dir": str(export_dir), "artifact": entry["name"]}
    return out


def _checked_source(export_dir: Path, entry: dict[str, Any], source: str) -> Path:
    rel = entry.get("path")
    if not isinstance(rel, str) or not rel:
        raise SyncError(f"{source}: artefact {entry.get('name')!r} has no path")
    path = export_dir / rel
    if not path.exists():
        raise SyncError(f"{path}: artefact {entry.get('name')!r} named by {source} is missing")
    digest = entry.get("sha256")
    if digest and sha256_file(path) != digest:
        raise SyncError(f"{path}: sha256 differs from {source}; the file changed after export, "
                        "re-run exporters.all")
    return path


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copyfile(src, tmp)


def _remove_previous(dest: Path, keep: str) -> None:
    """Delete the model a previous sync left in ``dest`` (named by its trimmed manifest)."""
    try:
        old = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        old_name = Path(old["artifacts"][0]["path"]).name
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return
    stale = dest / old_name
    if not old_name or old_name == keep or not stale.exists():
        return
    if stale.is_dir():
        shutil.rmtree(stale)
    else:
        stale.unlink()


def sync(export_dir: Path, targets: Sequence[Target]) -> list[Path]:
    """Copy the chosen artefact and a trimmed manifest for each target; return the written paths."""
    manifest = load_export_manifest(export_dir)
    source = str(export_dir / MANIFEST_NAME)
    plans = []
    for t in targets:  # resolve everything before writing anything
        entry = choose_artifact(manifest, t.format, t.name, source)
        plans.append((t, entry, _checked_source(export_dir, entry, source)))
    written = []
    for t, entry, src in plans:
        dst = t.dest / src.name
        _remove_previous(t.dest, keep=src.name)
        _copy(src, dst)
        text = json.dumps(trimmed_manifest(manifest, entry, export_dir), indent=2) + "\n"
        atomic_write_text(t.dest / MANIFEST_NAME, text)
        written += [dst, t.dest / MANIFEST_NAME]
        print(f"{t.app}: {entry['name']} ({entry.get('precision')}) -> {dst}")
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exporters.sync_demos",
        description="Copy exported artefacts and a trimmed manifest.json into the demo apps.")
    p.add_argument("export_dir", type=Path, metavar="DIR", help="exporters.all output folder")
    p.add_argument("--tflite", metavar="NAME", help="TFLite artefact for Android "
                   "(default: the int8 one)")
    p.add_argument("--coreml", metavar="NAME", help="Core ML artefact for iOS "
                   "(default: w8, else int8, else fp16)")
    p.add_argument("--android", type=Path, default=ANDROID_ASSETS, metavar="PATH",
                   help="Android assets folder (default: %(default)s)")
    p.add_argument("--ios", type=Path, default=IOS_MODEL_DIR, metavar="PATH",
                   help="iOS model folder (default: %(default)s)")
    p.add_argument("--no-android", action="store_true", help="leave the Android app alone")
    p.add_argument("--no-ios", action="store_true", help="leave the iOS app alone")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    targets = []
    if not args.no_android:
        targets.append(Target("android", "tflite", args.android, args.tflite))
    if not args.no_ios:
        targets.append(Target("ios", "coreml", args.ios, args.coreml))
    if not targets:
        print("error: nothing to do (--no-android and --no-ios)", file=sys.stderr)
        return 2
    try:
        sync(args.export_dir, targets)
    except (SyncError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
