"""ONNX: fp32 via ``torch.onnx.export(dynamo=True)`` (checked with ``onnx.checker``) and INT8 as
static QDQ through ONNX Runtime's quantizer (the INT8 helper's ``quantize_onnx``). NCHW float input.

The manifest entry (minus bytes/sha256) is embedded in ``metadata_props``: every top-level field
under its own key (values JSON-encoded) plus the whole entry under ``edgekd_manifest``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
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
    staging_dir,
    tool_versions,
)
from exporters.verify import verify_artifact
from kd_core.io import atomic_path

FORMAT = "onnx"
TOOLS = ("onnx", "onnxscript", "onnxruntime")
METADATA_KEY = "edgekd_manifest"


@register_exporter(FORMAT, ".onnx", TOOLS)
def export(model: nn.Module, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    """fp32: the model as is. INT8: the INT8 helper's rewritten float model (exact, quantization
    friendly) exported to ONNX, then quantized to QDQ; its reference is the float model."""
    with staging_dir(out_dir) as stage:

        def one(precision: str) -> Artifact:
            clock, staged = Stopwatch(), stage / f"{precision}.onnx"
            if precision == "fp32":
                export_onnx(model, example_inputs, staged)
                return _finish(staged, model, out_dir, cfg, "fp32", clock)
            recipe = _quantize(model, example_inputs, stage, staged, cfg)
            return _finish(staged, model, out_dir, cfg, "int8", clock, recipe)

        return export_each(FORMAT, cfg, one)


def export_onnx(model: nn.Module, example_inputs: tuple[Any, ...], path: Path) -> None:
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


def _quantize(model: nn.Module, example_inputs: tuple[Any, ...], stage: Path, out: Path,
              cfg: ExportSettings) -> dict[str, Any]:
    from exporters.int8 import prepare_float_model, quantize_onnx
    from exporters.int8.plan import find_sites

    calib = cfg.require_calibration(FORMAT)
    recipe = int8_recipe(FORMAT, cfg)
    float_file = stage / "int8_float_source.onnx"
    ready = prepare_float_model(model, FORMAT, example_inputs=example_inputs)
    export_onnx(ready, example_inputs, float_file)
    sites = find_sites(ready, example_inputs) if cfg.int8.plan else ()
    recipe.update(quantize_onnx(float_file, out, iter(calib.normalized()[:, None]), INPUT_NAME,
                                **cfg.int8.onnx_kwargs(sites)))
    return recipe


def _finish(staged: Path, model: nn.Module, out_dir: Path, cfg: ExportSettings, precision: str,
            clock: Stopwatch, recipe: dict[str, Any] | None = None) -> Artifact:
    import onnx

    name = artifact_name(cfg, FORMAT, precision)
    path = out_dir / f"{name}.onnx"
    art = Artifact(
        name, path, FORMAT, precision,
        io_spec(INPUT_NAME, input_shape(cfg, "NCHW"), "float32", "NCHW"),
        io_spec(OUTPUT_NAME, [1, len(cfg.labels)], "float32", kind="logits"),
        tool_versions(TOOLS), quantization_recipe=recipe, reference=model,
        embedded_metadata=f"metadata_props {METADATA_KEY!r} (and one key per field)",
    )
    proto = onnx.load(str(staged))
    onnx.checker.check_model(proto)
    set_metadata(proto, embedded_metadata(cfg, art))
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        verification = verify_artifact(art, tmp, run, cfg)
    report = safe_graph_report(path, FORMAT) if precision == "int8" else None
    return replace(art, export_seconds=clock.seconds(), graph_report=report,
                   verification=verification)


def set_metadata(proto: Any, meta: dict[str, Any]) -> None:
    """Write ``meta`` into ``metadata_props`` (replacing keys of the same name)."""
    entries = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
               for k, v in meta.items()}
    entries[METADATA_KEY] = json.dumps(meta, sort_keys=True)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The manifest entry embedded in an ONNX file's ``metadata_props``, or None."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    return dict(json.loads(props[METADATA_KEY])) if METADATA_KEY in props else None


def run(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of N x 3 x H x W normalized float32 images with ONNX Runtime (CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rows = [session.run(None, {name: np.ascontiguousarray(x[None], dtype=np.float32)})[0][0]
            for x in images]
    return np.stack(rows).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    from exporters.all import main as run_all

    return run_all(argv, formats=(FORMAT,))


if __name__ == "__main__":
    sys.exit(main())
