"""The INT8 graph preparation is exact in float: every rewrite and graph pass, on random inputs."""

from __future__ import annotations

import copy
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig

from exporters.int8.annotate import (
    collapse_requantize,
    drop_redundant_clamps,
    functionalize_inplace,
    shape_scalar_constants,
)
from exporters.int8.rewrites import (
    EXACT_TOL,
    RewriteError,
    apply_rewrites,
    max_abs_diff,
    prepare_float_model,
)
from kd_core.models import create_model

ALL = ("decompose_hardswish", "decompose_hardsigmoid", "fold_scales")


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine terms, so folds and shifts matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                mod.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.5)
    return model.eval()


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return _randomize(create_model("tiny_mobilenet", 2))


def _block() -> nn.Module:
    """One MobileNetV3 block with squeeze-excite, hardswish and a residual add."""
    torch.manual_seed(1)
    cfg = InvertedResidualConfig(16, 5, 48, 16, True, "HS", 1, 1, 1.0)
    block = InvertedResidual(cfg, nn.BatchNorm2d)
    # A conv in front, so the block input has no special structure.
    return _randomize(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), block, nn.Conv2d(16, 4, 1)))


def _inputs(shape: tuple[int, ...], n: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return [torch.randn(shape, generator=gen) * 3 for _ in range(n)]


def _targets(model: nn.Module) -> list[object]:
    assert isinstance(model, fx.GraphModule)
    return [n.target if n.op != "call_module" else type(model.get_submodule(str(n.target)))
            for n in model.graph.nodes]


@pytest.mark.parametrize("make, shape", [(_tiny, (2, 3, 64, 64)), (_block, (2, 3, 20, 20))],
                         ids=["tiny_mobilenet", "block"])
@pytest.mark.parametrize("names", [("decompose_hardswish",), ("decompose_hardsigmoid",),
                                   ("decompose_hardsigmoid", "fold_scales"), ALL],
                         ids=["hardswish", "hardsigmoid", "hardsigmoid+fold", "all"])
def test_each_rewrite_is_exact(make, shape, names) -> None:
    model = make()
    rewritten = apply_rewrites(make(), names)
    for x in _inputs(shape):
        assert max_abs_diff(model, rewritten, (x,)) <= EXACT_TOL
    kinds = _targets(rewritten)
    if "decompose_hardswish" in names:
        assert nn.Hardswish not in kinds
    if "decompose_hardsigmoid" in names:
        assert nn.Hardsigmoid not in kinds


def _stem(pool: nn.MaxPool2d, act: nn.Module) -> nn.Module:
    """A ResNet stem: conv, batch norm, activation, padded max pool, then a conv."""
    torch.manual_seed(2)
    return _randomize(nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.BatchNorm2d(8), act, pool,
                                    nn.Conv2d(8, 4, 3, padding=1)))


def test_zero_pad_maxpool_is_exact_after_relu_and_skips_what_it_cannot_prove() -> None:
    x = _inputs((2, 3, 33, 31))
    model = _stem(nn.MaxPool2d(3, 2, 1), nn.ReLU(inplace=True))
    rewritten = apply_rewrites(_stem(nn.MaxPool2d(3, 2, 1), nn.ReLU(inplace=True)),
                               ("zero_pad_maxpool",))
    assert all(max_abs_diff(model, rewritten, (xi,)) <= EXACT_TOL for xi in x)
    assert F.pad in _targets(rewritten) and nn.MaxPool2d not in _targets(rewritten)
    # The -inf pad matters where inputs can be negative, or where ceil mode adds windows.
    for pool, act in [(nn.MaxPool2d(3, 2, 1), nn.Identity()),
                      (nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.ReLU())]:
        kept = apply_rewrites(_stem(pool, act), ("zero_pad_maxpool",))
        assert F.pad not in _targets(kept) and nn.MaxPool2d in _targets(kept)
    # Sanity: padding with zeros where inputs are negative would not be exact.
    signed = _stem(nn.MaxPool2d(3, 2, 1), nn.Identity())
    naive = nn.Sequential(*list(signed)[:3], nn.ZeroPad2d(1), nn.MaxPool2d(3, 2), signed[4])
    assert max(max_abs_diff(signed, naive, (xi,)) for xi in x) > 1e-3


def test_all_rewrites_leave_no_scale_multiplication() -> None:
    """Every 1/6 of the decompositions lands in conv/linear weights; every + 3 of a hardsigmoid
    in a bias: what is left is one add and one product per hardswish, one product per SE."""
    model = _tiny()
    hardswish = sum(isinstance(m, nn.Hardswish) for m in model.modules())
    squeeze = sum(isinstance(m, nn.Hardsigmoid) for m in model.modules())
    rewritten = apply_rewrites(_tiny(), ALL)
    assert isinstance(rewritten, fx.GraphModule)
    muls = [n for n in rewritten.graph.nodes if n.target is operator.mul]
    assert all(all(isinstance(a, fx.Node) for a in n.args) for n in muls)
    assert len(muls) == hardswish + squeeze
    clamps = [n for n in rewritten.graph.nodes if n.target is F.hardtanh]
    assert len(clamps) == hardswish + squeeze


def test_fold_refuses_paths_that_do_not_end_in_weights() -> None:
    """x/6 that reaches the output or an add with an unscaled tensor must stay."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.Hardswish()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(x)) + x

    torch.manual_seed(0)
    model = Net().eval()
    rewritten = apply_rewrites(copy.deepcopy(model), ALL)
    assert isinstance(rewritten, fx.GraphModule)
    scales = [n for n in rewritten.graph.nodes
              if n.target is operator.mul and not isinstance(n.args[1], fx.Node)]
    assert len(scales) == 1
    for x in _inputs((1, 3, 8, 8)):
        assert max_abs_diff(model, rewritten, (x,)) <= EXACT_TOL


def test_untraceable_model_fails_clearly_instead_of_a_partial_rewrite() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.hs = nn.Hardswish()
            self.sig = nn.Hardsigmoid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            if y.sum() > 0:  # data-dependent: symbolic tracing fails
                return self.hs(y)
            return self.sig(y)

    torch.manual_seed(0)
    with pytest.raises(RewriteError, match="symbolic_trace, which failed on Branchy"):
        prepare_float_model(Branchy().eval(), "tflite")
    plain = prepare_float_model(Branchy().eval(), "coreml")  # no rewrites: nothing to trace
    assert any(isinstance(m, nn.Hardswish) for m in plain.modules())


def test_prepare_float_model_per_format_and_precision() -> None:
    model = _tiny()
    x = _inputs((1, 3, 64, 64), 1)[0]
    for fmt in ("tflite", "onnx", "executorch", "coreml"):
        out = prepare_float_model(model, fmt, example_inputs=(x,))
        assert max_abs_diff(model, out, (x,)) <= EXACT_TOL
        assert out is not model
    plain = prepare_float_model(model, "tflite", precision="fp32")
    assert any(isinstance(m, nn.Hardswish) for m in plain.modules())
    with pytest.raises(ValueError, match="unknown format"):
        prepare_float_model(model, "tflitex")


def test_prepare_float_model_rejects_a_rewrite_that_is_not_exact(monkeypatch) -> None:
    import exporters.int8.rewrites as rw

    def broken(gm: fx.GraphModule) -> int:
        for n in gm.graph.nodes:
            if n.target is operator.mul and not isinstance(n.args[1], fx.Node):
                n.args = (n.args[0], 0.2)  # 1/5 instead of 1/6
        return 0

    monkeypatch.setattr(rw, "fold_scales", broken)
    with pytest.raises(ValueError, match="changed the float outputs"):
        prepare_float_model(_tiny(), "tflite", example_inputs=_inputs((1, 3, 64, 64), 1))


# --- ATen graph passes used by the quantizers -------------------------------------------------


def _exported(model: nn.Module, x: torch.Tensor) -> fx.GraphModule:
    gm = torch.export.export(model, (x,)).module()
    assert isinstance(gm, fx.GraphModule)
    return gm


def test_functionalize_inplace_is_exact_on_residual_adds() -> None:
    torch.manual_seed(0)
    model = _randomize(create_model("tiny_resnet", 2))
    x = _inputs((2, 3, 64, 64), 1)[0]
    gm = _exported(model, x)
    adds = sum(n.target == torch.ops.aten.add_.Tensor for n in gm.graph.nodes)
    relus = sum(n.target == torch.ops.aten.relu_.default for n in gm.graph.nodes)
    assert adds > 0, "tiny_resnet should export in-place residual adds"
    assert functionalize_inplace(gm) == adds + relus
    assert not any(str(n.target).endswith("_.Tensor") for n in gm.graph.nodes)
    for x in _inputs((2, 3, 64, 64)):
        assert max_abs_diff(model, gm, (x,)) <= EXACT_TOL


def test_shape_scalar_constants_is_exact_and_rank_matched() -> None:
    model = apply_rewrites(_tiny(), ALL)
    x = _inputs((1, 3, 64, 64), 1)[0]
    gm = _exported(model, x)
    assert shape_scalar_constants(gm) > 0
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target.startswith("_int8_const_"):
            const = getattr(gm, node.target)
            other = next(a for a in next(iter(node.users)).args if a is not node)
            assert const.dim() == other.meta["val"].dim() and const.numel() == 1
    for x in _inputs((1, 3, 64, 64)):
        assert max_abs_diff(model, gm, (x,)) <= EXACT_TOL


def test_redundant_clamp_and_requantize_removal_is_exact() -> None:
    """On a converted PT2E graph the clamp of a [0, 6]-ranged tensor and q(dq(t)) pairs go, and
    the fake-quantized outputs stay bit-identical."""
    from exporters.int8.quantize import make_quantizer

    pytest.importorskip("executorch")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = apply_rewrites(_tiny(), ALL)
    xs = _inputs((1, 3, 64, 64), 4)
    prepared = prepare_pt2e(_exported(model, xs[0]), make_quantizer("executorch"))
    for x in xs:
        prepared(x)
    converted = convert_pt2e(prepared)
    before = [converted(x) for x in xs]
    clamps = sum(n.target == torch.ops.aten.hardtanh.default for n in converted.graph.nodes)
    dropped = drop_redundant_clamps(converted)
    assert dropped > 0
    assert sum(n.target == torch.ops.aten.hardtanh.default
               for n in converted.graph.nodes) == clamps - dropped
    assert collapse_requantize(converted) == 0  # nothing left to collapse
    for x, y in zip(xs, before, strict=True):
        assert torch.equal(converted(x), y)

