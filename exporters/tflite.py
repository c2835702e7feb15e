"""TFLite (LiteRT) via litert-torch: fp32 and full INT8 (PT2E static, per-channel), NHWC input.

The INT8 model takes and returns int8 tensors; their scale and zero point are read back from the
LiteRT interpreter (``runtimes.tflite.io_details``) and recorded. The int8 family also gives
``int8_float_io``: the same INT8 flatbuffer with float32 input and output (QUANTIZE/DEQUANTIZE
inside, ``exporters.int8.float_io``) for runtimes that take no int8 tensors (LiteRT.js). The
manifest entry (minus bytes/sha256) is embedded in the flatbuffer's ``metadata`` table under
``edgekd_manifest`` (a UTF-8 JSON buffer); ``read_metadata(path)`` reads it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
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
    artifact_name,
    staging_dir,
)
from exporters.finish import Build, export_each, finish, int8_recipe

FORMAT = "tflite"
FLOAT_IO = "int8_float_io"  # the INT8 graph with float32 I/O (exporters.int8.float_io)
EMBEDDED = f"flatbuffer metadata {METADATA_KEY!r}"
# TFLite's XNNPACK delegate has no int8 hardswish/hardsigmoid and splits the graph at a -inf
# max-pool pad: with these exact rewrites the INT8 graph is one delegate partition. LiteRT's
# Python interpreter has no per-op profiler: its speed plans come from a site-timings file.
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
                   precisions={"fp32": ("fp32",), "int8": ("int8", FLOAT_IO)},
                   int8=INT8, cost=58.0, read_metadata=read_metadata, preferred=("int8",),
                   restamp=lambda src, dst, meta: _write(src.read_bytes(), dst, meta))
def export(model: Any, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    done: dict[str, Artifact] = {}

    def one(precision: str) -> Artifact:
        if precision == FLOAT_IO:  # the int8 flatbuffer with float32 I/O: no second conversion
            return _export_float_io(done.get("int8"), out_dir, cfg)
        done[precision] = _export_one(model, example_inputs[0], out_dir, cfg, precision)
        return done[precision]

    return export_each(FORMAT, cfg, one)


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
    quantized = quantize_pt2e(ready, (_nhwc(example),), calib.batches("NHWC"), FORMAT, cfg.int8,
                             calib_key=calib.key("NHWC"))
    edge = litert_torch.convert(quantized, (_nhwc(example),),
                                **tflite_convert_kwargs(FORMAT, cfg.int8))
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

    build = Build(write=partial(_write, data), input=inp, output=out, reference=reference,
                  recipe=recipe, embedded=EMBEDDED, graph_report=_graph_report)
    return finish(FORMAT, precision, cfg, out_dir, clock, build)


def _export_float_io(int8: Artifact | None, out_dir: Path, cfg: ExportSettings) -> Artifact:
    """``int8_float_io``: the int8 artefact's flatbuffer with float32 I/O, finished like every
    artefact (verified against the int8 artefact's torch reference) and checked against the
    int8 artefact itself on the same images (``exporters.int8.float_io.versus_int8``)."""
    from exporters.int8 import float_io
    from runtimes.tflite import io_details

    if int8 is None:
        raise float_io.FloatIOError(f"{FLOAT_IO} is made from the int8 artefact, which failed")
    clock = Stopwatch()
    with staging_dir(out_dir) as stage:
        raw = stage / "model.tflite"
        raw.write_bytes(float_io.to_float_io(int8.path.read_bytes()))
        inp, out = io_details(raw)
        data = raw.read_bytes()
    recipe = {**(int8.entry.quantization_recipe or {}), "io": f"float32, from {int8.name}"}
    described = replace(int8.entry, name=artifact_name(cfg, FORMAT, FLOAT_IO), precision=FLOAT_IO,
                        input=inp, output=out)
    build = Build(write=partial(_write, data), input=inp, output=out, reference=int8.reference,
                  recipe=recipe, embedded=EMBEDDED, graph_report=_graph_report,
                  inspect=partial(float_io.versus_int8, described, int8, cfg))
    return finish(FORMAT, FLOAT_IO, cfg, out_dir, clock, build)


def _write(data: bytes, tmp: Path, meta: dict[str, Any]) -> None:
    """The flatbuffer ``data`` at ``tmp`` with ``meta`` embedded (``Build.write``)."""
    tmp.write_bytes(add_metadata(data, METADATA_KEY, json.dumps(meta, sort_keys=True).encode()))


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
    """Return ``model`` with a ``metadata`` entry ``key`` -> a buffer holding ``value``; an
    entry already under ``key`` has its buffer's data replaced (no stale copy left behind)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    obj.metadata = obj.metadata or []
    entry = next((m for m in obj.metadata if m.name in (key, key.encode())), None)
    buf = schema.BufferT()
    buf.data = np.frombuffer(value, dtype=np.uint8)
    if entry is None:
        obj.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(obj.buffers) - 1
        obj.metadata.append(entry)
    else:
        obj.buffers[entry.buffer] = buf
    aligned = type("AlignedBufferT", (schema.BufferT,), {"Pack": _pack_aligned_buffer})
    for b in obj.buffers:
        b.__class__ = aligned
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
