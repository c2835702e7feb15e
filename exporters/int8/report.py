"""Graph reports of exported artefacts: what runs quantized, what stays float, how many partitions.

- tflite: op counts from the flatbuffer, ops touching float activations, and the XNNPACK delegate
  partitions seen by the LiteRT interpreter after allocation.
- executorch: delegate partitions and the operators left outside any delegate, from ExecuTorch's
  public ``get_delegation_info`` on the lowered graph; inside each XNNPACK delegate, float
  compute nodes from the serialized XNNPACK graph.
- onnx: after ONNX Runtime's QDQ fusion (level EXTENDED), quantized vs float compute nodes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

# Ops that only move or reshape data: they carry the dtype of their input and are not "float work".
_DATA_MOVEMENT = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def graph_report(path: Path, fmt: str, graph_module: Any = None) -> dict[str, Any]:
    """Describe an exported artefact; see the module docstring for the fields per format.
    ExecuTorch needs the lowered graph module (``EdgeProgramManager.exported_program()``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: artefact not found")
    if fmt == "tflite":
        return tflite_report(path)
    if fmt == "executorch":
        return executorch_report(path, graph_module)
    if fmt == "onnx":
        return onnx_report(path)
    raise ValueError(f"no graph report for format {fmt!r}")


def graph_summary(report: dict[str, Any] | None) -> str:
    """One line for tables and logs, e.g. ``float ops 0, delegate partitions 1``."""
    if not report:
        return "-"
    if "error" in report:
        return f"report error: {str(report['error'])[:60]}"
    if report.get("format") == "onnx":
        return (f"quantized nodes {report.get('quantized_nodes')}, float nodes "
                f"{report.get('float_nodes')}, Q/DQ {report.get('qdq_nodes')}")
    if report.get("format") in ("tflite", "executorch"):
        return (f"float ops {report.get('float_ops')}, delegate partitions "
                f"{report.get('delegate_partitions')}, undelegated ops "
                f"{report.get('undelegated_ops')}")
    return str(report.get("note", "-"))


def tflite_report(path: Path) -> dict[str, Any]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    float_types = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16}
    const = {i for i, t in enumerate(graph.tensors) if model.buffers[t.buffer].data is not None}
    ops: Counter[str] = Counter()
    float_ops: Counter[str] = Counter()
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        ops[name] += 1
        acts = [i for i in [*op.inputs, *op.outputs] if i >= 0 and i not in const]
        if any(graph.tensors[i].type in float_types for i in acts):
            float_ops[name] += 1
    io_types = {
        "input": _tfl_type_name(schema, graph.tensors[graph.inputs[0]].type),
        "output": _tfl_type_name(schema, graph.tensors[graph.outputs[0]].type),
    }
    return {
        "format": "tflite",
        "ops": sum(ops.values()),
        "op_counts": dict(sorted(ops.items())),
        "float_ops": sum(float_ops.values()),
        "float_op_counts": dict(sorted(float_ops.items())),
        "io_dtypes": io_types,
        **tflite_delegation(path),
    }


def _tfl_type_name(schema: Any, code: int) -> str:
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return str(names.get(code, code)).lower()


def tflite_delegation(path: Path) -> dict[str, Any]:
    """Delegate partitions and undelegated ops as the LiteRT interpreter (XNNPACK) runs them.

    The interpreter lists the original nodes followed by one DELEGATE node per partition; a node
    belongs to a partition when it is reached walking back from the partition's outputs without
    crossing its inputs. Whatever no partition covers runs on the reference kernels.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    details = interp._get_ops_details()
    nodes = [d for d in details if d["op_name"] != "DELEGATE"]
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    producer = {int(t): d["index"] for d in nodes for t in d["outputs"]}
    by_index = {d["index"]: d for d in nodes}
    covered: set[int] = set()
    for dele in delegates:
        stop = {int(t) for t in dele["inputs"]}
        todo = [producer[int(t)] for t in dele["outputs"] if int(t) in producer]
        while todo:
            idx = todo.pop()
            if idx in covered:
                continue
            covered.add(idx)
            todo += [producer[int(t)] for t in by_index[idx]["inputs"]
                     if int(t) >= 0 and int(t) not in stop and int(t) in producer]
    left = Counter(str(d["op_name"]) for d in nodes if d["index"] not in covered)
    return {"delegate_partitions": len(delegates), "undelegated_ops": sum(left.values()),
            "undelegated_op_counts": dict(sorted(left.items()))}


# Graph nodes that are no kernels: tuple indexing of a delegate's outputs.
_NOT_KERNELS = {"getitem"}


def executorch_report(path: Path, graph_module: Any) -> dict[str, Any]:
    """Delegate partitions and the operators outside them (``get_delegation_info`` on the
    lowered ``graph_module``); inside each XNNPACK delegate, node counts by type, float compute
    nodes and int8<->float conversions, read from the ``.pte`` at ``path``."""
    from executorch.devtools.backend_debug import get_delegation_info

    if graph_module is None:
        raise ValueError("the ExecuTorch report needs the lowered graph module")
    info = get_delegation_info(graph_module)
    left = {op: b.non_delegated for op, b in info.delegation_by_operator.items()
            if b.non_delegated and op not in _NOT_KERNELS}
    report: dict[str, Any] = {
        "format": "executorch",
        "delegate_partitions": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "undelegated_ops": sum(left.values()),
        "undelegated_op_counts": dict(sorted(left.items())),
    }
    try:
        report.update(_xnnpack_summary(path))
    except Exception as exc:  # private serialization details may change between releases
        report["delegate_graph_error"] = f"{type(exc).__name__}: {exc}"
    return report


def _xnnpack_summary(path: Path) -> dict[str, Any]:
    """Float compute inside the XNNPACK delegates. Private API, because the public one cannot
    say it: ``get_delegation_info`` lists the edge ops handed to the delegate, all float32 with
    quantize/dequantize around them; which of them XNNPACK fuses into int8 kernels shows only
    in the delegate's serialized XNNPACK graph (decoded here with ExecuTorch's flatc)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes()).program
    plan = program.execution_plan[0]
    nodes: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    lut = 0
    for delegate in plan.delegates:
        if delegate.id != "XnnpackBackend":
            continue
        graph = _xnnpack_graph(program.backend_delegate_data[delegate.processed.index].data)
        dtypes = {}
        for value in graph.get("xvalues", []):
            union = value["xvalue_union"]
            tensor = union.get("tensor_value", union)
            dtypes[tensor.get("id_out", 0)] = str(tensor.get("datatype", ""))
        xnodes = graph.get("xnodes", [])
        fused = _lut_unaries(xnodes, dtypes)
        lut += len(fused) // 3
        for i, node in enumerate(xnodes):
            kind = str(node["xnode_union_type"]).removeprefix("XNN")
            nodes[kind] += 1
            out = dtypes.get(node["xnode_union"].get("output_id", 0), "")
            if out.endswith("fp32") and kind not in _XNN_LAYOUT and i not in fused:
                floats[kind] += 1
    return {"delegate_nodes": sum(nodes.values()),
            "delegate_node_counts": dict(sorted(nodes.items())),
            "int8_lookup_unaries": lut,
            "float_ops": sum(v for k, v in floats.items() if k != "Convert"),
            "float_op_counts": dict(sorted(floats.items()))}


def _lut_unaries(xnodes: list[dict[str, Any]], dtypes: dict[int, str]) -> set[int]:
    """Indices of ``int8 -> Convert -> unary -> Convert -> int8`` chains: XNNPACK's runtime
    rewrites each into one int8 lookup-table op (it shows in its profiler as a unary op)."""
    producer = {n["xnode_union"].get("output_id", 0): i for i, n in enumerate(xnodes)}
    users: dict[int, list[int]] = {}
    for i, node in enumerate(xnodes):
        for key in ("input_id", "input1_id", "input2_id"):
            if key in node["xnode_union"] or (key == "input_id" and "input1_id"
                                              not in node["xnode_union"]):
                users.setdefault(node["xnode_union"].get(key, 0), []).append(i)
    fused: set[int] = set()
    for i, node in enumerate(xnodes):
        kind = str(node["xnode_union_type"]).removeprefix("XNN")
        if kind not in _XNN_UNARY:
            continue
        src = producer.get(node["xnode_union"].get("input_id", 0))
        dst = users.get(node["xnode_union"].get("output_id", 0), [])
        if src is None or len(dst) != 1:
            continue
        before, after = xnodes[src], xnodes[dst[0]]
        if (before["xnode_union_type"] == after["xnode_union_type"] == "XNNConvert"
                and not dtypes.get(before["xnode_union"].get("input_id", 0), "").endswith("fp32")
                and not dtypes.get(after["xnode_union"].get("output_id", 0), "").endswith("fp32")):
            fused.update((src, i, dst[0]))
    return fused


_XNN_UNARY = {"Hardswish", "Sigmoid", "Tanh", "ELU", "LeakyReLU", "Gelu"}


# XNNPACK nodes that only move data; a float one is no float compute.
_XNN_LAYOUT = {"StaticTranspose", "StaticReshape", "StaticSlice", "StaticConstantPad"}


def _xnnpack_graph(blob: bytes) -> dict[str, Any]:
    """Decode an XNNPACK delegate payload (header + flatbuffer) to JSON with ExecuTorch's flatc."""
    import json
    import re
    import subprocess

    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import (
        XNNHeader,
        _get_schema_bytes,
    )
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    header = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
    flat = blob[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "schema.fbs").write_bytes(_get_schema_bytes())
        (work / "graph.bin").write_bytes(flat)
        subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "-o",
                        tmp, "schema.fbs", "--", "graph.bin"], cwd=tmp, check=True,
                       capture_output=True)
        text = (work / "graph.json").read_text()
    # flatc writes non-finite floats (clamp bounds) bare; they are not needed here.
    result: dict[str, Any] = json.loads(re.sub(r"(?<![\w\"])[-+]?(nan|inf)\b", "0", text))
    return result


_ONNX_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops that produce integer tensors from integer (or float) inputs in a fused QDQ graph.
_ONNX_INT_PRODUCERS = {"QuantizeLinear", "DynamicQuantizeLinear", "QGemm", "ConvInteger",
                       "MatMulInteger"}
# Ops that carry the element type of their first input: int8 in, int8 out.
_ONNX_PASS_TYPE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                   "MaxPool", "Relu", "Clip", "Gather", "Concat", "Slice", "Pad", "Resize"}


def onnx_report(path: Path) -> dict[str, Any]:
    """Counts after ONNX Runtime's QDQ fusion: quantized nodes (QLinear*, QGemm...), float
    nodes (compute on float tensors), quantize/dequantize nodes, int8 data movement."""
    import onnx
    import onnxruntime as ort

    raw = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(opt_path)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        nodes = list(onnx.load(str(opt_path), load_external_data=False).graph.node)
    kinds = {"quantized": Counter[str](), "float": Counter[str](), "qdq": Counter[str](),
             "int8_data_movement": Counter[str]()}
    int_tensors: set[str] = set()
    for node in nodes:
        op = node.op_type
        int_in = bool(node.input) and node.input[0] in int_tensors
        if op in _ONNX_QDQ:
            kind = "qdq"
        elif op.startswith("QLinear") or op in _ONNX_INT_PRODUCERS:
            kind = "quantized"
        elif op in _ONNX_PASS_TYPE and int_in:
            kind = "int8_data_movement"
        elif op in ("Shape", "Constant"):
            continue
        else:
            kind = "float"
        kinds[kind][op] += 1
        if kind in ("quantized", "int8_data_movement") or op in ("QuantizeLinear",
                                                                  "DynamicQuantizeLinear"):
            int_tensors.update(node.output)
    return {
        "format": "onnx",
        "nodes": sum(raw.values()),
        "node_counts": dict(sorted(raw.items())),
        "quantized_nodes": sum(kinds["quantized"].values()),
        "float_nodes": sum(kinds["float"].values()),
        "qdq_nodes": sum(kinds["qdq"].values()),
        "optimized_counts": {k: dict(sorted(v.items())) for k, v in kinds.items()},
    }
