"""The benchmark harness as a library: every artefact in its real runtime, against the float
teacher and student, on the same images; then the parity gate (``run_benchmarks``).

Before any work it checks the configuration, the output folder, the manifest
(``kd_core.deploy.load_manifest``), the checkpoints and the data. Each artefact's file is checked
against the manifest's sha256 before it is scored: a modified or missing file is a failed row.
``save_results`` writes the results folder and records the gate's verdict on every gated
artefact in the export folder's ``gate.json`` (``kd_core.deploy.record_verdicts``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inputs import BenchInputError, check_counts, check_threads
from benchmarks.parity import GateReport, Tolerances, gate_report
from kd_core.deploy import ManifestEntry
from kd_core.io import check_output_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    artifacts: str
    student_ckpt: str
    data_dir: str
    teacher_ckpt: str | None = None
    prepared_dir: str | None = None
    split: str = "holdout"
    threads: tuple[int, ...] = tuple(dict.fromkeys((1, os.cpu_count() or 1)))
    runs: int = 100
    warmup: int = 10
    latency: bool = True
    limit: int | None = None
    formats: tuple[str, ...] | None = None  # None: every artefact in the manifest
    bootstrap: int = 1000
    seed: int = 42
    out: str = "artifacts/bench"
    tolerances: Tolerances = field(default_factory=Tolerances)
    gate: bool = True


@dataclass(frozen=True)
class Model:
    role: str  # teacher | student | artifact
    entry: ManifestEntry
    root: Path
    digest: str | None = None  # the file's sha256 as found (artefacts)
    problem: str | None = None  # why the file cannot be trusted (then it is not run)

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class Results:
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    gate: GateReport | None  # None: the float student did not run, so nothing was gated
    y_pos: np.ndarray  # 0/1 the student's positive class (melanoma) per image; 0 without one
    y_dx: np.ndarray  # the dataset's class index per image (HAM10000: dx)
    logits: dict[str, np.ndarray]  # row name -> (N, K)
    digests: dict[str, str | None] = field(default_factory=dict)  # artefact name -> sha256
    image_ids: tuple[str, ...] = ()  # split order: joins predictions to the split's metadata

    @property
    def passed(self) -> bool:
        return self.gate is not None and self.gate.passed

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": self.rows,
                "gate": None if self.gate is None else self.gate.to_dict()}


# ---- inputs ---------------------------------------------------------------------------------


def check_config(cfg: BenchConfig) -> None:
    """Every flag, then the output folders: bad input is found before any work."""
    from runtimes import list_runtimes

    check_counts(runs=(cfg.runs, 1), warmup=(cfg.warmup, 0), bootstrap=(cfg.bootstrap, 0),
                 limit=(cfg.limit, 2))
    check_threads(cfg.threads)
    if cfg.formats is not None:
        known = list_runtimes()
        unknown = [f for f in cfg.formats if f not in known]
        if unknown or not cfg.formats:
            raise BenchInputError(f"--formats: unknown {', '.join(unknown) or '(none given)'}; "
                                  f"known formats: {', '.join(known)}")
    if cfg.split not in ("train", "val", "holdout"):
        raise BenchInputError(f"--split must be train, val or holdout, got {cfg.split!r}")
    if not 0 <= cfg.tolerances.min_top1_agreement <= 1:
        raise BenchInputError(f"--min-top1-agreement must be from 0 to 1, got "
                              f"{cfg.tolerances.min_top1_agreement}")
    check_output_dir(cfg.out, "--out")
    if cfg.prepared_dir is not None:
        from kd_core.data.prepared import is_prepared_dir

        if not is_prepared_dir(Path(cfg.prepared_dir)):  # the splits will be written there
            check_output_dir(cfg.prepared_dir, "--prepared-dir")
    existing = Path(cfg.out) / "results.json"
    if existing.is_file():  # its phone rows are kept: it must be readable, found before work
        from benchmarks.android.results import load_results

        load_results(existing)


def checkpoint_model(role: str, path: str) -> Model:
    from runtimes import RuntimeLoadError
    from runtimes.torch_eager import checkpoint_entry

    try:
        entry = checkpoint_entry(Path(path))
    except RuntimeLoadError as exc:
        raise BenchInputError(str(exc)) from None
    arch = entry.extra.get("arch") or Path(path).stem
    return Model(role, replace(entry, name=f"float_{role}_{arch}"), Path(path).parent)


def collect_models(cfg: BenchConfig) -> list[Model]:
    """Teacher and student checkpoints, then the manifest's artefacts (optionally filtered),
    each artefact checked against the manifest's sha256."""
    from benchmarks.integrity import artifact_problem, file_digest
    from kd_core.deploy import load_manifest, manifest_path

    manifest = load_manifest(cfg.artifacts)
    root = manifest_path(cfg.artifacts).parent
    models = [checkpoint_model(role, ckpt) for role, ckpt in (
        ("teacher", cfg.teacher_ckpt), ("student", cfg.student_ckpt)) if ckpt is not None]
    for entry in manifest.artifacts:
        if cfg.formats is None or entry.format in cfg.formats:
            digest = file_digest(entry.file(root))
            models.append(Model("artifact", entry, root, digest,
                                artifact_problem(entry, root, digest)))
    check_output_dir(root, "--artifacts (gate.json is recorded there)")
    return models


def prepared_split(cfg: BenchConfig) -> tuple[Any, Path]:
    """The split (``SplitData``) to score, prepared (or reused) from ``cfg.data_dir``."""
    from kd_core.data.prepared import DataError, load_split
    from kd_core.data.sources import resolve_prepared

    try:
        prepared = resolve_prepared(Path(cfg.data_dir), Path(cfg.prepared_dir)
                                    if cfg.prepared_dir else None)
        split = load_split(prepared, cfg.split)
    except DataError as exc:
        raise BenchInputError(str(exc)) from None
    if cfg.limit is not None:
        n = cfg.limit
        split = replace(split, image_ids=split.image_ids[:n], paths=split.paths[:n],
                        targets=split.targets[:n], dx=split.dx[:n], groups=split.groups[:n])
    return split, prepared


def labels_for(entry: ManifestEntry, split: Any) -> np.ndarray:
    """Each image's class index under the entry's labels (any dataset, any task)."""
    from kd_core.data.prepared import DataError

    try:
        return np.asarray(split.labels_for(list(entry.decision.labels),
                                           entry.decision.positive_index))
    except DataError as exc:
        raise BenchInputError(f"{entry.name}: {exc}") from None


def student_labels(models: list[Model], split: Any, prepared: Path, name: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(class index per image, 0/1 positive per image; all 0 without a positive class) under
    the float student's labels; a split the student's metrics are undefined on is refused."""
    student = next(m for m in models if m.role == "student")
    y = labels_for(student.entry, split)
    pos = student.entry.decision.positive_index
    if pos is None:
        if len(set(y.tolist())) < 2:
            raise BenchInputError(f"{prepared}: the {name} split ({len(y)} images) needs "
                                  "images of at least 2 classes")
        return y, np.zeros(len(y), dtype=np.int64)
    y_pos = (y == pos).astype(np.int64)
    if len(y) == 0 or y_pos.min() == y_pos.max():
        label = student.entry.decision.labels[pos]
        raise BenchInputError(f"{prepared}: the {name} split ({len(y)} images) needs both "
                              f"{label} and other images")
    return y, y_pos


# ---- scoring --------------------------------------------------------------------------------


def run_model(model: Model, pixels: np.ndarray, threads: int) -> tuple[str, str, np.ndarray | None]:
    """(status, runtime name, logits) of one model on every image, in-process."""
    from benchmarks.accuracy import predict_all
    from runtimes import RuntimeUnavailable, load_runner, runtime_label

    if model.problem is not None:
        return model.problem, runtime_label(model.entry.format), None
    try:
        runner = load_runner(model.entry, model.root, threads)
        logits = predict_all(runner, pixels, model.entry.preprocessing, desc=model.name)
    except RuntimeUnavailable as exc:
        return str(exc), runtime_label(model.entry.format), None
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}", runtime_label(model.entry.format), None
    k = len(model.entry.decision.labels)
    if logits.shape != (len(pixels), k) or not np.isfinite(logits).all():
        return f"error: bad outputs {logits.shape} (expected {len(pixels)} x {k}, finite)", \
            runner.runtime, None
    return "ok", runner.runtime, logits


def base_row(model: Model, status: str, runtime: str, device: str) -> dict[str, Any]:
    e = model.entry
    return {"name": model.name, "role": model.role, "format": e.format,
            "precision": e.precision, "runtime": runtime, "device": device,
            "location": "host", "size_bytes": e.bytes, "sha256": model.digest or e.sha256,
            "status": status, "decision": e.decision.to_dict(), "latency": {},
            "load_ms": None, "peak_memory_mb": None, "accuracy": None,
            "path": str(e.file(model.root)), **int8_fields(e)}


def int8_fields(e: ManifestEntry) -> dict[str, Any]:
    """What the export did to an INT8 artefact: the repair ladder's rung (None: no repair
    ran) and the float sites of its precision plan, ``name (reason)``."""
    plan = e.precision_plan or {}
    return {"repair_rung": (e.repair or {}).get("rung"),
            "float_sites": [f"{s.get('name')} ({s.get('reason')})"
                            for s in plan.get("float_sites", [])]}


def accuracy_row(model: Model, logits: np.ndarray, y: np.ndarray, refs: dict[str, Model],
                 all_logits: dict[str, np.ndarray], cfg: BenchConfig) -> dict[str, Any]:
    from benchmarks.accuracy import agreement, score

    acc = score(logits, y, model.entry.decision, cfg.bootstrap, cfg.seed)
    for role in ("student", "teacher"):
        ref = refs.get(role)
        if ref is None or ref.name not in all_logits or ref.name == model.name:
            continue
        agree = agreement(logits, model.entry.decision, all_logits[ref.name], ref.entry.decision)
        acc.update({f"{k}_vs_{role}": v for k, v in agree.items()})
    return acc


def add_deltas(rows: list[dict[str, Any]]) -> None:
    ref = next((r for r in rows if r["role"] == "student" and r["accuracy"]), None)
    for row in rows:
        if ref is not None and row["accuracy"]:
            row["accuracy"]["roc_auc_delta_vs_student"] = (
                row["accuracy"]["roc_auc"] - ref["accuracy"]["roc_auc"])
            row["accuracy"]["ece_delta_vs_student"] = (
                row["accuracy"]["ece"] - ref["accuracy"]["ece"])


def run_benchmarks(cfg: BenchConfig) -> Results:
    """Check every input, then score, time and gate every model."""
    from tqdm import tqdm

    from benchmarks.accuracy import decode
    from runtimes import host_device

    check_config(cfg)
    models = collect_models(cfg)
    split, prepared = prepared_split(cfg)
    _, y_pos = student_labels(models, split, prepared, cfg.split)
    pixels = decode(dict.fromkeys(m.entry.preprocessing for m in models), split.paths,
                    None if cfg.limit else prepared / "cache")
    device = host_device()
    refs = {m.role: m for m in models if m.role in ("teacher", "student")}
    rows, logits = [], {}
    for m in tqdm(models, desc="accuracy", unit="model"):
        status, runtime, z = run_model(m, pixels[m.entry.preprocessing], max(cfg.threads))
        rows.append(base_row(m, status, runtime, device))
        if z is not None:
            logits[m.name] = z
    for m, row in zip(models, rows, strict=True):
        if m.name in logits:
            row["accuracy"] = accuracy_row(m, logits[m.name], labels_for(m.entry, split), refs,
                                           logits, cfg)
    add_deltas(rows)
    if cfg.latency:
        time_all(models, rows, pixels, cfg)
    meta = build_meta(cfg, models, split, prepared, device, y_pos)
    report = None
    if "student" in refs and refs["student"].name in logits:  # else the gate cannot run
        report = gate_report({"rows": rows}, cfg.tolerances, cfg.gate)
    return Results(meta, rows, report, y_pos, np.asarray(split.labels_for("dx")), logits,
                   {m.name: m.digest for m in models if m.role == "artifact"},
                   tuple(split.image_ids))


def time_all(models: list[Model], rows: list[dict[str, Any]], pixels: dict[Any, np.ndarray],
             cfg: BenchConfig) -> None:
    import tempfile

    from tqdm import tqdm

    from benchmarks.latency import LatencySettings, time_entry
    from kd_core.data.transforms import normalize

    settings = LatencySettings(runs=cfg.runs, warmup=cfg.warmup)
    with tempfile.TemporaryDirectory(prefix="edgekd-latency-") as tmp:
        images = {}
        for i, prep in enumerate(pixels):
            images[prep] = Path(tmp) / f"image_{i}.npy"
            np.save(images[prep], normalize(pixels[prep][0], prep))
        todo = [(m, r) for m, r in zip(models, rows, strict=True) if r["status"] == "ok"]
        for m, row in tqdm(todo, desc="latency", unit="model"):
            row.update(time_entry(m.entry, m.root, cfg.threads, settings,
                                  images[m.entry.preprocessing]))


def build_meta(cfg: BenchConfig, models: list[Model], split: Any, prepared: Path,
               device: str, y: np.ndarray) -> dict[str, Any]:
    from benchmarks.latency import LatencySettings, tool_versions
    from kd_core.deploy import manifest_path
    from kd_core.io import sha256_file

    student = next(m for m in models if m.role == "student")
    student_sha = sha256_file(Path(cfg.student_ckpt))
    stale = [m.name for m in models if m.role == "artifact"
             and m.entry.source_checkpoint_sha256 not in (None, student_sha)]
    warnings = [f"{', '.join(stale)}: exported from another checkpoint than the float student"
                ] if stale else []
    return {
        "data": str(cfg.data_dir), "prepared": str(prepared), "split": cfg.split,
        "n": len(split), "n_pos": int(y.sum()), "prevalence": float(y.mean()),
        "positive": student.entry.decision.positive_label,  # None: argmax over the labels
        "labels": list(student.entry.decision.labels),
        "limit": cfg.limit, "image_size": student.entry.preprocessing.size, "host": device,
        "cpu_count": os.cpu_count(),
        "threads": list(cfg.threads), "latency": {
            "runs": cfg.runs, "warmup": cfg.warmup, "batch": 1, "isolation": "process per run",
            "min_seconds": LatencySettings.min_seconds,
            "warmup_seconds": LatencySettings.warmup_seconds},
        "versions": tool_versions(), "tolerances": cfg.tolerances.to_dict(),
        "seed": cfg.seed, "bootstrap": cfg.bootstrap,
        "artifacts": str(manifest_path(cfg.artifacts)),
        "student_ckpt": {"path": str(cfg.student_ckpt), "sha256": student_sha},
        "teacher_ckpt": ({"path": str(cfg.teacher_ckpt), "sha256": sha256_file(
            Path(cfg.teacher_ckpt))} if cfg.teacher_ckpt else None),
        "shipped": student.entry.decision.to_dict(),
        "warnings": warnings,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
