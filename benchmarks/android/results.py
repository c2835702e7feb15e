"""Phone rows in the host harness's results schema, and merging them into ``R/results.json``.

``R/results.json`` is ``{"meta": {...}, "rows": [row, ...]}``. A phone row has the same keys as a
host row (``name, format, precision, runtime, device, location, size_bytes, status, latency,
load_ms, peak_memory_mb``) with ``location = "android"``; ``latency`` maps a thread count to
``{p50_ms, p90_ms, p99_ms, mean_ms, runs}`` plus the extra figures the tool printed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.android.parsers import DeviceBenchmark
from kd_core.cli import BadInput
from kd_core.io import loads_json, write_json

RUNTIMES = {
    "benchmark_model": "LiteRT benchmark_model",
    "executor_runner": "ExecuTorch executor_runner",
    "minibench": "ExecuTorch minibench",
    "onnxruntime_perf_test": "ONNX Runtime perf_test",
}
LOCATION = "android"


class ResultsError(BadInput):
    """An existing results.json that cannot be read or merged into (names the file)."""


def threads_key(threads: int | None) -> str:
    return "default" if threads is None or threads < 1 else str(threads)


def latency_entry(record: DeviceBenchmark) -> dict[str, Any]:
    return {
        "p50_ms": record.p50_ms, "p90_ms": record.p90_ms, "p99_ms": record.p99_ms,
        "mean_ms": record.avg_ms, "runs": record.runs,
        "min_ms": record.min_ms, "max_ms": record.max_ms, "std_ms": record.std_ms,
        "p5_ms": record.p5_ms, "p95_ms": record.p95_ms,
        "first_ms": record.first_ms, "warmup_avg_ms": record.warmup_avg_ms,
    }


def _base_row(artifact: Mapping[str, Any], tool: str, device: str | None) -> dict[str, Any]:
    name = artifact.get("name") or Path(str(artifact.get("path", "?"))).stem
    return {
        "name": name,
        "format": artifact.get("format"),
        "precision": artifact.get("precision"),
        "runtime": RUNTIMES.get(tool, tool),
        "device": device,
        "location": LOCATION,
        "size_bytes": artifact.get("bytes"),
        "status": "ok",
        "latency": {},
        "load_ms": None,
        "peak_memory_mb": None,
        "delegate": None,
    }


def to_result_row(record: DeviceBenchmark, artifact: Mapping[str, Any]) -> dict[str, Any]:
    """One phone row from one timing record and the artefact's manifest entry."""
    row = _base_row(artifact, record.tool, record.device)
    row["latency"] = {threads_key(record.threads): latency_entry(record)}
    row["load_ms"] = record.init_ms
    row["peak_memory_mb"] = record.peak_memory_mb
    row["delegate"] = record.delegate
    row["memory_init_mb"] = record.memory_init_mb
    row["memory_overall_mb"] = record.memory_overall_mb
    return row


def error_row(artifact: Mapping[str, Any], tool: str, device: str | None,
              message: str) -> dict[str, Any]:
    """A phone row for an artefact whose run failed; ``status`` holds the error text."""
    row = _base_row(artifact, tool, device)
    row["status"] = message
    return row


def row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row.get("name"), row.get("runtime"), row.get("device"), row.get("location"))


def combine_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge rows of the same artefact/runtime/device (one per thread count) into one row.

    The status is ``ok`` when at least one thread count was timed; failed thread counts are
    listed under ``errors``.
    """
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    failures: dict[tuple[Any, ...], list[str]] = {}
    for row in rows:
        key = row_key(row)
        if row["status"] != "ok":
            failures.setdefault(key, []).append(row["status"])
        if key not in merged:
            merged[key] = {**row, "latency": dict(row["latency"])}
            continue
        into = merged[key]
        into["latency"].update(row["latency"])
        for field in ("load_ms", "delegate", "memory_init_mb", "memory_overall_mb"):
            if into.get(field) is None:
                into[field] = row.get(field)
        both = (into.get("peak_memory_mb"), row.get("peak_memory_mb"))
        peaks = [p for p in both if p is not None]
        into["peak_memory_mb"] = max(peaks) if peaks else None
    for key, into in merged.items():
        if key in failures:
            into["errors"] = failures[key]
            into["status"] = "ok" if into["latency"] else failures[key][0]
    return list(merged.values())


def load_results(path: Path) -> dict[str, Any]:
    """A results file, strictly parsed (``NaN``/``Infinity`` are errors, not numbers)."""
    try:
        data: Any = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read results ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ResultsError(f"{path}: not a results file (expected {{'meta': ..., 'rows': [...]}})")
    data.setdefault("meta", {})
    return data


def merge_results(out_dir: str | Path, rows: list[dict[str, Any]],
                  device_meta: Mapping[str, Any] | None = None) -> Path:
    """Add phone rows to ``out_dir/results.json`` (created when absent); returns its path.

    Host rows and rows of other phones are kept; a row of the same artefact, runtime and device
    is replaced. The write is atomic.
    """
    path = Path(out_dir) / "results.json"
    data = load_results(path) if path.exists() else {"meta": {}, "rows": []}
    new_keys = {row_key(r) for r in rows}
    kept = [r for r in data["rows"] if not isinstance(r, dict) or row_key(r) not in new_keys]
    data["rows"] = kept + rows
    if device_meta is not None:
        devices = data["meta"].setdefault("android_devices", {})
        name = str(device_meta.get("description") or device_meta.get("serial") or "android")
        devices[name] = {**device_meta, "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json(path, data)
    return path


def attach_accuracy(out_dir: str | Path, name: str, device: str,
                    accuracy: Mapping[str, Any]) -> bool:
    """Put on-device accuracy into the matching phone row(s) of ``results.json``; False if none."""
    path = Path(out_dir) / "results.json"
    if not path.exists():
        return False
    data = load_results(path)
    hit = False
    for row in data["rows"]:
        if (isinstance(row, dict) and row.get("name") == name and row.get("device") == device
                and row.get("location") == LOCATION):
            row["accuracy"] = dict(accuracy)
            hit = True
    if hit:
        write_json(path, data)
    return hit
