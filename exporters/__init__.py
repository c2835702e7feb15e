"""Exporters: one module per on-device format, each registered in ``EXPORTERS`` with its facts.

A format module exposes ``export(model, example_inputs, out_dir, settings) -> list[Artifact]``
and registers it with ``@register_exporter(name, ...)``, stating everything the rest of the code
needs to know about the format: file extension, precisions, tools, INT8 recipe, export cost,
metadata reader and the precisions an app should prefer. Its runner lives in ``runtimes/``.
Adding a format is those two modules and nothing else (``BUILTIN_FORMATS`` only names the
modules to import lazily). Importing this package, or a format module, imports neither torch
nor a backend: they are imported inside the functions that convert.

The library entry point is ``exporters.run.export_checkpoint``; ``python -m exporters.all``
is its command line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporters.base import Artifact, ExportSettings

BUILTIN_FORMATS = ("tflite", "executorch", "coreml", "onnx")
FLOAT_PRECISIONS = ("fp32", "fp16")  # artefact precisions that are not quantized
DEFAULT_PRECISIONS: Mapping[str, tuple[str, ...]] = {"fp32": ("fp32",), "int8": ("int8",)}


# (int8 file, fp32 file, sites, one NCHW example image, ONNX Runtime session config) ->
# exporters.int8.speed.SiteTimings; see exporters.int8.profile.
SiteProfiler = Callable[[Path, Path, Any, Any, Mapping[str, str]], Any]


@dataclass(frozen=True)
class Int8Recipe:
    """How a format's INT8 artefact is made (the manifest's ``quantization_recipe`` says it).

    ``quantizer``: "litert" (litert-torch's PT2E quantizer), "xnnpack" (ExecuTorch's),
    "coreml" (ExecuTorch's CoreMLQuantizer) or "onnxruntime" (static QDQ on the ONNX file).
    ``rewrites``: the exact float rewrites of ``exporters.int8.rewrites`` applied first. The
    next fields tune the PT2E quantizers (``exporters.int8.quantize``); the last ones are what
    a per-site precision plan (``exporters.int8.plan``) and its speed and repair objectives
    (``exporters.int8.objectives``) need to know about the format.
    """

    quantizer: str
    rewrites: tuple[str, ...] = ()
    full_annotation: bool = True  # exporters.int8.annotate on top of the stock quantizer
    dynamic: bool = False  # dynamic activations (weights only static)
    relu6_range_on_binary: bool = False  # add/mul + ReLU6 -> fixed [0, 6] range, clamp dropped
    fold_quantize: bool = True  # fold weight quantization into int8 constants
    # The family whose artefacts a precision plan steers (the first of them is scored).
    plan_family: str = "int8"
    # How a site stays float: "unannotated" (the PT2E annotation skips it) or
    # "nodes_to_exclude" (ONNX Runtime's quantize_static).
    float_sites: str = "unannotated"
    alt_observer: str = "minmax"  # the repair ladder's other activation calibration
    # Per-site INT8 and fp32 times in the runtime's own profiler (--speed-plan measure);
    # None: the runtime has none reachable from Python.
    profiler: SiteProfiler | None = field(default=None, compare=False)
    # Site timings measured once per architecture (benchmarks.studies.site_timings), a JSON
    # file under exporters/: the --speed-plan auto plan of those architectures.
    stored_timings: str = ""

    def stored_timings_path(self) -> Path | None:
        return Path(__file__).parent / self.stored_timings if self.stored_timings else None


ExportFn = Callable[[Any, tuple[Any, ...], Path, "ExportSettings"], "list[Artifact]"]
MetadataReader = Callable[[Path], "dict[str, Any] | None"]
# Copy an artefact (first path) to a new path with another embedded entry (the dict), its graph
# untouched: for formats whose decision (temperature, threshold) lives only in that entry.
Restamper = Callable[[Path, Path, "dict[str, Any]"], None]


@dataclass(frozen=True)
class ExporterSpec:
    """A registered format and its facts."""

    name: str
    export: ExportFn
    extension: str  # of the artefact path: ".tflite", ".pte", ".mlpackage", ".onnx"
    tools: tuple[str, ...]  # distributions whose versions go in the manifest
    precisions: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_PRECISIONS))  # requested family -> artefacts
    needs_calibration: tuple[str, ...] = ("int8",)  # families that need calibration images
    int8: Int8Recipe | None = None
    cost: float = 20.0  # relative export cost (CPU seconds for MobileNetV3-Small, all precisions)
    read_metadata: MetadataReader | None = None  # the manifest entry embedded in an artefact
    preferred: tuple[str, ...] = ()  # precisions an app should ship, best first
    module: str = ""  # the module that registered it (worker processes import it)
    # Re-embed an artefact's entry without exporting it again (``exporters.finish.restamp``);
    # None: the decision is in the graph (Core ML's temperature) or the format cannot.
    restamp: Restamper | None = None

    def artefact_precisions(self, families: tuple[str, ...]) -> list[str]:
        """The artefact precisions this format makes for the requested families."""
        return [p for fam in families for p in self.precisions.get(fam, ())]

    def path_for(self, out_dir: Path, name: str) -> Path:
        return out_dir / f"{name}{self.extension}"

    def planned_precisions(self) -> tuple[str, ...]:
        """The artefact precisions a per-site precision plan applies to (the INT8 recipe's
        ``plan_family``; the first is the one the repair ladder scores); () without INT8."""
        return self.precisions.get(self.int8.plan_family, ()) if self.int8 else ()


EXPORTERS: dict[str, ExporterSpec] = {}


def register_exporter(name: str, *, extension: str, tools: tuple[str, ...],
                      precisions: Mapping[str, tuple[str, ...]] | None = None,
                      needs_calibration: tuple[str, ...] = ("int8",),
                      int8: Int8Recipe | None = None, cost: float = 20.0,
                      read_metadata: MetadataReader | None = None,
                      preferred: tuple[str, ...] = (), restamp: Restamper | None = None
                      ) -> Callable[[ExportFn], ExportFn]:
    """Register a format's ``export`` function with its facts; a name may be registered once."""

    def deco(fn: ExportFn) -> ExportFn:
        if name in EXPORTERS:
            raise ValueError(f"exporter {name!r} is registered twice")
        EXPORTERS[name] = ExporterSpec(
            name, fn, extension, tools, dict(precisions or DEFAULT_PRECISIONS),
            needs_calibration, int8, cost, read_metadata, preferred,
            getattr(fn, "__module__", ""), restamp)
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
        f for f in EXPORTERS if f not in BUILTIN_FORMATS)


def get_exporter(name: str) -> ExporterSpec:
    if name in BUILTIN_FORMATS and name not in EXPORTERS:
        importlib.import_module(f"exporters.{name}")
    if name not in EXPORTERS:
        raise KeyError(f"unknown format {name!r}; known formats: {', '.join(list_exporters())}")
    return EXPORTERS[name]


def precision_families() -> tuple[str, ...]:
    """Every precision family some registered format makes (``--precisions`` choices)."""
    return tuple(dict.fromkeys(fam for f in list_exporters()
                               for fam in get_exporter(f).precisions))


__all__ = [
    "BUILTIN_FORMATS",
    "EXPORTERS",
    "FLOAT_PRECISIONS",
    "ExporterSpec",
    "Int8Recipe",
    "SiteProfiler",
    "get_exporter",
    "list_exporters",
    "precision_families",
    "register_exporter",
]
