"""A calibration reused by a plan with other float sites gives the very model a fresh
calibration gives (``exporters.int8.observers``), in the PT2E quantizers and in ONNX Runtime."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from exporters.int8.options import Int8Options
from exporters.int8.plan import FloatSite, PrecisionPlan


class _Block(nn.Module):
    """Conv-BN-hardswish stem, a squeeze-excite gate, a residual add around ``mid`` and a head:
    the shapes MobileNetV3's observers come in (shared, fused, elementwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                  nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(),
                                nn.Conv2d(4, 8, 1), nn.Hardsigmoid())
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)
        self.gain: torch.Tensor
        self.register_buffer("gain", torch.ones(1), persistent=False)  # not in state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x * self.gain)
        y = y * self.se(y)
        return self.head((self.mid(y) + y).mean((2, 3)))


def _inputs(fmt: str) -> tuple[nn.Module, tuple[torch.Tensor], list[torch.Tensor]]:
    from exporters.int8 import prepare_float_model

    torch.manual_seed(0)
    block = _Block().eval()
    bn = block.stem[1]
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None
    bn.running_var.uniform_(0.5, 2.0)
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 3, 16, 16, generator=gen) for _ in range(4)]
    x = calib[0][:1]
    model = prepare_float_model(block, fmt, example_inputs=(x,))
    if fmt == "tflite":
        import litert_torch

        model = litert_torch.to_channel_last_io(model, args=[0]).eval()
        return model, (x.permute(0, 2, 3, 1).contiguous(),), [
            c.permute(0, 2, 3, 1).contiguous() for c in calib]
    return model, (x,), calib


def _never() -> Iterator[torch.Tensor]:
    raise AssertionError("calibrated again")
    yield torch.zeros(1)  # pragma: no cover


def _plan(*sites: tuple[str, str]) -> Int8Options:
    return Int8Options(plan=PrecisionPlan(tuple(FloatSite(n, r) for n, r in sites)))


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> OrderedDict[str, object]:
    import exporters.int8.observers as observers

    fresh: OrderedDict[str, object] = OrderedDict()
    monkeypatch.setattr(observers, "_MEMO", fresh)
    return fresh


def _same(a: torch.fx.GraphModule, b: torch.fx.GraphModule, x: torch.Tensor) -> None:
    assert a.code == b.code
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("fmt", ["executorch", "tflite"])
@pytest.mark.parametrize("observer", [None, "minmax"])
def test_a_plan_reuses_the_calibration_of_another_and_gets_the_same_model(
        fmt: str, observer: str | None, memo: OrderedDict[str, object],
        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip({"tflite": "litert_torch"}.get(fmt, fmt))
    from dataclasses import replace

    from exporters.int8 import quantize_pt2e

    model, x, calib = _inputs(fmt)
    speed = replace(_plan(("mid", "speed"), ("se.1", "speed")), observer=observer)
    accuracy = replace(_plan(("mid", "accuracy")), observer=observer)
    fresh = [quantize_pt2e(model, x, calib, fmt, p) for p in (speed, accuracy)]
    assert not memo  # no key, no memo
    quantize_pt2e(model, x, calib, fmt, replace(Int8Options(), observer=observer),
                  calib_key="k")
    assert len(memo) == 1
    caplog.set_level("INFO", logger="exporters.int8.observers")
    # Float ops alone: every observer was seen, no image is read.
    _same(quantize_pt2e(model, x, _never(), fmt, speed, calib_key="k"), fresh[0], x[0])
    assert "reused for all" in caplog.text
    # An accuracy site's tail leaves the head reading the float mean: that one observes anew.
    _same(quantize_pt2e(model, x, calib, fmt, accuracy, calib_key="k"), fresh[1], x[0])
    partial = re.findall(r"reused for (\d+) of (\d+) observers", caplog.text)
    assert len(partial) == 1 and 0 < int(partial[0][0]) < int(partial[0][1]), caplog.text
    with pytest.raises(AssertionError, match="calibrated again"):  # other images: calibrates
        quantize_pt2e(model, x, _never(), fmt, speed, calib_key="other")
    other = "moving_average" if observer is None else None  # other observers: calibrates
    with pytest.raises(AssertionError, match="calibrated again"):
        quantize_pt2e(model, x, _never(), fmt, replace(speed, observer=other), calib_key="k")


@pytest.mark.parametrize("tensor", ["head.bias", "gain"])
def test_other_weights_do_not_reuse_a_calibration(memo: OrderedDict[str, object],
                                                  tensor: str) -> None:
    """A parameter, or a buffer outside the state dict, changed: the same key calibrates."""
    from exporters.int8 import quantize_pt2e

    model, x, calib = _inputs("executorch")
    quantize_pt2e(model, x, calib, "executorch", calib_key="k")
    quantize_pt2e(model, x, _never(), "executorch", calib_key="k")  # unchanged: reused
    named = dict([*model.named_parameters(), *model.named_buffers()])
    with torch.no_grad():
        next(t for n, t in named.items() if n.endswith(tensor)).add_(0.5)
    with pytest.raises(AssertionError, match="calibrated again"):
        quantize_pt2e(model, x, _never(), "executorch", calib_key="k")


@pytest.mark.parametrize("method", [None, "MinMax"])
def test_onnx_runtime_reuses_its_ranges_and_writes_the_same_file(tmp_path: Path,
                                                                  method: str | None) -> None:
    pytest.importorskip("onnxruntime")
    from dataclasses import replace

    from exporters.int8 import quantize_onnx
    from exporters.int8.plan import find_sites
    from exporters.onnx import export_onnx

    model, x, calib = _inputs("onnx")
    export_onnx(model, x, tmp_path / "f.onnx")
    images = [c[i : i + 1].numpy() for c in calib for i in range(len(c))]
    sites = find_sites(model, x)
    plan = replace(_plan(("mid", "accuracy")), observer=method)
    fresh = quantize_onnx(tmp_path / "f.onnx", tmp_path / "fresh.onnx", images, "image", plan,
                          sites)
    quantize_onnx(tmp_path / "f.onnx", tmp_path / "all.onnx", images, "image",
                  replace(Int8Options(), observer=method), sites, calib_key=f"k{method}")
    noise = [np.full_like(i, 9.0) for i in images]  # reused ranges: these go unread
    again = quantize_onnx(tmp_path / "f.onnx", tmp_path / "again.onnx", noise, "image", plan,
                          sites, calib_key=f"k{method}")
    assert (tmp_path / "again.onnx").read_bytes() == (tmp_path / "fresh.onnx").read_bytes()
    assert again == fresh
    quantize_onnx(tmp_path / "f.onnx", tmp_path / "noise.onnx", noise, "image", plan, sites,
                  calib_key="another")
    assert (tmp_path / "noise.onnx").read_bytes() != (tmp_path / "fresh.onnx").read_bytes()
