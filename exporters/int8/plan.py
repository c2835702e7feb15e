"""Per-site precision plans: which quantizable sites of a model stay float, and why.

A *site* is a weighted op of the float model (a ``Conv2d`` or ``Linear`` module), named by its
module path in the checkpoint's model (``features.0.0``, ``classifier.3``): the one key every
runtime maps back to. ``find_sites`` lists them in call order with their MACs. A
``PrecisionPlan`` names the sites kept float and the objective that chose each one
("accuracy": the repair ladder's mixed precision; "speed": INT8 slower there in the runtime).

Each runtime applies a plan in its own quantizer:

- PT2E (TFLite, ExecuTorch, Core ML w8a8): ``mark_float_sites`` leaves the site's node
  unannotated (the stock quantizer then skips it), so it runs float between a dequantize and a
  quantize; graph nodes are matched through their ``nn_module_stack`` (wrappers such as
  ``to_channel_last_io`` add a prefix: a node matches a site when its module path equals the
  site name or ends with ``.`` + the site name).
- ONNX Runtime: ``onnx_site_nodes`` maps ONNX node names to sites for ``nodes_to_exclude``.

An "accuracy" site also keeps its *tail* float: the unweighted ops that read its output, up to
the next weighted op on every path (its activation, a squeeze-excite multiply, a residual add,
a pool; ``float_tail``, ``onnx_tail_nodes``). Its output is then quantized once, at the next
INT8 site's input, not again after each of those ops: on a 7-class MobileNetV3-Large, keeping
all 64 sites float but their tails INT8 still left ExecuTorch at 97.8 % top-1 agreement with
float. A "speed" site keeps only its own op float: its INT8 kernel is what was slow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import fx, nn

log = logging.getLogger(__name__)

REASONS = ("accuracy", "speed")
ONNX_WEIGHTED = ("Conv", "Gemm", "MatMul")


class PlanError(ValueError):
    """A precision plan that does not fit the model (unknown site, bad reason or field)."""


@dataclass(frozen=True)
class Site:
    """One quantizable weighted op of the float model."""

    name: str  # module path in the float model
    kind: str  # conv | pointwise | depthwise | linear
    kernel: tuple[int, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "kernel": list(self.kernel),
                "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                "macs": self.macs}


def weighted_targets() -> set[Any]:
    """The ATen ops of quantizable sites in an exported graph."""
    import torch

    aten = torch.ops.aten
    return {aten.conv2d.default, aten.conv1d.default, aten.linear.default}


def _kind(mod: nn.Module) -> str:
    from torch import nn

    if isinstance(mod, nn.Linear):
        return "linear"
    assert isinstance(mod, nn.Conv1d | nn.Conv2d)
    if mod.groups > 1 and mod.groups == mod.in_channels:
        return "depthwise"
    return "pointwise" if all(k == 1 for k in mod.kernel_size) else "conv"


def _macs(mod: nn.Module, out: torch.Tensor) -> int:
    import math

    from torch import nn

    if isinstance(mod, nn.Linear):
        return int(out.numel() * mod.in_features)
    assert isinstance(mod, nn.Conv1d | nn.Conv2d)
    per_output = (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
    return int(out.numel() * per_output)


def find_sites(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> tuple[Site, ...]:
    """The conv/linear modules ``model`` calls on ``example_inputs``, in call order (a module
    called twice is listed once)."""
    import torch
    from torch import nn

    seen: dict[str, Site] = {}
    hooks = []

    def hook(name: str) -> Any:
        def record(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            if name not in seen:
                kernel = tuple(getattr(mod, "kernel_size", ()))
                seen[name] = Site(name, _kind(mod), kernel, tuple(args[0].shape),
                                  tuple(out.shape), _macs(mod, out))
        return record

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Linear):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return tuple(seen.values())


@dataclass(frozen=True)
class FloatSite:
    """A site kept float, the objective that chose it and the evidence (timings, scores)."""

    name: str
    reason: str  # "accuracy" | "speed"
    macs_share: float = 0.0
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise PlanError(f"float site {self.name!r}: reason must be one of {REASONS}, "
                            f"got {self.reason!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason,
                "macs_share": round(self.macs_share, 6), "evidence": dict(self.evidence)}


@dataclass(frozen=True)
class PrecisionPlan:
    """The sites kept float; every other quantizable site runs INT8."""

    float_sites: tuple[FloatSite, ...] = ()
    notes: tuple[str, ...] = ()

    def names(self, reason: str | None = None) -> frozenset[str]:
        """The float sites' names (only those kept for ``reason``, if given)."""
        return frozenset(s.name for s in self.float_sites if reason in (None, s.reason))

    def __bool__(self) -> bool:
        return bool(self.float_sites)

    def with_sites(self, sites: Iterable[FloatSite], note: str | None = None) -> PrecisionPlan:
        """This plan plus ``sites`` (a site already kept float keeps its first reason)."""
        have = self.names()
        extra = tuple(s for s in sites if s.name not in have)
        notes = self.notes + ((note,) if note else ())
        return replace(self, float_sites=self.float_sites + extra, notes=notes)

    def float_macs_share(self) -> float:
        return float(sum(s.macs_share for s in self.float_sites))

    def to_dict(self) -> dict[str, Any]:
        return {"float_sites": [s.to_dict() for s in self.float_sites],
                "float_macs_share": round(self.float_macs_share(), 6),
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "precision plan") -> PrecisionPlan:
        try:
            sites = tuple(FloatSite(str(s["name"]), str(s["reason"]),
                                    float(s.get("macs_share", 0.0)), dict(s.get("evidence", {})))
                          for s in d.get("float_sites", []))
        except (KeyError, TypeError, AttributeError) as exc:
            raise PlanError(f"{source}: bad float_sites entry ({exc})") from None
        return cls(sites, tuple(str(n) for n in d.get("notes", [])))


def float_site(site: Site, sites: Sequence[Site], reason: str,
               evidence: Mapping[str, Any] | None = None) -> FloatSite:
    total = sum(s.macs for s in sites) or 1
    return FloatSite(site.name, reason, round(site.macs / total, 6), dict(evidence or {}))


def check_plan(plan: PrecisionPlan, sites: Sequence[Site]) -> None:
    """Raise ``PlanError`` when the plan names a site the model does not have."""
    known = {s.name for s in sites}
    unknown = sorted(plan.names() - known)
    if unknown:
        raise PlanError(f"precision plan names unknown site(s) {', '.join(unknown)}; the model's "
                        f"sites are {', '.join(s.name for s in sites)}")


def site_of(module_path: str, names: Iterable[str]) -> str | None:
    """The site name ``module_path`` refers to: equal, or a wrapper's path ending in it (the
    longest such name, so ``m.3.0`` is site ``3.0`` rather than ``0``)."""
    for name in sorted(names, key=len, reverse=True):
        if module_path == name or module_path.endswith("." + name):
            return name
    return None


def _node_module(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return str(path)


def float_tail(node: fx.Node) -> list[fx.Node]:
    """The ops reading ``node``'s output, directly or through other unweighted ops, up to the
    next weighted op on every path."""
    targets = weighted_targets()
    tail: list[fx.Node] = []
    todo, seen = list(node.users), set()
    while todo:
        user = todo.pop()
        if user in seen or user.op != "call_function" or user.target in targets:
            continue
        seen.add(user)
        tail.append(user)
        todo.extend(user.users)
    return tail


def mark_float_sites(gm: fx.GraphModule, names: frozenset[str],
                     tails: frozenset[str] = frozenset()) -> list[str]:
    """Mark the weighted nodes of ``names``, and the ``float_tail`` of those also in ``tails``,
    as handled without quantization (PT2E annotation), so they stay float. Returns the sites
    matched; raises ``PlanError`` for a missing one."""
    if not names:
        return []
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    matched: set[str] = set()
    targets = weighted_targets()
    kept = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in targets:
            continue
        path = _node_module(node)
        site = site_of(path, names) if path else None
        if site is None:
            continue
        matched.add(site)
        for op in [node, *(float_tail(node) if site in tails else [])]:
            if op.meta.get("quantization_annotation") is None:
                op.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
                kept += 1
    missing = sorted(names - matched)
    if missing:
        raise PlanError(f"float site(s) {', '.join(missing)} not found in the exported graph")
    log.debug("kept float: %s (%d ops with their tails)", ", ".join(sorted(matched)), kept)
    return sorted(matched)


def _scopes(node: Any) -> list[str]:
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def onnx_site_nodes(model: Any, sites: Sequence[Site]) -> dict[str, str]:
    """{ONNX node name: site name} for the weighted nodes of a dynamo-exported model.

    The k-th Conv/Gemm/MatMul with a constant weight is the k-th site in call order (both come
    from the same ``torch.export`` graph); each pairing is checked against the node's recorded
    module scopes (the site or its parent module: batch norm folded into a conv carries the
    norm's scope). ``PlanError`` when counts or scopes disagree."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    nodes = [n for n in model.graph.node if n.op_type in ONNX_WEIGHTED
             and len(n.input) > 1 and n.input[1] in consts]
    if len(nodes) != len(sites):
        raise PlanError(f"ONNX graph has {len(nodes)} weighted nodes but the model has "
                        f"{len(sites)} sites: cannot map nodes to modules")
    out = {}
    for node, site in zip(nodes, sites, strict=True):
        scopes = _scopes(node)
        parent = site.name.rsplit(".", 1)[0] if "." in site.name else ""
        if scopes and site.name not in scopes and parent not in scopes:
            raise PlanError(f"ONNX node {node.name} has module scopes {scopes}, not site "
                            f"{site.name}")
        out[node.name] = site.name
    return out


def onnx_tail_nodes(model: Any, nodes: Iterable[str]) -> list[str]:
    """Names of the ONNX nodes reading the outputs of ``nodes``, directly or through other
    unweighted nodes, up to the next weighted node on every path (``float_tail`` in ONNX)."""
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    by_name = {n.name: n for n in model.graph.node}
    todo = [out for name in nodes for out in by_name[name].output]
    tail: list[str] = []
    while todo:
        for node in readers.get(todo.pop(), []):
            if node.op_type in ONNX_WEIGHTED or node.name in tail:
                continue
            tail.append(node.name)
            todo.extend(node.output)
    return sorted(tail)
