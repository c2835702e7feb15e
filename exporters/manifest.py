"""``manifest.json``: every artefact with what an app needs to preprocess, run and decide.

The schema is docs/MANIFEST.md. ``build_manifest`` assembles it from the exported ``Artifact``s,
``write_manifest`` writes it atomically, ``load_manifest`` reads one back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from exporters import Artifact
from exporters.base import MANIFEST_VERSION, ExportSettings, Failure, decision_fields
from kd_core.io import atomic_write_text, path_bytes, sha256_file

MANIFEST_NAME = "manifest.json"


def created_by() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"edgekd {version('edgekd')}"
    except PackageNotFoundError:
        return "edgekd (not installed)"


def artifact_entry(art: Artifact, cfg: ExportSettings, out_dir: Path) -> dict[str, Any]:
    """One ``artifacts`` entry; bytes and sha256 are measured on the final file or folder."""
    entry: dict[str, Any] = {
        "name": art.name,
        "path": os.path.relpath(art.path, out_dir).replace(os.sep, "/"),
        "format": art.format,
        "precision": art.precision,
        "bytes": path_bytes(art.path),
        "sha256": sha256_file(art.path),
        "input": art.input,
        "output": art.output,
        **decision_fields(cfg),
        **(art.decision or {}),
        "source_checkpoint_sha256": cfg.checkpoint_sha256,
        "tool_versions": art.tool_versions,
        "export_seconds": art.export_seconds,
        "embedded_metadata": art.embedded_metadata,
    }
    if art.extra_files:
        entry["sidecars"] = [os.path.relpath(p, out_dir).replace(os.sep, "/")
                             for p in art.extra_files]
    if art.quantization_recipe is not None:
        entry["quantization_recipe"] = art.quantization_recipe
    if art.precision_plan is not None:
        entry["precision_plan"] = art.precision_plan
    if art.repair is not None:
        entry["repair"] = art.repair
    if art.graph_report is not None:
        entry["graph_report"] = art.graph_report
    if art.verification is not None:
        entry["verification"] = art.verification
    return entry


def build_manifest(
    artifacts: list[Artifact],
    cfg: ExportSettings,
    out_dir: Path,
    failures: list[Failure] | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    entries = [artifact_entry(a, cfg, out_dir) for a in artifacts]
    tools: dict[str, str] = {}
    for a in artifacts:
        tools.update(a.tool_versions)
    quantized = any(a.precision in ("int8", "w8a8") for a in artifacts)
    calibration = cfg.calibration.to_manifest() if cfg.calibration and quantized else None
    return {
        "manifest_version": MANIFEST_VERSION,
        "created_by": created_by(),
        "source_checkpoint": {
            "path": cfg.checkpoint_path, "sha256": cfg.checkpoint_sha256, "arch": cfg.arch,
            "num_classes": num_classes if num_classes is not None else len(cfg.labels),
        },
        **decision_fields(cfg),
        "calibration": calibration,
        "tool_versions": dict(sorted(tools.items())),
        "artifacts": entries,
        "failures": [{"format": f.format, "precision": f.precision, "error": f.error}
                     for f in failures or []],
    }


def merge_previous(manifest: dict[str, Any], out_dir: Path, attempted: set[str]
                   ) -> dict[str, Any]:
    """Keep the entries of an earlier manifest in ``out_dir`` that this run did not attempt
    (by artefact name), when it came from the same checkpoint and their files are unchanged."""
    old = load_manifest(out_dir / MANIFEST_NAME, missing_ok=True)
    same = old and old.get("source_checkpoint", {}).get("sha256") == \
        manifest["source_checkpoint"]["sha256"]
    if not old or not same:
        return manifest
    kept = []
    for entry in old.get("artifacts", []):
        path = out_dir / str(entry.get("path", ""))
        if entry.get("name") in attempted or not entry.get("path") or not path.exists():
            continue
        if sha256_file(path) == entry.get("sha256"):
            kept.append(entry)
    if kept and manifest["calibration"] is None:
        manifest["calibration"] = old.get("calibration")
    manifest["artifacts"] = kept + manifest["artifacts"]
    for entry in kept:
        manifest["tool_versions"] = {**entry.get("tool_versions", {}), **manifest["tool_versions"]}
    return manifest


def write_manifest(manifest: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def load_manifest(path: Path, missing_ok: bool = False) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        if missing_ok:
            return None
        raise ValueError(f"{path}: not a readable manifest ({exc})") from None
    return data if isinstance(data, dict) else None
