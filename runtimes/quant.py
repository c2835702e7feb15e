"""The two quantized-I/O rules of docs/MANIFEST.md, used by every runtime, the harness and tests.

Input: ``q = clamp(rint(x / scale) + zero_point)`` with ``x / scale`` in float32 and ``rint``
rounding half to even. Output: ``x = (q - zero_point) * scale`` in float64. The apps port these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}
NP_DTYPES: dict[str, Any] = {"int8": np.int8, "uint8": np.uint8}


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    lo, hi = QRANGE[dtype]
    q = np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.int32) + int(zero_point)
    return np.clip(q, lo, hi).astype(NP_DTYPES[dtype])


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float64) - int(zero_point)) * float(scale)
