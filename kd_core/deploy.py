"""The deploy contract, in one place: the decision, the manifest and the gate verdicts.

- ``Decision``: labels, positive class, temperature, threshold and target sensitivity, with
  ``probabilities()`` and ``decide()``. A checkpoint, every manifest entry and every app take
  their decision from one of these; nothing else restates "softmax at T, then threshold".
- ``ManifestEntry`` / ``Manifest``: ``manifest.json`` (docs/MANIFEST.md) as frozen dataclasses,
  with one loader (``load_manifest``) and one writer (``write_manifest``); both strict (no NaN,
  every field type-checked, errors name the file and the field).
- ``GateVerdict``: the parity gate's verdict per artefact, in ``gate.json`` beside the manifest,
  bound to the artefact's sha256 so that a changed file is never "passed".
- ``compare_outputs``: the one comparison of two models' outputs (max |diff|, top-1 agreement).

``Decision``, ``compare_outputs`` and ``ContractError`` live in ``kd_core.decision`` and are
re-exported here. Imports numpy and the standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kd_core.config import DEFAULT_TARGET_SENSITIVITY as DEFAULT_TARGET_SENSITIVITY
from kd_core.data.transforms import Preprocessing
from kd_core.decision import SENSITIVITY_MARGIN as SENSITIVITY_MARGIN
from kd_core.decision import ContractError as ContractError
from kd_core.decision import Decision as Decision
from kd_core.decision import compare_outputs as compare_outputs
from kd_core.decision import finite_number
from kd_core.decision import fp32_tolerance as fp32_tolerance

MANIFEST_NAME = "manifest.json"
GATE_NAME = "gate.json"
MANIFEST_VERSION = 1


# ---- the manifest ----------------------------------------------------------------------------


def _dict(d: Mapping[str, Any], key: str, source: str, optional: bool = False
          ) -> dict[str, Any] | None:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise ContractError(f"{source}: {key} must be an object, got {value!r}")
    return value


def _str(d: Mapping[str, Any], key: str, source: str, optional: bool = False) -> str:
    value = d.get(key, "" if optional else None)
    if not isinstance(value, str) or (not optional and not value):
        raise ContractError(f"{source}: {key} must be a non-empty string, got {value!r}")
    return value


def _opt_str(d: Mapping[str, Any], key: str, source: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise ContractError(f"{source}: {key} must be a string or null, got {value!r}")
    return value


def _versions(d: Mapping[str, Any], source: str) -> dict[str, str]:
    value = d.get("tool_versions") or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise ContractError(f"{source}: tool_versions must map names to version strings, "
                            f"got {value!r}")
    return dict(value)


def _io(d: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    spec = _dict(d, key, source)
    assert spec is not None
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                              for s in shape):
        raise ContractError(f"{source}: {key}.shape must be a list of integers, got {shape!r}")
    quant = spec.get("quantization")
    if quant is not None:
        if not isinstance(quant, dict):
            raise ContractError(f"{source}: {key}.quantization must be an object or null")
        scale = finite_number(quant.get("scale"), f"{key}.quantization.scale", source)
        zero = quant.get("zero_point")
        if scale <= 0 or isinstance(zero, bool) or not isinstance(zero, int):
            raise ContractError(f"{source}: {key}.quantization needs scale > 0 and an integer "
                                f"zero_point, got {quant!r}")
    return dict(spec)


@dataclass(frozen=True)
class ManifestEntry:
    """One artefact of ``manifest.json`` (docs/MANIFEST.md). Unknown keys ride along in
    ``extra`` so that reading and writing a manifest never loses a field."""

    name: str
    path: str  # relative to the manifest's folder
    format: str
    precision: str
    input: dict[str, Any]
    output: dict[str, Any]
    decision: Decision
    preprocessing: Preprocessing
    bytes: int | None = None
    sha256: str | None = None
    source_checkpoint_sha256: str | None = None
    dataset: str | None = None  # what the model was trained on, e.g. "HAM10000"
    tool_versions: dict[str, str] = field(default_factory=dict)
    export_seconds: float | None = None
    embedded_metadata: str | None = None
    sidecars: tuple[str, ...] = ()
    quantization_recipe: dict[str, Any] | None = None
    precision_plan: dict[str, Any] | None = None  # float sites kept and why (INT8)
    repair: dict[str, Any] | None = None  # the INT8 repair ladder's record
    graph_report: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def file(self, root: str | Path) -> Path:
        """The artefact's path under the manifest's folder ``root``."""
        return Path(root) / self.path

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "path": self.path, "format": self.format,
            "precision": self.precision, "bytes": self.bytes, "sha256": self.sha256,
            "input": self.input, "output": self.output,
            "preprocessing": self.preprocessing.to_dict(), **self.decision.to_dict(),
            "source_checkpoint_sha256": self.source_checkpoint_sha256,
            "dataset": self.dataset, "tool_versions": self.tool_versions,
            "export_seconds": self.export_seconds, "embedded_metadata": self.embedded_metadata,
        }
        if self.sidecars:
            out["sidecars"] = list(self.sidecars)
        for key in ("quantization_recipe", "precision_plan", "repair", "graph_report",
                    "verification"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: Any, source: str) -> ManifestEntry:
        if not isinstance(d, dict):
            raise ContractError(f"{source}: an artefact entry must be an object, got {d!r}")
        name = _str(d, "name", source)
        where = f"{source} (artefact {name})"
        path = _str(d, "path", where)
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise ContractError(f"{where}: path must stay inside the manifest's folder: {path}")
        prep = _dict(d, "preprocessing", where)
        try:
            preprocessing = Preprocessing.from_dict(prep or {})
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{where}: bad preprocessing ({exc})") from None
        size = d.get("bytes")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ContractError(f"{where}: bytes must be a non-negative integer, got {size!r}")
        known = {f.name for f in fields(cls)} | set(Decision.__dataclass_fields__)
        sidecars = d.get("sidecars", [])
        if not isinstance(sidecars, list) or not all(isinstance(s, str) for s in sidecars):
            raise ContractError(f"{where}: sidecars must be a list of paths")
        seconds = d.get("export_seconds")
        if seconds is not None:
            finite_number(seconds, "export_seconds", where)
        return cls(
            name=name, path=path, format=_str(d, "format", where),
            precision=_str(d, "precision", where), input=_io(d, "input", where),
            output=_io(d, "output", where), decision=Decision.from_dict(d, where),
            preprocessing=preprocessing, bytes=size, sha256=_opt_str(d, "sha256", where),
            source_checkpoint_sha256=_opt_str(d, "source_checkpoint_sha256", where),
            dataset=_opt_str(d, "dataset", where), tool_versions=_versions(d, where),
            export_seconds=seconds, embedded_metadata=_opt_str(d, "embedded_metadata", where),
            sidecars=tuple(sidecars),
            **{k: _dict(d, k, where, optional=True) for k in (
                "quantization_recipe", "precision_plan", "repair", "graph_report",
                "verification")},
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: the export's shared decision plus one entry per artefact."""

    decision: Decision
    preprocessing: Preprocessing
    artifacts: tuple[ManifestEntry, ...]
    source_checkpoint: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    calibration: dict[str, Any] | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)
    failures: tuple[dict[str, Any], ...] = ()
    created_by: str = ""
    manifest_version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def entry(self, name: str) -> ManifestEntry:
        for e in self.artifacts:
            if e.name == name:
                return e
        raise KeyError(f"no artefact named {name!r}; the manifest lists "
                       f"{', '.join(e.name for e in self.artifacts) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": self.manifest_version, "created_by": self.created_by,
            "source_checkpoint": self.source_checkpoint, "dataset": self.dataset,
            "preprocessing": self.preprocessing.to_dict(), **self.decision.to_dict(),
            "calibration": self.calibration, "tool_versions": self.tool_versions,
            "artifacts": [e.to_dict() for e in self.artifacts],
            "failures": list(self.failures), **self.extra,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str) -> Manifest:
        if not isinstance(d, dict):
            raise ContractError(f"{source}: a manifest must be a JSON object")
        version = d.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise ContractError(f"{source}: manifest_version {version!r} is not supported "
                                f"(this EdgeKD reads {MANIFEST_VERSION})")
        arts = d.get("artifacts")
        if not isinstance(arts, list):
            raise ContractError(f"{source}: artifacts must be a list")
        entries = tuple(ManifestEntry.from_dict(a, source) for a in arts)
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ContractError(f"{source}: artefact names repeat: {names}")
        try:
            prep = Preprocessing.from_dict(_dict(d, "preprocessing", source) or {})
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{source}: bad preprocessing ({exc})") from None
        failures = d.get("failures", [])
        if not isinstance(failures, list) or not all(isinstance(f, dict) for f in failures):
            raise ContractError(f"{source}: failures must be a list of objects")
        known = {f.name for f in fields(cls)} | set(Decision.__dataclass_fields__)
        return cls(
            decision=Decision.from_dict(d, source), preprocessing=prep, artifacts=entries,
            source_checkpoint=dict(_dict(d, "source_checkpoint", source, optional=True) or {}),
            dataset=_opt_str(d, "dataset", source),
            calibration=_dict(d, "calibration", source, optional=True),
            tool_versions=_versions(d, source), failures=tuple(failures),
            created_by=str(d.get("created_by", "")), manifest_version=version,
            extra={k: v for k, v in d.items() if k not in known},
        )


def manifest_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/manifest.json``."""
    path = Path(path)
    return path if path.is_file() or path.suffix == ".json" else path / MANIFEST_NAME


def load_manifest(path: str | Path) -> Manifest:
    """Read and check ``manifest.json`` (a file, or the export folder holding it)."""
    from kd_core.io import loads_json

    file = manifest_path(path)
    if not file.is_file():
        raise ContractError(f"{file}: manifest not found (run python -m exporters.all CKPT "
                            f"--out {file.parent})")
    try:
        data = loads_json(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ContractError(f"{file}: not a readable manifest ({exc})") from None
    return Manifest.from_dict(data, str(file))


def write_manifest(manifest: Manifest, folder: str | Path) -> Path:
    """Write ``folder/manifest.json`` atomically and strictly (no NaN); return its path."""
    from kd_core.io import write_json

    path = Path(folder) / MANIFEST_NAME
    try:
        write_json(path, manifest.to_dict())
    except ValueError as exc:
        raise ContractError(f"{path}: refused to write a non-finite value ({exc})") from None
    return path


def entry_relpath(path: str | Path, root: str | Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


# ---- gate verdicts ---------------------------------------------------------------------------

VERDICTS = ("pass", "fail")


@dataclass(frozen=True)
class GateVerdict:
    """The parity gate's verdict on one artefact file (by its sha256), and on what data."""

    name: str
    verdict: str  # "pass" | "fail"
    sha256: str
    created: str  # ISO date-time of the benchmark run
    data: str  # the data the gate ran on (dataset folder name)
    split: str
    n: int
    reasons: tuple[str, ...] = ()
    results: str = ""  # the results.json it came from

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "sha256": self.sha256, "created": self.created,
                "data": self.data, "split": self.split, "n": self.n,
                "reasons": list(self.reasons), "results": self.results}


def read_verdicts(folder: str | Path) -> dict[str, GateVerdict]:
    """The verdicts recorded in ``folder/gate.json`` ({} when none were recorded)."""
    from kd_core.io import loads_json

    path = Path(folder) / GATE_NAME
    if not path.is_file():
        return {}
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
        out = {}
        for name, v in data["verdicts"].items():  # type: ignore[index]
            if v["verdict"] not in VERDICTS:
                raise ValueError(f"verdict {v['verdict']!r}")
            out[name] = GateVerdict(name, v["verdict"], v["sha256"], v["created"], v["data"],
                                    v["split"], int(v["n"]), tuple(v.get("reasons", ())),
                                    v.get("results", ""))
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ContractError(f"{path}: unreadable gate verdicts ({exc})") from None


def record_verdicts(folder: str | Path, verdicts: Iterable[GateVerdict]) -> Path:
    """Merge ``verdicts`` into ``folder/gate.json`` (same name: replaced), atomically."""
    from kd_core.io import write_json

    merged = read_verdicts(folder)
    merged.update({v.name: v for v in verdicts})
    path = Path(folder) / GATE_NAME
    write_json(path, {"version": 1, "verdicts": {n: v.to_dict() for n, v in sorted(
        merged.items())}})
    return path


def gate_status(entry: ManifestEntry, verdicts: Mapping[str, GateVerdict]) -> str:
    """"pass", "fail", "not run", or "stale" (gated, but the file changed since)."""
    v = verdicts.get(entry.name)
    if v is None:
        return "not run"
    if entry.sha256 is None or v.sha256 != entry.sha256:
        return "stale"
    return v.verdict
