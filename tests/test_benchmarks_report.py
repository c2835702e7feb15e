"""The report renders from a hand-made results fixture, deterministically, and rewrites only the
README's marked block."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.report import END, START, caption, deployment_table, main, render_markdown

FIXTURE = Path(__file__).parent / "fixtures" / "results_fixture.json"


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "R"
    out.mkdir()
    shutil.copy(FIXTURE, out / "results.json")
    return out


def test_deployment_table_has_every_row_and_the_gate_verdicts() -> None:
    results = json.loads(FIXTURE.read_text())
    lines = deployment_table(results).splitlines()
    assert lines[0].startswith("| Model | Format | Precision | Runtime | Device | Size (MB) | "
                               "Latency p50 (ms, 1 / 4 threads) | ROC-AUC | ΔROC-AUC vs float "
                               "student | ECE | Gate |")
    assert len(lines) == 2 + len(results["rows"])
    by_name = {(c[1].strip(), c[5].strip().split(":")[0]): c for c in
               (line.split("|") for line in lines[2:])}
    onnx = by_name[("mobilenet_v3_small_onnx_fp32", "host")]
    assert [c.strip() for c in onnx[6:12]] == ["6.15", "3.90 / 1.70", "0.881", "+0.0000",
                                               "0.018", "pass"]
    tflite = by_name[("mobilenet_v3_small_tflite_int8", "host")]
    assert tflite[9].strip() == "-0.0123" and tflite[11].strip() == "FAIL (roc_auc, ece)"
    assert tflite[12].strip() == ("failed (features.0.0 (accuracy), features.4.block.1.0 "
                                  "(speed))")  # the export's repair rung and float sites
    assert onnx[12].strip() == "-"
    assert by_name[("mobilenet_v3_small_coreml_fp16", "host")][11].strip() == \
        "skipped (needs macOS)"
    assert by_name[("float_student_mobilenet_v3_small", "host")][11].strip() == "reference"
    phone = by_name[("mobilenet_v3_small_tflite_int8", "android")]
    assert phone[7].strip() == "- / 3.20" and phone[8].strip() == "0.869"
    assert phone[9].strip() == "-0.0124"


def test_browser_row_follows_the_phone_rows() -> None:
    """benchmarks.browser's row (location browser) is in the deployment table, after the phones',
    with its 1-thread latency, its ROC-AUC against the float student's, and no gate verdict."""
    results = json.loads(FIXTURE.read_text())
    host = next(r for r in results["rows"] if r["name"] == "mobilenet_v3_small_tflite_int8")
    browser = {**host, "name": "mobilenet_v3_small_tflite_int8_float_io",
               "precision": "int8_float_io", "runtime": "LiteRT.js 2.5.3 WASM",
               "device": "Chromium 156 on test CPU", "location": "browser",
               "latency": {"1": {"p50_ms": 4.0, "p90_ms": 4.5, "p99_ms": 5.0, "mean_ms": 4.1,
                                 "runs": 200}}, "accuracy": {"roc_auc": 0.8701, "ece": 0.021}}
    results["rows"].insert(0, browser)  # merged first: still listed after host and phone rows
    lines = deployment_table(results).splitlines()
    assert len(lines) == 2 + len(results["rows"])
    assert "| android: " in lines[-2]
    cells = [c.strip() for c in lines[-1].split("|")[1:-1]]
    assert cells[:5] == ["mobilenet_v3_small_tflite_int8_float_io", "tflite", "int8_float_io",
                         "LiteRT.js 2.5.3 WASM", "browser: Chromium 156 on test CPU"]
    assert cells[6:] == ["4.00 / -", "0.870", "-0.0113", "0.021", "-",  # the same INT8 graph:
                         "failed (features.0.0 (accuracy), features.4.block.1.0 (speed))"]


def test_report_is_deterministic_and_complete(results_dir: Path) -> None:
    logits = np.array([[1, 0], [0, 1], [0.5, 0.2], [0.1, 0.3], [2, 0], [0, 0.1]], dtype=float)
    arrays = {"y_pos": np.array([0, 1, 0, 1, 0, 0]),
              "logits__mobilenet_v3_small_onnx_fp32": logits}
    np.savez(results_dir / "predictions.npz", **arrays)  # type: ignore[arg-type]
    assert main([str(results_dir)]) == 0
    first = {p: (results_dir / p).read_bytes() for p in ("results.md", "results.csv")}
    assert main([str(results_dir)]) == 0
    assert first == {p: (results_dir / p).read_bytes() for p in ("results.md", "results.csv")}
    md = first["results.md"].decode()
    assert "FAIL mobilenet_v3_small_tflite_int8: roc_auc delta -0.0123 exceeds 0.005" in md
    assert "SKIP mobilenet_v3_small_coreml_fp16: needs macOS" in md
    assert "gate FAILED" in md and "Pixel 8" in md
    assert md == render_markdown(json.loads(FIXTURE.read_text()))
    header = first["results.csv"].decode().splitlines()[0].split(",")
    assert header[:4] == ["name", "role", "format", "precision"] and "accuracy.roc_auc" in header
    assert len(first["results.csv"].decode().splitlines()) == 7
    for png in ("auc_size_latency.png", "reliability.png", "roc.png"):
        assert (results_dir / "plots" / png).stat().st_size > 1000


def test_update_readme_replaces_only_the_marked_block(results_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    before, after = "# EdgeKD\n\nIntro.\n\n## Deployment metrics\n\n", "\n## Next\n\nMore.\n"
    readme.write_text(f"{before}{START}\nold hand-typed table\n{END}{after}")
    assert main([str(results_dir), "--update-readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(before + START) and text.endswith(END + after)
    assert "old hand-typed table" not in text
    table = deployment_table(json.loads(FIXTURE.read_text()))
    assert table in text
    assert caption(json.loads(FIXTURE.read_text())) in text and " split of `" in text
    once = readme.read_bytes()
    assert main([str(results_dir), "--update-readme", str(readme)]) == 0
    assert readme.read_bytes() == once
    assert "already up to date" in capsys.readouterr().out


def test_bad_inputs_exit_2_naming_the_file(tmp_path: Path, results_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere/results.json: results not found" in capsys.readouterr().err
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main([str(results_dir), "--update-readme", str(readme)]) == 2
    assert "markers" in capsys.readouterr().err and readme.read_text() == "# no markers\n"
    (results_dir / "results.json").write_text("[1, 2]")
    assert main([str(results_dir)]) == 2
    assert "not a results file" in capsys.readouterr().err
    (results_dir / "results.json").write_text('{"meta": {}, "rows": [{"ece": NaN}]}')
    assert main([str(results_dir)]) == 2  # strict JSON: NaN is not a number here
    err = capsys.readouterr().err
    assert "results.json: cannot read results (NaN is not valid JSON)" in err
    assert err.count("\n") == 1
