"""Graph reports of exported artefacts: what runs quantized, what stays float, how many partitions.

- tflite: op counts from the flatbuffer, ops touching float activations, and the XNNPACK delegate
  partitions seen by the LiteRT interpreter after allocation.
- executorch: delegate calls (XNNPACK partitions) and the operators left outside any delegate.
- onnx: after ONNX Runtime's QDQ fusion (level EXTENDED), quantized vs float compute nodes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from exporters.int8.rewrites import check_format

# Ops that only move or reshape data: they carry the dtype of their input and are not "float work".
_DATA_MOVEMENT = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def graph_report(path: Path, fmt: str) -> dict[str, Any]:
    """Describe an exported artefact; see the module docstring for the fields per format."""
    check_format(fmt)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: artefact not found")
    if fmt == "tflite":
        return tflite_report(path)
    if fmt == "executorch":
        return executorch_report(path)
    if fmt == "onnx":
        return onnx_report(path)
    return {"format": "coreml", "note": "no graph report for Core ML"}


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


def executorch_report(path: Path) -> dict[str, Any]:
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall

    program = deserialize_pte_binary(path.read_bytes()).program
    plan = program.execution_plan[0]
    kernels: Counter[str] = Counter()
    delegate_calls = 0
    for chain in plan.chains:
        for ins in chain.instructions:
            arg = ins.instr_args
            if isinstance(arg, DelegateCall):
                delegate_calls += 1
            elif isinstance(arg, KernelCall):
                op = plan.operators[arg.op_index]
                kernels[f"{op.name}.{op.overload}" if op.overload else op.name] += 1
    backends = Counter(d.id for d in plan.delegates)
    return {
        "format": "executorch",
        "delegate_partitions": delegate_calls,
        "delegate_backends": dict(backends),
        "undelegated_ops": sum(kernels.values()),
        "undelegated_op_counts": dict(sorted(kernels.items())),
    }


_ONNX_QUANT = {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
               "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid",
               "QLinearLeakyRelu", "QLinearConcat", "QLinearSoftmax", "QLinearReduceMean",
               "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearHardSigmoid"}
_ONNX_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_ONNX_NEUTRAL = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Transpose", "Identity",
                 "MaxPool", "Relu", "Clip", "Constant", "Gather", "Concat", "Slice"}


def onnx_report(path: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    raw = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(opt_path)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(str(opt_path), load_external_data=False)
        fused = Counter(n.op_type for n in opt.graph.node)
    quant = {k: v for k, v in fused.items() if k in _ONNX_QUANT}
    qdq = {k: v for k, v in fused.items() if k in _ONNX_QDQ}
    neutral = {k: v for k, v in fused.items() if k in _ONNX_NEUTRAL}
    floats = {k: v for k, v in fused.items()
              if k not in _ONNX_QUANT and k not in _ONNX_QDQ and k not in _ONNX_NEUTRAL}
    return {
        "format": "onnx",
        "nodes": sum(raw.values()),
        "node_counts": dict(sorted(raw.items())),
        "quantized_nodes": sum(quant.values()),
        "float_nodes": sum(floats.values()),
        "qdq_nodes": sum(qdq.values()),
        "optimized_counts": {"quantized": dict(sorted(quant.items())),
                             "float": dict(sorted(floats.items())),
                             "qdq": dict(sorted(qdq.items())),
                             "data_movement": dict(sorted(neutral.items()))},
    }
