"""TFLite (LiteRT) via litert-torch: fp32 and full INT8 (PT2E static, per-channel), NHWC input.

The INT8 model takes and returns int8 tensors; their scale and zero point are read back from the
LiteRT interpreter (``runtimes.tflite.io_details``) and recorded. The manifest entry (minus
bytes/sha256) is embedded in the flatbuffer's ``metadata`` table under ``edgekd_manifest`` (a
UTF-8 JSON buffer); ``read_metadata(path)`` reads it.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from exporters import Int8Recipe, register_exporter
from exporters.base import (
    METADATA_KEY,
    Artifact,
    ExportSettings,
    Stopwatch,
    staging_dir,
)
from exporters.finish import Build, export_each, finish, int8_recipe

FORMAT = "tflite"
# TFLite's XNNPACK delegate has no int8 hardswish/hardsigmoid and splits the graph at a -inf
# max-pool pad: with these exact rewrites the INT8 graph is one delegate partition.
INT8 = Int8Recipe("litert", rewrites=(
    "clamp_hardswish_input", "decompose_hardswish", "decompose_hardsigmoid", "fold_scales",
    "zero_pad_maxpool"), fold_quantize=False)


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The JSON embedded under ``edgekd_manifest`` in a .tflite file, or None."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_KEY.encode():
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return dict(json.loads(bytes(raw).decode()))
    return None


@register_exporter(FORMAT, extension=".tflite", tools=("litert-torch", "ai-edge-litert"),
                   int8=INT8, cost=58.0, read_metadata=read_metadata, preferred=("int8",))
def export(model: Any, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    return export_each(
        FORMAT, cfg, lambda p: _export_one(model, example_inputs[0], out_dir, cfg, p))


def _nhwc(x: Any) -> Any:
    return x.permute(0, 2, 3, 1).contiguous()


def _nchw_call(nhwc_model: Any, x: Any) -> Any:
    """The NHWC model fed an NCHW batch: the reference for parity checks."""
    return nhwc_model(_nhwc(x))


def _convert(model: Any, example: Any, cfg: ExportSettings, precision: str
             ) -> tuple[Any, Any]:
    """(litert model, reference taking NCHW) for one precision."""
    import litert_torch

    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()
    if precision == "fp32":
        return litert_torch.convert(nhwc, (_nhwc(example),)), partial(_nchw_call, nhwc)
    from exporters.int8 import prepare_float_model, quantize_pt2e, tflite_convert_kwargs

    calib = cfg.require_calibration(FORMAT)
    rewritten = prepare_float_model(model, FORMAT, example_inputs=(example,))
    ready = litert_torch.to_channel_last_io(rewritten, args=[0]).eval()
    quantized = quantize_pt2e(ready, (_nhwc(example),), calib.batches("NHWC"), FORMAT)
    edge = litert_torch.convert(quantized, (_nhwc(example),), **tflite_convert_kwargs(FORMAT))
    return edge, partial(_nchw_call, quantized)


def _export_one(model: Any, example: Any, out_dir: Path, cfg: ExportSettings,
                precision: str) -> Artifact:
    from runtimes.tflite import io_details

    clock = Stopwatch()
    recipe = int8_recipe(FORMAT, cfg) if precision == "int8" else None
    edge, reference = _convert(model, example, cfg, precision)
    with staging_dir(out_dir) as stage:
        raw = stage / "model.tflite"
        edge.export(str(raw))
        inp, out = io_details(raw)
        data = raw.read_bytes()

    def write(tmp: Path, meta: dict[str, Any]) -> None:
        tmp.write_bytes(add_metadata(data, METADATA_KEY, json.dumps(meta, sort_keys=True)
                                     .encode()))

    build = Build(write=write, input=inp, output=out, reference=reference, recipe=recipe,
                  embedded=f"flatbuffer metadata {METADATA_KEY!r}", graph_report=_graph_report)
    return finish(FORMAT, precision, cfg, out_dir, clock, build)


def _graph_report(path: Path) -> dict[str, Any]:
    from exporters.int8.report import tflite_report

    return tflite_report(path)


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


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
