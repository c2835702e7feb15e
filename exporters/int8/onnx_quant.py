"""ONNX Runtime static QDQ INT8 of an exported fp32 ONNX file."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.io import atomic_path

CALIBRATION = "MinMax"


def onnx_recipe(rewrites: tuple[str, ...] = ()) -> dict[str, Any]:
    """Static QDQ with uint8 activations and int8 weights (U8S8): x86's VNNI instructions
    multiply u8 by s8, and ONNX Runtime fuses every conv into QLinearConv only in this mode.
    ``rewrites``: the exact float rewrites applied before the fp32 export (the recipe's)."""
    return {
        "method": "onnxruntime_quantize_static",
        "format": "QDQ",
        "activations": "uint8 per-tensor asymmetric",
        "weights": "int8 per-channel symmetric",
        "calibration": CALIBRATION,
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
    """A ``CalibrationDataReader`` over an iterable of NCHW float32 batches."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str) -> None:
        self._it: Iterator[np.ndarray] = iter(batches)
        self._name = input_name
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        self.count += 1
        return {self._name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax
        pass


def quantize_onnx(
    fp32_path: Path, out_path: Path, calib_batches: Iterable[np.ndarray], input_name: str
) -> dict[str, Any]:
    """Quantize ``fp32_path`` to QDQ INT8 at ``out_path``; returns what the run did
    (calibration batches, graph rewrites) for the manifest's recipe (``onnx_recipe``)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"{fp32_path}: fp32 ONNX model not found")
    reader = _Reader(calib_batches, input_name)
    CalibrationDataReader.register(_Reader)
    with tempfile.TemporaryDirectory() as tmp:
        single, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
        pools = mean_to_global_pool(model)
        # One self-contained file: quant_pre_process loses track of external data files.
        onnx.save(model, str(single))
        quant_pre_process(str(single), str(pre), skip_symbolic_shape=True)
        with atomic_path(out_path) as dst:
            quantize_static(
                str(pre), str(dst), reader,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION),
            )
    if reader.count == 0:
        raise ValueError("quantize_onnx needs at least one calibration batch")
    return {"calibration_batches": reader.count,
            "graph_rewrites": {"reduce_mean_to_global_average_pool": pools}}
