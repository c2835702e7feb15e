"""Adding a format is one exporter and one runner, registered from a single file.

This file alone adds ``onnx_fp16`` (ONNX with float16 weights and float32 I/O, converted from the
fp32 ONNX export) and its runner; the library entry point exports it, the manifest lists it, its
runner runs it, and the benchmark harness scores and gates it. No other file knows about it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bench_support import SIZE, holdout_inputs, student_checkpoint

from exporters import EXPORTERS, register_exporter
from exporters.base import (
    INPUT_NAME,
    METADATA_KEY,
    Artifact,
    ExportSettings,
    Stopwatch,
    input_shape,
    io_spec,
    logits_spec,
    staging_dir,
)
from kd_core.checkpoint import load_model
from kd_core.data.transforms import Preprocessing
from kd_core.deploy import load_manifest
from runtimes import RUNTIMES, load_runner, register_runtime
from runtimes.onnx import OnnxRunner

FORMAT = "onnx_fp16"


def read_metadata(path: Path) -> dict[str, Any] | None:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return dict(json.loads(props[METADATA_KEY])) if METADATA_KEY in props else None


def export(model: Any, example_inputs: tuple[Any, ...], out_dir: Path,
           cfg: ExportSettings) -> list[Artifact]:
    """The fp32 ONNX export with every float32 weight turned into float16."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from exporters.finish import Build, export_each, finish
    from exporters.onnx import export_onnx

    def one(precision: str) -> Artifact:
        clock = Stopwatch()
        with staging_dir(out_dir) as stage:
            export_onnx(model, example_inputs, stage / "fp32.onnx")
            proto = convert_float_to_float16(onnx.load(str(stage / "fp32.onnx")),
                                             keep_io_types=True)

        def write(tmp: Path, meta: dict[str, Any]) -> None:
            onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
            onnx.save(proto, str(tmp))

        build = Build(write=write, reference=model, output=logits_spec(cfg),
                      input=io_spec(INPUT_NAME, input_shape(cfg, "NCHW"), "float32", "NCHW"),
                      embedded=f"metadata_props {METADATA_KEY!r}")
        return finish(FORMAT, precision, cfg, out_dir, clock, build)

    return export_each(FORMAT, cfg, one)


class Fp16OnnxRunner(OnnxRunner):
    """ONNX Runtime runs the float16 graph as it is (float32 in and out)."""


@pytest.fixture
def toy_format() -> Iterator[None]:
    register_exporter(FORMAT, extension=".fp16.onnx", tools=("onnx", "onnxruntime"),
                      precisions={"fp32": ("fp16",)}, needs_calibration=(),
                      read_metadata=read_metadata, cost=5.0)(export)
    register_runtime(FORMAT, "ONNX Runtime (fp16 weights)")(Fp16OnnxRunner)
    yield
    EXPORTERS.pop(FORMAT)
    RUNTIMES.pop(FORMAT)


def test_a_format_registered_from_one_file_is_exported_run_benchmarked_and_gated(
        toy_format: None, synth_prepared: Path, tmp_path: Path) -> None:
    import onnx

    from benchmarks.outputs import save_results
    from benchmarks.run import BenchConfig, run_benchmarks
    from exporters.run import ExportOptions, export_checkpoint
    from kd_core.deploy import gate_status, read_verdicts

    student = student_checkpoint(tmp_path / "student.pth", synth_prepared)
    out = tmp_path / "export"
    result = export_checkpoint(student, out, ExportOptions(
        formats=(FORMAT, "onnx"), precisions=("fp32",), jobs=1))
    assert result.ok, result.failures
    name = f"tiny_mobilenet_{FORMAT}_fp16"
    entry = load_manifest(out).entry(name)  # listed, and the manifest reads back strictly
    assert entry.path == f"{name}.fp16.onnx" and entry.file(out).is_file()
    assert entry.verification is not None and entry.verification["images"] > 0
    assert read_metadata(entry.file(out))["name"] == name  # type: ignore[index]
    weights = onnx.load(str(entry.file(out))).graph.initializer
    assert any(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)

    x, _ = holdout_inputs(synth_prepared, Preprocessing(size=SIZE))
    model, _ = load_model(student)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).double().numpy()
    got = load_runner(entry, out).predict(x)
    assert np.abs(got - want).max() <= 0.02 * max(1.0, float(np.abs(want).max()))
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95

    cfg = BenchConfig(artifacts=str(out), student_ckpt=str(student),
                      data_dir=str(synth_prepared), latency=False, bootstrap=50,
                      out=str(tmp_path / "bench"))
    results = run_benchmarks(cfg)
    row = next(r for r in results.rows if r["name"] == name)
    assert row["status"] == "ok" and row["runtime"].startswith("ONNX Runtime")
    assert abs(row["accuracy"]["roc_auc_delta_vs_student"]) < 0.01
    assert results.gate is not None and results.gate.passed and name in results.gate.checked
    save_results(results, cfg)  # the verdict goes to gate.json, bound to the file's sha256
    assert gate_status(entry, read_verdicts(out)) == "pass"
