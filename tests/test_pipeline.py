"""The main job end to end on a tiny configuration: every stage runs, a second run skips them
all, a damaged export folder or a changed output is noticed and redone (with what follows it), a
Ctrl-C leaves the finished stages and the rerun resumes; bad arguments fail before any stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.pipeline import main

pytest.importorskip("onnxruntime")

STAGES = ("data", "teacher", "student", "export", "benchmark")
TINY = ["--image-size", "32", "--teacher", "tiny_resnet", "--student", "tiny_mobilenet",
        "--teacher-epochs", "1", "--student-epochs", "1", "--batch-size", "32",
        "--synth-images", "300", "--formats", "onnx", "--calib-samples", "32", "--threads", "1",
        "--bench-runs", "3", "--device", "cpu"]


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    if flag in args:
        i = args.index(flag)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flag, value]


def ran(out: str) -> set[str]:
    return {s for s in STAGES if f"[{s}] done in" in out}


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--formats", "onnx,tensorrt", "--formats: unknown format(s) tensorrt; known formats: tflite,"),
    ("--teacher", "resnet1000", "--teacher: unknown resnet1000; choose from "),
    ("--student", "nope", "--student: unknown nope; choose from "),
    ("--threads", "0", "--threads must list thread counts >= 1, got 0"),
    ("--bench-runs", "0", "--bench-runs must be >= 1, got 0"),
    ("--qat-steps", "-1", "--qat-steps must be >= 0, got -1"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--image-size", "4", "--image-size must be an integer from 8 to"),  # the trainer's own rule
    ("--pretrained", "weights.pt", "--pretrained weights.pt: neither none, imagenet nor a file"),
    ("--data-dir", "/nonexistent/ham", "--data-dir /nonexistent/ham: not a HAM10000 folder"),
])
def test_bad_arguments_fail_before_any_stage(tmp_path: Path, flag: str, value: str,
                                             message: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    run = tmp_path / "run"
    assert main(with_flag([*TINY, "--out", str(run)], flag, value)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert captured.out == "" and not run.exists()  # nothing ran, nothing was written


def test_a_missing_gpu_fails_before_any_stage(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(with_flag([*TINY, "--out", str(tmp_path / "run")], "--device", "cuda")) == 2
    assert capsys.readouterr().err == ("error: --device cuda: no CUDA GPU is available here; "
                                       "use --device cpu (or auto)\n")
    assert not (tmp_path / "run").exists()


def test_an_unwritable_run_folder_fails_before_any_stage(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    assert main([*TINY, "--out", str(blocker / "run")]) == 2
    assert capsys.readouterr().err == (f"error: --out {blocker / 'run'}: {blocker} is a file, "
                                       "not a folder\n")
    assert blocker.read_text() == "keep"


def test_pipeline_runs_skips_repairs_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = [*TINY, "--out", str(run)]
    rc = main(args)
    results = json.loads((run / "benchmark" / "results.json").read_text())
    assert rc == (0 if results["gate"]["passed"] else 1)
    report = (run / "report.md").read_text()
    for row in ("float_teacher_tiny_resnet", "float_student_tiny_mobilenet",
                "tiny_mobilenet_onnx_fp32", "tiny_mobilenet_onnx_int8"):
        assert f"| {row} |" in report
    assert ran(capsys.readouterr().out) == set(STAGES)
    record = json.loads((run / "stages" / "benchmark.json").read_text())
    assert record["result"] == {"passed": rc == 0}  # the typed verdict, not a string
    kept = {p: p.stat().st_mtime_ns for p in (run / "teacher" / "best.pth",
                                              run / "student" / "best.pth")}

    assert main(args) == rc
    again = capsys.readouterr().out
    assert ran(again) == set() and all(f"[{s}] up to date, skipped" in again for s in STAGES)

    # damage the export folder: one INT8 artefact deleted, the fp32 one truncated
    export = run / "export"
    (export / "tiny_mobilenet_onnx_int8.onnx").unlink()
    fp32 = export / "tiny_mobilenet_onnx_fp32.onnx"
    fp32.write_bytes(fp32.read_bytes()[:100])
    from benchmarks.integrity import export_problems

    problems = export_problems(export)  # every artefact against the manifest's sha256
    assert len(problems) == 2 and "differs from the manifest's" in problems[0]
    assert "tiny_mobilenet_onnx_int8.onnx: artefact file missing" in problems[1]
    import exporters.run

    def interrupted(*a: Any, **k: Any) -> Any:  # Ctrl-C while the export is redone
        raise KeyboardInterrupt

    monkeypatch.setattr(exporters.run, "export_checkpoint", interrupted)
    assert main(args) == 130
    cut = capsys.readouterr()
    assert "[export] not up to date: " in cut.out and "tiny_mobilenet_onnx_" in cut.out
    assert cut.err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert not list(run.rglob("*.tmp")) and not (export / "tiny_mobilenet_onnx_int8.onnx").exists()
    monkeypatch.undo()

    assert main(args) == rc
    resumed = capsys.readouterr().out
    assert ran(resumed) == {"export", "benchmark"}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (export / "tiny_mobilenet_onnx_int8.onnx").is_file()

    # an output changed after its stage finished: that stage runs again, nothing else
    results_path = run / "benchmark" / "results.json"
    results_path.write_text(results_path.read_text().replace('"passed": ', '"passed":  '))
    assert main(args) == rc
    assert ran(capsys.readouterr().out) == {"benchmark"}
