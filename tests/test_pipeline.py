"""The main job end to end on a tiny configuration: every stage runs, a second run skips them
all, and a stage whose record is missing (an interrupted run) is redone with what follows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.pipeline import main

pytest.importorskip("onnxruntime")


def test_pipeline_runs_then_resumes_without_redoing_finished_stages(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["--out", str(run), "--image-size", "32", "--teacher", "tiny_resnet",
            "--student", "tiny_mobilenet", "--teacher-epochs", "1", "--student-epochs", "1",
            "--batch-size", "32", "--synth-images", "300", "--formats", "onnx",
            "--calib-samples", "16", "--threads", "1", "--bench-runs", "3", "--device", "cpu"]
    rc = main(args)
    results = json.loads((run / "benchmark" / "results.json").read_text())
    assert rc == (0 if results["gate"]["passed"] else 1)
    report = (run / "report.md").read_text()
    for row in ("float_teacher_tiny_resnet", "float_student_tiny_mobilenet",
                "tiny_mobilenet_onnx_fp32", "tiny_mobilenet_onnx_int8"):
        assert f"| {row} |" in report
    stages = ("data", "teacher", "student", "export", "benchmark")
    assert all((run / "stages" / f"{s}.json").is_file() for s in stages)
    first = capsys.readouterr().out
    assert all(f"[{s}] done in" in first for s in stages)

    kept = {p: p.stat().st_mtime_ns for p in (run / "teacher" / "best.pth",
                                              run / "student" / "best.pth")}
    assert main(args) == rc
    again = capsys.readouterr().out
    assert all(f"[{s}] up to date, skipped" in again for s in stages)

    (run / "stages" / "export.json").unlink()  # as if killed while exporting
    assert main(args) == rc
    resumed = capsys.readouterr().out
    assert all(f"[{s}] up to date, skipped" in resumed for s in ("data", "teacher", "student"))
    assert "[export] done in" in resumed and "[benchmark] done in" in resumed
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
