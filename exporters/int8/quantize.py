"""PT2E static INT8 per runtime: the quantizer, calibration and the recipe for the manifest.

Each format's recipe (``exporters.Int8Recipe``) lives on its registry entry, beside the
measurements that chose it (``exporters/<format>.py``; ``benchmarks/int8_speed.py``):

- tflite: litert-torch's quantizer plus ``exporters.int8.annotate`` (every conv/linear/add/mul
  annotated, ReLU/ReLU6 fused by placing the observer after them, rank-matched constants); the
  float model has hardswish/hardsigmoid decomposed. Result: no float op, one XNNPACK partition.
- executorch: XNNPACK's quantizer plus the same annotation; hardsigmoid folded into the
  squeeze-excite convs; hardswish kept (XNNPACK runs it int8 through a lookup table); depthwise
  convs with 5x5 kernels stay float.
- coreml: ExecuTorch's ``CoreMLQuantizer`` (int8 per-channel symmetric weights, uint8
  activations), as Apple ships it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from exporters import Int8Recipe
from exporters.int8.annotate import (
    annotate_fused,
    drop_hardswish_clamps,
    drop_redundant_clamps,
    functionalize_inplace,
    keep_depthwise_float,
    shape_scalar_constants,
)
from exporters.int8.rewrites import recipe_for

QUANTIZER_NAMES = {"litert": "litert_torch PT2EQuantizer", "xnnpack": "XNNPACKQuantizer",
                   "coreml": "executorch CoreMLQuantizer"}


def _coreml_quantizer() -> Any:
    import coremltools as ct
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    config = ct.optimize.torch.quantization.LinearQuantizerConfig(
        global_config=ct.optimize.torch.quantization.ModuleLinearQuantizerConfig(
            quantization_scheme="symmetric", activation_dtype=torch.quint8,
            weight_dtype=torch.qint8, weight_per_channel=True))
    return CoreMLQuantizer(config)


def make_quantizer(fmt: str, recipe: Int8Recipe | None = None) -> Any:
    """The PT2E quantizer ``fmt``'s recipe names (litert-torch's, XNNPACK's or Core ML's)."""
    recipe = recipe or recipe_for(fmt)
    if recipe.quantizer == "coreml":
        return _coreml_quantizer()
    if recipe.quantizer == "litert":
        from litert_torch.quantize.pt2e_quantizer import (
            PT2EQuantizer,
            get_symmetric_quantization_config,
        )

        base: type = PT2EQuantizer
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=recipe.dynamic)
    elif recipe.quantizer == "xnnpack":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
        )
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            get_symmetric_quantization_config as xnn_config,
        )

        base = XNNPACKQuantizer
        config = xnn_config(is_per_channel=True, is_dynamic=recipe.dynamic)
    else:
        raise ValueError(f"{fmt}: the {recipe.quantizer} recipe is not a PT2E quantizer")
    cls = _full_quantizer(base, recipe) if recipe.full_annotation else base
    return cls().set_global(config)


def _full_quantizer(base: type, recipe: Int8Recipe) -> type:
    class FullInt8Quantizer(base):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            functionalize_inplace(model)
            shape_scalar_constants(model)
            result: torch.fx.GraphModule = super().transform_for_annotation(model)
            return result

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if recipe.float_depthwise_min_kernel:
                keep_depthwise_float(model, recipe.float_depthwise_min_kernel)
            annotate_fused(model, self.global_config,
                           relu6_range_on_binary=recipe.relu6_range_on_binary)
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
    """Export, prepare with ``quantizer``, calibrate, convert, drop exact no-op clamps."""
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
    drop_hardswish_clamps(converted)
    return converted


def quantize_pt2e(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    calib_batches: Iterable[torch.Tensor],
    fmt: str,
) -> torch.fx.GraphModule:
    """Static INT8 (per-channel weights) with the quantizer that suits ``fmt``; calibrated on
    ``calib_batches`` (each a model input tensor). Pass the output of ``prepare_float_model``.
    Returns the converted model for the converter: ``litert_torch.convert(q, args,
    **tflite_convert_kwargs())`` or ``torch.export.export(q, args)``."""
    recipe = recipe_for(fmt)
    if recipe.quantizer == "onnxruntime":
        raise ValueError(f"{fmt} INT8 goes through quantize_onnx on the exported fp32 file")
    return quantize_with(model, example_inputs, calib_batches, make_quantizer(fmt, recipe),
                         fold_quantize=recipe.fold_quantize)


def tflite_convert_kwargs(fmt: str = "tflite") -> dict[str, Any]:
    """Extra keyword arguments for ``litert_torch.convert`` of a ``quantize_pt2e`` model."""
    if recipe_for(fmt).quantizer != "litert":
        return {}
    from litert_torch.quantize.quant_config import QuantConfig

    return {"quant_config": QuantConfig(pt2e_quantizer=make_quantizer(fmt))}


def quantize_recipe(fmt: str) -> dict[str, Any]:
    """What the INT8 path of ``fmt`` does, for the manifest's ``quantization_recipe``."""
    recipe = recipe_for(fmt)
    if recipe.quantizer == "onnxruntime":
        from exporters.int8.onnx_quant import onnx_recipe

        return onnx_recipe(recipe.rewrites)
    coreml = recipe.quantizer == "coreml"
    out: dict[str, Any] = {
        "method": "pt2e_dynamic" if recipe.dynamic else "pt2e_static",
        "quantizer": QUANTIZER_NAMES[recipe.quantizer]
        + (" + exporters.int8 annotation" if recipe.full_annotation else ""),
        "activations": "float (dynamic)" if recipe.dynamic else (
            "uint8 per-tensor symmetric" if coreml else "int8 per-tensor affine"),
        "weights": "int8 per-channel symmetric",
        "calibration": "moving-average MinMax (activations and per-channel weights)" if coreml
        else "HistogramObserver (activations), MinMax per channel (weights)",
    }
    out.update({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(recipe).items()
                if k != "quantizer"})
    return out
