"""On-device accuracy parity, host side: push preprocessed tensors, run them on the phone through
the demo app's instrumentation test, pull the outputs back and score them.

Tensor files (inputs and outputs) use one small container, ``EKDT`` (see docs/ANDROID_BENCHMARK.md):

    bytes 0..3   b"EKDT"
    bytes 4..7   H, uint32 little-endian: length of the JSON header
    bytes 8..    H bytes of UTF-8 JSON, space-padded so that the data starts at a multiple of 16
    then         the tensor, C order, little-endian, ``prod(shape)`` elements of ``dtype``

Header keys: ``version`` (1), ``kind`` ("inputs" | "logits" | "probabilities"), ``dtype``
("float32" | "float16" | "int8" | "uint8"), ``shape`` (first dimension = number of samples; each
sample is one batch-1 invocation), ``layout`` ("NHWC" | "NCHW" | null), ``quantization``
(``{"scale", "zero_point"}`` or null) and, for inputs, ``artifact``.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.android.adb import REMOTE_DIR, Adb, AdbError
from benchmarks.android.parsers import last_lines

MAGIC = b"EKDT"
DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8}
QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}


class ParityError(RuntimeError):
    """Parity inputs that do not fit the artefact, or a failed on-device parity run."""


@dataclass(frozen=True)
class ParityConfig:
    """How to reach the demo app's parity test (defaults match android_demo)."""

    instrumentation: str = "org.edgekd.demo.test/androidx.test.runner.AndroidJUnitRunner"
    test_class: str = "org.edgekd.demo.ParityTest"
    # The app cannot write to /data/local/tmp (SELinux); it writes into its external files dir.
    device_outputs: str = "/sdcard/Android/data/org.edgekd.demo/files/edgekd/logits.bin"
    timeout_s: float = 900.0


def encode_tensor_file(array: np.ndarray, header: Mapping[str, Any]) -> bytes:
    """One ``EKDT`` file: magic, header length, padded JSON header, little-endian tensor."""
    dtype = np.dtype(array.dtype).name
    if dtype not in DTYPES:
        raise ParityError(f"cannot store dtype {dtype} (supported: {', '.join(DTYPES)})")
    meta = {"version": 1, **header, "dtype": dtype, "shape": list(array.shape)}
    text = json.dumps(meta).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 16)
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return MAGIC + struct.pack("<I", len(text)) + text + data


def decode_tensor_file(data: bytes,
                       source: str = "tensor file") -> tuple[np.ndarray, dict[str, Any]]:
    """Inverse of ``encode_tensor_file``; errors name ``source`` and the problem."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ParityError(f"{source}: not an EKDT tensor file (bad magic)")
    (size,) = struct.unpack("<I", data[4:8])
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
        dtype = np.dtype(DTYPES[header["dtype"]]).newbyteorder("<")
        shape = tuple(int(d) for d in header["shape"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ParityError(f"{source}: bad header ({exc!r})") from None
    payload = data[8 + size :]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(payload) != expected:
        raise ParityError(f"{source}: {len(payload)} data bytes, header says {expected} "
                          f"({header['dtype']} {list(shape)})")
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("=")), header


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """The manifest's input rule (float32 ``x / scale``, round half to even); see runtimes.quant."""
    from runtimes.quant import quantize as _quantize

    return _quantize(x, scale, zero_point, dtype)


def prepare_inputs(x: np.ndarray, artifact: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Float NCHW normalized images (N,3,H,W) -> the artefact's layout and dtype, plus header."""
    spec = artifact.get("input") or {}
    dtype, layout = str(spec.get("dtype", "float32")), spec.get("layout", "NCHW")
    if dtype not in DTYPES:
        raise ParityError(f"artefact {artifact.get('name')}: input dtype {dtype!r} cannot be fed "
                          "by the Android parity test")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ParityError(f"inputs must be N x 3 x H x W preprocessed images, got {x.shape}")
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    shape = spec.get("shape")
    if shape and list(x.shape[1:]) != list(shape[1:]):
        raise ParityError(f"inputs have sample shape {list(x.shape[1:])}, artefact "
                          f"{artifact.get('name')} expects {list(shape[1:])} ({layout})")
    quant = spec.get("quantization")
    if dtype in QRANGE:
        if not quant:
            raise ParityError(f"artefact {artifact.get('name')}: {dtype} input without "
                              "quantization parameters")
        out = quantize(x, float(quant["scale"]), int(quant["zero_point"]), dtype)
    else:
        out, quant = x.astype(DTYPES[dtype]), None
    header = {"kind": "inputs", "layout": layout, "quantization": quant,
              "artifact": artifact.get("name")}
    return out, header


def outputs_to_float(array: np.ndarray, header: Mapping[str, Any],
                     artifact: Mapping[str, Any]) -> np.ndarray:
    """Dequantize int8/uint8 outputs (``x = (q - zero_point) * scale``) to float32 (N, C)."""
    dtype = np.dtype(array.dtype).name
    if dtype in QRANGE:
        quant = header.get("quantization") or (artifact.get("output") or {}).get("quantization")
        if not quant:
            raise ParityError(f"{dtype} outputs without quantization parameters")
        array = (array.astype(np.float32) - int(quant["zero_point"])) * float(quant["scale"])
    return array.astype(np.float32).reshape(array.shape[0], -1)


def instrument_command(cfg: ParityConfig, model: str, inputs: str) -> str:
    args = ["am", "instrument", "-w", "-e", "class", cfg.test_class, "-e", "model", model,
            "-e", "inputs", inputs, "-e", "outputs", cfg.device_outputs, cfg.instrumentation]
    return " ".join(shlex.quote(a) for a in args)


def check_instrumentation(text: str, cfg: ParityConfig) -> None:
    """``am instrument`` exits 0 even when the test fails: read its report instead."""
    if "Unable to find instrumentation" in text or "INSTRUMENTATION_FAILED" in text:
        raise ParityError(f"instrumentation {cfg.instrumentation} is not installed: build the "
                          "demo and run ./gradlew installDebug installDebugAndroidTest; "
                          f"am instrument said:\n{last_lines(text)}")
    if "FAILURES!!!" in text or "Process crashed" in text or "OK (" not in text:
        raise ParityError(f"parity test {cfg.test_class} failed on the phone; its last lines "
                          f"were:\n{last_lines(text)}")


def run_device_parity(adb: Adb, artifact: Mapping[str, Any], model: str | Path, x: np.ndarray,
                      cfg: ParityConfig | None = None) -> np.ndarray:
    """Run ``x`` (N,3,H,W float) through ``model`` on the phone; return float32 outputs (N, C)."""
    cfg = cfg or ParityConfig()
    inputs, header = prepare_inputs(x, artifact)
    remote_model = f"{REMOTE_DIR}/{Path(model).name}"
    remote_inputs = f"{REMOTE_DIR}/inputs.bin"
    with tempfile.TemporaryDirectory(prefix="edgekd_parity_") as tmp:
        local_inputs, local_outputs = Path(tmp) / "inputs.bin", Path(tmp) / "logits.bin"
        local_inputs.write_bytes(encode_tensor_file(inputs, header))
        try:
            adb.shell(f"mkdir -p {REMOTE_DIR}")
            adb.push(model, remote_model)
            adb.push(local_inputs, remote_inputs)
            adb.shell(f"rm -f {shlex.quote(cfg.device_outputs)}")
            proc = adb.shell(instrument_command(cfg, remote_model, remote_inputs),
                             timeout_s=cfg.timeout_s, check=False)
            check_instrumentation(proc.stdout + "\n" + proc.stderr, cfg)
            adb.pull(cfg.device_outputs, local_outputs)
        finally:
            with contextlib.suppress(AdbError):  # the phone is gone; the error raised says so
                adb.remove(REMOTE_DIR, cfg.device_outputs)
        array, out_header = decode_tensor_file(local_outputs.read_bytes(), cfg.device_outputs)
    if array.shape[0] != x.shape[0]:
        raise ParityError(f"the phone returned {array.shape[0]} outputs for {x.shape[0]} inputs")
    return outputs_to_float(array, out_header, artifact)


def probabilities(logits: np.ndarray, temperature: float = 1.0, kind: str = "logits") -> np.ndarray:
    if kind == "probabilities":
        return logits.astype(np.float64)
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def score_logits(logits: np.ndarray, labels: np.ndarray, *, temperature: float = 1.0,
                 positive_index: int = 1, threshold: float | None = None,
                 kind: str = "logits") -> dict[str, Any]:
    """AUC of the positive class (and decision metrics at ``threshold``) for phone outputs."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise ParityError(f"{logits.shape[0]} outputs but {labels.shape[0]} labels")
    p = probabilities(logits, temperature, kind)[:, positive_index]
    y = labels == positive_index
    out: dict[str, Any] = {"n": int(y.size), "positives": int(y.sum())}
    out["auc"] = float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else None
    if threshold is not None:
        pred = p >= threshold
        out["threshold"] = threshold
        out["accuracy"] = float((pred == y).mean())
        out["sensitivity"] = float(pred[y].mean()) if y.any() else None
        out["specificity"] = float((~pred[~y]).mean()) if (~y).any() else None
    return out


def compare_logits(device: np.ndarray, host: np.ndarray, *, temperature: float = 1.0,
                   positive_index: int = 1, threshold: float | None = None) -> dict[str, Any]:
    """How far the phone's logits are from the host's for the same inputs."""
    if device.shape != host.shape:
        raise ParityError(f"phone outputs {device.shape} vs host logits {host.shape}")
    diff = np.abs(device.astype(np.float64) - host.astype(np.float64))
    out: dict[str, Any] = {
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "argmax_agreement": float((device.argmax(1) == host.argmax(1)).mean()),
    }
    if threshold is not None:
        pd = probabilities(device, temperature)[:, positive_index] >= threshold
        ph = probabilities(host, temperature)[:, positive_index] >= threshold
        out["decision_agreement"] = float((pd == ph).mean())
    return out
