"""PT2E static INT8 per runtime: the quantizer, calibration and the recipe for the manifest.

Each format's recipe (``exporters.Int8Recipe``) lives on its registry entry, beside the
measurements that chose it (``exporters/<format>.py``; ``benchmarks/int8_speed.py``):

- tflite: litert-torch's quantizer plus ``exporters.int8.annotate`` (every conv/linear/add/mul
  annotated, ReLU/ReLU6 fused by placing the observer after them, rank-matched constants); the
  float model has hardswish/hardsigmoid decomposed. Result: no float op, one XNNPACK partition.
- executorch: XNNPACK's quantizer plus the same annotation; hardsigmoid folded into the
  squeeze-excite convs; hardswish kept (XNNPACK runs it int8 through a lookup table). Which
  sites stay float (a depthwise conv whose int8 kernel is slower than its fp32 one) is a
  measured per-site plan (``exporters.int8.speed``), not a recipe constant.
- coreml: ExecuTorch's ``CoreMLQuantizer`` (int8 per-channel symmetric weights, uint8
  activations), as Apple ships it.

``options`` (``exporters.int8.options.Int8Options``): its plan's float sites (with an accuracy
site's tail) are left unannotated (``exporters.int8.plan.mark_float_sites``) and its
``observer`` ("histogram", the default, "minmax" or "moving_average") replaces the activation
observers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from exporters import Int8Recipe
from exporters.int8.annotate import (
    annotate_fused,
    drop_hardswish_clamps,
    drop_redundant_clamps,
    functionalize_inplace,
    shape_scalar_constants,
)
from exporters.int8.plan import PrecisionPlan, mark_float_sites
from exporters.int8.rewrites import recipe_for

if TYPE_CHECKING:
    from exporters.int8.options import Int8Options
    from exporters.int8.qat import QatSpec

QUANTIZER_NAMES = {"litert": "litert_torch PT2EQuantizer", "xnnpack": "XNNPACKQuantizer",
                   "coreml": "executorch CoreMLQuantizer"}
QAT_QUANTIZERS = ("litert", "xnnpack")  # the ones whose QAT fake-quantize specs we annotate
OBSERVERS = ("histogram", "minmax", "moving_average")
# Calibration images per forward pass. One at a time, the histogram observers' per-call overhead
# made calibration most of an INT8 export (ExecuTorch, MobileNetV3-Small at 96 px, 4096 images:
# 80 of 141 profiled seconds).
CALIB_BATCH = 32
# Core ML's quantizer names its observers itself; None: its default (moving average).
COREML_OBSERVERS = {None: "moving_average_min_max", "moving_average": "moving_average_min_max",
                    "minmax": "min_max"}


def _coreml_quantizer(recipe: Int8Recipe, plan: PrecisionPlan, observer: str | None
                      ) -> Any:
    """ExecuTorch's ``CoreMLQuantizer`` (it skips annotated nodes, as the others do)."""
    import coremltools as ct
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    if observer not in COREML_OBSERVERS:
        raise ValueError(f"Core ML's quantizer has no {observer!r} observer; use one of "
                         f"{', '.join(k for k in COREML_OBSERVERS if k)}")
    config = ct.optimize.torch.quantization.LinearQuantizerConfig(
        global_config=ct.optimize.torch.quantization.ModuleLinearQuantizerConfig(
            quantization_scheme="symmetric", activation_dtype=torch.quint8,
            weight_dtype=torch.qint8, weight_per_channel=True,
            activation_observer=COREML_OBSERVERS[observer]))
    cls = _full_quantizer(CoreMLQuantizer, recipe, plan) if plan else \
        CoreMLQuantizer
    return cls(config)


def make_quantizer(fmt: str, recipe: Int8Recipe | None = None,
                   options: Int8Options | None = None) -> Any:
    """The PT2E quantizer ``fmt``'s recipe names (litert-torch's, XNNPACK's or Core ML's),
    keeping ``options``' float sites float and calibrating with its observer."""
    recipe = recipe or recipe_for(fmt)
    plan = options.plan if options is not None else PrecisionPlan()
    observer = options.observer if options is not None else None
    qat = options is not None and options.qat is not None
    if qat and recipe.quantizer not in QAT_QUANTIZERS:
        raise ValueError(f"{fmt}: QAT needs one of the {', '.join(QAT_QUANTIZERS)} quantizers")
    if recipe.quantizer == "coreml":
        return _coreml_quantizer(recipe, plan, observer)
    if recipe.quantizer == "litert":
        from litert_torch.quantize.pt2e_quantizer import (
            PT2EQuantizer,
            get_symmetric_quantization_config,
        )

        base: type = PT2EQuantizer
        config = get_symmetric_quantization_config(is_per_channel=True, is_qat=qat,
                                                   is_dynamic=recipe.dynamic)
    elif recipe.quantizer == "xnnpack":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
        )
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            get_symmetric_quantization_config as xnn_config,
        )

        base = XNNPACKQuantizer
        config = xnn_config(is_per_channel=True, is_qat=qat, is_dynamic=recipe.dynamic)
    else:
        raise ValueError(f"{fmt}: the {recipe.quantizer} recipe is not a PT2E quantizer")
    full = recipe.full_annotation or bool(plan)
    cls = _full_quantizer(base, recipe, plan) if full else base
    if qat:  # fake quantization everywhere; BatchNorm is folded before annotation
        # (exporters.int8.qat), so the QAT-only conv-BN patterns match nothing, and litert-torch
        # cannot even build them with this torch: annotate as for calibration.
        return cls().set_global(replace(config, is_qat=False))
    return cls().set_global(with_observer(config, observer))


def with_observer(config: Any, observer: str | None) -> Any:
    """``config`` with its activation observers replaced (None or "histogram": unchanged)."""
    from torchao.quantization.pt2e.observer import MinMaxObserver, MovingAverageMinMaxObserver

    if observer is not None and observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}; expected one of {OBSERVERS}")
    if observer in (None, "histogram") or config.input_activation is None:
        return config
    ctr = {"minmax": MinMaxObserver,
           "moving_average": MovingAverageMinMaxObserver}[observer].with_args(eps=2**-12)
    act = replace(config.input_activation, observer_or_fake_quant_ctr=ctr)
    return replace(config, input_activation=act, output_activation=act)


def _full_quantizer(base: type, recipe: Int8Recipe, plan: PrecisionPlan) -> type:
    class FullInt8Quantizer(base):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if recipe.full_annotation:
                functionalize_inplace(model)
                shape_scalar_constants(model)
            result: torch.fx.GraphModule = super().transform_for_annotation(model)
            return result

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            mark_float_sites(model, plan.names(), plan.names("accuracy"))
            if recipe.full_annotation:
                annotate_fused(model, self.global_config,
                               relu6_range_on_binary=recipe.relu6_range_on_binary)
            result: torch.fx.GraphModule = super().annotate(model)
            return result

    FullInt8Quantizer.__name__ = f"Full{base.__name__}"
    return FullInt8Quantizer


def _chunks(batches: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """``batches`` regrouped into batches of ``size`` images (the last one smaller)."""
    held: list[torch.Tensor] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch)
        if count >= size:
            yield torch.cat(held)
            held, count = [], 0
    if held:
        yield torch.cat(held)


def quantize_with(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    calib_batches: Iterable[torch.Tensor],
    quantizer: Any,
    fold_quantize: bool = True,
    qat: QatSpec | None = None,
    tag: str = "",
    calib_key: str | None = None,
) -> torch.fx.GraphModule:
    """Export (dynamic batch), prepare with ``quantizer``, calibrate in batches of
    ``CALIB_BATCH`` images, convert, drop exact no-op clamps; with ``qat``, fine-tune under fake
    quantization on the calibration images instead of calibrating (``exporters.int8.qat``).
    ``calib_key`` names the calibration images: given, a calibration already done on them is
    reused (``exporters.int8.observers``)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if qat is not None:
        from exporters.int8.qat import qat_quantize

        tuned = qat_quantize(model, torch.cat(list(calib_batches)), quantizer, qat,
                             fold_quantize, tag)
        drop_redundant_clamps(tuned)
        drop_hardswish_clamps(tuned)
        return tuned
    if len(example_inputs) != 1:
        raise ValueError("PT2E quantization takes a model with one image input")
    from exporters.int8.observers import calibrate, model_key
    from exporters.int8.qat import export_dynamic_batch

    exported = export_dynamic_batch(model.eval(), example_inputs[0])
    key = None if calib_key is None else model_key(exported, calib_key)
    prepared = prepare_pt2e(exported, quantizer)
    if calibrate(prepared, _chunks(calib_batches, CALIB_BATCH), key) == 0:
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
    options: Int8Options | None = None,
    calib_key: str | None = None,
) -> torch.fx.GraphModule:
    """Static INT8 (per-channel weights) with the quantizer that suits ``fmt``; calibrated on
    ``calib_batches`` (each a model input tensor; ``calib_key``, if given, names them: another
    plan's calibration on them is reused); ``options``' float sites stay float. Pass the
    output of ``prepare_float_model``. Returns the converted model for the converter:
    ``litert_torch.convert(q, args, **tflite_convert_kwargs(fmt, options))`` or
    ``torch.export.export(q, args)``."""
    recipe = recipe_for(fmt)
    if recipe.quantizer == "onnxruntime":
        raise ValueError(f"{fmt} INT8 goes through quantize_onnx on the exported fp32 file")
    return quantize_with(model, example_inputs, calib_batches,
                         make_quantizer(fmt, recipe, options), fold_quantize=recipe.fold_quantize,
                         qat=options.qat if options is not None else None,
                         tag=f"{fmt}|{sorted(options.plan.names()) if options else []}",
                         calib_key=calib_key)


def tflite_convert_kwargs(fmt: str = "tflite", options: Int8Options | None = None
                          ) -> dict[str, Any]:
    """Extra keyword arguments for ``litert_torch.convert`` of a ``quantize_pt2e`` model."""
    if recipe_for(fmt).quantizer != "litert":
        return {}
    from litert_torch.quantize.quant_config import QuantConfig

    return {"quant_config": QuantConfig(pt2e_quantizer=make_quantizer(fmt, options=options))}


# Recipe fields that describe code, not a choice recorded in the manifest.
_NOT_RECORDED = ("quantizer", "profiler")


def quantize_recipe(fmt: str, options: Int8Options | None = None) -> dict[str, Any]:
    """What the INT8 path of ``fmt`` does, for the manifest's ``quantization_recipe``
    (``options``: a non-default observer)."""
    recipe = recipe_for(fmt)
    observer = options.observer if options is not None else None
    if recipe.quantizer == "onnxruntime":
        from exporters.int8.onnx_quant import onnx_recipe

        return onnx_recipe(recipe.rewrites, observer)
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
    if observer is not None:
        out["calibration"] = f"{observer} observer (activations), MinMax per channel (weights)"
    if options is not None and options.qat is not None:
        out["method"] = "pt2e_qat"
        out["calibration"] = "quantization-aware fine-tune on the calibration images"
        out["qat"] = options.qat.to_dict()
    out.update({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(recipe).items()
                if k not in _NOT_RECORDED})
    return out
