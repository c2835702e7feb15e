"""The one finishing sequence every format goes through, and its verification.

``finish(fmt, precision, cfg, out_dir, clock, build)``: name the artefact, describe it as a
``ManifestEntry``, write it at a temporary path beside its final one with that entry embedded
(``build.write``; a sidecar JSON where the format has no metadata field), load it in its real
runtime through ``runtimes.load_runner`` and compare it with its torch reference
(``kd_core.deploy.compare_outputs``), let the format inspect it, rename it into place, and add
its graph report, size, sha256 and export time.

fp32 artefacts must match the float model within ``kd_core.deploy.fp32_tolerance`` (1e-4 scaled
by the logit magnitude above 1) or the export fails and nothing is written. Quantized and fp16
artefacts are compared with their reference and the figures recorded, not enforced: the
benchmark harness judges them on task metrics. A runtime that cannot run on this host (Core ML
off macOS) is recorded as not run; the format's own inspection still applies.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from exporters import FLOAT_PRECISIONS, get_exporter
from exporters.base import (
    Artifact,
    ExportError,
    ExportSettings,
    Failure,
    PartialExport,
    Stopwatch,
    artifact_name,
    describe,
    tool_versions,
)
from kd_core.deploy import (
    MANIFEST_VERSION,
    Decision,
    ManifestEntry,
    compare_outputs,
    entry_relpath,
    fp32_tolerance,
)
from kd_core.io import atomic_path, dumps_json, path_bytes, sha256_file

log = logging.getLogger(__name__)

CHECK_IMAGES = 8
# What an embedded entry leaves out: it depends on the final bytes or on the export run.
NOT_EMBEDDED = ("bytes", "sha256", "export_seconds", "graph_report", "verification", "repair")


@dataclass(frozen=True)
class Build:
    """What a format made for one precision, before it is finished."""

    write: Callable[[Path, dict[str, Any]], None]  # write the artefact at a path, embedding
    input: dict[str, Any]
    output: dict[str, Any]
    reference: Any  # torch model it reproduces (NCHW normalized float input), or None
    embedded: str  # where the entry is embedded, for the manifest
    recipe: dict[str, Any] | None = None
    sidecar: bool = False  # the entry goes in <name>.json beside the artefact
    inspect: Callable[[Path], dict[str, Any]] | None = None  # format checks; ExportError
    graph_report: Callable[[Path], dict[str, Any]] | None = None  # quantized artefacts


def export_each(fmt: str, cfg: ExportSettings, one: Callable[[str], Artifact]
                ) -> list[Artifact]:
    """``one(precision)`` for each artefact precision ``fmt`` makes for the requested families;
    a failure does not stop the others. Raises ``PartialExport`` (with the artefacts that
    worked) if any precision failed."""
    arts: list[Artifact] = []
    failures = []
    for precision in get_exporter(fmt).artefact_precisions(cfg.precisions):
        try:
            arts.append(one(precision))
        except Exception as exc:
            log.debug("%s %s failed", fmt, precision, exc_info=True)
            failures.append(Failure(fmt, precision, describe(exc)))
    if failures:
        raise PartialExport(arts, failures)
    return arts


def embedded_metadata(entry: ManifestEntry) -> dict[str, Any]:
    """The manifest entry minus what depends on the final bytes (docs/MANIFEST.md)."""
    meta = {k: v for k, v in entry.to_dict().items() if k not in NOT_EMBEDDED}
    return {"manifest_version": MANIFEST_VERSION, **meta}


def int8_recipe(fmt: str, cfg: ExportSettings) -> dict[str, Any]:
    """The format's INT8 recipe for the manifest, with the calibration sample count."""
    from exporters.int8 import quantize_recipe

    recipe = dict(quantize_recipe(fmt, cfg.int8))
    recipe.setdefault("calibration_samples", len(cfg.require_calibration(fmt)))
    return recipe


def precision_plan(fmt: str, precision: str, cfg: ExportSettings) -> dict[str, Any] | None:
    """The precision plan an artefact was quantized with (``exporters.int8.plan``): its float
    sites, when it has some."""
    plan = cfg.int8.plan if cfg.int8 is not None else None
    if not plan or precision not in get_exporter(fmt).planned_precisions():
        return None
    return plan.to_dict()


def new_entry(fmt: str, precision: str, cfg: ExportSettings, build: Build) -> ManifestEntry:
    spec = get_exporter(fmt)
    name = artifact_name(cfg, fmt, precision)
    return ManifestEntry(
        name=name, path=f"{name}{spec.extension}", format=fmt, precision=precision,
        input=build.input, output=build.output, decision=cfg.decision,
        preprocessing=cfg.preprocessing, source_checkpoint_sha256=cfg.checkpoint_sha256,
        dataset=cfg.dataset, tool_versions=tool_versions(spec.tools),
        embedded_metadata=build.embedded, sidecars=(f"{name}.json",) if build.sidecar else (),
        quantization_recipe=build.recipe, precision_plan=precision_plan(fmt, precision, cfg),
        extra={"calibrated": cfg.calibrated})


def finish(fmt: str, precision: str, cfg: ExportSettings, out_dir: Path, clock: Stopwatch,
           build: Build) -> Artifact:
    """Write, verify and place one artefact; see the module docstring."""
    entry = new_entry(fmt, precision, cfg, build)
    path = entry.file(out_dir)
    meta = embedded_metadata(entry)
    with contextlib.ExitStack() as stack:
        staged = stack.enter_context(atomic_path(path))
        build.write(staged, meta)
        for sidecar in entry.sidecars:
            stack.enter_context(atomic_path(out_dir / sidecar)).write_text(
                dumps_json(meta, indent=2))
        verification = verify(entry, staged, out_dir, build.reference, cfg)
        if build.inspect is not None:
            verification.update(build.inspect(staged))
    report = None
    if precision not in FLOAT_PRECISIONS and build.graph_report is not None:
        report = _safe_report(build.graph_report, path)
    final = replace(entry, bytes=path_bytes(path), sha256=sha256_file(path),
                    export_seconds=clock.seconds(), verification=verification,
                    graph_report=report)
    return Artifact(final, path, build.reference)


def restamp(art: Artifact, decision: Decision) -> Artifact | None:
    """``art`` with ``decision`` in its manifest entry and embedded in place of the one it was
    exported with, its graph untouched (the format's ``restamp``; sidecars rewritten), its
    bytes and sha256 updated; None where the format has no ``restamp``. The repair ladder's
    kept candidate gets its own decision this way instead of a second export."""
    spec = get_exporter(art.format)
    if spec.restamp is None:
        return None
    entry = replace(art.entry, decision=decision)
    meta = embedded_metadata(entry)
    with contextlib.ExitStack() as stack:
        staged = stack.enter_context(atomic_path(art.path))
        spec.restamp(art.path, staged, meta)
        for sidecar in entry.sidecars:
            stack.enter_context(atomic_path(art.path.parent / sidecar)).write_text(
                dumps_json(meta, indent=2))
    entry = replace(entry, bytes=path_bytes(art.path), sha256=sha256_file(art.path))
    return replace(art, entry=entry)


def _safe_report(report: Callable[[Path], dict[str, Any]], path: Path) -> dict[str, Any]:
    """A graph report; a failing report is recorded, not fatal to the export."""
    try:
        return report(path)
    except Exception as exc:
        log.debug("graph report of %s failed", path, exc_info=True)
        return {"error": describe(exc)}


def check_images(cfg: ExportSettings, n: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Up to ``n`` calibration images (real, preprocessed), else a fixed random batch."""
    if cfg.calibration is not None and len(cfg.calibration) > 0:
        return cfg.calibration.normalized(n), "calibration images"
    size = cfg.preprocessing.size
    gen = np.random.default_rng(0)
    return gen.standard_normal((2, 3, size, size)).astype(np.float32), "random inputs"


def reference_outputs(reference: Any, images: np.ndarray) -> np.ndarray:
    """float64 outputs of a torch model on N x 3 x H x W images, one image at a time."""
    import torch

    with torch.no_grad():
        rows = [reference(torch.from_numpy(x[None].copy()))[0] for x in images]
    return np.asarray(torch.stack(rows).double().numpy())


def verify(entry: ManifestEntry, staged: Path, root: Path, reference: Any,
           cfg: ExportSettings) -> dict[str, Any]:
    """Run the staged artefact in its runtime and its torch reference on the same images."""
    from runtimes import RuntimeUnavailable, load_runner

    if reference is None:
        return {"runtime": "not run: no torch reference"}
    try:
        runner = load_runner(replace(entry, path=entry_relpath(staged, root)), root, threads=1)
    except RuntimeUnavailable as exc:
        return {"runtime": f"not run on this host ({exc})"}
    images, source = check_images(cfg)
    got = runner.predict(images)
    want = reference_outputs(reference, images)
    if entry.output.get("kind") == "probabilities":  # runners give logits up to a constant
        got, want = got - got.mean(1, keepdims=True), want - want.mean(1, keepdims=True)
    if got.shape != want.shape:
        raise ExportError(f"{entry.name}: output shape {got.shape} != torch's {want.shape}")
    if not np.isfinite(got).all():
        raise ExportError(f"{entry.name}: non-finite outputs in {runner.runtime}")
    figures = compare_outputs(got, want)
    result: dict[str, Any] = {"runtime": runner.runtime, "images": len(images),
                              "inputs": source, **figures}
    if entry.precision == "fp32":
        tol = fp32_tolerance(float(np.abs(want).max()))
        result["tolerance"] = tol
        if figures["max_abs_diff"] > tol:
            raise ExportError(
                f"{entry.name}: {runner.runtime} output differs from torch by "
                f"{figures['max_abs_diff']:.3g} (tolerance {tol:.3g})")
    return result
