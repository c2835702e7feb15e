"""Core ML ``.mlpackage`` (ML program, iOS 17+): an image classifier Apple's Vision API can run.

The wrapped model takes an RGB image (``ct.ImageType``, scale 1/255), normalizes it with the
checkpoint's mean/std inside the network and returns ``softmax(logits / temperature)`` through
``ct.ClassifierConfig(labels)``: outputs ``classLabel`` and ``classLabel_probs``. Precisions:
``fp16`` (the float export), ``w8`` (the ``int8`` family: 8-bit per-channel symmetric weights,
fp16 activations, ``linear_quantize_weights``; needs no calibration) and ``w8a8`` (asked for
with the ``w8a8`` family: 8-bit weights and activations, the wrapper quantized with
ExecuTorch's ``CoreMLQuantizer`` (PT2E) and converted by coremltools; needs calibration images).
The manifest entry (minus bytes/sha256) goes in ``user_defined_metadata``: each field
JSON-encoded under its own key and the whole entry under ``edgekd_manifest``. Every artefact's
saved spec is inspected (image input, classifier labels, 8-bit ops); it is also run through
``runtimes.coreml`` where Core ML can predict (macOS only).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from exporters import Int8Recipe, register_exporter
from exporters.base import (
    METADATA_KEY,
    Artifact,
    ExportError,
    ExportSettings,
    Stopwatch,
    input_shape,
    io_spec,
    staging_dir,
)
from exporters.finish import Build, export_each, finish, int8_recipe
from kd_core.data.transforms import Preprocessing

FORMAT = "coreml"
INPUT_NAME = "image"
LABEL_OUTPUT, PROBS_OUTPUT = "classLabel", "classLabel_probs"
PRECISIONS: dict[str, tuple[str, ...]] = {"fp32": ("fp16",), "int8": ("w8",), "w8a8": ("w8a8",)}
EIGHT_BIT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale",
                 "quantize", "dequantize")
# w8a8: ExecuTorch's CoreMLQuantizer (coremltools' own activation quantizers need macOS to
# calibrate); Core ML cannot be timed on Linux, so no rewrites were tuned for it.
INT8 = Int8Recipe("coreml", full_annotation=False)


@cache
def _classifier_class() -> type:
    from torch import nn

    class ImageClassifier(nn.Module):
        """[0, 1] RGB image (NCHW) -> softmax(model((x - mean) / std) / temperature)."""

        def __init__(self, model: Any, prep: Preprocessing, temperature: float) -> None:
            import torch

            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(prep.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(prep.std).view(1, 3, 1, 1))
            self.temperature = float(temperature)

        def forward(self, x: Any) -> Any:
            import torch

            logits = self.model((x - self.mean) / self.std)
            return torch.softmax(logits / self.temperature, dim=1)

    return ImageClassifier


def image_classifier(model: Any, prep: Preprocessing, temperature: float) -> Any:
    """The module Core ML converts: the eval preprocessing and the temperature around ``model``."""
    return _classifier_class()(model, prep, temperature).eval()


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The manifest entry embedded in a ``.mlpackage``'s user-defined metadata, or None."""
    meta = read_spec(path)["metadata"]
    return dict(json.loads(meta[METADATA_KEY])) if METADATA_KEY in meta else None


@register_exporter(FORMAT, extension=".mlpackage", tools=("coremltools",), precisions=PRECISIONS,
                   needs_calibration=("w8a8",), int8=INT8, cost=9.0,
                   read_metadata=read_metadata, preferred=("w8", "fp16"))
def export(model: Any, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    import torch

    size = cfg.preprocessing.size
    example = (torch.rand(1, 3, size, size),)
    wrapper = image_classifier(model, cfg.preprocessing, cfg.decision.temperature)
    cache: dict[str, Any] = {}
    return export_each(FORMAT, cfg,
                       lambda p: _export_one(wrapper, example, out_dir, cfg, p, cache))


def _convert(wrapper: Any, example: tuple[Any, ...], cfg: ExportSettings, precision: str,
             cache: dict[str, Any]) -> Any:
    """The Core ML model of one precision."""
    import coremltools as ct
    import torch

    if precision == "w8":
        fp16 = cache["fp16"] if "fp16" in cache else _convert(wrapper, example, cfg, "fp16", cache)
        return _quantize_weights(fp16)
    source = wrapper
    if precision == "w8a8":
        from exporters.int8 import prepare_float_model, quantize_pt2e

        calib = cfg.require_calibration(FORMAT)
        rewritten = prepare_float_model(wrapper.model, FORMAT,
                                        example_inputs=(torch.randn(1, *example[0].shape[1:]),))
        ready = image_classifier(rewritten, cfg.preprocessing, cfg.decision.temperature)
        batches = (torch.from_numpy(p).permute(2, 0, 1)[None].float() / 255.0
                   for p in calib.pixels)
        source = quantize_pt2e(ready, example, batches, FORMAT)
    size = cfg.preprocessing.size
    model = ct.convert(
        torch.export.export(source, example).run_decompositions({}),
        convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        inputs=[ct.ImageType(name=INPUT_NAME, shape=(1, 3, size, size), scale=1.0 / 255.0,
                             color_layout=ct.colorlayout.RGB)],
        classifier_config=ct.ClassifierConfig(list(cfg.labels)),
        compute_precision=ct.precision.FLOAT16,
    )
    if precision == "fp16":
        cache["fp16"] = model
    return model


def _quantize_weights(model: Any) -> Any:
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(
        mode="linear_symmetric", granularity="per_channel", weight_threshold=0))
    return linear_quantize_weights(model, config=config)


def _recipe(precision: str, cfg: ExportSettings) -> dict[str, Any] | None:
    if precision == "w8a8":
        return int8_recipe(FORMAT, cfg)
    if precision == "w8":
        return {"method": "coremltools linear_quantize_weights", "weights": "int8 per-channel "
                "symmetric", "activations": "float16", "calibration": None}
    return None


def _export_one(wrapper: Any, example: tuple[Any, ...], out_dir: Path, cfg: ExportSettings,
                precision: str, cache: dict[str, Any]) -> Artifact:
    clock = Stopwatch()
    mlmodel = _convert(wrapper, example, cfg, precision, cache)

    def write(tmp: Path, meta: dict[str, Any]) -> None:
        _describe(mlmodel, cfg, meta)
        with staging_dir(out_dir) as stage:  # coremltools saves to a *.mlpackage name only
            staged = stage / "model.mlpackage"
            mlmodel.save(str(staged))
            shutil.move(str(staged), str(tmp))

    build = Build(
        write=write,
        input={**io_spec(INPUT_NAME, input_shape(cfg, "NCHW"), "image", "NCHW"),
               "color_layout": "RGB", "scale": 1.0 / 255.0, "normalization": "inside the model"},
        output={**io_spec(PROBS_OUTPUT, [len(cfg.labels)], "float64", kind="probabilities"),
                "class_label_output": LABEL_OUTPUT, "temperature_applied": True},
        reference=wrapper.model, recipe=_recipe(precision, cfg),
        embedded=f"user_defined_metadata {METADATA_KEY!r} (and one key per field)",
        inspect=lambda path: inspect_package(path, cfg, precision),
        graph_report=lambda path: {"format": FORMAT, "op_counts": read_spec(path)["op_counts"]})
    return finish(FORMAT, precision, cfg, out_dir, clock, build)


def _describe(mlmodel: Any, cfg: ExportSettings, meta: dict[str, Any]) -> None:
    for key, value in meta.items():
        mlmodel.user_defined_metadata[key] = json.dumps(value, sort_keys=True)
    mlmodel.user_defined_metadata[METADATA_KEY] = json.dumps(meta, sort_keys=True)
    d = cfg.decision
    rule = (f"positive class {d.positive_label!r} when its probability >= {d.threshold:g}"
            if d.positive_label is not None and d.threshold is not None else "argmax")
    mlmodel.short_description = f"{cfg.arch} classifier ({', '.join(d.labels)}); {rule}"
    mlmodel.input_description[INPUT_NAME] = (
        f"RGB image, {cfg.preprocessing.size}x{cfg.preprocessing.size}, resized by "
        f"{cfg.preprocessing.resize!r}")
    mlmodel.output_description[PROBS_OUTPUT] = f"softmax(logits / {d.temperature:g}) per label"


def read_spec(path: Path) -> dict[str, Any]:
    """What an app relies on, read from a saved ``.mlpackage`` (works on Linux)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    ops: Counter[str] = Counter()
    labels: list[str] = []
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                ops[op.type] += 1
                if op.type == "classify":
                    values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
                    labels = [v.immediateValue.tensor.strings.values[0] for v in values]
    image = spec.description.input[0]
    return {
        "model_type": spec.WhichOneof("Type"),
        "specification_version": spec.specificationVersion,
        "input_name": image.name,
        "input_is_image": image.type.WhichOneof("Type") == "imageType",
        "input_size": [image.type.imageType.height, image.type.imageType.width],
        "color_space": ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(
            image.type.imageType.colorSpace),
        "predicted_feature": spec.description.predictedFeatureName,
        "predicted_probabilities": spec.description.predictedProbabilitiesName,
        "labels": labels,
        "op_counts": dict(sorted(ops.items())),
        "metadata": dict(spec.description.metadata.userDefined),
    }


def inspect_package(path: Path, cfg: ExportSettings, precision: str) -> dict[str, Any]:
    """Check the saved spec; raise ExportError on anything an app would trip over."""
    info = read_spec(path)
    size = cfg.preprocessing.size
    problems = []
    if info["model_type"] != "mlProgram":
        problems.append(f"model type {info['model_type']}, expected mlProgram")
    if not info["input_is_image"] or info["input_size"] != [size, size]:
        problems.append(f"input is not a {size}x{size} image")
    if info["color_space"] != "RGB":
        problems.append(f"input colour space {info['color_space']}, expected RGB")
    if info["labels"] != list(cfg.labels) or info["predicted_feature"] != LABEL_OUTPUT:
        problems.append(f"classifier labels {info['labels']} != {list(cfg.labels)}")
    eight_bit = sum(info["op_counts"].get(op, 0) for op in EIGHT_BIT_OPS)
    if precision in ("w8", "w8a8") and eight_bit == 0:
        problems.append("no 8-bit ops in a quantized model")
    if METADATA_KEY not in info["metadata"]:
        problems.append("manifest metadata missing")
    if problems:
        raise ExportError(f"{cfg.arch} {FORMAT} {precision}: " + "; ".join(problems))
    return {"spec_inspection": {"input_is_image": True, "labels": info["labels"],
                                "eight_bit_ops": eight_bit}}


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
