"""TFLite (LiteRT) via litert-torch: fp32 and full INT8 (PT2E static, per-channel), NHWC input.

The INT8 model takes and returns int8 tensors; their scale and zero point are read back from the
LiteRT interpreter and recorded. The manifest entry (minus bytes/sha256) is embedded in the
flatbuffer's ``metadata`` table under the key ``edgekd_manifest`` (a UTF-8 JSON buffer); read it
with ``read_metadata(path)``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporters import Artifact, register_exporter
from exporters.base import (
    ExportSettings,
    Stopwatch,
    artifact_name,
    export_each,
    int8_recipe,
    io_spec,
    metadata_json,
    safe_graph_report,
    staging_dir,
    tool_versions,
)
from exporters.int8.float_io import PRECISION as FLOAT_IO
from exporters.verify import verify_artifact
from kd_core.io import atomic_path

FORMAT = "tflite"
TOOLS = ("litert-torch", "ai-edge-litert")
METADATA_KEY = "edgekd_manifest"


class NCHWInput(nn.Module):
    """Feeds an NCHW batch to a model that takes NHWC (the reference for parity checks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x.permute(0, 2, 3, 1).contiguous())
        return out


@register_exporter(FORMAT, ".tflite", TOOLS,
                   precisions={"fp32": ("fp32",), "int8": ("int8", FLOAT_IO)})
def export(model: nn.Module, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    done: dict[str, Artifact] = {}

    def one(precision: str) -> Artifact:
        if precision == FLOAT_IO:  # the int8 flatbuffer with float32 I/O: no second conversion
            return _export_float_io(done.get("int8"), out_dir, cfg)
        done[precision] = _export_one(model, example_inputs, out_dir, cfg, precision)
        return done[precision]

    return export_each(FORMAT, cfg, one)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def _convert(model: nn.Module, example: torch.Tensor, cfg: ExportSettings, precision: str
             ) -> tuple[Any, nn.Module]:
    """(litert model, reference module taking NCHW) for one precision."""
    import litert_torch

    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()
    if precision == "fp32":
        return litert_torch.convert(nhwc, (_nhwc(example),)), NCHWInput(nhwc)
    from exporters.int8 import prepare_float_model, quantize_pt2e, tflite_convert_kwargs

    calib = cfg.require_calibration(FORMAT)
    rewritten = prepare_float_model(model, FORMAT, example_inputs=(example,))
    ready = litert_torch.to_channel_last_io(rewritten, args=[0]).eval()
    quantized = quantize_pt2e(ready, (_nhwc(example),), calib.batches("NHWC"), FORMAT)
    edge = litert_torch.convert(quantized, (_nhwc(example),), **tflite_convert_kwargs(FORMAT))
    return edge, NCHWInput(quantized)


def _export_one(model: nn.Module, example_inputs: tuple[Any, ...], out_dir: Path,
                cfg: ExportSettings, precision: str) -> Artifact:
    clock = Stopwatch()
    name = artifact_name(cfg, FORMAT, precision)
    path = out_dir / f"{name}.tflite"
    recipe = int8_recipe(FORMAT, cfg) if precision == "int8" else None
    edge, reference = _convert(model, example_inputs[0], cfg, precision)
    with staging_dir(out_dir) as stage:
        raw = stage / "model.tflite"
        edge.export(str(raw))
        inp, out = io_details(raw.read_bytes())
        art = Artifact(name, path, FORMAT, precision, inp, out, tool_versions(TOOLS),
                       quantization_recipe=recipe, reference=reference,
                       embedded_metadata=f"flatbuffer metadata {METADATA_KEY!r}")
        data = add_metadata(raw.read_bytes(), METADATA_KEY, metadata_json(cfg, art).encode())
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
            verification = verify_artifact(art, tmp, run, cfg)
    report = safe_graph_report(path, FORMAT) if precision == "int8" else None
    return replace(art, export_seconds=clock.seconds(), graph_report=report,
                   verification=verification)


def _export_float_io(int8: Artifact | None, out_dir: Path, cfg: ExportSettings) -> Artifact:
    """``exporters.int8.float_io``: the int8 artefact with float32 input and output."""
    from exporters.int8 import float_io

    if int8 is None:
        raise float_io.FloatIOError(f"{FLOAT_IO} is made from the int8 artefact, which failed")
    clock = Stopwatch()
    name = artifact_name(cfg, FORMAT, FLOAT_IO)
    raw = float_io.to_float_io(int8.path.read_bytes())
    inp, out = io_details(raw)
    recipe = {**(int8.quantization_recipe or {}), "io": f"float32, from {int8.name}"}
    art = replace(int8, name=name, path=out_dir / f"{name}.tflite", precision=FLOAT_IO,
                  input=inp, output=out, quantization_recipe=recipe)
    data = add_metadata(raw, METADATA_KEY, metadata_json(cfg, art).encode())
    with atomic_path(art.path) as tmp:
        tmp.write_bytes(data)
        verification = float_io.verify(art, tmp, int8, cfg)
    return replace(art, export_seconds=clock.seconds(), verification=verification,
                   graph_report=safe_graph_report(art.path, FORMAT))


def _interpreter(model: bytes | Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, Path):
        it = Interpreter(model_path=str(model), num_threads=1)
    else:
        it = Interpreter(model_content=model, num_threads=1)
    it.allocate_tensors()
    return it


def _detail_spec(d: dict[str, Any], layout: str | None, kind: str | None) -> dict[str, Any]:
    dtype = np.dtype(d["dtype"]).name
    scale, zero = d["quantization"]
    quant = (float(scale), int(zero)) if dtype in ("int8", "uint8") else None
    return io_spec(d["name"], list(d["shape"]), dtype, layout, quant, kind)


def io_details(model: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output descriptions (name, shape, dtype, quantization) from the interpreter."""
    it = _interpreter(model)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    return _detail_spec(inp, "NHWC", None), _detail_spec(out, None, "logits")


def run(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits (dequantized for INT8) of N x 3 x H x W normalized float32 images, one at a time."""
    it = _interpreter(Path(path))
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    rows = []
    for x in images:
        nhwc = np.ascontiguousarray(np.moveaxis(x, 0, -1)[None], dtype=np.float32)
        it.set_tensor(inp["index"], quantize(nhwc, inp))
        it.invoke()
        rows.append(dequantize(it.get_tensor(out["index"]), out)[0])
    return np.stack(rows)


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float -> the tensor's dtype: ``clamp(round(x / scale) + zero_point)`` for integer types."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return q.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def _pack_aligned_buffer(self: Any, builder: Any) -> int:
    """``BufferT.Pack`` that keeps the schema's 16-byte alignment of buffer data."""
    from ai_edge_litert import schema_py_generated as schema

    data = None
    if self.data is not None:
        raw = np.asarray(self.data, dtype=np.uint8).tobytes()
        builder.StartVector(1, len(raw), 16)
        builder.head = builder.head - len(raw)
        builder.Bytes[builder.head : builder.head + len(raw)] = raw
        builder.vectorNumElems = len(raw)
        data = builder.EndVector()
    schema.BufferStart(builder)
    if data is not None:
        schema.BufferAddData(builder, data)
    schema.BufferAddOffset(builder, self.offset)
    schema.BufferAddSize(builder, self.size)
    return int(schema.BufferEnd(builder))


def add_metadata(model: bytes, key: str, value: bytes) -> bytes:
    """Return ``model`` with a ``metadata`` entry ``key`` -> a buffer holding ``value``."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    obj.metadata = [m for m in (obj.metadata or []) if m.name not in (key, key.encode())]
    buf = schema.BufferT()
    buf.data = np.frombuffer(value, dtype=np.uint8)
    obj.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = key, len(obj.buffers) - 1
    obj.metadata.append(entry)
    aligned = type("AlignedBufferT", (schema.BufferT,), {"Pack": _pack_aligned_buffer})
    for b in obj.buffers:
        b.__class__ = aligned
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def read_metadata(path: Path, key: str = METADATA_KEY) -> dict[str, Any] | None:
    """The JSON embedded under ``key`` in a .tflite file, or None."""
    import json

    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == key.encode():
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return dict(json.loads(bytes(raw).decode()))
    return None


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
