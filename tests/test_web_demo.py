"""The web demo end to end: the INT8 TFLite artefact with float32 I/O (exporters.int8.float_io,
finished by exporters.finish), syncing it into the page (exporters.sync_demos), and the page
itself in headless Chromium running LiteRT.js against host LiteRT (benchmarks.browser), on a tiny
model."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import web_support as ws
from exporters_support import smooth_images, write_checkpoint, write_image_folder

from exporters.tflite import read_metadata
from kd_core.data.transforms import Preprocessing, normalize
from kd_core.deploy import GateVerdict, load_manifest, record_verdicts
from kd_core.io import loads_json, sha256_file
from runtimes import load_runner

SIZE = 32
NAME = "tiny_mobilenet_tflite_int8_float_io"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model exported to TFLite INT8 (and so its float-I/O variant)."""
    import torch

    from exporters.calibration_data import load_calibration
    from exporters.job import load_settings
    from exporters.run import export_model

    root = tmp_path_factory.mktemp("web_export")
    ckpt = write_checkpoint(root / "tiny.pth", size=SIZE, steps=60)
    folder = write_image_folder(root / "calib", n=24, size=48, seed=5)
    model, cfg = load_settings(ckpt, ("int8",))
    cfg = replace(cfg, calibration=load_calibration(folder, cfg.preprocessing, cfg.labels, n=24,
                                                    seed=3, allow_few=True))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = export_model(model, cfg, root / "out", ("tflite",))
    finally:
        torch.set_num_threads(threads)
    assert result.ok, result.failures
    return root / "out"


def _tflite(path: Path) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def _op_names(model: Any) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = model.operatorCodes
    return [names[max(codes[op.opcodeIndex].builtinCode, codes[op.opcodeIndex]
                      .deprecatedBuiltinCode)] for op in model.subgraphs[0].operators]


def test_float_io_entry_describes_float_tensors(export: Path) -> None:
    manifest = load_manifest(export)
    int8, web = manifest.entry("tiny_mobilenet_tflite_int8"), manifest.entry(NAME)
    assert (web.format, web.precision, web.path) == ("tflite", "int8_float_io", f"{NAME}.tflite")
    assert web.input["dtype"] == web.output["dtype"] == "float32"
    assert web.input["quantization"] is None and web.output["quantization"] is None
    assert web.input["shape"] == int8.input["shape"] == [1, SIZE, SIZE, 3]
    assert web.input["layout"] == "NHWC" and web.output["kind"] == "logits"
    assert web.decision == int8.decision and web.preprocessing == int8.preprocessing
    assert web.quantization_recipe == {**(int8.quantization_recipe or {}),
                                       "io": "float32, from tiny_mobilenet_tflite_int8"}
    assert web.sha256 == sha256_file(web.file(export))
    meta = read_metadata(web.file(export))
    assert meta is not None
    assert (meta["name"], meta["precision"], meta["input"]) == (NAME, web.precision, web.input)
    step = int8.output["quantization"]["scale"]
    check = web.verification
    assert check is not None and check["runtime"].startswith("LiteRT ")
    assert int8.verification is not None and check["images"] == int8.verification["images"] > 0
    # against the int8 artefact's torch reference, as close as the int8 artefact itself
    assert abs(check["max_abs_diff"] - int8.verification["max_abs_diff"]) <= 4 * step
    assert check["vs_int8"]["max_abs_diff"] <= 4 * step
    assert web.graph_report is not None and "error" not in web.graph_report


def test_float_io_is_the_int8_graph_with_quantize_and_dequantize(export: Path) -> None:
    int8 = _tflite(export / "tiny_mobilenet_tflite_int8.tflite")
    web = _tflite(export / f"{NAME}.tflite")
    assert _op_names(web) == ["QUANTIZE", *_op_names(int8), "DEQUANTIZE"]
    g8, gw = int8.subgraphs[0], web.subgraphs[0]
    old_in, old_out = g8.tensors[g8.inputs[0]], g8.tensors[g8.outputs[0]]
    new_in, new_out = gw.tensors[gw.inputs[0]], gw.tensors[gw.outputs[0]]
    assert (new_in.name, new_out.name) == (old_in.name, old_out.name)
    quantize, dequantize = gw.operators[0], gw.operators[-1]
    assert gw.tensors[quantize.outputs[0]].quantization.scale == old_in.quantization.scale
    assert gw.tensors[dequantize.inputs[0]].quantization.zeroPoint == \
        old_out.quantization.zeroPoint
    for a, b in zip(g8.operators, gw.operators[1:-1], strict=True):  # weights untouched
        for i, j in zip(a.inputs, b.inputs, strict=True):
            if i < 0 or int8.buffers[g8.tensors[i].buffer].data is None:
                continue
            assert np.array_equal(int8.buffers[g8.tensors[i].buffer].data,
                                  web.buffers[gw.tensors[j].buffer].data)


def test_float_io_runs_like_int8_in_host_litert(export: Path) -> None:
    manifest = load_manifest(export)
    x = normalize(smooth_images(24, SIZE, seed=11), Preprocessing(size=SIZE))
    int8 = load_runner(manifest.entry("tiny_mobilenet_tflite_int8"), export).predict(x)
    web = load_runner(manifest.entry(NAME), export).predict(x)
    step = manifest.entry("tiny_mobilenet_tflite_int8").output["quantization"]["scale"]
    assert np.ptp(int8) > 10 * step  # the model is decisive, so the comparison means something
    assert np.abs(web - int8).max() <= 4 * step


def test_float_io_leaves_float32_io_as_it_is(export: Path) -> None:
    """A graph float32 at both ends already (a precision plan keeping its first and last layers
    float) is returned unchanged; its float32 sides need no QUANTIZE/DEQUANTIZE."""
    from exporters.int8.float_io import to_float_io

    web = (export / f"{NAME}.tflite").read_bytes()
    assert to_float_io(web) == web


def test_sync_copies_the_gated_web_artefact_and_a_trimmed_manifest(
        export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exporters.sync_demos import main

    gated = shutil.copytree(export, tmp_path / "export")
    dest = tmp_path / "model"
    web_only = [str(gated), "--no-android", "--no-ios", "--web", str(dest)]
    assert main(web_only) == 2  # never benchmarked: refused
    assert "gate status 'not run'" in capsys.readouterr().err and not dest.exists()
    entry = load_manifest(gated).entry(NAME)
    record_verdicts(gated, [GateVerdict(NAME, "pass", entry.sha256 or "", "2026-11-29T10:00:00",
                                        "synth", "holdout", 64)])
    assert main([*web_only, "--web-artifact", "tiny_mobilenet_tflite_int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "takes float32, int32, uint8 tensors" in err
    assert main(web_only) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", f"{NAME}.tflite"]
    trimmed = load_manifest(dest)
    (synced,) = trimmed.artifacts
    assert synced.name == NAME and synced.path == f"{NAME}.tflite"
    assert sha256_file(dest / synced.path) == synced.sha256 == entry.sha256
    assert synced.extra["gate"]["status"] == "pass"
    assert trimmed.extra["synced_from"] == {"dir": str(gated), "artifact": NAME}


def test_browser_cli_checks_its_input_first(export: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.browser import main

    common = ["--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    assert main(["--artifacts", str(tmp_path / "none"), *common]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert main(["--artifacts", str(export), "--limit", "1", *common]) == 2
    assert "--limit must be >= 2" in capsys.readouterr().err
    ws.browser_or_skip()
    assert main(["--artifacts", str(export), "--chromium", str(tmp_path / "chr"), *common]) == 2
    assert f"{tmp_path / 'chr'}: not found" in capsys.readouterr().err


def test_browser_matches_host_litert(export: Path, synth_prepared: Path, tmp_path: Path) -> None:
    """The page in Chromium (LiteRT.js WASM) vs host LiteRT on the same JPEG files: the browser's
    decoding, the JS preprocessing and the WASM kernels give the host's logits."""
    from benchmarks.browser import BrowserConfig, run_browser, save_run
    from kd_core.io import write_json

    ws.browser_or_skip()
    out = tmp_path / "bench"
    write_json(out / "results.json", {"meta": {"host": "x"}, "rows": [
        {"name": NAME, "location": "host", "runtime": "LiteRT", "device": "cpu"}]})
    cfg = BrowserConfig(str(export), str(synth_prepared), str(out), bootstrap=50)
    run = run_browser(cfg)
    save_run(run, out)
    acc = run.row["accuracy"]
    n = run.row["images"]
    assert n >= 20 and run.violations == ()
    assert acc["decision_agreement_vs_host"] == 1.0 and acc["max_abs_dp_vs_host"] <= 1e-3
    assert acc["identical_pixels_vs_host"] == n  # Chromium decodes the JPEGs as PIL does
    assert acc["max_abs_dp_js_vs_python"] <= 1e-15
    assert acc["decisions_differing_js_vs_python"] == 0
    assert np.ptp(run.arrays["browser_logits"]) > 1  # decisive outputs, a meaningful check
    assert run.row["location"] == "browser" and run.row["runtime"].startswith("LiteRT.js 2.")
    assert run.row["device"].startswith("Chromium ")
    assert run.row["latency"]["1"]["runs"] == n and run.row["host"]["latency"]["1"]["p50_ms"] > 0
    data = loads_json((out / "results.json").read_text())
    assert isinstance(data, dict)
    assert [r["location"] for r in data["rows"]] == ["host", "browser"]
    assert data["meta"]["host"] == "x" and data["meta"]["browser"]["n"] == n
    assert (out / "browser" / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "browser" / "config.json").read_text())["bootstrap"] == 50


def test_page_shows_the_decision_and_the_notice(export: Path, tmp_path: Path) -> None:
    """A user's view after dropping, then picking, one image (a real HAM10000 image when
    present). The screenshot goes to build/web_demo/screenshot.png."""
    from benchmarks.chromium import PageSession, serve
    from exporters.sync_demos import Target, sync

    chromium, driver = ws.browser_or_skip()
    real = sorted((ws.ROOT.parent / "shared/data/ham10000/images").glob("ISIC_*.jpg"))[:1]
    image = real[0] if real else write_image_folder(tmp_path / "img", 1, size=120) / "b/img_000.jpg"
    (synced,) = sync(export, [Target("web", tmp_path / "model")], allow_ungated=True)
    assert synced.artifact == NAME and synced.gate == "not run"
    with serve(tmp_path / "model") as url, PageSession(url, chromium, driver, 120) as page:
        dropped = page.classify(image, drop=True)
        record = page.classify(image)
        texts = {k: page.text(k) for k in ("notice", "decision", "probability", "latency",
                                          "model-dataset", "model-gate")}
        page.screenshot(ws.ROOT / "build" / "web_demo" / "screenshot.png")
    assert dropped["logits"] == record["logits"] and dropped["file"] == record["file"]
    assert "not a medical device" in texts["notice"]
    side = "Above" if record["positive"] else "Below"
    assert texts["decision"].startswith(f"{side} the model's referral threshold (0.3)")
    assert "not a diagnosis" in texts["decision"]
    assert f"{record['positiveProbability']:.3f}" in texts["probability"]
    assert "at the shipped temperature 1.5" in texts["probability"]
    assert texts["latency"].startswith("Inference ") and " ms " in texts["latency"]
    (shown,) = load_manifest(tmp_path / "model").artifacts  # sync_demos fills in the dataset
    assert shown.dataset and texts["model-dataset"] == shown.dataset
    assert texts["model-gate"].startswith("NOT parity-checked (gate status: not run;")


def test_browser_disagreement_is_a_failure() -> None:
    from benchmarks.browser import violations

    row = {"images": 200, "accuracy": {"decisions_differing_vs_host": 0,
                                       "max_abs_dp_vs_host": 5e-4}}
    assert violations(row, 1e-3) == ()
    row["accuracy"] = {"decisions_differing_vs_host": 2, "max_abs_dp_vs_host": 0.02}
    assert violations(row, 1e-3) == ("2 of 200 decisions differ from host LiteRT's",
                                     "max |Δp| vs host LiteRT 0.02 > 0.001")
