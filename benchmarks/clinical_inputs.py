"""What the clinical evaluation reads: a harness results folder, joined to its split's metadata.

``load_scored_run(R)`` reads ``R/results.json`` and ``R/predictions.npz`` (labels, every
model's logits and, since #17, the image ids in split order), takes each model's decision from
the export's manifest (artefacts) or from what the harness recorded (float models), and joins
every image to its metadata row in the prepared split CSV (which keeps every metadata column,
e.g. the Dataverse release's ``dataset``). Nothing here trains or runs a model.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.cli import BadInput
from kd_core.deploy import ContractError, Decision, Manifest, load_manifest

log = logging.getLogger(__name__)
SPLIT_FILES = {"train": "train_data.csv", "val": "val_data.csv", "holdout": "holdout_data.csv"}


class ClinicalError(BadInput):
    """A results folder that cannot be evaluated (missing or inconsistent file); names it."""


@dataclass(frozen=True)
class ScoredModel:
    """One model's outputs on the split, with the decision it ships with."""

    name: str
    role: str  # teacher | student | artifact
    format: str
    precision: str
    decision: Decision
    logits: np.ndarray
    row: dict[str, Any]
    repair: dict[str, Any] | None = None

    @cached_property
    def p(self) -> np.ndarray:
        """P(melanoma) per image, at the model's temperature."""
        return self.decision.positive_probability(self.logits)

    @cached_property
    def calls(self) -> np.ndarray:
        """The shipped decision per image (True: refer as possible melanoma)."""
        return np.asarray(self.decision.decide(self.logits), dtype=bool)

    @property
    def is_float(self) -> bool:
        return self.role in ("teacher", "student")


@dataclass(frozen=True)
class ScoredRun:
    results_dir: Path
    meta: dict[str, Any]
    results: dict[str, Any]
    image_ids: list[str]
    y: np.ndarray  # 0/1 melanoma per image
    metadata: list[dict[str, str]]  # the split's metadata row of every image, in order
    columns: list[str]
    models: list[ScoredModel]
    train_metadata: list[dict[str, str]] = field(default_factory=list)
    manifest: Manifest | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> ScoredModel | None:
        """The float student: the reference every artefact is compared with."""
        return next((m for m in self.models if m.role == "student"), None)

    def column(self, name: str) -> list[str]:
        return [row.get(name, "") for row in self.metadata]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ClinicalError(f"{path}: not found (run python -m benchmarks.run first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ClinicalError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ClinicalError(f"{path}: not a results file (expected meta and rows)")
    return data


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise ClinicalError(f"{path}: split file not found (the prepared folder moved?)")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
        return list(reader.fieldnames or []), rows


def _predictions(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ClinicalError(f"{path}: not found (the harness writes it beside results.json)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ClinicalError(f"{path}: unreadable ({exc})") from None


def _align(ids: list[str] | None, rows: list[dict[str, str]], n: int, csv_path: Path,
           notes: list[str]) -> list[dict[str, str]]:
    """The metadata rows of the scored images, in the order of the predictions."""
    if ids is None:
        if len(rows) != n:
            raise ClinicalError(f"{csv_path}: {len(rows)} rows but {n} predictions, and "
                                "predictions.npz has no image_ids (rerun benchmarks.run)")
        notes.append("predictions.npz has no image ids; images joined in split order")
        return rows
    by_id = {r.get("image_id", ""): r for r in rows}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ClinicalError(f"{csv_path}: {len(missing)} scored image(s) are not in the split, "
                            f"e.g. {missing[0]}")
    return [by_id[i] for i in ids]


def _manifest(meta: dict[str, Any], notes: list[str]) -> Manifest | None:
    path = meta.get("artifacts")
    if not path:
        return None
    try:
        return load_manifest(Path(str(path)))
    except ContractError as exc:
        notes.append(f"manifest not read ({exc}); decisions taken from results.json")
        return None


def decision_for(row: dict[str, Any], k: int, manifest: Manifest | None,
                 target: float | None) -> Decision:
    """The artefact's manifest decision, else the temperature, threshold and positive class the
    harness recorded for the row (float models)."""
    if manifest is not None and row.get("role") == "artifact":
        for entry in manifest.artifacts:
            if entry.name == row["name"]:
                return entry.decision
    acc = row.get("accuracy") or {}
    labels = manifest.decision.labels if manifest and len(manifest.decision.labels) == k else \
        tuple(f"class_{i}" for i in range(k))
    try:
        return Decision(labels, int(acc["positive_index"]), float(acc["temperature"]),
                        float(acc["threshold"]), target)
    except (KeyError, TypeError, ValueError) as exc:
        raise ClinicalError(f"results.json row {row.get('name')}: no usable decision "
                            f"({exc})") from None


def _models(results: dict[str, Any], arrays: dict[str, np.ndarray],
            manifest: Manifest | None) -> list[ScoredModel]:
    target = ((results.get("meta") or {}).get("shipped") or {}).get("target_sensitivity")
    out = []
    for row in results["rows"]:
        key = f"logits__{row.get('name')}"
        if row.get("location", "host") != "host" or row.get("status") != "ok" or key not in arrays:
            continue
        logits = np.asarray(arrays[key], dtype=np.float64)
        repair = None
        if manifest is not None and row.get("role") == "artifact":
            repair = next((e.repair for e in manifest.artifacts if e.name == row["name"]), None)
        out.append(ScoredModel(str(row["name"]), str(row.get("role")), str(row.get("format")),
                               str(row.get("precision")),
                               decision_for(row, logits.shape[1], manifest, target), logits, row,
                               repair))
    return out


def load_scored_run(results_dir: str | Path) -> ScoredRun:
    """Everything the subgroup tables, curves and model card need from one results folder."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ClinicalError(f"{results_dir}: results folder not found")
    results = _read_json(results_dir / "results.json")
    meta = dict(results.get("meta") or {})
    arrays = _predictions(results_dir / "predictions.npz")
    if "y_pos" not in arrays:
        raise ClinicalError(f"{results_dir / 'predictions.npz'}: no y_pos labels")
    y = np.asarray(arrays["y_pos"]).astype(np.int64)
    notes: list[str] = []
    prepared, split = meta.get("prepared"), str(meta.get("split", "holdout"))
    if not prepared or split not in SPLIT_FILES:
        raise ClinicalError(f"{results_dir / 'results.json'}: meta names no prepared folder "
                            "and split")
    csv_path = Path(str(prepared)) / SPLIT_FILES[split]
    columns, rows = read_csv_rows(csv_path)
    if meta.get("limit"):
        rows = rows[: int(meta["limit"])]
    ids = [str(i) for i in arrays["image_ids"]] if "image_ids" in arrays else None
    metadata = _align(ids, rows, len(y), csv_path, notes)
    if "target" in columns and [int(r["target"]) for r in metadata] != y.tolist():
        raise ClinicalError(f"{csv_path}: melanoma labels disagree with predictions.npz")
    manifest = _manifest(meta, notes)
    models = _models(results, arrays, manifest)
    if not models:
        raise ClinicalError(f"{results_dir}: no model ran successfully; nothing to evaluate")
    train_path = Path(str(prepared)) / SPLIT_FILES["train"]
    train = read_csv_rows(train_path)[1] if train_path.is_file() else []
    return ScoredRun(results_dir, meta, results, ids or [r.get("image_id", "") for r in metadata],
                     y, metadata, columns, models, train, manifest, notes)
