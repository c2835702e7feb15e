"""PT2E graph preparation and annotation that the stock quantizers leave out.

Works on the ATen graph of ``torch.export(...).module()``:

- ``functionalize_inplace``: ``add_``/``mul_``/``relu_``/``hardtanh_``... -> out-of-place ops (the
  stock annotators match out-of-place ops only, so in-place residual adds stayed float);
- ``shape_scalar_constants``: Python-number operands of add/mul become buffers with as many
  (size-1) dimensions as the other operand; 0-d constants made the TFLite layout pass insert
  TRANSPOSE ops around them;
- ``annotate_fused``: int8 annotation of conv/linear/add/mul, with the output observer placed
  after a directly following ReLU/ReLU6 (hardtanh) so the runtime fuses the activation, or after
  the ``clamp(min=-3)`` that ``rewrites.clamp_hardswish_input`` puts before a hardswish;
- ``drop_hardswish_clamps``: after conversion, that clamp goes (the int8 range saturates there).

Quantizer configs of litert-torch and ExecuTorch share the fields used here
(``input_activation``, ``output_activation``, ``weight``, ``bias``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from exporters.int8.rewrites import HARDSWISH_FLOOR

aten = torch.ops.aten

_INPLACE = {
    aten.add_.Tensor: aten.add.Tensor,
    aten.mul_.Tensor: aten.mul.Tensor,
    aten.sub_.Tensor: aten.sub.Tensor,
    aten.relu_.default: aten.relu.default,
    aten.hardtanh_.default: aten.hardtanh.default,
    aten.hardswish_.default: aten.hardswish.default,
    aten.hardsigmoid_.default: aten.hardsigmoid.default,
}
_WEIGHTED = {aten.conv2d.default, aten.conv1d.default, aten.linear.default}
_BINARY = {aten.add.Tensor, aten.mul.Tensor}
_ACTIVATIONS = {aten.relu.default, aten.hardtanh.default, aten.clamp.default}


def _is_hardswish_clamp(node: fx.Node) -> bool:
    """``clamp(x, min=-3)`` with no upper bound: the clamp put before a hardswish."""
    if node.op != "call_function" or node.target != aten.clamp.default:
        return False
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
    return isinstance(low, int | float) and float(low) == HARDSWISH_FLOOR and high is None


def functionalize_inplace(gm: fx.GraphModule) -> int:
    """Replace in-place ops on intermediate tensors by their out-of-place forms (exact).

    Later readers of the mutated tensor are pointed at the new result. Mutations of graph
    inputs or parameters are left alone.
    """
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    count = 0
    for node in list(gm.graph.nodes):
        new = _INPLACE.get(node.target) if node.op == "call_function" else None
        target = node.args[0] if node.args else None
        if new is None or not isinstance(target, fx.Node) or target.op != "call_function":
            continue
        for user in list(target.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(target, node)
        node.target = new
        count += 1
    gm.recompile()
    return count


def shape_scalar_constants(gm: fx.GraphModule) -> int:
    """Turn scalar operands of add/mul into rank-matched buffers, e.g. (1, 1, 1, 1) for NCHW."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _BINARY:
            continue
        tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        scalars = [i for i, a in enumerate(node.args[:2]) if isinstance(a, int | float)]
        if len(tensors) != 1 or not scalars:
            continue
        val = tensors[0].meta.get("val")
        rank = val.dim() if isinstance(val, torch.Tensor) else 0
        dtype = val.dtype if isinstance(val, torch.Tensor) else torch.float32
        name = f"_int8_const_{count}"
        while hasattr(gm, name):
            name += "_"
        value = node.args[scalars[0]]
        gm.register_buffer(name, torch.full([1] * rank, float(value), dtype=dtype))
        with gm.graph.inserting_before(node):
            const = gm.graph.get_attr(name)
        const.meta["val"] = getattr(gm, name)
        args = list(node.args)
        args[scalars[0]] = const
        node.args = tuple(args)
        count += 1
    gm.recompile()
    return count


def _annotated(node: fx.Node) -> bool:
    ann = node.meta.get("quantization_annotation")
    return ann is not None and bool(getattr(ann, "_annotated", False))


def _fused_activation(node: fx.Node) -> fx.Node | None:
    """The ReLU/ReLU6 that alone consumes ``node``, if any (to carry the output observer)."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    if user.op != "call_function" or user.target not in _ACTIVATIONS or _annotated(user):
        return None
    if user.target == aten.hardtanh.default:
        bounds = [float(a) for a in user.args[1:3] if isinstance(a, int | float)]
        if bounds != [0.0, 6.0]:
            return None
    if user.target == aten.clamp.default and not _is_hardswish_clamp(user):
        return None
    return user


def relu6_qspec() -> Any:
    """int8 spanning exactly [0, 6]: quantizing to it saturates like ReLU6 does."""
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec

    return FixedQParamsQuantizationSpec(dtype=torch.int8, scale=6.0 / 255.0, zero_point=-128,
                                        quant_min=-128, quant_max=127,
                                        qscheme=torch.per_tensor_affine)


def annotate_fused(gm: fx.GraphModule, config: Any, *, relu6_range_on_binary: bool = False) -> int:
    """Annotate conv/linear/add/mul (+ following ReLU/ReLU6) for static int8. Returns count.

    With ``relu6_range_on_binary`` an add/mul followed by ReLU6 gets the fixed [0, 6] output
    range and the ReLU6 shares it (``drop_redundant_clamps`` then removes the ReLU6); ExecuTorch's
    XNNPACK lowering fuses activations into conv/linear but not into quantized add/mul.
    """
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        SharedQuantizationSpec,
    )

    if config is None or config.input_activation is None:
        return 0  # dynamic or disabled: leave it to the stock quantizer
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or _annotated(node):
            continue
        if node.target in _WEIGHTED:
            qmap = _weighted_inputs(node, config)
        elif node.target in _BINARY:
            qmap = {a: _input_qspec(a, config) for a in node.args[:2] if isinstance(a, fx.Node)}
        else:
            continue
        act = _fused_activation(node)
        if act is not None and relu6_range_on_binary and node.target in _BINARY:
            if act.target == aten.hardtanh.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=qmap, output_qspec=relu6_qspec(), _annotated=True)
                shared = SharedQuantizationSpec(node)
                act.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node: shared}, output_qspec=shared, _annotated=True)
                count += 1
                continue
            act = None
        if act is None:
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=qmap, output_qspec=config.output_activation, _annotated=True)
        else:
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=qmap, _annotated=True)
            act.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=config.output_activation, _annotated=True)
        count += 1
    return count


def _input_qspec(arg: fx.Node, config: Any) -> Any:
    """Share the producer's observer when it has a special output spec (fixed or shared), so
    no requantize step appears between them; otherwise the config's input spec."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    ann = arg.meta.get("quantization_annotation")
    out = getattr(ann, "output_qspec", None)
    if out is not None and out != config.output_activation:
        return SharedQuantizationSpec(arg)
    return config.input_activation


def _weighted_inputs(node: fx.Node, config: Any) -> dict[fx.Node, Any]:
    x, w = node.args[0], node.args[1]
    assert isinstance(x, fx.Node) and isinstance(w, fx.Node)
    qmap: dict[fx.Node, Any] = {x: _input_qspec(x, config), w: config.weight}
    bias = node.args[2] if len(node.args) > 2 else None
    if isinstance(bias, fx.Node) and config.bias is not None:
        qmap[bias] = config.bias
    return qmap


_Q = "quantize_per_tensor"
_DQ = "dequantize_per_tensor"


def _qparams(node: fx.Node, name: str) -> tuple[Any, ...] | None:
    """(scale, zero_point, qmin, qmax, dtype) of a per-tensor (de)quantize node, else None."""
    if node.op != "call_function" or name not in str(node.target):
        return None
    return tuple(node.args[1:6])


def collapse_requantize(gm: fx.GraphModule) -> int:
    """``q(dq(t))`` with the same parameters is ``t``: drop such pairs (exact)."""
    count = 0
    for q in list(gm.graph.nodes):
        params = _qparams(q, _Q)
        dq = q.args[0] if params is not None else None
        if not isinstance(dq, fx.Node) or _qparams(dq, _DQ) != params:
            continue
        src = dq.args[0]
        if isinstance(src, fx.Node):
            q.replace_all_uses_with(src)
            count += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return count


def drop_hardswish_clamps(gm: fx.GraphModule) -> int:
    """After ``convert_pt2e``: ``op -> clamp(min=-3) -> q`` becomes ``op -> q``. The observer saw
    the clamped values, so q's range starts at -3 (or above) and saturates where the clamp did,
    up to rounding, which the hardswish after it cannot see (it is 0 for every x <= -3)."""
    count = 0
    for node in list(gm.graph.nodes):
        if not _is_hardswish_clamp(node):
            continue
        src, users = node.args[0], list(node.users)
        if not isinstance(src, fx.Node) or not users or any(_qparams(u, _Q) is None
                                                               for u in users):
            continue
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        count += 1
    gm.recompile()
    return count


def drop_redundant_clamps(gm: fx.GraphModule) -> int:
    """After ``convert_pt2e``: remove ``dq -> hardtanh(lo, hi) -> q`` when the quantized range
    already lies inside [lo, hi] and ``q`` has the same parameters (the clamp is then the identity
    on every representable value), then drop the requantize pairs left behind. Returns how many
    clamps were removed."""
    collapse_requantize(gm)
    count = 0
    for act in list(gm.graph.nodes):
        if act.op != "call_function" or act.target != aten.hardtanh.default:
            continue
        dq = act.args[0]
        params = _qparams(dq, _DQ) if isinstance(dq, fx.Node) else None
        users = list(act.users)
        if params is None or len(users) != 1 or _qparams(users[0], _Q) != params:
            continue
        scale, zp, qmin, qmax = (float(params[0]), int(params[1]), int(params[2]),
                                 int(params[3]))
        lo = float(act.args[1]) if len(act.args) > 1 else -1.0
        hi = float(act.args[2]) if len(act.args) > 2 else 1.0
        if (qmin - zp) * scale < lo - 1e-6 or (qmax - zp) * scale > hi + 1e-6:
            continue
        q_after = users[0]
        for dq_after in list(q_after.users):
            if _qparams(dq_after, _DQ) == params:
                dq_after.replace_all_uses_with(dq)
        count += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return count
