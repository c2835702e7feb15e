"""Exact float rewrites that make a model quantize well for a given runtime.

Some runtimes have no int8 kernel for hardswish or hardsigmoid (TFLite's XNNPACK delegate, ONNX
Runtime): each such op leaves the quantized graph, splits it, and costs a quantize/dequantize
pair. The rewrites express them in ops every int8 backend has, exactly in float:

- ``hardswish(x) = x * relu6(x + 3) / 6`` and ``hardsigmoid(x) = relu6(x + 3) / 6``;
- ``+ 3`` before a hardsigmoid moves into the bias of the conv/linear/batch-norm that feeds it;
- a ``/ 6`` moves through linear, scale-commuting ops (pooling, ReLU, flatten, dropout, products
  with another tensor) into the weights of the convs/linears that consume it, so it costs no op;
- in-place residual adds become out-of-place (tracing does it), so quantizers annotate them;
- a hardswish input gets ``clamp(x, min=-3)`` (``clamp_hardswish_input``; exact: hardswish is 0
  below -3). The quantizers observe the conv/linear output after that clamp, and the clamp is
  then dropped (the int8 range saturates there): a long negative tail, which hardswish discards,
  no longer stretches the int8 range (a classifier layer measured [-231, 1]: 56x coarser);
- a padded max pool on a ReLU output pads with zeros instead of -inf (``zero_pad_maxpool``): the
  input is >= 0, so the maxima are unchanged, and a zero pad (the activation's zero point) stays
  on TFLite's XNNPACK delegate where the -inf pad (PADV2 with -128) split the graph in two.

The model is traced with ``torch.fx.symbolic_trace``; a model that cannot be traced is an error
(``RewriteError``), never a silent partial rewrite: the manifest lists the rewrites applied.
Every rewrite is checked in float: ``prepare_float_model`` compares outputs on example inputs.
Which rewrites a format gets is its INT8 recipe (``exporters.Int8Recipe.rewrites``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from exporters import Int8Recipe, get_exporter

EXACT_TOL = 1e-5
REWRITES = ("clamp_hardswish_input", "decompose_hardswish", "decompose_hardsigmoid",
            "fold_scales", "zero_pad_maxpool")

_TRANSPARENT_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.ReLU, nn.Dropout,
                        nn.Flatten, nn.Identity)
_TRANSPARENT_FUNCTIONS = {torch.flatten, torch.reshape, F.relu, F.dropout, F.adaptive_avg_pool2d,
                          F.avg_pool2d, F.max_pool2d}
_TRANSPARENT_METHODS = {"flatten", "view", "reshape", "relu"}


class RewriteError(ValueError):
    """The rewrites could not be applied (an untraceable model) or were not exact."""


def recipe_for(fmt: str) -> Int8Recipe:
    """The INT8 recipe registered for ``fmt``; ValueError for a format without INT8."""
    try:
        recipe = get_exporter(fmt).int8
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    if recipe is None:
        raise ValueError(f"format {fmt!r} registers no INT8 recipe")
    return recipe


def rewrites_for(fmt: str, precision: str = "int8") -> tuple[str, ...]:
    recipe = recipe_for(fmt)
    return recipe.rewrites if precision == "int8" else ()


def prepare_float_model(
    model: nn.Module,
    fmt: str,
    *,
    precision: str = "int8",
    example_inputs: Sequence[torch.Tensor] | None = None,
) -> nn.Module:
    """A float copy of ``model`` (eval mode) rewritten for ``fmt``'s INT8 path.

    Outputs equal the input model's within ``EXACT_TOL``; with ``example_inputs`` this is checked
    (ValueError otherwise). ``precision="fp32"`` returns a plain copy: float kernels of every
    runtime handle hardswish natively, and the decomposed form would only be slower there.
    """
    names = rewrites_for(fmt, precision)
    out = copy.deepcopy(model).eval()
    if names:
        out = apply_rewrites(out, names)
    if example_inputs is not None:
        diff = max_abs_diff(model.eval(), out, tuple(example_inputs))
        if diff > EXACT_TOL:
            raise RewriteError(f"rewrites {names} changed the float outputs by {diff:.3g}")
    return out


def apply_rewrites(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """Apply the named rewrites to an eval-mode model (modified in place where it can)."""
    unknown = set(names) - set(REWRITES)
    if unknown:
        raise ValueError(f"unknown rewrites: {sorted(unknown)}")
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RewriteError(
            f"the INT8 rewrites {', '.join(names)} need torch.fx.symbolic_trace, which failed "
            f"on {type(model).__name__} ({type(exc).__name__}: {first})") from None
    if "clamp_hardswish_input" in names:
        clamp_hardswish_input(gm)
    if "decompose_hardsigmoid" in names:
        decompose_hardsigmoid(gm)
    if "decompose_hardswish" in names:
        decompose_hardswish(gm)
    if "fold_scales" in names:
        fold_scales(gm)
    if "zero_pad_maxpool" in names:
        zero_pad_maxpool(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def max_abs_diff(a: nn.Module, b: nn.Module, example: tuple[torch.Tensor, ...]) -> float:
    """Largest absolute output difference of two models on ``example``."""
    with torch.no_grad():
        return float((a(*example) - b(*example)).abs().max())


# --- graph passes ------------------------------------------------------------------------------


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    return gm.get_submodule(str(node.target))


def _is_module(gm: fx.GraphModule, node: fx.Node, kind: type | tuple[type, ...]) -> bool:
    mod = _module(gm, node)
    return mod is not None and isinstance(mod, kind)


def _is_activation(gm: fx.GraphModule, node: fx.Node, module: type, function: object) -> bool:
    """``node`` calls the activation as a module (``nn.Hardswish``) or a function."""
    is_fn = node.op == "call_function" and node.target is function
    return is_fn or _is_module(gm, node, module)


def _activation_input(node: fx.Node) -> fx.Node:
    arg = node.args[0] if node.args else node.kwargs["input"]
    assert isinstance(arg, fx.Node)
    return arg


def _call_sites(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            counts[str(n.target)] = counts.get(str(n.target), 0) + 1
    return counts


HARDSWISH_FLOOR = -3.0  # hardswish(x) = 0 for every x <= -3


def clamp_hardswish_input(gm: fx.GraphModule) -> int:
    """hardswish(x) -> hardswish(clamp(x, min=-3)) where a conv, linear or batch norm makes x
    (the int8 annotation observes their output after the clamp). Returns how many."""
    count = 0
    for node in list(gm.graph.nodes):
        if not _is_activation(gm, node, nn.Hardswish, F.hardswish):
            continue
        x = _activation_input(node)
        if not _is_module(gm, x, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) or len(x.users) != 1:
            continue
        with gm.graph.inserting_before(node):
            clamped = gm.graph.call_function(torch.clamp, (x,), {"min": HARDSWISH_FLOOR})
        node.replace_input_with(x, clamped)
        count += 1
    return count


def decompose_hardswish(gm: fx.GraphModule) -> int:
    """hardswish(x) -> x * relu6(x + 3) * (1/6). Returns how many were rewritten."""
    count = 0
    for node in list(gm.graph.nodes):
        if not _is_activation(gm, node, nn.Hardswish, F.hardswish):
            continue
        x = _activation_input(node)
        with gm.graph.inserting_before(node):
            shifted = gm.graph.call_function(operator.add, (x, 3.0))
            relu6 = gm.graph.call_function(F.hardtanh, (shifted, 0.0, 6.0))
            prod = gm.graph.call_function(operator.mul, (x, relu6))
            scaled = gm.graph.call_function(operator.mul, (prod, 1.0 / 6.0))
        node.replace_all_uses_with(scaled)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.eliminate_dead_code()
    return count


def decompose_hardsigmoid(gm: fx.GraphModule) -> int:
    """hardsigmoid(x) -> relu6(x + 3) * (1/6); the + 3 goes into the producer's bias when the
    producer is a conv/linear with bias or an affine batch norm used only here."""
    count = 0
    sites = _call_sites(gm)
    for node in list(gm.graph.nodes):
        if not _is_activation(gm, node, nn.Hardsigmoid, F.hardsigmoid):
            continue
        x = _activation_input(node)
        with gm.graph.inserting_before(node):
            if _add_to_bias(gm, x, 3.0, sites):
                shifted = x
            else:
                shifted = gm.graph.call_function(operator.add, (x, 3.0))
            relu6 = gm.graph.call_function(F.hardtanh, (shifted, 0.0, 6.0))
            scaled = gm.graph.call_function(operator.mul, (relu6, 1.0 / 6.0))
        node.replace_all_uses_with(scaled)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.eliminate_dead_code()
    return count


def _non_negative(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True when ``node``'s output is >= 0 by construction (a ReLU or ReLU6 output)."""
    if isinstance(_module(gm, node), nn.ReLU | nn.ReLU6):
        return True
    if node.op == "call_method":
        return node.target == "relu"
    if node.op != "call_function":
        return False
    if node.target is F.hardtanh:
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        return isinstance(low, int | float) and low >= 0
    return node.target in (F.relu, torch.relu, F.relu6)


def zero_pad_maxpool(gm: fx.GraphModule) -> int:
    """max_pool2d(x, padding=p) -> max_pool2d(pad(x, p, value=0)) where x >= 0 (exact: every
    window keeps a real element, all >= 0, so a 0 pad never wins where -inf did not).
    Only floor mode, dilation 1, no indices. Returns how many were rewritten."""
    count = 0
    for node in list(gm.graph.nodes):
        mod = _module(gm, node)
        if not isinstance(mod, nn.MaxPool2d) or mod.ceil_mode or mod.return_indices:
            continue
        ph, pw = nn.modules.utils._pair(mod.padding)
        if (ph, pw) == (0, 0) or nn.modules.utils._pair(mod.dilation) != (1, 1):
            continue
        x = _activation_input(node)
        if not _non_negative(gm, x):
            continue
        with gm.graph.inserting_before(node):
            padded = gm.graph.call_function(F.pad, (x, (pw, pw, ph, ph)), {"value": 0.0})
            pooled = gm.graph.call_function(F.max_pool2d, (padded, mod.kernel_size, mod.stride))
        node.replace_all_uses_with(pooled)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    return count


def _add_to_bias(gm: fx.GraphModule, node: fx.Node, value: float, sites: dict[str, int]) -> bool:
    """Add ``value`` to the output of ``node`` by changing its bias; False if it cannot."""
    mod = _module(gm, node)
    if mod is None or len(node.users) != 1 or sites.get(str(node.target), 0) != 1:
        return False
    affine_bn = isinstance(mod, nn.BatchNorm2d) and mod.affine and not mod.training
    bias = getattr(mod, "bias", None)
    if (isinstance(mod, nn.Conv2d | nn.Linear) or affine_bn) and isinstance(bias, torch.Tensor):
        with torch.no_grad():
            bias.add_(value)
        return True
    return False


def _scale_node(node: fx.Node) -> float | None:
    """The positive constant ``c`` if ``node`` is ``x * c`` (c a Python number), else None."""
    if node.op != "call_function" or node.target not in (operator.mul, torch.mul):
        return None
    a, b = node.args[0], node.args[1]
    if isinstance(a, fx.Node) and isinstance(b, int | float) and b > 0:
        return float(b)
    return None


def fold_scales(gm: fx.GraphModule) -> int:
    """Remove ``x * c`` nodes whose every consumer path ends in a conv/linear that can absorb
    ``c`` into its weights. Returns how many were folded."""
    folded = 0
    sites = _call_sites(gm)
    for node in list(gm.graph.nodes):
        c = _scale_node(node)
        if c is None:
            continue
        absorbers = _absorbers(gm, node, sites)
        if absorbers is None:
            continue
        with torch.no_grad():
            for mod in absorbers:
                mod.weight.mul_(c)
        x = node.args[0]
        assert isinstance(x, fx.Node)
        node.replace_all_uses_with(x)
        gm.graph.erase_node(node)
        folded += 1
    return folded


def _absorbers(
    gm: fx.GraphModule, start: fx.Node, sites: dict[str, int]
) -> list[nn.Conv2d | nn.Linear] | None:
    """Convs/linears that receive ``start``'s scale on every path, or None if some path would
    carry it anywhere else (an add, the output, a product with itself, a shared module)."""
    found: list[nn.Conv2d | nn.Linear] = []
    seen: set[fx.Node] = set()
    todo = list(start.users)
    while todo:
        node = todo.pop()
        if node in seen:
            return None  # reached twice: the scale would be applied twice
        seen.add(node)
        mod = _module(gm, node)
        if isinstance(mod, nn.Conv2d | nn.Linear):
            if sites[str(node.target)] != 1:
                return None
            found.append(mod)
        elif _is_transparent(node, mod):
            todo.extend(node.users)
        else:
            return None
    return found


def _is_transparent(node: fx.Node, mod: nn.Module | None) -> bool:
    """An op that commutes with multiplication by a positive constant in its first input."""
    if mod is not None:
        return isinstance(mod, _TRANSPARENT_MODULES)
    if node.op == "call_method":
        return node.target in _TRANSPARENT_METHODS
    if node.op != "call_function":
        return False
    if node.target in (operator.mul, torch.mul):
        return all(isinstance(a, fx.Node) for a in node.args[:2])  # tensor * tensor is bilinear
    return node.target in _TRANSPARENT_FUNCTIONS

