"""ONNX: fp32 via ``torch.onnx.export(dynamo=True)`` (checked with ``onnx.checker``) and INT8 as
static QDQ through ONNX Runtime's quantizer (``exporters.int8.quantize_onnx``). NCHW float input.

The manifest entry (minus bytes/sha256) is embedded in ``metadata_props`` with
``onnx.helper.set_model_props``: every top-level field under its own key (values JSON-encoded)
plus the whole entry under ``edgekd_manifest``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporters import Int8Recipe, register_exporter
from exporters.base import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    Artifact,
    ExportSettings,
    Stopwatch,
    input_shape,
    io_spec,
    logits_spec,
    staging_dir,
)
from exporters.finish import Build, export_each, finish, int8_recipe

FORMAT = "onnx"


def site_timings(int8: Path, fp32: Path, sites: Any, example: Any,
                 session_config: Mapping[str, str]) -> Any:
    """Per-site INT8 and fp32 times from ONNX Runtime's profiler (``exporters.int8.profile``)."""
    from exporters.int8.profile import onnx_site_timings

    return onnx_site_timings(int8, fp32, sites, example, session_config)


# ONNX Runtime has no int8 hardswish/hardsigmoid: decomposed, so the whole graph runs int8.
INT8 = Int8Recipe("onnxruntime", rewrites=(
    "clamp_hardswish_input", "decompose_hardswish", "decompose_hardsigmoid", "fold_scales"),
    float_sites="nodes_to_exclude", alt_observer="MinMax", profiler=site_timings)


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The manifest entry embedded in an ONNX file's ``metadata_props``, or None."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    return dict(json.loads(props[METADATA_KEY])) if METADATA_KEY in props else None


@register_exporter(FORMAT, extension=".onnx", tools=("onnx", "onnxscript", "onnxruntime"),
                   int8=INT8, cost=17.0, read_metadata=read_metadata,
                   restamp=lambda src, dst, meta: _write(src, dst, meta))
def export(model: Any, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    """fp32: the model as is. INT8: the rewritten float model (exact, quantization friendly)
    exported to ONNX, then quantized to QDQ; its reference is the float model."""
    with staging_dir(out_dir) as stage:

        def one(precision: str) -> Artifact:
            clock, staged = Stopwatch(), stage / f"{precision}.onnx"
            recipe = None
            if precision == "fp32":
                export_onnx(model, example_inputs, staged)
            else:
                recipe = _quantize(model, example_inputs, stage, staged, cfg)
            build = Build(
                write=lambda tmp, meta: _write(staged, tmp, meta),
                input=io_spec(INPUT_NAME, input_shape(cfg, "NCHW"), "float32", "NCHW"),
                output=logits_spec(cfg), reference=model, recipe=recipe,
                embedded=f"metadata_props {METADATA_KEY!r} (and one key per field)",
                graph_report=_graph_report)
            return finish(FORMAT, precision, cfg, out_dir, clock, build)

        return export_each(FORMAT, cfg, one)


def export_onnx(model: Any, example_inputs: tuple[Any, ...], path: Path) -> None:
    """fp32 ONNX (dynamo exporter, one self-contained file), checked with ``onnx.checker``."""
    import onnx
    import torch

    program = torch.onnx.export(model, tuple(example_inputs), dynamo=True, verbose=False,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                external_data=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _quantize(model: Any, example_inputs: tuple[Any, ...], stage: Path, out: Path,
              cfg: ExportSettings) -> dict[str, Any]:
    from exporters.int8 import prepare_float_model, quantize_onnx
    from exporters.int8.plan import find_sites

    calib = cfg.require_calibration(FORMAT)
    recipe = int8_recipe(FORMAT, cfg)
    float_file = stage / "int8_float_source.onnx"
    ready = prepare_float_model(model, FORMAT, example_inputs=example_inputs)
    export_onnx(ready, example_inputs, float_file)
    sites = find_sites(ready, example_inputs) if cfg.int8 and cfg.int8.plan else ()
    recipe.update(quantize_onnx(float_file, out, list(calib.normalized()[:, None]), INPUT_NAME,
                                cfg.int8, sites, calib_key=calib.key("NCHW")))
    return recipe


def _write(staged: Path, tmp: Path, meta: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(staged))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                  for k, v in meta.items()})
    props[METADATA_KEY] = json.dumps(meta, sort_keys=True)
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(tmp))


def _graph_report(path: Path) -> dict[str, Any]:
    from exporters.int8.report import onnx_report

    return onnx_report(path)


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
