"""Pure parsers for the output of the official on-device benchmark tools.

Every parser turns a tool's text (or JSON) into a ``DeviceBenchmark``: times in milliseconds,
memory in MB, ``None`` where the tool does not print a figure. The formats are described in
``shared/docs/ONDEVICE.md``; the fixtures in ``tests/fixtures/ondevice/`` hold one of each variant.

- LiteRT/TFLite ``benchmark_model`` (classic): ``count=`` stat lines and the
  ``Inference timings in us:`` line (microseconds), with or without ``INFO:``/logcat prefixes,
  ``p5/median/p95`` fields and exponent numbers (``1.23457e+06``).
- LiteRT 2.x ``benchmark_model``/``litert-benchmark``: the ``BENCHMARK RESULTS`` block (ms).
- ExecuTorch ``executor_runner``: ``Model executed successfully N time(s) in T ms.``
  (T is the TOTAL of the N runs).
- ExecuTorch minibench app: ``benchmark_results.json``.
- ONNX Runtime ``onnxruntime_perf_test``: averages in ms, percentiles in seconds, memory in bytes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from kd_core.cli import JobFailed

NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_UNIT_TO_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3}
MIB = float(1 << 20)


class ParseError(JobFailed):
    """A tool's output holds no timing line, or an impossible figure (not finite, negative)."""


@dataclass(frozen=True)
class DeviceBenchmark:
    """One on-device timing run of one model. Times in ms, memory in MB; None where absent."""

    tool: str
    model_path: str | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    warmup_avg_ms: float | None = None
    avg_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    p5_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    peak_memory_mb: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    runs: int | None = None
    threads: int | None = None
    delegate: str | None = None
    device: str | None = None
    p90_ms: float | None = None  # onnxruntime_perf_test prints these two as well
    p99_ms: float | None = None

    def __post_init__(self) -> None:
        """Times and memory are finite and non-negative (``1e400`` parses as infinity)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_ms", "_mb", "runs")) and value is not None and (
                    not math.isfinite(value) or value < 0):
                raise ParseError(f"{self.tool} output has an impossible {f.name} ({value!r}): "
                                 "timings and memory must be finite and non-negative")


def last_lines(text: str, n: int = 10) -> str:
    """The last ``n`` non-empty lines of ``text``, indented, for error messages."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "    (no output)"
    return "\n".join("    " + ln for ln in lines[-n:])


def _no_timing(tool: str, text: str) -> ParseError:
    return ParseError(f"{tool} output has no timing line; its last lines were:\n{last_lines(text)}")


def _search(pattern: str, text: str) -> re.Match[str] | None:
    """The LAST match of ``pattern`` in ``text`` (tools may print a figure more than once)."""
    found = None
    for found in re.finditer(pattern, text):  # noqa: B007
        pass
    return found


def _float(pattern: str, text: str, scale: float = 1.0) -> float | None:
    m = _search(pattern, text)
    return None if m is None else float(m.group(1)) * scale


def _ms(value: str, unit: str | None, default_unit: str) -> float:
    return float(value) * _UNIT_TO_MS[(unit or default_unit).replace("µ", "u")]


def _delegate(text: str, default: str | None) -> str | None:
    low = text.lower()
    keys = (("xnnpack delegate", "xnnpack"), ("xnnpackbackend", "xnnpack"),
            ("gpu delegate", "gpu"), ("delegate for gpu", "gpu"), ("nnapi delegate", "nnapi"),
            ("hexagon delegate", "hexagon"))
    for key, name in keys:
        if key in low:
            return name
    return default


# --------------------------------------------------------------------------- benchmark_model


def _stat_line(text: str) -> dict[str, float]:
    """key=value pairs of the last ``count=`` line (the measured runs; the first is warm-up)."""
    m = _search(r"\bcount=\d+[^\n]*", text)
    if m is None:
        return {}
    return {k: float(v) for k, v in re.findall(rf"\b(\w+)=({NUM})(?![\w.])", m.group(0))}


def _timings_line(text: str) -> dict[str, float]:
    """Fields of the classic ``Inference timings in us:`` line, converted to ms."""
    m = _search(r"Inference timings in us:[^\n]*", text)
    if m is None:
        return {}
    line, out = m.group(0), {}
    keys = {"init": r"Init", "first": r"First inference", "warmup": r"Warmup \(avg\)",
            "avg": r"Inference \(avg\)"}
    for key, label in keys.items():
        f = re.search(rf"{label}:\s*({NUM})", line)
        if f:
            out[key] = float(f.group(1)) / 1000.0
    return out


def _litert2_block(text: str) -> dict[str, float]:
    """Fields of the LiteRT 2.x ``BENCHMARK RESULTS`` block, in ms (units are read, not assumed)."""
    unit = r"\s*(ms|us|µs|s)\b"
    out: dict[str, float] = {}
    patterns = {
        "init": rf"Model initialization:\s*({NUM}){unit}",
        "first": rf"(?:Warmup \(first\)|First inference):\s*({NUM}){unit}",
        "warmup": rf"Warmup \(avg\):\s*({NUM}){unit}",
        "avg": rf"Inference \(avg\):\s*({NUM}){unit}",
    }
    for key, pat in patterns.items():
        m = _search(pat, text)
        if m:
            out[key] = _ms(m.group(1), m.group(2), "ms")
    m = _search(rf"Inference \(avg\):\s*{NUM}\s*\w+\s*\((\d+) runs?\)", text)
    if m:
        out["runs"] = float(m.group(1))
    m = _search(rf"Inference \(min\)/\(max\):\s*({NUM}){unit}\s*;\s*({NUM}){unit}", text)
    if m:
        out["min"] = _ms(m.group(1), m.group(2), "ms")
        out["max"] = _ms(m.group(3), m.group(4), "ms")
    m = _search(rf"Inference \(std\):\s*({NUM})(?:\s*(ms|us|µs|s)\b)?", text)
    if m:
        out["std"] = _ms(m.group(1), m.group(2), "ms")
    return out


def parse_benchmark_model(
    text: str,
    *,
    model_path: str | None = None,
    threads: int | None = None,
    delegate: str | None = None,
    device: str | None = None,
) -> DeviceBenchmark:
    """Parse classic or LiteRT 2.x ``benchmark_model`` output (prefixes and logcat allowed)."""
    stat, timings, block = _stat_line(text), _timings_line(text), _litert2_block(text)
    if "avg" not in block and "avg" not in timings and "avg" not in stat:
        raise _no_timing("benchmark_model", text)
    us = 1e-3

    def pick(block_key: str, timing_key: str, stat_key: str | None) -> float | None:
        if block_key in block:
            return block[block_key]
        if timing_key in timings:
            return timings[timing_key]
        return stat[stat_key] * us if stat_key and stat_key in stat else None

    init = pick("init", "init", None)
    if init is None:
        init = _float(rf"Initialized session in\s*({NUM})\s*ms", text)
    graph = _search(r"Graph:\s*\[([^\]]+)\]", text)
    nthreads = _search(r"Num threads:\s*\[(-?\d+)\]", text)
    runs = block.get("runs", stat.get("count"))
    return DeviceBenchmark(
        tool="benchmark_model",
        model_path=model_path or (graph.group(1) if graph else None),
        init_ms=init,
        first_ms=pick("first", "first", "first"),
        warmup_avg_ms=pick("warmup", "warmup", None),
        avg_ms=pick("avg", "avg", "avg"),
        min_ms=pick("min", "", "min"),
        max_ms=pick("max", "", "max"),
        std_ms=pick("std", "", "std"),
        p5_ms=stat["p5"] * us if "p5" in stat else None,
        p50_ms=stat["median"] * us if "median" in stat else None,
        p95_ms=stat["p95"] * us if "p95" in stat else None,
        peak_memory_mb=_float(rf"Overall peak memory footprint \(MB\)[^:\n]*:\s*({NUM})", text),
        memory_init_mb=_float(rf"Memory footprint delta[^\n]*?\binit=({NUM})", text),
        memory_overall_mb=_float(rf"Memory footprint delta[^\n]*?\boverall=({NUM})", text),
        runs=int(runs) if runs is not None else None,
        threads=threads if threads is not None else (int(nthreads.group(1)) if nthreads else None),
        delegate=_delegate(text, delegate),
        device=device,
    )


# --------------------------------------------------------------------------- ExecuTorch


def parse_executor_runner(
    text: str,
    *,
    model_path: str | None = None,
    threads: int | None = None,
    delegate: str | None = None,
    device: str | None = None,
) -> DeviceBenchmark:
    """Parse ``executor_runner`` output: its line gives the TOTAL of N runs; avg = total / N."""
    m = _search(rf"Model executed successfully\s+(\d+)\s+time\(s\)\s+in\s+({NUM})\s*(ms|us|s)\b",
                text)
    if m is None:
        raise _no_timing("executor_runner", text)
    runs = int(m.group(1))
    if runs <= 0:
        raise ParseError(f"executor_runner reports {runs} executions; nothing was timed")
    total_ms = _ms(m.group(2), m.group(3), "ms")
    loaded = _search(r"Model file (\S+) is loaded", text)
    return DeviceBenchmark(
        tool="executor_runner",
        model_path=model_path or (loaded.group(1) if loaded else None),
        avg_ms=total_ms / runs,
        runs=runs,
        threads=threads,
        delegate=_delegate(text, delegate),
        device=device,
    )


_MINIBENCH_METRICS = {
    "avg_inference_latency(ms)": "avg_ms",
    "model_load_time(ms)": "init_ms",
    "first_inference_latency(ms)": "first_ms",
    "ram_pss_usage(mb)": "peak_memory_mb",
}


def _minibench_device(info: Any) -> str | None:
    if not isinstance(info, dict) or not info:
        return None
    parts = [str(info[k]) for k in ("device", "arch", "os") if info.get(k)]
    return " ".join(parts) or None


def parse_minibench_json(data: str | list[Any]) -> list[DeviceBenchmark]:
    """Parse the minibench app's ``benchmark_results.json``: one record per (model, backend)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ParseError(f"minibench results are not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ParseError("minibench results must be a JSON list of metric entries")
    records: dict[tuple[str, str], DeviceBenchmark] = {}
    for entry in data:
        if not isinstance(entry, dict) or "metric" not in entry:
            raise ParseError(f"minibench entry without a 'metric': {str(entry)[:80]}")
        model = entry.get("benchmarkModel") or {}
        key = (str(model.get("name")), str(model.get("backend")))
        rec = records.get(key) or DeviceBenchmark(
            tool="minibench", model_path=model.get("name"), delegate=model.get("backend"),
            device=_minibench_device(entry.get("deviceInfo")))
        field = _MINIBENCH_METRICS.get(str(entry["metric"]))
        if field is not None and entry.get("actualValue") is not None:
            values: dict[str, Any] = {field: float(entry["actualValue"])}
            rec = replace(rec, **values)
        records[key] = rec
    timed = [r for r in records.values() if r.avg_ms is not None]
    if not timed:
        raise ParseError("minibench results hold no 'avg_inference_latency(ms)' metric")
    return timed


# --------------------------------------------------------------------------- ONNX Runtime


def _latency_s(name: str, text: str) -> float | None:
    m = _search(rf"{name} Latency:\s*({NUM})\s*(s|ms|us)?\b", text)
    return None if m is None else _ms(m.group(1), m.group(2), "s")


def parse_onnxruntime_perf_test(
    text: str,
    *,
    model_path: str | None = None,
    threads: int | None = None,
    delegate: str | None = None,
    device: str | None = None,
) -> DeviceBenchmark:
    """Parse ``onnxruntime_perf_test`` output (old and new average lines; percentiles in s)."""
    avg = _float(rf"Average inference time cost(?: total)?:\s*({NUM})\s*ms", text)
    p50 = _latency_s("P50", text)
    if avg is None and p50 is None:
        raise _no_timing("onnxruntime_perf_test", text)
    session = _search(rf"Session creation time cost:\s*({NUM})\s*(s|ms)\b", text)
    first = _search(rf"First inference time cost:\s*({NUM})\s*(s|ms|us)\b", text)
    runs = _search(r"(?:Total inference requests|Runs):\s*(\d+)", text)
    peak = _float(r"Peak working set size:\s*(\d+)", text, 1.0 / MIB)
    return DeviceBenchmark(
        tool="onnxruntime_perf_test",
        model_path=model_path,
        init_ms=_ms(session.group(1), session.group(2), "s") if session else None,
        first_ms=_ms(first.group(1), first.group(2), "ms") if first else None,
        avg_ms=avg,
        min_ms=_latency_s("Min", text),
        max_ms=_latency_s("Max", text),
        p50_ms=p50,
        p90_ms=_latency_s("P90", text),
        p95_ms=_latency_s("P95", text),
        p99_ms=_latency_s("P99", text),
        peak_memory_mb=peak,
        runs=int(runs.group(1)) if runs else None,
        threads=threads,
        delegate=delegate or "cpu",
        device=device,
    )


PARSERS = {
    "benchmark_model": parse_benchmark_model,
    "executor_runner": parse_executor_runner,
    "onnxruntime_perf_test": parse_onnxruntime_perf_test,
}
