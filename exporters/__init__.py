"""Exporters: one module per on-device format, each registered in ``EXPORTERS``.

A format module exposes ``export(model, example_inputs, out_dir, cfg) -> list[Artifact]`` and
registers it with ``@register_exporter(name, ...)``; ``python -m exporters.all CKPT`` runs them all
and writes ``manifest.json`` (docs/MANIFEST.md). Adding a format is one module plus one
registration (and its name in ``BUILTIN_FORMATS``). Importing this package needs torch alone: the
backends (litert-torch, executorch, coremltools, onnx, onnxruntime) are imported lazily inside the
format modules' functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from exporters.base import ExportSettings

BUILTIN_FORMATS = ("tflite", "executorch", "coreml", "onnx")


@dataclass(frozen=True)
class Artifact:
    """One exported file (or ``.mlpackage`` folder) and what an app needs to run it."""

    name: str  # {arch}_{format}_{precision}
    path: Path
    format: str
    precision: str  # fp32 | int8 | fp16 | w8
    input: dict[str, Any]  # name, shape, layout, dtype, quantization
    output: dict[str, Any]  # name, shape, dtype, quantization, kind
    tool_versions: dict[str, str] = field(default_factory=dict)
    export_seconds: float = 0.0
    quantization_recipe: dict[str, Any] | None = None
    graph_report: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None  # the artefact run in its runtime vs torch
    extra_files: tuple[Path, ...] = ()  # sidecars written with it (ExecuTorch's .json)
    embedded_metadata: str = ""  # where the manifest entry is embedded in (or beside) the file
    precision_plan: dict[str, Any] | None = None  # INT8: float sites kept and why
    repair: dict[str, Any] | None = None  # INT8: the repair ladder's record
    decision: dict[str, Any] | None = None  # per-artefact temperature/threshold (recalibrated)
    # The torch model whose outputs the artefact reproduces, in the artefact's own input layout
    # (the float model, or PT2E's converted fake-quantized model). For parity checks only.
    reference: nn.Module | None = field(default=None, repr=False, compare=False)


ExportFn = Callable[["nn.Module", tuple[Any, ...], Path, "ExportSettings"], list[Artifact]]


@dataclass(frozen=True)
class ExporterSpec:
    name: str
    export: ExportFn
    extension: str  # ".tflite", ".pte", ".mlpackage", ".onnx"
    precisions: dict[str, tuple[str, ...]]  # requested family -> artefact precisions
    tools: tuple[str, ...]  # distributions whose versions go in the manifest
    needs_calibration: tuple[str, ...] = ("int8",)  # families that need calibration images


EXPORTERS: dict[str, ExporterSpec] = {}


def register_exporter(
    name: str,
    extension: str,
    tools: tuple[str, ...],
    precisions: dict[str, tuple[str, ...]] | None = None,
    needs_calibration: tuple[str, ...] = ("int8",),
) -> Callable[[ExportFn], ExportFn]:
    """Register a format's ``export`` function; a name may be registered once."""

    def deco(fn: ExportFn) -> ExportFn:
        if name in EXPORTERS:
            raise ValueError(f"exporter {name!r} is registered twice")
        fams = precisions or {"fp32": ("fp32",), "int8": ("int8",)}
        EXPORTERS[name] = ExporterSpec(name, fn, extension, fams, tools, needs_calibration)
        return fn

    return deco


def _load_builtins() -> None:
    for fmt in BUILTIN_FORMATS:
        if fmt not in EXPORTERS:
            importlib.import_module(f"exporters.{fmt}")


def list_exporters() -> list[str]:
    """Registered format names, built-in ones first in their canonical order."""
    _load_builtins()
    return [f for f in BUILTIN_FORMATS if f in EXPORTERS] + sorted(
        f for f in EXPORTERS if f not in BUILTIN_FORMATS
    )


def get_exporter(name: str) -> ExporterSpec:
    if name in BUILTIN_FORMATS and name not in EXPORTERS:
        importlib.import_module(f"exporters.{name}")
    if name not in EXPORTERS:
        raise KeyError(f"unknown format {name!r}; known formats: {', '.join(list_exporters())}")
    return EXPORTERS[name]


__all__ = [
    "BUILTIN_FORMATS",
    "EXPORTERS",
    "Artifact",
    "ExporterSpec",
    "get_exporter",
    "list_exporters",
    "register_exporter",
]
