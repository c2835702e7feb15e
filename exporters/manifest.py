"""``manifest.json`` of an export folder: this run's artefacts merged into the folder's manifest.

The schema, loader and writer are ``kd_core.deploy`` (``Manifest``, ``load_manifest``,
``write_manifest``; docs/MANIFEST.md). Merging never drops an entry silently: an earlier entry is
kept unless this run wrote an artefact of the same name (replaced), its file is gone or changed,
or it came from another checkpoint (dropped); ``Merge`` lists each, and dropped ones are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exporters import FLOAT_PRECISIONS
from exporters.base import Artifact, ExportSettings, Failure, UsageError
from kd_core.deploy import MANIFEST_NAME, ContractError, Manifest, ManifestEntry, load_manifest
from kd_core.io import sha256_file

log = logging.getLogger(__name__)


def created_by() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"edgekd {version('edgekd')}"
    except PackageNotFoundError:
        return "edgekd (not installed)"


def read_previous(out_dir: Path) -> Manifest | None:
    """The manifest already in ``out_dir`` (None if there is none); an unreadable one is bad
    input, found before any work, so that it is never overwritten blindly."""
    if not (out_dir / MANIFEST_NAME).is_file():
        return None
    try:
        return load_manifest(out_dir)
    except ContractError as exc:
        raise UsageError(f"{exc}; remove it or choose another --out") from None


@dataclass(frozen=True)
class Merge:
    manifest: Manifest
    kept: tuple[str, ...] = ()  # earlier entries still listed
    replaced: tuple[str, ...] = ()  # earlier entries this run re-exported
    dropped: tuple[str, ...] = ()  # earlier entries no longer listed, with the reason


def _earlier(previous: Manifest | None, cfg: ExportSettings, out_dir: Path, written: set[str]
             ) -> tuple[list[ManifestEntry], list[str], list[str]]:
    """(kept entries, replaced names, dropped "name (reason)") of the earlier manifest."""
    kept: list[ManifestEntry] = []
    replaced: list[str] = []
    dropped: list[str] = []
    if previous is None:
        return kept, replaced, dropped
    same = previous.source_checkpoint.get("sha256") == cfg.checkpoint_sha256
    for e in previous.artifacts:
        path = e.file(out_dir)
        if e.name in written:
            replaced.append(e.name)
        elif not same:
            dropped.append(f"{e.name} (exported from another checkpoint)")
        elif not path.exists():
            dropped.append(f"{e.name} (file missing)")
        elif sha256_file(path) != e.sha256:
            dropped.append(f"{e.name} (file changed since it was listed)")
        else:
            kept.append(e)
    return kept, replaced, dropped


def merge_manifest(arts: Sequence[Artifact], failures: Sequence[Failure], cfg: ExportSettings,
                   out_dir: Path, previous: Manifest | None, attempted: set[str]) -> Merge:
    """This run's artefacts and failures (``attempted``: its formats) merged into
    ``previous``, the folder's earlier manifest (see the module docstring)."""
    new = [a.entry for a in arts]
    kept, replaced, dropped = _earlier(previous, cfg, out_dir, {e.name for e in new})
    entries = (*kept, *new)
    tools: dict[str, str] = {}
    for e in entries:
        tools.update(e.tool_versions)
    same = previous is not None and previous.source_checkpoint.get("sha256") == \
        cfg.checkpoint_sha256
    old_failures = [f for f in (previous.failures if previous and same else ())
                    if f.get("format") not in attempted]
    calibration = None
    if cfg.calibration is not None and any(e.precision not in FLOAT_PRECISIONS for e in new):
        calibration = cfg.calibration.to_manifest()
    elif previous is not None and any(e.precision not in FLOAT_PRECISIONS for e in kept):
        calibration = previous.calibration
    manifest = Manifest(
        decision=cfg.decision, preprocessing=cfg.preprocessing, artifacts=entries,
        source_checkpoint={"path": cfg.checkpoint_path, "sha256": cfg.checkpoint_sha256,
                           "arch": cfg.arch, "num_classes": len(cfg.labels)},
        dataset=cfg.dataset, calibration=calibration, tool_versions=dict(sorted(tools.items())),
        failures=(*old_failures, *(f.to_dict() for f in failures)), created_by=created_by())
    if dropped:
        log.warning("manifest.json no longer lists %s", "; ".join(dropped))
    return Merge(manifest, tuple(e.name for e in kept), tuple(replaced), tuple(dropped))
