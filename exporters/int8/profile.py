"""Per-site timings from each runtime's own per-op profiler, and whole-graph re-timing.

- ExecuTorch (XNNPACK): ``enable_etdump`` records one event per XNNPACK operator
  (``Convolution (NHWC, QC8) IGEMM #3``...). The k-th convolution / fully-connected event of a
  run is the k-th site (XNNPACK keeps the graph's order); ``Convert`` events give the cost of a
  float<->int8 conversion per element, from which a site's boundary cost is estimated.
- ONNX Runtime: ``enable_profiling`` writes a trace with one ``<node>_kernel_time`` event per
  node and its op type; the k-th conv/gemm node executed is the k-th site (fp32 graphs rename
  fused nodes, so names cannot be used); the input ``QuantizeLinear`` gives the per-element cost.
- LiteRT, Core ML: no per-op profiler reachable from Python; their speed plans come from a
  timings file (``--speed-plan FILE``) or are not made.

Which profiler a format has is its INT8 recipe's ``profiler`` (``exporters.Int8Recipe``). Times
are robust means (middle half) over ``runs`` single-image inferences on one thread, in
microseconds.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from exporters.int8.plan import PlanError, Site
from exporters.int8.speed import SiteTiming, SiteTimings

log = logging.getLogger(__name__)
RUNS = 30
_ET_WEIGHTED = ("Convolution", "Fully Connected", "Deconvolution")


class ProfilerUnavailable(RuntimeError):
    """The runtime recorded no per-op events."""


def _timings(fmt: str, dist: str, sites: list[SiteTiming], runs: int) -> SiteTimings:
    from importlib.metadata import version

    from runtimes import host_device

    return SiteTimings(fmt, f"{dist} {version(dist)}", 1, runs, tuple(sites), host_device())


def robust_mean(values: Sequence[float]) -> float:
    """Mean of the middle half: robust to the outliers of a busy machine, and finer than a
    median when the profiler's clock ticks in whole microseconds."""
    ordered = sorted(values)
    n = len(ordered)
    middle = ordered[n // 4 : n - n // 4] or ordered
    return statistics.fmean(middle)


def _mean(rows: list[list[float]]) -> list[float]:
    return [robust_mean(col) for col in zip(*rows, strict=True)]


def executorch_op_times(pte: Path, example: np.ndarray, runs: int = RUNS
                        ) -> list[tuple[str, float]]:
    """(XNNPACK operator name, median us) of one inference, in execution order."""
    import torch
    from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc
    from executorch.runtime import Runtime

    from runtimes.executorch import set_threads

    set_threads(1)
    program = Runtime.get().load_program(Path(pte), enable_etdump=True)
    method = program.load_method("forward")
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    for _ in range(runs + 3):
        method.execute([x])
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "run.etdp"
        program.write_etdump_result_to_file(str(dump), str(Path(tmp) / "debug.bin"))
        data = deserialize_from_etdump_flatcc(dump.read_bytes())
    per_run: list[list[tuple[str, float]]] = []
    for block in data.run_data:
        ops = [(str(e.profile_event.delegate_debug_id_str).split(" #")[0],
                (e.profile_event.end_time - e.profile_event.start_time) / 1e3)
               for e in block.events or [] if e.profile_event is not None
               and e.profile_event.delegate_debug_id_str]
        per_run.append(ops)
    runs_ops = [r for r in per_run[3:] if r] or [r for r in per_run if r]
    if not runs_ops:
        raise ProfilerUnavailable(f"{pte}: ExecuTorch recorded no XNNPACK operator events")
    names = [n for n, _ in runs_ops[-1]]
    same = [r for r in runs_ops if [n for n, _ in r] == names]
    return list(zip(names, _mean([[t for _, t in r] for r in same]), strict=True))


def _weighted(ops: list[tuple[str, float]], sites: Sequence[Site], what: str) -> list[float]:
    times = [t for n, t in ops if n.startswith(_ET_WEIGHTED)]
    if len(times) != len(sites):
        raise PlanError(f"{what}: {len(times)} conv/linear operators profiled but the model has "
                        f"{len(sites)} sites")
    return times


def _convert_ns_per_element(ops: list[tuple[str, float]], first_input: int) -> float:
    """The first Convert is the input quantization: its cost per element."""
    converts = [t for n, t in ops if n.startswith("Convert")]
    return 1e3 * converts[0] / first_input if converts and first_input else 0.0


def _boundary_us(site: Site, ns_per_element: float) -> float:
    """Dequantizing a float site's input and quantizing its output."""
    return ns_per_element * (int(np.prod(site.in_shape)) + int(np.prod(site.out_shape))) / 1e3


def executorch_site_timings(int8_pte: Path, fp32_pte: Path, sites: Sequence[Site],
                            example: np.ndarray, runs: int = RUNS) -> SiteTimings:
    """Per-site INT8 and fp32 times of an INT8 ``.pte`` and an fp32 one of the same model."""
    q_ops = executorch_op_times(int8_pte, example, runs)
    f_ops = executorch_op_times(fp32_pte, example, runs)
    q_times = _weighted(q_ops, sites, str(int8_pte))
    f_times = _weighted(f_ops, sites, str(fp32_pte))
    ns = _convert_ns_per_element(q_ops, int(np.prod(example.shape)))
    return _timings("executorch", "executorch",
                    [SiteTiming(s.name, q, f, _boundary_us(s, ns))
                     for s, q, f in zip(sites, q_times, f_times, strict=True)], runs)


_ORT_WEIGHTED = ("Conv", "FusedConv", "NhwcConv", "NhwcFusedConv", "QLinearConv", "Gemm",
                 "FusedGemm", "QGemm", "MatMul", "FusedMatMul", "MatMulInteger",
                 "ConvInteger")


def onnx_op_times(path: Path, example: np.ndarray, session_config: Mapping[str, str],
                  runs: int = RUNS) -> list[tuple[str, str, float]]:
    """(node name, op type, mean us per inference) from ONNX Runtime's profiler, in execution
    order (1 thread, the default graph optimizations, the artefact's session config)."""
    import json

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.log_severity_level = 3
    for key, value in session_config.items():
        opts.add_session_config_entry(key, value)
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(example, dtype=np.float32)}
        for _ in range(runs + 3):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    order: dict[str, str] = {}
    per_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            name = e["name"].removesuffix("_kernel_time")
            order.setdefault(name, str(e.get("args", {}).get("op_name", "")))
            per_node.setdefault(name, []).append(float(e["dur"]))
    return [(n, op, robust_mean(per_node[n][3:] or per_node[n])) for n, op in order.items()]


def _ort_weighted(ops: list[tuple[str, str, float]], sites: Sequence[Site], what: str
                  ) -> list[float]:
    times = [t for _, op, t in ops if op in _ORT_WEIGHTED]
    if len(times) != len(sites):
        raise PlanError(f"{what}: {len(times)} conv/gemm nodes profiled but the model has "
                        f"{len(sites)} sites")
    return times


def onnx_site_timings(int8_path: Path, fp32_path: Path, sites: Sequence[Site],
                      example: np.ndarray, session_config: Mapping[str, str],
                      runs: int = RUNS) -> SiteTimings:
    """Per-site times of a QDQ INT8 model (with its session config) and an fp32 ONNX file of
    the same model: the k-th conv/gemm node executed is the k-th site."""
    q_ops = onnx_op_times(int8_path, example, session_config, runs)
    f_ops = onnx_op_times(fp32_path, example, {}, runs)
    q_times = _ort_weighted(q_ops, sites, str(int8_path))
    f_times = _ort_weighted(f_ops, sites, str(fp32_path))
    quant = [t for _, op, t in q_ops if op == "QuantizeLinear"]
    ns = 1e3 * quant[0] / int(np.prod(example.shape)) if quant else 0.0
    return _timings("onnx", "onnxruntime",
                    [SiteTiming(s.name, q, f, _boundary_us(s, ns))
                     for s, q, f in zip(sites, q_times, f_times, strict=True)], runs)


def time_interleaved(runners: Sequence[Any], example: np.ndarray, runs: int = 100,
                     warmup: int = 10) -> list[list[float]]:
    """Single-image times (ms) of each loaded runner, alternating calls between them."""
    inputs = [r.prepare(example) for r in runners]
    for r, x in zip(runners, inputs, strict=True):
        for _ in range(warmup):
            r.invoke(x)
    out: list[list[float]] = [[] for _ in runners]
    for _ in range(runs):
        for i, (r, x) in enumerate(zip(runners, inputs, strict=True)):
            start = time.perf_counter()
            r.invoke(x)
            out[i].append((time.perf_counter() - start) * 1e3)
    return out
