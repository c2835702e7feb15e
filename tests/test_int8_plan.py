"""Per-site precision plans: sites and MACs, the speed rule on injected timings, and float sites
applied by the real quantizers (PT2E annotation, ONNX Runtime's nodes_to_exclude)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from exporters.int8.options import Int8Options
from exporters.int8.plan import (
    FloatSite,
    PlanError,
    PrecisionPlan,
    check_plan,
    find_sites,
    float_site,
)
from exporters.int8.speed import (
    SiteTiming,
    SiteTimings,
    SpeedRule,
    confirmed,
    load_timings,
    save_timings,
    speed_plan,
)


class _Net(nn.Module):
    """Stem, a tiny 5x5 depthwise conv (the planted slow site), pointwise conv, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=8)
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(torch.relu(self.dw(self.stem(x))))
        return self.head(y.mean((2, 3)))


def _example() -> tuple[torch.Tensor]:
    return (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),)


def _float(*names: str) -> Int8Options:
    """Options keeping ``names`` float, as a speed plan would."""
    return Int8Options(plan=PrecisionPlan(tuple(FloatSite(n, "speed") for n in names)))


def test_sites_are_module_names_in_call_order_with_macs() -> None:
    sites = find_sites(_Net().eval(), _example())
    assert [s.name for s in sites] == ["stem.0", "dw", "pw.0", "head"]
    assert [s.kind for s in sites] == ["conv", "depthwise", "pointwise", "linear"]
    assert sites[1].macs == 16 * 16 * 8 * 25 and sites[3].macs == 16 * 2
    plan = PrecisionPlan().with_sites([float_site(sites[1], sites, "speed", {"gain_us": 3.0})])
    assert PrecisionPlan.from_dict(plan.to_dict()) == plan
    assert 0 < plan.float_macs_share() < 1
    check_plan(plan, sites)
    with pytest.raises(PlanError, match="unknown site"):
        check_plan(PrecisionPlan().with_sites([float_site(sites[0], sites, "speed")]), sites[1:])


def _timings() -> list[SiteTiming]:
    # INT8 is faster everywhere except the 5x5 depthwise conv, even after its boundary cost;
    # the head's float "gain" is below the noise floor.
    return [SiteTiming("stem.0", 40.0, 90.0, 3.0), SiteTiming("dw", 30.0, 12.0, 4.0),
            SiteTiming("pw.0", 10.0, 25.0, 2.0), SiteTiming("head", 0.6, 0.1, 0.0)]


def test_speed_plan_keeps_the_planted_slow_site_float_and_is_deterministic() -> None:
    sites = find_sites(_Net().eval(), _example())
    plan = speed_plan(_timings(), sites)
    assert [(s.name, s.reason) for s in plan.float_sites] == [("dw", "speed")]
    assert plan.float_sites[0].evidence["gain_us"] == pytest.approx(14.0)
    shuffled = _timings()
    random.Random(3).shuffle(shuffled)
    assert speed_plan(shuffled, sites) == plan  # a pure function of the timings
    # A gain inside the noise floor keeps INT8; a stricter rule keeps everything INT8.
    assert not speed_plan([SiteTiming("dw", 30.0, 27.5, 1.0)], sites)
    assert not speed_plan(_timings(), sites, SpeedRule(min_gain_us=20.0))
    with pytest.raises(PlanError, match="unknown site"):
        speed_plan([SiteTiming("nope", 1.0, 0.1)], sites)


def test_timings_file_round_trip_and_whole_graph_check(tmp_path: Path) -> None:
    timings = SiteTimings("executorch", "executorch 1.5.1", 1, 30, tuple(_timings()), "x86_64")
    path = save_timings(timings, tmp_path / "timings.json")
    assert load_timings(path, "executorch") == timings
    with pytest.raises(PlanError, match="no site timings for format onnx"):
        load_timings(path, "onnx")
    assert confirmed([1.0, 1.1, 1.0], [0.9, 0.9, 0.95])
    assert not confirmed([1.0, 1.0, 1.0], [0.995, 0.99, 1.0])  # within noise: not kept


def _weight_is_float(gm: torch.fx.GraphModule, site: str) -> bool:
    from exporters.int8.plan import _node_module, site_of, weighted_targets

    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in weighted_targets():
            path = _node_module(node)
            if path and site_of(path, {site}):
                return "dequantize" not in str(node.args[1].target)
    raise AssertionError(f"{site} not in graph")


def _pt2e_inputs(fmt: str, model: nn.Module
                 ) -> tuple[nn.Module, tuple[torch.Tensor], list[torch.Tensor]]:
    """``model``, its example input and 4 calibration batches, as ``fmt``'s quantizer takes
    them (TFLite: litert-torch's NHWC wrapper, which adds a module-path prefix)."""
    x = _example()
    calib = [torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(i))
             for i in range(4)]
    if fmt == "tflite":
        import litert_torch

        model = litert_torch.to_channel_last_io(model, args=[0]).eval()
        x = (x[0].permute(0, 2, 3, 1).contiguous(),)
        calib = [c.permute(0, 2, 3, 1).contiguous() for c in calib]
    return model, x, calib


def _onnx_calib() -> list[np.ndarray]:
    return [np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)
            for i in range(4)]


@pytest.mark.parametrize("fmt", ["executorch", "tflite", "coreml"])
def test_pt2e_leaves_float_sites_unannotated(fmt: str) -> None:
    pytest.importorskip({"tflite": "litert_torch", "coreml": "coremltools"}.get(fmt, fmt))
    from exporters.int8 import quantize_pt2e

    model, x, calib = _pt2e_inputs(fmt, _Net().eval())
    plain = quantize_pt2e(model, x, calib, fmt)
    planned = quantize_pt2e(model, x, calib, fmt, _float("dw"))
    assert not _weight_is_float(plain, "dw")
    assert _weight_is_float(planned, "dw") and not _weight_is_float(planned, "pw.0")
    with pytest.raises(PlanError, match="not found"):
        quantize_pt2e(model, x, calib, fmt, _float("missing"))


def test_onnx_float_site_stays_float_in_onnx_runtime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import json

    import onnx

    from exporters.int8 import graph_report, quantize_onnx
    from exporters.onnx import export_onnx

    model = _Net().eval()
    export_onnx(model, _example(), tmp_path / "f.onnx")
    calib = _onnx_calib()
    did = quantize_onnx(tmp_path / "f.onnx", tmp_path / "q.onnx", calib, "image",
                        _float("dw"), find_sites(model, _example()))
    assert len(did["nodes_to_exclude"]) == 1
    assert "WeightBiasQuantization" in str(did["session_config"])
    proto = onnx.load(str(tmp_path / "q.onnx"))  # the recipe as the exporter embeds it
    onnx.helper.set_model_props(proto, {"quantization_recipe": json.dumps(did)})
    onnx.save(proto, str(tmp_path / "q.onnx"))
    report = graph_report(tmp_path / "q.onnx", "onnx")
    assert report["optimized_counts"]["float"].get("Conv") == 1, report["optimized_counts"]
    assert report["optimized_counts"]["quantized"].get("QLinearConv") == 2


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_executorch_ships_measured_timings_for_mobilenet_v3(arch: str) -> None:
    """``--speed-plan auto``: the timings ExecuTorch's recipe ships keep float what its profiler
    measured slower in int8, MobileNetV3's 5x5 depthwise convs (once a hard-coded rule)."""
    from exporters import get_exporter
    from exporters.int8.speed import load_all_timings, pick_timings
    from kd_core.models import create_model

    def stored_timings(fmt: str) -> tuple[SiteTimings, ...]:
        recipe = get_exporter(fmt).int8
        path = recipe.stored_timings_path() if recipe is not None else None
        return load_all_timings(path) if path is not None else ()

    model = create_model(arch, 2).eval()
    for size in (64, 224):
        sites = find_sites(model, (torch.zeros(1, 3, size, size),))
        timings = pick_timings(stored_timings("executorch"), "executorch", arch, size)
        assert timings is not None and timings.arch == arch and timings.runs > 0
        plan = speed_plan(timings.sites, sites)
        five = {s.name for s in sites if s.kind == "depthwise" and s.kernel == (5, 5)}
        assert plan and plan.names() <= five, sorted(plan.names() - five)
    assert pick_timings(stored_timings("executorch"), "executorch", "tiny_mobilenet", 32) is None
    assert stored_timings("onnx") == ()  # measured slower as a whole: ONNX Runtime ships none


def test_auto_speed_plan_is_the_recipes_timings_for_the_architecture() -> None:
    from exporters.base import ExportSettings
    from exporters.run import ExportOptions, _int8_options
    from kd_core.data.transforms import Preprocessing
    from kd_core.deploy import Decision

    def settings(arch: str) -> ExportSettings:
        return ExportSettings(arch, Decision(("benign", "melanoma"), 1), Preprocessing(size=64),
                              "sha")

    auto = _int8_options(ExportOptions(), ("off", "auto", ()), settings("mobilenet_v3_small"))
    assert auto is not None and auto.speed == "auto" and auto.active()
    chosen = auto.timings_for("executorch", "mobilenet_v3_small", 64)
    assert chosen is not None and chosen.arch == "mobilenet_v3_small"
    assert auto.timings_for("onnx", "mobilenet_v3_small", 64) is None
    # No stored timings for the architecture (and no repair): nothing to do, as with off.
    assert _int8_options(ExportOptions(), ("off", "auto", ()), settings("tiny_mobilenet")) is None


class _Residual(nn.Module):
    """Stem, then a conv whose output meets the stem's in a residual add (annotated INT8 by
    default), then a pointwise conv and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.pw = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.head(self.pw(self.mid(y) + y).mean((2, 3)))


def _add_reads_mid_directly(gm: torch.fx.GraphModule) -> bool:
    from exporters.int8.plan import _node_module, site_of, weighted_targets

    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in weighted_targets():
            path = _node_module(node)
            if path and site_of(path, {"mid"}):
                return any(str(u.target) == "aten.add.Tensor" for u in node.users)
    raise AssertionError("mid not in graph")


@pytest.mark.parametrize("fmt", ["executorch", "tflite"])
def test_an_accuracy_site_keeps_its_tail_float_and_a_speed_site_does_not(fmt: str) -> None:
    """An accuracy site's output reaches the residual add unquantized (the add runs float and
    the next conv quantizes once); a speed site's output is quantized for the INT8 add."""
    pytest.importorskip({"tflite": "litert_torch"}.get(fmt, fmt))
    from exporters.int8 import quantize_pt2e

    model, x, calib = _pt2e_inputs(fmt, _Residual().eval())
    accuracy = Int8Options(plan=PrecisionPlan((FloatSite("mid", "accuracy"),)))
    tail = quantize_pt2e(model, x, calib, fmt, accuracy)
    op_only = quantize_pt2e(model, x, calib, fmt, _float("mid"))
    assert _weight_is_float(tail, "mid") and _weight_is_float(op_only, "mid")
    assert _add_reads_mid_directly(tail)
    assert not _add_reads_mid_directly(op_only)
    assert not _weight_is_float(tail, "pw")  # the tail stops at the next weighted op
    with torch.no_grad():  # fewer rounding steps: closer to float than the op-only plan
        err = [float((q(*x) - model(*x)).abs().max()) for q in (tail, op_only)]
    assert err[0] <= err[1], err


def test_onnx_accuracy_site_excludes_its_tail(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx

    from exporters.int8 import quantize_onnx
    from exporters.onnx import export_onnx

    model = _Residual().eval()
    export_onnx(model, _example(), tmp_path / "f.onnx")
    calib = _onnx_calib()
    sites = find_sites(model, _example())
    accuracy = Int8Options(plan=PrecisionPlan((FloatSite("mid", "accuracy"),)))
    did = quantize_onnx(tmp_path / "f.onnx", tmp_path / "a.onnx", calib, "image", accuracy, sites)
    speed = quantize_onnx(tmp_path / "f.onnx", tmp_path / "s.onnx", calib, "image",
                          _float("mid"), sites)
    ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node}
    assert len(speed["nodes_to_exclude"]) == 1
    extra = set(did["nodes_to_exclude"]) - set(speed["nodes_to_exclude"])
    assert "Add" in {ops.get(n) for n in extra}, (did["nodes_to_exclude"], ops)
    assert not {ops.get(n) for n in extra} & {"Conv", "Gemm"}
    # The add runs float in ONNX Runtime: no QDQ pair between the mid conv and it.
    q = onnx.load(str(tmp_path / "a.onnx"))
    add = next(n for n in q.graph.node if n.op_type == "Add")
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    assert "Conv" in {producers.get(i) for i in add.input}


def _activation_scales(quantized: torch.fx.GraphModule) -> list[float]:
    return [float(n.args[1]) for n in quantized.graph.nodes
            if n.op == "call_function" and "quantize_per_tensor" in str(n.target)]


def test_calibration_runs_in_batches_over_every_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration forwards ``CALIB_BATCH`` images at a time (one at a time, it was most of an
    export) and sees every image: with min-max observers the activation scales are the ones that
    one image at a time gives (to float rounding), and leaving out the image with the widest
    range changes them."""
    from exporters.int8 import quantize as quantize_mod
    from exporters.int8 import quantize_pt2e

    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(1, 3, 16, 16, generator=gen) * (8 if i == 39 else 1) for i in range(40)]
    torch.manual_seed(0)
    model, x = _Net().eval(), _example()
    opts = Int8Options(observer="minmax")
    sizes: list[int] = []
    chunks = quantize_mod._chunks
    monkeypatch.setattr(quantize_mod, "_chunks", lambda b, n: (
        sizes.append(len(t)) or t for t in chunks(b, n)))
    batched = _activation_scales(quantize_pt2e(model, x, calib, "executorch", opts))
    assert sizes == [quantize_mod.CALIB_BATCH, 40 - quantize_mod.CALIB_BATCH] and batched
    monkeypatch.setattr(quantize_mod, "CALIB_BATCH", 1)
    single = _activation_scales(quantize_pt2e(model, x, calib, "executorch", opts))
    fewer = _activation_scales(quantize_pt2e(model, x, calib[:-1], "executorch", opts))
    np.testing.assert_allclose(batched, single, rtol=1e-5)  # conv kernels round per batch size
    assert batched[0] > 4 * fewer[0]  # the input's range comes from the widest image
