"""ExecuTorch ``.pte`` lowered to XNNPACK: fp32 and INT8 (PT2E static, per-channel), NCHW input.

Both take and return float32 (the INT8 program quantizes and dequantizes inside). A ``.pte`` has
no free-form metadata field, so the manifest entry (minus bytes/sha256) goes in a sidecar
``<name>.json`` beside it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporters import Artifact, register_exporter
from exporters.base import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportSettings,
    Stopwatch,
    artifact_name,
    embedded_metadata,
    export_each,
    input_shape,
    int8_recipe,
    io_spec,
    safe_graph_report,
    tool_versions,
)
from exporters.verify import verify_artifact
from kd_core.io import atomic_path

FORMAT = "executorch"
TOOLS = ("executorch",)


@register_exporter(FORMAT, ".pte", TOOLS)
def export(model: nn.Module, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    return export_each(
        FORMAT, cfg, lambda p: _export_one(model, example_inputs, out_dir, cfg, p))


def _lower(model: nn.Module, example_inputs: tuple[Any, ...]) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(model, tuple(example_inputs))
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    return bytes(edge.to_executorch().buffer)


def _program(model: nn.Module, example_inputs: tuple[Any, ...], cfg: ExportSettings,
             precision: str) -> tuple[bytes, nn.Module]:
    if precision == "fp32":
        return _lower(model, example_inputs), model
    from exporters.int8 import prepare_float_model, quantize_pt2e

    calib = cfg.require_calibration(FORMAT)
    ready = prepare_float_model(model, FORMAT, example_inputs=example_inputs)
    quantized = quantize_pt2e(ready, example_inputs, calib.batches("NCHW"), FORMAT,
                              **cfg.int8.pt2e_kwargs())
    return _lower(quantized, example_inputs), quantized


def _export_one(model: nn.Module, example_inputs: tuple[Any, ...], out_dir: Path,
                cfg: ExportSettings, precision: str) -> Artifact:
    clock = Stopwatch()
    name = artifact_name(cfg, FORMAT, precision)
    path, sidecar = out_dir / f"{name}.pte", out_dir / f"{name}.json"
    recipe = int8_recipe(FORMAT, cfg) if precision == "int8" else None
    program, reference = _program(model, example_inputs, cfg, precision)
    shape = input_shape(cfg, "NCHW")
    art = Artifact(
        name, path, FORMAT, precision,
        io_spec(INPUT_NAME, shape, "float32", "NCHW"),
        io_spec(OUTPUT_NAME, [1, len(cfg.labels)], "float32", kind="logits"),
        tool_versions(TOOLS), quantization_recipe=recipe, extra_files=(sidecar,),
        embedded_metadata=f"sidecar {sidecar.name}",
        reference=reference,
    )
    text = json.dumps(embedded_metadata(cfg, art), indent=2, sort_keys=True) + "\n"
    with atomic_path(path) as tmp, atomic_path(sidecar) as tmp_json:
        tmp.write_bytes(program)
        tmp_json.write_text(text)
        verification = verify_artifact(art, tmp, run, cfg)
    report = safe_graph_report(path, FORMAT) if precision == "int8" else None
    return replace(art, export_seconds=clock.seconds(), graph_report=report,
                   verification=verification)


def run(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of N x 3 x H x W normalized float32 images with the ExecuTorch runtime."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")
    rows = [method.execute([torch.from_numpy(x[None].copy())])[0] for x in images]
    return torch.cat(rows).float().numpy()


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The sidecar JSON of a ``.pte`` file, or None."""
    sidecar = Path(path).with_suffix(".json")
    return dict(json.loads(sidecar.read_text())) if sidecar.is_file() else None


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
