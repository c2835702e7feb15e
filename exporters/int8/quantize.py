"""PT2E static INT8 per runtime: the quantizer, calibration and the recipe for the manifest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from exporters.int8.annotate import (
    annotate_fused,
    drop_redundant_clamps,
    functionalize_inplace,
    shape_scalar_constants,
)
from exporters.int8.rewrites import check_format, rewrites_for


def make_quantizer(fmt: str, *, full: bool = True, dynamic: bool = False) -> Any:
    """The PT2E quantizer for ``fmt``: litert-torch's for TFLite, XNNPACK's otherwise.

    ``full`` adds the graph preparation and annotation of ``exporters.int8.annotate`` on top of
    the stock quantizer (in-place ops, rank-matched constants, ReLU/ReLU6 fusion, muls).
    """
    if fmt == "tflite":
        from litert_torch.quantize.pt2e_quantizer import (
            PT2EQuantizer,
            get_symmetric_quantization_config,
        )

        base: type = PT2EQuantizer
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    else:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
        )
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            get_symmetric_quantization_config as xnn_config,
        )

        base = XNNPACKQuantizer
        config = xnn_config(is_per_channel=True, is_dynamic=dynamic)
    cls = _full_quantizer(base, relu6_range_on_binary=fmt != "tflite") if full else base
    return cls().set_global(config)


def _full_quantizer(base: type, relu6_range_on_binary: bool) -> type:
    class FullInt8Quantizer(base):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            functionalize_inplace(model)
            shape_scalar_constants(model)
            result: torch.fx.GraphModule = super().transform_for_annotation(model)
            return result

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            annotate_fused(model, self.global_config, relu6_range_on_binary=relu6_range_on_binary)
            result: torch.fx.GraphModule = super().annotate(model)
            return result

    FullInt8Quantizer.__name__ = f"Full{base.__name__}"
    return FullInt8Quantizer


def quantize_with(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    calib_batches: Iterable[torch.Tensor],
    quantizer: Any,
    fold_quantize: bool = True,
) -> torch.fx.GraphModule:
    """Export, prepare with ``quantizer``, calibrate, convert."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(model.eval(), tuple(example_inputs)).module()
    prepared = prepare_pt2e(exported, quantizer)
    n = 0
    with torch.no_grad():
        for batch in calib_batches:
            prepared(batch)
            n += 1
    if n == 0:
        raise ValueError("PT2E quantization needs at least one calibration batch")
    converted: torch.fx.GraphModule = convert_pt2e(prepared, fold_quantize=fold_quantize)
    drop_redundant_clamps(converted)
    return converted


def quantize_pt2e(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    calib_batches: Iterable[torch.Tensor],
    fmt: str,
) -> torch.fx.GraphModule:
    """Static INT8 (per-channel weights) with the quantizer that suits ``fmt``; calibrated on
    ``calib_batches`` (each a model input tensor). Returns the converted model for the converter:
    ``litert_torch.convert(q, args, **tflite_convert_kwargs())`` or ``torch.export.export(q,
    args)``.
    """
    check_format(fmt)
    if fmt == "onnx":
        raise ValueError("ONNX INT8 goes through quantize_onnx on the exported fp32 file")
    quantizer = make_quantizer(fmt)
    return quantize_with(model, example_inputs, calib_batches, quantizer,
                         fold_quantize=fmt != "tflite")


def tflite_convert_kwargs(fmt: str = "tflite") -> dict[str, Any]:
    """Extra keyword arguments for ``litert_torch.convert`` of a ``quantize_pt2e`` model."""
    check_format(fmt)
    if fmt != "tflite":
        return {}
    from litert_torch.quantize.quant_config import QuantConfig

    return {"quant_config": QuantConfig(pt2e_quantizer=make_quantizer("tflite"))}


def quantize_recipe(fmt: str) -> dict[str, Any]:
    """What the INT8 path of ``fmt`` does, for the manifest's ``quantization_recipe``."""
    check_format(fmt)
    if fmt == "onnx":
        from exporters.int8.onnx_quant import onnx_recipe

        return onnx_recipe()
    quantizer = {"tflite": "litert_torch PT2EQuantizer", "executorch": "XNNPACKQuantizer",
                 "coreml": "XNNPACKQuantizer"}[fmt]
    return {
        "method": "pt2e_static",
        "quantizer": quantizer + " + exporters.int8 annotation",
        "activations": "int8 per-tensor affine",
        "weights": "int8 per-channel symmetric",
        "calibration": "HistogramObserver",
        "rewrites": list(rewrites_for(fmt)),
    }
