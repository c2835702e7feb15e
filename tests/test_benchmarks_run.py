"""The harness end to end on the synthetic dataset: a faithful ONNX export passes the gate, one
exported from weight-perturbed weights fails it by name; latency runs in isolated processes;
bad input exits 2 naming the file."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

import pytest
from bench_support import add_renamed, export, perturbed_checkpoint, student_checkpoint

from benchmarks.latency import LatencySettings, measure_isolated, time_entry
from benchmarks.run import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Student (tiny_mobilenet, 32 px), teacher (tiny_resnet, 40 px: its own preprocessing),
    the student's ONNX fp32 export, and one exported from perturbed student weights."""
    tmp = tmp_path_factory.mktemp("bench")
    student = student_checkpoint(tmp / "student.pth", synth_prepared)
    teacher = student_checkpoint(tmp / "teacher.pth", synth_prepared, "tiny_resnet", 40, seed=3)
    good = export(student, tmp / "good", ("onnx",))
    noisy = perturbed_checkpoint(student, tmp / "noisy.pth")
    return {"student": student, "teacher": teacher, "good": good,
            "noisy": export(noisy, tmp / "noisy", ("onnx",))}


def argv(models: dict[str, Path], artifacts: Path, data: Path, out: Path, *extra: str
         ) -> list[str]:
    return ["--artifacts", str(artifacts), "--student-ckpt", str(models["student"]),
            "--teacher-ckpt", str(models["teacher"]), "--data-dir", str(data), "--out", str(out),
            "--bootstrap", "200", *extra]


def rows(out: Path) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}


def test_faithful_artifact_passes_with_isolated_latency(models: dict[str, Path],
                                                        synth_prepared: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "R"
    code = main(argv(models, models["good"], synth_prepared, out, "--threads", "1",
                     "--runs", "7", "--warmup", "2"))
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["gate"]["passed"] and data["gate"]["checked"] == ["tiny_mobilenet_onnx_fp32"]
    got = rows(out)
    assert list(got) == ["float_teacher_tiny_resnet", "float_student_tiny_mobilenet",
                         "tiny_mobilenet_onnx_fp32"]
    onnx = got["tiny_mobilenet_onnx_fp32"]
    acc = onnx["accuracy"]
    holdout = json.loads((synth_prepared / "split_metadata.json").read_text())["counts"]["holdout"]
    assert acc["n"] == data["meta"]["n"] == holdout["images"]
    assert acc["decision_agreement_vs_student"] == 1.0 and acc["max_abs_dp_vs_student"] < 1e-5
    assert acc["roc_auc_delta_vs_student"] == pytest.approx(0.0, abs=1e-9)
    assert "decision_agreement_vs_teacher" in acc and acc["argmax_agreement_vs_teacher"] is not None
    for row in got.values():
        assert row["status"] == "ok" and row["location"] == "host"
        assert set(row["latency"]) == {"1"}
        for lat in row["latency"].values():
            assert lat["runs"] == 7 and 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert row["load_ms"] > 0 and row["peak_memory_mb"] > 10
    assert onnx["peak_memory_mb"] < got["float_student_tiny_mobilenet"]["peak_memory_mb"]
    for name in ("results.csv", "results.md", "config.json", "predictions.npz",
                 "plots/auc_size_latency.png", "plots/reliability.png", "plots/roc.png"):
        assert (out / name).is_file(), name


def test_latency_runs_one_fresh_process_per_thread_count(models: dict[str, Path]) -> None:
    entry = json.loads((models["good"] / "manifest.json").read_text())["artifacts"][0]
    got = time_entry(entry, models["good"], (1, 2), LatencySettings(runs=9, warmup=3))
    assert set(got["latency"]) == {"1", "2"} and "latency_error" not in got
    for lat in got["latency"].values():
        assert lat["runs"] == 9 and lat["warmup"] == 3
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert got["load_ms"] > 0 and 10 < got["peak_memory_mb"] < 400  # numpy + ORT, no torch
    one = measure_isolated(entry, models["good"], 2, LatencySettings(runs=3, warmup=1))
    assert one["threads"] == 2 and one["runtime"].startswith("ONNX Runtime")
    broken = measure_isolated({**entry, "path": "gone.onnx"}, models["good"], 1,
                              LatencySettings(runs=3, warmup=1))
    assert broken["status"].startswith("error: RuntimeLoadError")
    assert "gone.onnx: artefact not found" in broken["status"]


def test_perturbed_artifact_fails_the_gate_by_name(models: dict[str, Path], synth_prepared: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    arts = tmp_path / "arts"
    shutil.copytree(models["good"], arts)
    name = add_renamed(arts, models["noisy"], "_perturbed")
    out = tmp_path / "R"
    assert main(argv(models, arts, synth_prepared, out, "--no-latency")) == 1
    err = capsys.readouterr().err
    assert f"FAIL {name}: roc_auc delta" in err and "FAIL tiny_mobilenet_onnx_fp32:" not in err
    data = json.loads((out / "results.json").read_text())
    assert {v["name"] for v in data["gate"]["violations"]} == {name}
    assert data["meta"]["warnings"], "an artefact from another checkpoint is flagged"
    delta = rows(out)[name]["accuracy"]["roc_auc_delta_vs_student"]
    assert abs(delta) > 0.005
    assert "FAIL (roc_auc" in (out / "results.md").read_text()
    # the same results pass when the tolerance allows the drift, or with --no-gate
    loose = ["--no-latency", "--max-auc-delta", "1", "--min-sensitivity", "0",
             "--max-ece-delta", "1"]
    assert main(argv(models, arts, synth_prepared, tmp_path / "R2", *loose)) == 0
    assert main(argv(models, arts, synth_prepared, tmp_path / "R3", "--no-latency",
                     "--no-gate")) == 0


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML predicts on macOS")
def test_coreml_is_skipped_and_phone_rows_are_kept(models: dict[str, Path], synth_prepared: Path,
                                                   tmp_path: Path) -> None:
    arts = tmp_path / "arts"
    shutil.copytree(models["good"], arts)
    (arts / "m.mlpackage").mkdir()
    manifest = json.loads((arts / "manifest.json").read_text())
    entry = manifest["artifacts"][0]
    manifest["artifacts"].append({**entry, "name": "tiny_mobilenet_coreml_fp16", "format": "coreml",
                                  "precision": "fp16", "path": "m.mlpackage"})
    (arts / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "R"
    out.mkdir()
    phone = {"name": "tiny_mobilenet_onnx_fp32", "format": "onnx", "precision": "fp32",
             "runtime": "ONNX Runtime perf_test", "device": "Pixel", "location": "android",
             "size_bytes": 1, "status": "ok", "latency": {}, "load_ms": None,
             "peak_memory_mb": None}
    (out / "results.json").write_text(json.dumps({"meta": {}, "rows": [phone]}))
    assert main(argv(models, arts, synth_prepared, out, "--no-latency", "--limit", "40")) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["n"] == 40
    assert data["gate"]["skipped"] == [{"name": "tiny_mobilenet_coreml_fp16",
                                        "reason": "needs macOS"}]
    assert data["rows"][-1] == phone
    assert "skipped (needs macOS)" in (out / "results.md").read_text()


def test_bad_input_exits_2_naming_the_file(models: dict[str, Path], synth_prepared: Path,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "R"
    assert main(argv(models, tmp_path / "none", synth_prepared, out)) == 2
    assert "none/manifest.json: manifest not found" in capsys.readouterr().err
    bad = {**models, "student": tmp_path / "missing.pth"}
    assert main(argv(bad, models["good"], synth_prepared, out)) == 2
    assert "missing.pth: checkpoint not found" in capsys.readouterr().err
    assert main(argv(models, models["good"], tmp_path / "nodata", out)) == 2
    assert "nodata: neither a HAM10000 folder" in capsys.readouterr().err
    assert not out.exists()
