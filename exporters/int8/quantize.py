"""PT2E static INT8 per runtime: the quantizer, calibration and the recipe for the manifest.

Per-runtime choices (measured on MobileNetV3-Small, see ``benchmarks/int8_speed.py``):

- tflite: litert-torch's quantizer plus ``exporters.int8.annotate`` (every conv/linear/add/mul
  annotated, ReLU/ReLU6 fused by placing the observer after them, rank-matched constants); the
  float model has hardswish/hardsigmoid decomposed (``rewrites.REWRITES``). Result: no float op,
  one XNNPACK partition.
- executorch: XNNPACK's quantizer plus the same annotation; hardsigmoid folded into the
  squeeze-excite convs; hardswish kept (XNNPACK runs it int8 through a lookup table). Which
  sites stay float (e.g. a depthwise conv whose int8 kernel is slower than its fp32 one) is a
  measured per-site result: ``float_sites`` (``exporters.int8.plan``, ``exporters.int8.speed``).
- coreml: XNNPACK's stock quantizer (Core ML cannot be timed on Linux).

``float_sites`` (site names, see ``exporters.int8.plan``) are left unannotated in every recipe;
``observer`` picks the activation observer ("histogram", the default, "minmax" or
"moving_average"; the repair ladder's better-calibration rung tries others).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from exporters.int8.annotate import (
    annotate_fused,
    drop_hardswish_clamps,
    drop_redundant_clamps,
    functionalize_inplace,
    shape_scalar_constants,
)
from exporters.int8.plan import mark_float_sites
from exporters.int8.rewrites import check_format, rewrites_for


@dataclass(frozen=True)
class PT2ERecipe:
    quantizer: str  # "litert" or "xnnpack"
    full_annotation: bool = True  # exporters.int8.annotate on top of the stock quantizer
    dynamic: bool = False  # dynamic activations (weights only static)
    relu6_range_on_binary: bool = False  # add/mul + ReLU6 -> fixed [0, 6] range, clamp dropped
    fold_quantize: bool = True  # fold weight quantization into int8 constants


RECIPES: dict[str, PT2ERecipe] = {
    "tflite": PT2ERecipe("litert", fold_quantize=False),
    "executorch": PT2ERecipe("xnnpack", relu6_range_on_binary=True),
    "coreml": PT2ERecipe("xnnpack", full_annotation=False),
}


OBSERVERS = ("histogram", "minmax", "moving_average")


def make_quantizer(fmt: str, recipe: PT2ERecipe | None = None,
                   float_sites: frozenset[str] = frozenset(), observer: str = "histogram"
                   ) -> Any:
    """The PT2E quantizer for ``fmt`` (litert-torch's for TFLite, XNNPACK's otherwise)."""
    check_format(fmt)
    recipe = recipe or RECIPES[fmt]
    if recipe.quantizer == "litert":
        from litert_torch.quantize.pt2e_quantizer import (
            PT2EQuantizer,
            get_symmetric_quantization_config,
        )

        base: type = PT2EQuantizer
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=recipe.dynamic)
    else:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
        )
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            get_symmetric_quantization_config as xnn_config,
        )

        base = XNNPACKQuantizer
        config = xnn_config(is_per_channel=True, is_dynamic=recipe.dynamic)
    if recipe.full_annotation or float_sites:
        cls = _full_quantizer(base, recipe, float_sites)
    else:
        cls = base
    return cls().set_global(_with_observer(config, observer))


def _with_observer(config: Any, observer: str) -> Any:
    """``config`` with its activation observers replaced (``histogram``: unchanged)."""
    from dataclasses import replace

    from torchao.quantization.pt2e.observer import MinMaxObserver, MovingAverageMinMaxObserver

    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}; expected one of {OBSERVERS}")
    if observer == "histogram" or config.input_activation is None:
        return config
    ctr = {"minmax": MinMaxObserver,
           "moving_average": MovingAverageMinMaxObserver}[observer].with_args(eps=2**-12)
    act = replace(config.input_activation, observer_or_fake_quant_ctr=ctr)
    return replace(config, input_activation=act, output_activation=act)


def _full_quantizer(base: type, recipe: PT2ERecipe, float_sites: frozenset[str]) -> type:
    class FullInt8Quantizer(base):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if recipe.full_annotation:
                functionalize_inplace(model)
                shape_scalar_constants(model)
            result: torch.fx.GraphModule = super().transform_for_annotation(model)
            return result

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            mark_float_sites(model, float_sites)
            if recipe.full_annotation:
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
    float_sites: frozenset[str] = frozenset(),
    observer: str = "histogram",
) -> torch.fx.GraphModule:
    """Static INT8 (per-channel weights) with the quantizer that suits ``fmt``; calibrated on
    ``calib_batches`` (each a model input tensor); ``float_sites`` stay float. Pass the output
    of ``prepare_float_model``.
    Returns the converted model for the converter: ``litert_torch.convert(q, args,
    **tflite_convert_kwargs())`` or ``torch.export.export(q, args)``."""
    check_format(fmt)
    if fmt == "onnx":
        raise ValueError("ONNX INT8 goes through quantize_onnx on the exported fp32 file")
    recipe = RECIPES[fmt]
    quantizer = make_quantizer(fmt, recipe, float_sites, observer)
    return quantize_with(model, example_inputs, calib_batches, quantizer,
                         fold_quantize=recipe.fold_quantize)


def tflite_convert_kwargs(fmt: str = "tflite", float_sites: frozenset[str] = frozenset()
                          ) -> dict[str, Any]:
    """Extra keyword arguments for ``litert_torch.convert`` of a ``quantize_pt2e`` model."""
    check_format(fmt)
    if fmt != "tflite":
        return {}
    from litert_torch.quantize.quant_config import QuantConfig

    return {"quant_config": QuantConfig(pt2e_quantizer=make_quantizer("tflite",
                                                                      float_sites=float_sites))}


def quantize_recipe(fmt: str) -> dict[str, Any]:
    """What the INT8 path of ``fmt`` does, for the manifest's ``quantization_recipe``."""
    check_format(fmt)
    if fmt == "onnx":
        from exporters.int8.onnx_quant import onnx_recipe

        return onnx_recipe()
    recipe = RECIPES[fmt]
    name = {"litert": "litert_torch PT2EQuantizer", "xnnpack": "XNNPACKQuantizer"}
    out: dict[str, Any] = {
        "method": "pt2e_dynamic" if recipe.dynamic else "pt2e_static",
        "quantizer": name[recipe.quantizer]
        + (" + exporters.int8 annotation" if recipe.full_annotation else ""),
        "activations": "float (dynamic)" if recipe.dynamic else "int8 per-tensor affine",
        "weights": "int8 per-channel symmetric",
        "calibration": "HistogramObserver (activations), MinMax per channel (weights)",
        "rewrites": list(rewrites_for(fmt)),
    }
    out.update({k: v for k, v in asdict(recipe).items() if k != "quantizer"})
    return out
