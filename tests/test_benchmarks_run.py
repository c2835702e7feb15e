"""The harness end to end on the synthetic dataset: a faithful ONNX export passes the gate and
its verdict is recorded in gate.json; one exported from weight-perturbed weights fails it by
name; a modified artefact is a failed row; latency runs in isolated processes; a gate that
checked nothing fails."""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench_support import add_renamed, export, perturbed_checkpoint, student_checkpoint

from benchmarks.latency import LatencySettings, measure_isolated, time_entry
from benchmarks.run import main
from kd_core.deploy import load_manifest, read_verdicts, write_manifest
from kd_core.io import sha256_file


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


def copy_export(models: dict[str, Path], tmp_path: Path) -> Path:
    arts = tmp_path / "arts"
    shutil.copytree(models["good"], arts)
    return arts


def test_faithful_artifact_passes_with_isolated_latency(models: dict[str, Path],
                                                        synth_prepared: Path,
                                                        tmp_path: Path) -> None:
    arts, out = copy_export(models, tmp_path), tmp_path / "R"
    code = main(argv(models, arts, synth_prepared, out, "--threads", "1",
                     "--runs", "7", "--warmup", "2"))
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["gate"]["passed"] and data["gate"]["checked"] == ["tiny_mobilenet_onnx_fp32"]
    assert data["gate"]["tolerances"]["min_sensitivity"] == pytest.approx(0.93)  # 0.95 - 0.02
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
            assert lat["runs"] >= 7 and 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert row["load_ms"] > 0 and row["peak_memory_mb"] > 10
    assert onnx["peak_memory_mb"] < got["float_student_tiny_mobilenet"]["peak_memory_mb"]
    for name in ("results.csv", "results.md", "config.json", "predictions.npz",
                 "plots/auc_size_latency.png", "plots/reliability.png", "plots/roc.png"):
        assert (out / name).is_file(), name
    verdict = read_verdicts(arts)["tiny_mobilenet_onnx_fp32"]
    assert verdict.verdict == "pass" and verdict.reasons == ()
    assert verdict.sha256 == sha256_file(arts / "tiny_mobilenet_onnx_fp32.onnx")
    assert (verdict.split, verdict.n, verdict.data) == ("holdout", holdout["images"],
                                                        synth_prepared.name)
    assert verdict.results == str(out / "results.json")


def test_latency_runs_one_fresh_process_per_thread_count(models: dict[str, Path]) -> None:
    entry = load_manifest(models["good"]).artifacts[0]
    got = time_entry(entry, models["good"], (1, 2), LatencySettings(runs=9, warmup=3))
    assert set(got["latency"]) == {"1", "2"} and "latency_error" not in got
    for lat in got["latency"].values():
        assert lat["runs"] >= 9 and lat["warmup"] >= 3  # counts are floors, as the seconds are
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert got["load_ms"] > 0 and 10 < got["peak_memory_mb"] < 400  # numpy + ORT, no torch
    one = measure_isolated(entry, models["good"], 2, LatencySettings(runs=3, warmup=1))
    assert one["threads"] == 2 and one["runtime"].startswith("ONNX Runtime")
    # Counts, or time floors (benchmark_model's way), whichever is longer: this tiny model
    # runs in microseconds, so 0.2 s of timing takes far more than 3 runs.
    counted = measure_isolated(entry, models["good"], 1, LatencySettings(
        runs=3, warmup=2, min_seconds=0.0, warmup_seconds=0.0))
    assert (counted["runs"], counted["warmup"]) == (3, 2)
    floored = measure_isolated(entry, models["good"], 1, LatencySettings(
        runs=3, warmup=2, min_seconds=0.2, warmup_seconds=0.1))
    assert floored["runs"] > 3 and floored["warmup"] > 2
    assert floored["runs"] * floored["mean_ms"] >= 200.0
    broken = measure_isolated(replace(entry, path="gone.onnx"), models["good"], 1,
                              LatencySettings(runs=3, warmup=1))
    assert broken["status"].startswith("error: RuntimeLoadError")
    assert "gone.onnx: artefact not found" in broken["status"]


def test_perturbed_artifact_fails_the_gate_by_name(models: dict[str, Path], synth_prepared: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    arts = copy_export(models, tmp_path)
    name = add_renamed(arts, models["noisy"], "_perturbed")
    out = tmp_path / "R"
    assert main(argv(models, arts, synth_prepared, out, "--no-latency")) == 1
    err = capsys.readouterr().err
    assert f"FAIL {name}: roc_auc delta" in err and "FAIL tiny_mobilenet_onnx_fp32:" not in err
    assert f"warning: {name}: exported from another checkpoint" in err  # on the console too
    data = json.loads((out / "results.json").read_text())
    assert {v["name"] for v in data["gate"]["violations"]} == {name}
    delta = rows(out)[name]["accuracy"]["roc_auc_delta_vs_student"]
    assert abs(delta) > 0.005
    assert "FAIL (roc_auc" in (out / "results.md").read_text()
    verdicts = read_verdicts(arts)
    assert verdicts[name].verdict == "fail" and "roc_auc delta" in verdicts[name].reasons[0]
    assert verdicts["tiny_mobilenet_onnx_fp32"].verdict == "pass"
    # the same results pass when the tolerance allows the drift, or with --no-gate
    loose = ["--no-latency", "--max-auc-delta", "1", "--min-sensitivity", "0",
             "--max-ece-delta", "1"]
    assert main(argv(models, arts, synth_prepared, tmp_path / "R2", *loose)) == 0
    assert main(argv(models, arts, synth_prepared, tmp_path / "R3", "--no-latency",
                     "--no-gate")) == 0


def test_a_modified_or_missing_artifact_is_a_failed_row(models: dict[str, Path],
                                                        synth_prepared: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    arts = copy_export(models, tmp_path)
    name = add_renamed(arts, models["good"], "_copy")
    onnx = arts / "tiny_mobilenet_onnx_fp32.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")  # still loads in ONNX Runtime: sha256 decides
    (arts / load_manifest(arts).entry(name).path).unlink()
    out = tmp_path / "R"
    assert main(argv(models, arts, synth_prepared, out, "--no-latency")) == 1
    err = capsys.readouterr().err
    assert "FAIL tiny_mobilenet_onnx_fp32: did not run (error: " in err
    assert "differs from the manifest's" in err and f"FAIL {name}: did not run" in err
    got = rows(out)
    assert got["tiny_mobilenet_onnx_fp32"]["accuracy"] is None
    assert "artefact file missing" in got[name]["status"]
    verdicts = read_verdicts(arts)
    assert verdicts["tiny_mobilenet_onnx_fp32"].verdict == "fail"
    assert verdicts["tiny_mobilenet_onnx_fp32"].sha256 == sha256_file(onnx)  # the file scored


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML predicts on macOS")
def test_coreml_is_skipped_phone_rows_are_kept_and_an_empty_gate_fails(
        models: dict[str, Path], synth_prepared: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    arts = copy_export(models, tmp_path)
    (arts / "m.mlpackage").mkdir()
    (arts / "m.mlpackage" / "Manifest.json").write_text("{}")
    manifest = load_manifest(arts)
    coreml = replace(manifest.artifacts[0], name="tiny_mobilenet_coreml_fp16", format="coreml",
                     precision="fp16", path="m.mlpackage",
                     sha256=sha256_file(arts / "m.mlpackage"))
    write_manifest(replace(manifest, artifacts=(*manifest.artifacts, coreml)), arts)
    out = tmp_path / "R"
    out.mkdir()
    phone = {"name": "tiny_mobilenet_onnx_fp32", "format": "onnx", "precision": "fp32",
             "runtime": "ONNX Runtime perf_test", "device": "Pixel", "location": "android",
             "size_bytes": 1, "status": "ok", "latency": {}, "load_ms": None,
             "peak_memory_mb": None}
    browser = {**phone, "runtime": "LiteRT.js 2.5.3 WASM", "device": "Chromium 156",
               "location": "browser"}  # benchmarks.browser's row
    (out / "results.json").write_text(json.dumps({"meta": {"browser": {"n": 2}},
                                                  "rows": [phone, browser]}))
    assert main(argv(models, arts, synth_prepared, out, "--no-latency", "--limit", "40")) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["n"] == 40
    assert data["gate"]["skipped"] == [{"name": "tiny_mobilenet_coreml_fp16",
                                        "reason": "needs macOS"}]
    assert data["rows"][-2:] == [phone, browser] and data["meta"]["browser"] == {"n": 2}
    assert "skipped (needs macOS)" in (out / "results.md").read_text()
    assert set(read_verdicts(arts)) == {"tiny_mobilenet_onnx_fp32"}  # skipped: not gated
    capsys.readouterr()
    # only Core ML selected: nothing can be checked here, so the gate fails
    assert main(argv(models, arts, synth_prepared, tmp_path / "R2", "--no-latency",
                     "--formats", "coreml")) == 1
    err = capsys.readouterr().err
    assert "gate FAILED: 0 artefact(s) checked" in err and "no artefact was checked" in err


def test_ctrl_c_keeps_the_previous_results_and_a_rerun_completes(
        models: dict[str, Path], synth_prepared: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import benchmarks.latency

    arts, out = copy_export(models, tmp_path), tmp_path / "R"
    out.mkdir()
    (out / "results.json").write_text('{"meta": {}, "rows": []}\n')
    before_arts = sorted(p.name for p in arts.iterdir())
    temp_before = set(Path(tempfile.gettempdir()).glob("edgekd-latency-*"))

    def interrupted(*args: Any, **kwargs: Any) -> Any:  # Ctrl-C while timing
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmarks.latency, "time_entry", interrupted)
    args = argv(models, arts, synth_prepared, out, "--threads", "1", "--runs", "2",
                "--warmup", "0")
    assert main(args) == 130
    err = capsys.readouterr().err  # progress bars, then the one line
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert [p.name for p in out.iterdir()] == ["results.json"]  # nothing new, nothing half-written
    assert (out / "results.json").read_text() == '{"meta": {}, "rows": []}\n'
    assert sorted(p.name for p in arts.iterdir()) == before_arts  # no gate.json, no temp files
    assert set(Path(tempfile.gettempdir()).glob("edgekd-latency-*")) == temp_before
    monkeypatch.undo()
    assert main(args) == 0 and read_verdicts(arts)["tiny_mobilenet_onnx_fp32"].verdict == "pass"
