"""INT8 TFLite with float32 input and output, for runtimes that take no int8 tensors (LiteRT.js).

``to_float_io(model)`` rewrites an int8-I/O flatbuffer without converting again: a new float32
input feeds a QUANTIZE op whose output is the old int8 input, and a DEQUANTIZE op turns the old
int8 output into a new float32 output. Both ops use the old tensors' scale and zero point, so every
other op, weight and scale is untouched; the signature keeps its names and points at the new
tensors. ``exporters/tflite.py`` finishes the result as the ``int8_float_io`` artefact
(``exporters.finish``: embedded entry, atomic write, verification through the LiteRT runner against
the int8 artefact's torch reference, graph report), with ``versus_int8`` as its extra check.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from exporters.base import Artifact, ExportError, ExportSettings
from kd_core.deploy import ManifestEntry, compare_outputs

# Rounding x / scale at the QUANTIZE op may differ from the host's rule (round half to even in
# float32) on exact ties, moving one input element by one step: the outputs then differ by a few
# output steps at most. More than this means the surgery broke the graph.
MAX_OUTPUT_STEPS = 4.0


class FloatIOError(ExportError):
    """The model is not a single-subgraph TFLite flatbuffer with int8 or float32 I/O."""


def to_float_io(model: bytes) -> bytes:
    """The int8-I/O flatbuffer ``model`` with float32 input and output (see the module doc). A
    side that is float32 already (a precision plan keeping the first or last layer float) is
    left as it is; a model float32 on both sides is returned unchanged.

    The bytes are re-serialized by ``flatbuffer_utils``; ``exporters.tflite.add_metadata`` (run
    on them next) restores the schema's 16-byte alignment of weight buffers.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    if len(obj.subgraphs) != 1:
        raise FloatIOError(f"expected one subgraph, found {len(obj.subgraphs)}")
    graph = obj.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise FloatIOError(f"expected one input and one output, found {len(graph.inputs)} and "
                           f"{len(graph.outputs)}")
    old_in, old_out = int(graph.inputs[0]), int(graph.outputs[0])
    for which, index in (("input", old_in), ("output", old_out)):
        if graph.tensors[index].type not in (schema.TensorType.INT8, schema.TensorType.FLOAT32):
            raise FloatIOError(f"the model's {which} is neither int8 nor float32 (TFLite type "
                               f"{graph.tensors[index].type})")
    # A side already float32 (its first or last layer kept float by the precision plan) stays.
    rewrite_in = graph.tensors[old_in].type == schema.TensorType.INT8
    rewrite_out = graph.tensors[old_out].type == schema.TensorType.INT8
    if not (rewrite_in or rewrite_out):
        return model
    new_in = _float_twin(schema, graph, old_in) if rewrite_in else old_in
    new_out = _float_twin(schema, graph, old_out) if rewrite_out else old_out
    head = [_operator(schema, _opcode(schema, obj, schema.BuiltinOperator.QUANTIZE), new_in,
                      old_in)] if rewrite_in else []
    tail = [_operator(schema, _opcode(schema, obj, schema.BuiltinOperator.DEQUANTIZE), old_out,
                      new_out)] if rewrite_out else []
    graph.operators = [*head, *graph.operators, *tail]
    graph.inputs, graph.outputs = np.array([new_in]), np.array([new_out])
    for sig in obj.signatureDefs or []:
        for t in sig.inputs or []:
            t.tensorIndex = new_in if t.tensorIndex == old_in else t.tensorIndex
        for t in sig.outputs or []:
            t.tensorIndex = new_out if t.tensorIndex == old_out else t.tensorIndex
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def _float_twin(schema: Any, graph: Any, index: int) -> int:
    """Append a float32 tensor shaped like tensor ``index``, taking over its name (the old one
    gets an ``_int8`` suffix); return the new tensor's index."""
    old = graph.tensors[index]
    new = schema.TensorT()
    new.name, old.name = old.name, old.name + b"_int8"
    new.type = schema.TensorType.FLOAT32
    new.shape = np.array(old.shape, dtype=np.int32)
    if old.shapeSignature is not None:
        new.shapeSignature = np.array(old.shapeSignature, dtype=np.int32)
    new.hasRank = old.hasRank
    new.buffer = 0  # buffer 0 is the schema's empty sentinel: no data, computed at run time
    graph.tensors.append(new)
    return len(graph.tensors) - 1


def _opcode(schema: Any, obj: Any, builtin: int, version: int = 2) -> int:
    """The index of ``builtin`` in the model's operator codes, added when absent (version 2:
    the int8 kernels of QUANTIZE and DEQUANTIZE)."""
    for i, code in enumerate(obj.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    placeholder = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    code.deprecatedBuiltinCode = min(builtin, placeholder)
    code.version = version
    obj.operatorCodes.append(code)
    return len(obj.operatorCodes) - 1


def _operator(schema: Any, opcode: int, source: int, target: int) -> Any:
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = np.array([source], dtype=np.int32)
    op.outputs = np.array([target], dtype=np.int32)
    return op


def versus_int8(entry: ManifestEntry, int8: Artifact, cfg: ExportSettings, staged: Path
                ) -> dict[str, Any]:
    """The float-I/O file at ``staged`` (described by ``entry``) against the ``int8`` artefact it
    came from, both through the LiteRT runner on the same images (``Build.inspect``):
    ``{"vs_int8": figures}``; ``ExportError`` if they are more than ``MAX_OUTPUT_STEPS`` output
    steps apart."""
    from exporters.finish import check_images
    from runtimes import load_runner

    name = entry.name
    images, _ = check_images(cfg)
    got = load_runner(replace(entry, path=staged.name), staged.parent).predict(images)
    want = load_runner(int8.entry, int8.path.parent).predict(images)
    versus: dict[str, Any] = dict(compare_outputs(got, want))
    step = float((int8.entry.output.get("quantization") or {}).get("scale", 0.0))
    versus["output_steps"] = versus["max_abs_diff"] / step if step > 0 else None
    if versus["max_abs_diff"] > MAX_OUTPUT_STEPS * step:
        raise ExportError(f"{name}: differs from {int8.name} on the same images "
                          f"(max |diff| {versus['max_abs_diff']:.3g}, output step {step:.3g}, "
                          f"top-1 agreement {versus['top1_agreement']:.3f})")
    return {"vs_int8": versus}
