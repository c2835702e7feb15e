"""``python -m exporters.sync_demos DIR``: copy gated artefacts and their manifest into the demos.

DIR is an ``exporters.all`` output folder. Android gets one TFLite artefact (default: the INT8 one)
in ``android_demo/app/src/main/assets/``; iOS gets one Core ML ``.mlpackage`` (default: 8-bit
weights, else INT8, else fp16) in ``ios_demo/EdgeKDDemo/Model/``; the web demo gets one TFLite
artefact LiteRT.js can run (it takes float32, int32 and uint8 tensors only: default the INT8 graph
with float32 I/O, ``int8_float_io``, else fp32) in ``web_demo/model/``. Each demo also gets the
manifest trimmed to the top-level fields plus the chosen artefact (docs/MANIFEST.md, "What the
apps read"), so it reads exactly one entry.

The parity gate's verdict travels with the artefact: ``benchmarks.run`` records it in ``gate.json``
beside the manifest (``kd_core.deploy``), and an artefact whose verdict is not "pass" for its
current bytes ("fail", "not run", "stale") is refused unless ``--allow-ungated``; the demo then
shows "not parity-checked". The trimmed entry carries ``gate`` ({"status", "detail"}) and
``dataset`` (the training data's name, "unknown training data" for older exports). Files are
checked against the manifest's sha256 and written atomically; the previously synced model is
removed. The copies are git-ignored.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from exporters.tflite import FLOAT_IO
from kd_core import cli
from kd_core.cli import BadInput, JobFailed
from kd_core.deploy import (
    MANIFEST_NAME,
    ContractError,
    GateVerdict,
    Manifest,
    ManifestEntry,
    gate_status,
    load_manifest,
    read_verdicts,
    write_manifest,
)
from kd_core.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ANDROID_ASSETS = ROOT / "android_demo" / "app" / "src" / "main" / "assets"
IOS_MODEL_DIR = ROOT / "ios_demo" / "EdgeKDDemo" / "Model"
WEB_MODEL_DIR = ROOT / "web_demo" / "model"
UNKNOWN_DATA = "unknown training data"
NOT_CHECKED = "not parity-checked"  # the trimmed entry's gate.status when shipped ungated


class SyncError(BadInput):
    """A missing or inconsistent export folder, manifest or artefact, or an ungated artefact."""


@dataclass(frozen=True)
class App:
    """A demo: the format it runs, its model folder and the flag that names another artefact.
    Its default artefact is the format registry entry's ``preferred`` precision, unless the
    demo's runtime needs its own (``preferred``); ``tensor_types``: the I/O dtypes its runtime
    takes (empty: any)."""

    name: str
    format: str
    dest: Path
    flag: str
    preferred: tuple[str, ...] = ()
    tensor_types: tuple[str, ...] = ()


APPS = {
    "android": App("android", "tflite", ANDROID_ASSETS, "--tflite"),
    "ios": App("ios", "coreml", IOS_MODEL_DIR, "--coreml"),
    # LiteRT.js takes float32, int32 and uint8 tensors only: not the int8-I/O INT8 graph.
    "web": App("web", "tflite", WEB_MODEL_DIR, "--web-artifact", (FLOAT_IO, "fp32"),
               ("float32", "int32", "uint8")),
}


@dataclass(frozen=True)
class Target:
    app: str  # a key of APPS
    dest: Path
    name: str | None = None  # artefact name asked for, or None for the default


@dataclass(frozen=True)
class Synced:
    """One app's copy: which artefact, its gate status, where it went."""

    app: str
    artifact: str
    precision: str
    gate: str  # "pass" | "fail" | "not run" | "stale"
    model: Path
    manifest: Path


def choose_artifact(manifest: Manifest, app: App, name: str | None, source: str
                    ) -> ManifestEntry:
    """The entry named ``name``, or ``app``'s default precision; errors list the choices."""
    fmt = app.format
    entries = [a for a in manifest.artifacts if a.format == fmt]
    names = ", ".join(a.name for a in entries) or "none"
    if name is not None:
        entry = next((e for e in entries if e.name == name), None)
        if entry is None:
            raise SyncError(f"{source}: no {fmt} artefact named {name!r} (available: {names})")
    else:
        from exporters import get_exporter

        preferred = app.preferred or get_exporter(fmt).preferred  # the format's registry entry
        entry = next((e for p in preferred for e in entries if e.precision == p), None)
        if entry is None:
            raise SyncError(f"{source}: no {fmt} artefact of precision {'/'.join(preferred)} "
                            f"for the {app.name} demo (available: {names}); pick one with "
                            f"{app.flag} NAME, or leave that demo alone with --no-{app.name}")
    bad = [f"{which} {spec.get('dtype')}" for which, spec in (("input", entry.input),
                                                              ("output", entry.output))
           if app.tensor_types and spec.get("dtype") not in app.tensor_types]
    if bad:
        raise SyncError(f"{source}: {entry.name} has {' and '.join(bad)}; the {app.name} demo's "
                        f"runtime takes {', '.join(app.tensor_types)} tensors")
    return entry


def gate_record(entry: ManifestEntry, verdicts: Mapping[str, GateVerdict], export_dir: Path,
                allow_ungated: bool) -> tuple[str, dict[str, Any]]:
    """The artefact's gate status and the ``gate`` object its app shows; refuses an artefact
    that did not pass (for its current sha256) unless ``allow_ungated``."""
    status = gate_status(entry, verdicts)
    verdict = verdicts.get(entry.name)
    if status == "pass":
        assert verdict is not None
        day = verdict.created[:10]
        detail = f"parity gate passed on {verdict.data} ({verdict.split}, n={verdict.n}), {day}"
        return status, {"status": "pass", "detail": detail, **verdict.to_dict()}
    why = {"fail": "failed the parity gate" + (f" ({'; '.join(verdict.reasons)})"
                                               if verdict and verdict.reasons else ""),
           "not run": "was never gated (no verdict in gate.json)",
           "stale": "changed since it was gated (sha256 differs from gate.json)"}[status]
    if not allow_ungated:
        raise SyncError(f"{export_dir / MANIFEST_NAME}: artefact {entry.name} {why}: gate status "
                        f"{status!r}; run python -m benchmarks.run --artifacts {export_dir} "
                        "to gate it, or pass --allow-ungated to ship it marked "
                        f"{NOT_CHECKED!r}")
    log.warning("%s: shipping %s ungated (gate status %r); the app will say %r",
                export_dir, entry.name, status, NOT_CHECKED)
    return status, {"status": NOT_CHECKED, "detail": f"gate status: {status}; {entry.name} {why}"}


def trimmed_manifest(manifest: Manifest, entry: ManifestEntry, export_dir: Path,
                     gate: dict[str, Any]) -> Manifest:
    """Top-level fields plus only ``entry`` (its path relative to the app's copy, its training
    data's name and its gate record); no failures."""
    dataset = entry.dataset or manifest.dataset or UNKNOWN_DATA
    app_entry = replace(entry, path=Path(entry.path).name, dataset=dataset,
                        extra={**entry.extra, "gate": gate})
    synced_from = {"dir": str(export_dir), "artifact": entry.name}
    return replace(manifest, artifacts=(app_entry,), failures=(), dataset=dataset,
                   extra={**manifest.extra, "synced_from": synced_from})


def _checked_source(export_dir: Path, entry: ManifestEntry, source: str) -> Path:
    path = entry.file(export_dir)
    if not path.exists():
        raise SyncError(f"{path}: artefact {entry.name} named by {source} is missing")
    if entry.sha256 and sha256_file(path) != entry.sha256:
        raise SyncError(f"{path}: sha256 differs from {source}; the file changed after export, "
                        "re-run exporters.all")
    return path


def _check_dest(dest: Path, flag: str) -> None:
    """``dest`` is (or can become) a writable folder; checked before anything is copied."""
    probe = dest
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise SyncError(f"--{flag} {dest}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SyncError(f"--{flag} {dest}: {probe} is not writable")


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copyfile(src, tmp)


def _remove_previous(dest: Path, keep: str) -> None:
    """Delete the model a previous sync left in ``dest`` (named by its trimmed manifest)."""
    try:
        old_name = Path(load_manifest(dest / MANIFEST_NAME).artifacts[0].path).name
    except (ContractError, IndexError):
        return
    stale = dest / old_name
    if old_name == keep or not stale.exists():
        return
    if stale.is_dir():
        shutil.rmtree(stale)
    else:
        stale.unlink()


def sync(export_dir: Path, targets: Sequence[Target], allow_ungated: bool = False
         ) -> list[Synced]:
    """Copy the chosen artefact and a trimmed manifest for each target. Everything (artefact
    choice, gate, sha256, destinations) is checked before anything is written."""
    manifest = load_manifest(export_dir)
    verdicts = read_verdicts(export_dir)
    source = str(export_dir / MANIFEST_NAME)
    plans = []
    for t in targets:
        _check_dest(t.dest, t.app)
        entry = choose_artifact(manifest, APPS[t.app], t.name, source)
        status, gate = gate_record(entry, verdicts, export_dir, allow_ungated)
        plans.append((t, entry, status, gate, _checked_source(export_dir, entry, source)))
    done = []
    for t, entry, status, gate, src in plans:
        dst = t.dest / src.name
        try:
            _remove_previous(t.dest, keep=src.name)
            _copy(src, dst)
            path = write_manifest(trimmed_manifest(manifest, entry, export_dir, gate), t.dest)
        except OSError as exc:
            raise JobFailed(f"{t.dest}: cannot write the {t.app} demo's copy ({exc})") from None
        log.info("%s: %s (%s, gate: %s) -> %s", t.app, entry.name, entry.precision, status, dst)
        done.append(Synced(t.app, entry.name, entry.precision, status, dst, path))
    return done


def build_parser() -> Any:
    p = cli.parser(
        "python -m exporters.sync_demos",
        f"Copy a parity-gated artefact and a trimmed {MANIFEST_NAME} into each demo (Android, "
        "iOS, web).",
        epilog="An artefact whose gate status (gate.json, written by benchmarks.run) is not "
               "'pass' is refused unless --allow-ungated.")
    p.add_argument("export_dir", type=Path, metavar="DIR", help="exporters.all output folder")
    p.add_argument("--tflite", metavar="NAME", help="TFLite artefact for Android "
                   "(default: the int8 one)")
    p.add_argument("--coreml", metavar="NAME", help="Core ML artefact for iOS "
                   "(default: w8, else int8, else fp16)")
    p.add_argument("--web-artifact", metavar="NAME", help="TFLite artefact for the web demo "
                   "(default: the int8_float_io one, else fp32; LiteRT.js takes no int8 tensors)")
    p.add_argument("--android", type=Path, default=ANDROID_ASSETS, metavar="PATH",
                   help="Android assets folder")
    p.add_argument("--ios", type=Path, default=IOS_MODEL_DIR, metavar="PATH",
                   help="iOS model folder")
    p.add_argument("--web", type=Path, default=WEB_MODEL_DIR, metavar="PATH",
                   help="the web demo's model folder")
    p.add_argument("--no-android", action="store_true", help="leave the Android app alone")
    p.add_argument("--no-ios", action="store_true", help="leave the iOS app alone")
    p.add_argument("--no-web", action="store_true", help="leave the web demo alone")
    p.add_argument("--allow-ungated", action="store_true",
                   help=f"ship an artefact that failed or was never gated; the app shows "
                        f"{NOT_CHECKED!r}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _main(args: Any) -> int:
    targets = []
    if not args.no_android:
        targets.append(Target("android", args.android, args.tflite))
    if not args.no_ios:
        targets.append(Target("ios", args.ios, args.coreml))
    if not args.no_web:
        targets.append(Target("web", args.web, args.web_artifact))
    if not targets:
        raise SyncError("--no-android, --no-ios and --no-web: nothing to do")
    sync(args.export_dir, targets, allow_ungated=args.allow_ungated)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    raise SystemExit(main())
