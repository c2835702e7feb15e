"""INT8 artefacts of tiny_mobilenet through the real converters and runtimes.

LiteRT: no float op and exactly one XNNPACK delegate node; ONNX: no float Conv (every conv a
QLinearConv after ONNX Runtime's QDQ fusion); ExecuTorch: one delegate, nothing outside it. Each
runtime's int8 outputs agree with the fake-quantized torch model they were converted from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from exporters.int8 import (
    graph_report,
    prepare_float_model,
    quantize_onnx,
    quantize_pt2e,
    quantize_recipe,
    tflite_convert_kwargs,
)
from kd_core.models import create_model

SIZE = 64


def _smooth(n: int, seed: int) -> list[torch.Tensor]:
    """Image-like inputs (smooth, bounded) rather than white noise, for calibration."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        low = torch.randn(1, 3, 8, 8, generator=gen)
        out.append(torch.nn.functional.interpolate(low, size=SIZE, mode="bilinear") * 1.5)
    return out


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    m = create_model("tiny_mobilenet", 2)
    # Batch-norm statistics from data, as a trained model has.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None
    m.train()
    with torch.no_grad():
        m(torch.cat(_smooth(16, 1)))
    return m.eval()


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


@pytest.fixture(scope="module")
def tflite(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    litert_torch = pytest.importorskip("litert_torch")
    x = _smooth(1, 2)[0]
    ready = litert_torch.to_channel_last_io(
        prepare_float_model(model, "tflite", example_inputs=(x,)), args=[0]).eval()
    quantized = quantize_pt2e(ready, (_nhwc(x),), [_nhwc(c) for c in _smooth(8, 3)], "tflite")
    path = tmp_path_factory.mktemp("tflite") / "tiny_int8.tflite"
    litert_torch.convert(quantized, (_nhwc(x),), **tflite_convert_kwargs("tflite")).export(
        str(path))
    return {"path": path, "quantized": quantized}


def test_tflite_int8_has_no_float_op_and_one_delegate(tflite: dict[str, Any]) -> None:
    report = graph_report(tflite["path"], "tflite")
    assert report["float_ops"] == 0, report["float_op_counts"]
    assert report["delegate_partitions"] == 1
    assert report["undelegated_ops"] == 0, report["undelegated_op_counts"]
    assert report["io_dtypes"] == {"input": "int8", "output": "int8"}
    assert "HARD_SWISH" not in report["op_counts"] and "TRANSPOSE" not in report["op_counts"]


def test_stock_tflite_int8_splits_the_graph(model: nn.Module, tmp_path: Path) -> None:
    """The control: without the rewrites, int8 hardswish falls out of the delegate."""
    litert_torch = pytest.importorskip("litert_torch")
    from litert_torch.quantize.quant_config import QuantConfig

    from exporters import Int8Recipe
    from exporters.int8.quantize import make_quantizer, quantize_with

    x = _smooth(1, 2)[0]
    stock = make_quantizer("tflite", Int8Recipe("litert", full_annotation=False))
    q = quantize_with(model, (x,), _smooth(4, 3), stock, fold_quantize=False)
    path = tmp_path / "stock.tflite"
    litert_torch.convert(q, (x,), quant_config=QuantConfig(pt2e_quantizer=stock)).export(str(path))
    report = graph_report(path, "tflite")
    assert report["delegate_partitions"] > 1
    assert report["undelegated_op_counts"].get("HARD_SWISH", 0) > 0


def test_tflite_int8_matches_fake_quantized_torch(tflite: dict[str, Any]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite["path"]), num_threads=1)
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    for x in _smooth(6, 4):
        q = np.clip(np.round(_nhwc(x).numpy() / s_in) + z_in, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], q)
        it.invoke()
        got = (it.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
        # The fake-quantized model fed the same (dequantized) input.
        with torch.no_grad():
            want = tflite["quantized"](torch.from_numpy((q.astype(np.float32) - z_in) * s_in))
        assert np.abs(got - want.numpy()).max() <= 3 * s_out + 1e-6


@pytest.fixture(scope="module")
def onnx_files(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("onnx")
    x = _smooth(1, 2)[0]
    fp32 = out / "float_source.onnx"
    torch.onnx.export(prepare_float_model(model, "onnx", example_inputs=(x,)), (x,), str(fp32),
                      dynamo=True, input_names=["image"], output_names=["logits"])
    done = quantize_onnx(fp32, out / "int8.onnx", [c.numpy() for c in _smooth(8, 3)], "image")
    assert done["calibration_batches"] == 8
    recipe = quantize_recipe("onnx")
    assert recipe["activations"].startswith("uint8") and "decompose_hardswish" in recipe["rewrites"]
    return {"fp32": fp32, "int8": out / "int8.onnx"}


def test_onnx_int8_has_no_float_conv(onnx_files: dict[str, Path]) -> None:
    report = graph_report(onnx_files["int8"], "onnx")
    floats = report["optimized_counts"]["float"]
    assert "Conv" not in floats and "FusedConv" not in floats, floats
    assert report["float_nodes"] == 0, floats
    convs = graph_report(onnx_files["fp32"], "onnx")["node_counts"]["Conv"]
    assert report["optimized_counts"]["quantized"]["QLinearConv"] == convs
    assert "ReduceMean" not in report["node_counts"]  # squeeze-excite pools are quantized


def test_onnx_int8_agrees_with_float(onnx_files: dict[str, Path], model: nn.Module) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_files["int8"]), providers=["CPUExecutionProvider"])
    xs = _smooth(6, 4)
    got = np.concatenate([sess.run(None, {"image": x.numpy()})[0] for x in xs])
    with torch.no_grad():
        want = torch.cat([model(x) for x in xs]).numpy()
    spread = want.max() - want.min()
    assert np.abs(got - want).max() <= 0.1 * spread + 1e-3


def test_onnx_histogram_observer_collects_in_bounded_chunks(
        onnx_files: dict[str, Path], model: nn.Module, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Percentile calibration holds at most ``HISTOGRAM_CHUNK`` images' activations at once
    (held all at once, 4,096 images at 224 px ran 24 GiB out); MinMax stays one pass."""
    from onnxruntime.quantization import calibrate

    from exporters.int8 import onnx_quant
    from exporters.int8.options import Int8Options

    assert [onnx_quant.chunk_size(n) for n in (4096, 1024, 100, 8, 1031)] == [64, 64, 50, 8, 1]
    served: list[int] = []
    collect = calibrate.HistogramCalibrater.collect_data

    def counting(self: Any, reader: Any) -> None:
        start = reader.count
        collect(self, reader)
        served.append(reader.count - start)

    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", counting)
    monkeypatch.setattr(onnx_quant, "HISTOGRAM_CHUNK", 4)
    calib = [c.numpy() for c in _smooth(12, 3)]
    done = quantize_onnx(onnx_files["fp32"], tmp_path / "p.onnx", calib, "image",
                         Int8Options(observer="Percentile"))
    assert served == [4, 4, 4] and done["calibration_batches"] == 12
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    xs = _smooth(6, 4)
    got = np.concatenate([sess.run(None, {"image": x.numpy()})[0] for x in xs])
    with torch.no_grad():
        want = torch.cat([model(x) for x in xs]).numpy()
    assert np.abs(got - want).max() <= 0.1 * (want.max() - want.min()) + 1e-3
    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_onnx(onnx_files["fp32"], tmp_path / "e.onnx", [], "image")
    assert not (tmp_path / "e.onnx").exists()


def test_executorch_int8_is_one_delegate_matching_fake_quant(model: nn.Module) -> None:
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    x = _smooth(1, 2)[0]
    ready = prepare_float_model(model, "executorch", example_inputs=(x,))
    quantized = quantize_pt2e(ready, (x,), _smooth(8, 3), "executorch")
    edge = to_edge_transform_and_lower(torch.export.export(quantized, (x,)),
                                       partitioner=[XnnpackPartitioner()])
    program = edge.to_executorch()
    import tempfile

    # The output's int8 step: XNNPACK and the reference may round a requantization differently.
    out_q = [n for n in quantized.graph.nodes if "quantize_per_tensor" in str(n.target)][-1]
    step = float(out_q.args[1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.pte"
        path.write_bytes(program.buffer)
        report = graph_report(path, "executorch", edge.exported_program().graph_module)
        method = Runtime.get().load_program(str(path)).load_method("forward")
        for xi in _smooth(4, 4):
            got = method.execute([xi])[0]
            with torch.no_grad():
                want = quantized(xi)
            assert float((got - want).abs().max()) <= 1.01 * step, (step, got, want)
    assert report["delegate_partitions"] == 1 and report["undelegated_ops"] == 0
    assert report["delegated_nodes"] > 0 and "float_ops" in report  # public + XNNPACK graph
    # Which sites stay float is a measured per-site plan (exporters.int8.speed; the recipe
    # ships timings for known architectures), no longer a kernel-size constant.
    recipe = quantize_recipe("executorch")
    assert "float_depthwise_min_kernel" not in recipe and recipe["stored_timings"]


class _Head(nn.Module):
    """A classifier head whose hidden units are mostly off: pre-activations down to about -200
    and a small positive part, as a trained MobileNetV3 head can have."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(16, 64)
        self.act = nn.Hardswish()
        self.out = nn.Linear(64, 2)
        with torch.no_grad():  # 56 units far below -3, 8 in hardswish's curved part
            self.hidden.weight[8:].mul_(40.0)
            self.hidden.weight[:8].mul_(2.0)
            self.hidden.bias[8:].fill_(-100.0)
            self.hidden.bias[:8].fill_(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.hidden(x)))


@pytest.mark.parametrize("fmt", ["tflite", "executorch"])
def test_hardswish_clamp_keeps_the_int8_range_where_hardswish_is_not_zero(fmt: str) -> None:
    """The clamp before a hardswish is exact in float, is gone from the converted graph, and the
    int8 error is many times smaller than with the negative tail in the range."""
    from exporters.int8.rewrites import apply_rewrites

    head = _Head().eval()
    gen = torch.Generator().manual_seed(1)
    calib = list(torch.randn(128, 1, 16, generator=gen))
    x = torch.randn(128, 16, generator=gen)
    with torch.no_grad():
        ref = head(x)
        pre = head.hidden(x)
    assert pre.min() < -150 and 0 < pre.max() < 20  # the tail is most of the range
    clamped = prepare_float_model(head, fmt, example_inputs=(x,))  # raises if not exact
    assert any(n.target is torch.clamp for n in clamped.graph.nodes)
    errors = {}
    for name, float_model in [("clamped", clamped),
                              ("plain", apply_rewrites(_Head().eval(), ("decompose_hardswish",))
                               if fmt == "tflite" else _Head().eval())]:
        q = quantize_pt2e(float_model, (x[:1],), calib, fmt)
        assert not any(n.target == torch.ops.aten.clamp.default for n in q.graph.nodes)
        with torch.no_grad():
            out = torch.cat([q(row[None]) for row in x])
        errors[name] = float((out - ref).abs().mean())
    assert errors["clamped"] * 4 < errors["plain"], errors
