"""ONNX Runtime static QDQ INT8 of an exported fp32 ONNX file."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.io import atomic_path


def onnx_recipe() -> dict[str, Any]:
    return {
        "method": "onnxruntime_quantize_static",
        "format": "QDQ",
        "activations": "uint8 per-tensor asymmetric",
        "weights": "int8 per-channel symmetric",
        "calibration": "MinMax",
        "rewrites": [],
    }


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
    """Quantize ``fp32_path`` to QDQ INT8 at ``out_path``; returns the recipe dict."""
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
        # One self-contained file: quant_pre_process loses track of external data files.
        onnx.save(onnx.load(str(fp32_path)), str(single))
        quant_pre_process(str(single), str(pre), skip_symbolic_shape=True)
        with atomic_path(out_path) as dst:
            quantize_static(
                str(pre), str(dst), reader,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    if reader.count == 0:
        raise ValueError("quantize_onnx needs at least one calibration batch")
    recipe = onnx_recipe()
    recipe["calibration_batches"] = reader.count
    return recipe
