"""ExecuTorch ``.pte`` lowered to XNNPACK: fp32 and INT8 (PT2E static, per-channel), NCHW input.

Both take and return float32 (the INT8 program quantizes and dequantizes inside). A ``.pte`` has
no free-form metadata field, so the manifest entry (minus bytes/sha256) goes in a sidecar
``<name>.json`` beside it.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from exporters import Int8Recipe, register_exporter
from exporters.base import (
    INPUT_NAME,
    Artifact,
    ExportSettings,
    Stopwatch,
    artifact_name,
    input_shape,
    io_spec,
    logits_spec,
)
from exporters.finish import Build, export_each, finish, int8_recipe

FORMAT = "executorch"


def site_timings(int8: Path, fp32: Path, sites: Any, example: Any,
                 session_config: Mapping[str, str]) -> Any:
    """Per-site INT8 and fp32 times from ExecuTorch's ETDump (``exporters.int8.profile``)."""
    from exporters.int8.profile import executorch_site_timings

    return executorch_site_timings(int8, fp32, sites, example)


# ExecuTorch's XNNPACK runs hardswish int8 (through a lookup table; its decomposed form was
# slower) but hardsigmoid only in float. Where its int8 kernel is slower than the fp32 one is
# measured per site with its profiler (--speed-plan measure); the timings of MobileNetV3-Small
# and -Large (224 px, 1 thread, x86: most 5x5 depthwise convs) ship as --speed-plan auto's.
INT8 = Int8Recipe("xnnpack", rewrites=(
    "clamp_hardswish_input", "decompose_hardsigmoid", "fold_scales"),
    relu6_range_on_binary=True, profiler=site_timings,
    stored_timings="int8/timings/executorch.json")


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The sidecar JSON of a ``.pte`` file, or None."""
    sidecar = Path(path).with_suffix(".json")
    return dict(json.loads(sidecar.read_text())) if sidecar.is_file() else None


def _restamp(src: Path, dst: Path, meta: dict[str, Any]) -> None:
    """A ``.pte`` holds no entry (its sidecar does): the file is copied as is."""
    shutil.copyfile(src, dst)


@register_exporter(FORMAT, extension=".pte", tools=("executorch",), int8=INT8, cost=59.0,
                   read_metadata=read_metadata, restamp=_restamp)
def export(model: Any, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    return export_each(
        FORMAT, cfg, lambda p: _export_one(model, example_inputs, out_dir, cfg, p))


def _lower(model: Any, example_inputs: tuple[Any, ...]) -> tuple[bytes, Any]:
    """(the ``.pte`` program, the lowered graph module ``get_delegation_info`` reads)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(model, tuple(example_inputs))
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph_module
    return bytes(edge.to_executorch().buffer), graph


def _program(model: Any, example_inputs: tuple[Any, ...], cfg: ExportSettings,
             precision: str) -> tuple[bytes, Any, Any]:
    """(program, lowered graph module, torch reference) for one precision."""
    if precision == "fp32":
        return (*_lower(model, example_inputs), model)
    from exporters.int8 import prepare_float_model, quantize_pt2e

    calib = cfg.require_calibration(FORMAT)
    ready = prepare_float_model(model, FORMAT, example_inputs=example_inputs)
    quantized = quantize_pt2e(ready, example_inputs, calib.batches("NCHW"), FORMAT, cfg.int8,
                             calib_key=calib.key("NCHW"))
    return (*_lower(quantized, example_inputs), quantized)


def _export_one(model: Any, example_inputs: tuple[Any, ...], out_dir: Path,
                cfg: ExportSettings, precision: str) -> Artifact:
    from exporters.int8.report import executorch_report

    clock = Stopwatch()
    recipe = int8_recipe(FORMAT, cfg) if precision == "int8" else None
    program, graph, reference = _program(model, example_inputs, cfg, precision)
    def write(tmp: Path, meta: dict[str, Any]) -> None:
        tmp.write_bytes(program)  # the entry goes in the sidecar

    build = Build(
        write=write,
        input=io_spec(INPUT_NAME, input_shape(cfg, "NCHW"), "float32", "NCHW"),
        output=logits_spec(cfg), reference=reference, recipe=recipe, sidecar=True,
        embedded=f"sidecar {artifact_name(cfg, FORMAT, precision)}.json",
        graph_report=partial(executorch_report, graph_module=graph))
    return finish(FORMAT, precision, cfg, out_dir, clock, build)


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
