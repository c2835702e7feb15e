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

Imports numpy and the standard library only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.cli import BadInput
from kd_core.config import DEFAULT_TARGET_SENSITIVITY as DEFAULT_TARGET_SENSITIVITY
from kd_core.data.transforms import Preprocessing

MANIFEST_NAME = "manifest.json"
GATE_NAME = "gate.json"
MANIFEST_VERSION = 1
SENSITIVITY_MARGIN = 0.02  # the gate accepts sensitivity >= target - margin on the test split


class ContractError(BadInput):
    """A checkpoint, manifest or verdict file that breaks the deploy contract (names the field)."""


def _finite(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ContractError(f"{source}: {what} must be a finite number, got {value!r}")
    return float(value)


# ---- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """How logits become a decision. ``positive_index`` None: a multi-class model decides by
    argmax (no threshold); else the positive class is called when ``p >= threshold``."""

    labels: tuple[str, ...]
    positive_index: int | None
    temperature: float = 1.0
    threshold: float | None = 0.5
    target_sensitivity: float | None = DEFAULT_TARGET_SENSITIVITY

    def __post_init__(self) -> None:
        if isinstance(self.labels, list):
            object.__setattr__(self, "labels", tuple(self.labels))
        self.check("decision")

    def check(self, source: str) -> None:
        labels = self.labels
        if not isinstance(labels, tuple) or len(labels) < 2 or not all(
                isinstance(x, str) and x for x in labels):
            raise ContractError(f"{source}: labels must be at least 2 non-empty strings, "
                                f"got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ContractError(f"{source}: labels repeat a name: {list(labels)}")
        t = _finite(self.temperature, "temperature", source)
        if not 0 < t <= 1000:
            raise ContractError(f"{source}: temperature must be in (0, 1000], got {t}")
        if self.positive_index is None:
            if self.threshold is not None:
                raise ContractError(f"{source}: a threshold needs a positive class")
            return
        if isinstance(self.positive_index, bool) or not isinstance(self.positive_index, int) \
                or not 0 <= self.positive_index < len(labels):
            raise ContractError(f"{source}: positive_index must be 0..{len(labels) - 1}, got "
                                f"{self.positive_index!r}")
        thr = _finite(self.threshold, "threshold", source)
        if not 0.0 <= thr <= 1.0:
            raise ContractError(f"{source}: threshold must be a probability in [0, 1], got {thr}")
        if self.target_sensitivity is not None:
            ts = _finite(self.target_sensitivity, "target_sensitivity", source)
            if not 0.0 < ts <= 1.0:
                raise ContractError(f"{source}: target_sensitivity must be in (0, 1], got {ts}")

    @property
    def positive_label(self) -> str | None:
        return None if self.positive_index is None else self.labels[self.positive_index]

    @property
    def min_sensitivity(self) -> float | None:
        """The gate's floor on test-split sensitivity: target minus ``SENSITIVITY_MARGIN``."""
        if self.target_sensitivity is None:
            return None
        return round(self.target_sensitivity - SENSITIVITY_MARGIN, 10)

    def probabilities(self, logits: Any) -> np.ndarray:
        """``softmax(logits / temperature)`` over the last axis, float64."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
        return out

    def positive_probability(self, logits: Any) -> np.ndarray:
        if self.positive_index is None:
            raise ValueError("a multi-class decision has no positive class")
        return np.asarray(self.probabilities(logits)[..., self.positive_index])

    def decide(self, logits: Any) -> np.ndarray:
        """Per image: True when the positive class is called (``p >= threshold``); for a
        multi-class decision without a positive class, the argmax class index."""
        if self.positive_index is None:
            return np.asarray(np.argmax(np.asarray(logits), axis=-1))
        assert self.threshold is not None
        return np.asarray(self.positive_probability(logits) >= self.threshold)

    def with_calibration(self, temperature: float, threshold: float | None) -> Decision:
        return replace(self, temperature=float(temperature),
                       threshold=None if threshold is None else float(threshold))

    def to_dict(self) -> dict[str, Any]:
        """The decision fields as the manifest and the checkpoint spell them."""
        return {"labels": list(self.labels), "positive_index": self.positive_index,
                "temperature": self.temperature, "threshold": self.threshold,
                "target_sensitivity": self.target_sensitivity}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> Decision:
        """Read and check the decision fields of a manifest entry or checkpoint."""
        labels = d.get("labels")
        if not isinstance(labels, list | tuple):
            raise ContractError(f"{source}: labels must be a list of strings, got {labels!r}")
        target = d.get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY)
        try:
            return cls(tuple(labels), d.get("positive_index"), d.get("temperature"),  # type: ignore[arg-type]
                       d.get("threshold"), target)
        except ContractError as exc:
            raise ContractError(str(exc).replace("decision:", f"{source}:", 1)) from None


def compare_outputs(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """The one parity comparison of two (N, K) outputs: max |difference| and top-1 agreement."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"output shapes differ: {got.shape} vs {want.shape}")
    return {"max_abs_diff": float(np.abs(got - want).max()) if got.size else 0.0,
            "top1_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1)))}


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
        scale = _finite(quant.get("scale"), f"{key}.quantization.scale", source)
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
        return cls(
            name=name, path=path, format=_str(d, "format", where),
            precision=_str(d, "precision", where), input=_io(d, "input", where),
            output=_io(d, "output", where), decision=Decision.from_dict(d, where),
            preprocessing=preprocessing, bytes=size, sha256=d.get("sha256"),
            source_checkpoint_sha256=d.get("source_checkpoint_sha256"),
            dataset=d.get("dataset"), tool_versions=dict(d.get("tool_versions") or {}),
            export_seconds=d.get("export_seconds"), embedded_metadata=d.get("embedded_metadata"),
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
        if not isinstance(failures, list):
            raise ContractError(f"{source}: failures must be a list")
        known = {f.name for f in fields(cls)} | set(Decision.__dataclass_fields__)
        return cls(
            decision=Decision.from_dict(d, source), preprocessing=prep, artifacts=entries,
            source_checkpoint=dict(_dict(d, "source_checkpoint", source, optional=True) or {}),
            dataset=d.get("dataset"), calibration=_dict(d, "calibration", source, optional=True),
            tool_versions=dict(d.get("tool_versions") or {}), failures=tuple(failures),
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
