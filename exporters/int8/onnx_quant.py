"""ONNX Runtime static QDQ INT8 of an exported fp32 ONNX file.

A precision plan's float sites (``exporters.int8.plan``) become ``nodes_to_exclude``; ONNX
Runtime's optimizer would re-quantize such a float conv between int8 neighbours
(``WeightBiasQuantization``), so the artefact then records the session option that turns that
off (``session_config`` in its recipe; ``runtimes.onnx`` applies it).

Activations are calibrated with ``Percentile`` (ranges at the 99.999th percentile of a
histogram), as the PT2E formats calibrate with a histogram observer. ``MinMax`` (the repair's
other observer) stretches each range to the one most extreme activation over all the images:
on real HAM10000 students its INT8 logits drifted 1.6x (64 px) to 7x (96 px) as far from
float (mean squared) as Percentile's, and its ECE rose past the gate's bound on the holdout.

A histogram observer makes ONNX Runtime hold every activation of every calibration image until
it builds the histograms: 4,096 images of MobileNetV3-Small at 224 px ran a 24 GiB host out of
memory. Such observers collect in chunks of at most ``HISTOGRAM_CHUNK`` images (ONNX Runtime's
``CalibStridedMinMax``, which merges the histograms of each chunk); MinMax keeps only
per-tensor extremes and runs in one pass.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.io import atomic_path

if TYPE_CHECKING:
    from exporters.int8.options import Int8Options
    from exporters.int8.plan import Site

log = logging.getLogger(__name__)
CALIBRATION = "Percentile"
HISTOGRAM_CHUNK = 64  # images whose activations a histogram observer holds at once
KEEP_FLOAT_SITES = {"optimization.disable_specified_optimizers": "WeightBiasQuantization"}


def onnx_recipe(rewrites: tuple[str, ...] = (), calibration: str | None = None
                ) -> dict[str, Any]:
    """Static QDQ with uint8 activations and int8 weights (U8S8): x86's VNNI instructions
    multiply u8 by s8, and ONNX Runtime fuses every conv into QLinearConv only in this mode.
    ``rewrites``: the exact float rewrites applied before the fp32 export (the recipe's);
    ``calibration``: ONNX Runtime's ``CalibrationMethod`` (None: ``CALIBRATION``)."""
    return {
        "method": "onnxruntime_quantize_static",
        "format": "QDQ",
        "activations": "uint8 per-tensor asymmetric",
        "weights": "int8 per-channel symmetric",
        "calibration": calibration or CALIBRATION,
        "rewrites": [*rewrites, "reduce_mean_to_global_average_pool"],
    }


def _axes(node: Any, inits: dict[str, Any]) -> list[int] | None:
    """The reduction axes of a ReduceMean (attribute before opset 18, input from 18 on)."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "axes":
            return list(attr.ints)
    if len(node.input) > 1 and node.input[1] in inits:
        return [int(a) for a in numpy_helper.to_array(inits[node.input[1]]).ravel()]
    return None


def mean_to_global_pool(model: Any) -> int:
    """ReduceMean over H and W of a 4-D tensor with keepdims -> GlobalAveragePool (exact).

    ONNX Runtime has a quantized GlobalAveragePool but no quantized ReduceMean, so the squeeze-
    excite pools stayed float with a quantize/dequantize pair each. Returns how many changed.
    """
    import onnx

    shapes = {v.name: len(v.type.tensor_type.shape.dim) for v in
              [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type != "ReduceMean" or shapes.get(node.input[0]) != 4:
            continue
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        axes = _axes(node, inits)
        if keep != 1 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        new = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                    name=node.name + "_gap")
        model.graph.node.remove(node)
        model.graph.node.insert(i, new)
        count += 1
    return count


class _Reader:
    """A ``CalibrationDataReader`` over NCHW float32 batches, in order; ``set_range`` serves
    ONNX Runtime's chunked (strided) collection."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str) -> None:
        self._batches = batches
        self._name = input_name
        self._next, self._end = 0, len(batches)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        batch = self._batches[self._next]
        self._next += 1
        self.count += 1
        return {self._name: np.ascontiguousarray(batch, dtype=np.float32)}

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self._batches))

    def rewind(self) -> None:  # pragma: no cover - not used by ONNX Runtime's calibrators
        self._next, self._end = 0, len(self._batches)


def chunk_size(total: int, limit: int | None = None) -> int:
    """The largest number of images up to ``limit`` (default ``HISTOGRAM_CHUNK``) that divides
    ``total`` (ONNX Runtime's strided collection needs equal chunks)."""
    top = min(limit or HISTOGRAM_CHUNK, total)
    return max(d for d in range(1, top + 1) if total % d == 0)


def _excluded_nodes(path: Path, float_sites: frozenset[str], sites: Sequence[Site],
                    tails: frozenset[str] = frozenset()) -> list[str]:
    """ONNX node names of ``float_sites``, and of the tails of those in ``tails``, in the
    pre-processed model (``nodes_to_exclude``)."""
    if not float_sites:
        return []
    import onnx

    from exporters.int8.plan import PlanError, onnx_site_nodes, onnx_tail_nodes

    model = onnx.load(str(path))
    mapping = onnx_site_nodes(model, sites)
    found = {site: node for node, site in mapping.items() if site in float_sites}
    missing = sorted(float_sites - set(found))
    if missing:
        raise PlanError(f"float site(s) {', '.join(missing)} not in the ONNX graph")
    tail = onnx_tail_nodes(model, [found[s] for s in sorted(tails & set(found))])
    return sorted(set(found.values()) | set(tail))


def _preprocess(fp32_path: Path, pre: Path) -> int:
    """``fp32_path`` with its mean pools made global pools (returns how many), shapes inferred
    and ONNX Runtime's pre-processing, at ``pre``."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    single = pre.with_name("fp32.onnx")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    pools = mean_to_global_pool(model)
    # One self-contained file: quant_pre_process loses track of external data files.
    onnx.save(model, str(single))
    quant_pre_process(str(single), str(pre), skip_symbolic_shape=True)
    return pools


def quantize_onnx(
    fp32_path: Path, out_path: Path, calib_batches: Sequence[np.ndarray], input_name: str,
    options: Int8Options | None = None, sites: Sequence[Site] = (), calib_key: str | None = None,
) -> dict[str, Any]:
    """Quantize ``fp32_path`` to QDQ INT8 at ``out_path``; returns what the run did
    (calibration batches, graph rewrites, nodes kept float and the session option that needs)
    for the manifest's recipe (``onnx_recipe``). ``options``' float sites (names of ``sites``,
    the model's sites in call order) stay float; its ``observer`` names a
    ``CalibrationMethod``. ``calib_key`` names the calibration images: given, ONNX Runtime's ranges
    from an earlier call on the same graph and images are reused
    (``exporters.int8.observers.onnx_cache_path``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from exporters.int8.observers import onnx_cache_path

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"{fp32_path}: fp32 ONNX model not found")
    if not len(calib_batches):
        raise ValueError("quantize_onnx needs at least one calibration batch")
    float_sites = options.plan.names() if options is not None else frozenset()
    tails = options.plan.names("accuracy") if options is not None else frozenset()
    method = (options.observer if options is not None else None) or CALIBRATION
    reader = _Reader(calib_batches, input_name)
    CalibrationDataReader.register(_Reader)
    chunked = None if method == "MinMax" else {
        "CalibStridedMinMax": chunk_size(len(calib_batches))}
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        pools = _preprocess(fp32_path, pre)
        exclude = _excluded_nodes(pre, float_sites, sites, tails)
        cache = None if calib_key is None else onnx_cache_path(
            pre, method, (chunked or {}).get("CalibStridedMinMax"), calib_key)
        reused = cache is not None and cache.is_file()
        # Its histogram calibrator prints a line per chunk; the export logs what it did.
        with atomic_path(out_path) as dst, contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(pre), str(dst), reader,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, method),
                nodes_to_exclude=exclude, extra_options=chunked, calibration_cache_path=cache,
            )
    if reused:
        log.info("ONNX Runtime calibration reused (%s)", method)
    did: dict[str, Any] = {"calibration_batches": len(calib_batches) if reused else reader.count,
                           "graph_rewrites": {"reduce_mean_to_global_average_pool": pools}}
    if exclude:
        did.update(nodes_to_exclude=exclude, session_config=dict(KEEP_FLOAT_SITES))
    return did
