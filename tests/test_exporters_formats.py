"""Every format on a tiny model: the artefact runs in its real runtime (``runtimes``) and matches
torch, the manifest describes it exactly, the metadata is embedded, Core ML's spec is what
Vision needs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from exporters_support import colour_labels, smooth_images, write_checkpoint, write_image_folder

from exporters import get_exporter
from exporters.all import main
from exporters.base import Artifact
from exporters.calibration_data import load_calibration
from exporters.finish import reference_outputs
from exporters.job import load_settings
from exporters.run import ExportResult, export_model
from kd_core.data.transforms import Preprocessing, normalize
from kd_core.io import path_bytes, sha256_file
from runtimes import load_runner

SIZE = 32
FP32_TOL = 1e-4
EXPECTED = {f"tiny_mobilenet_{n}" for n in (
    "tflite_fp32", "tflite_int8", "tflite_int8_float_io", "executorch_fp32", "executorch_int8",
    "coreml_fp16", "coreml_w8", "coreml_w8a8", "onnx_fp32", "onnx_int8")}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """As the CLI does: one torch thread avoids oversubscribing a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("export")
    ckpt = write_checkpoint(root / "tiny.pth", size=SIZE, steps=60)
    folder = write_image_folder(root / "calib", n=24, size=48, seed=5)
    model, cfg = load_settings(ckpt)
    calib = load_calibration(folder, cfg.preprocessing, cfg.labels, n=24, seed=3,
                             allow_few=True)
    from dataclasses import replace

    cfg = replace(cfg, calibration=calib, precisions=("fp32", "int8", "w8a8"))
    result = export_model(model, cfg, root / "out", ("tflite", "executorch", "coreml", "onnx"))
    images = smooth_images(64, SIZE, seed=99)  # fresh images, not the calibration ones
    return {"ckpt": ckpt, "model": model, "result": result, "out": root / "out",
            "manifest": json.loads(result.manifest_path.read_text()),
            "x": normalize(images, Preprocessing(size=SIZE)), "pixels": images}


def artefact(run: dict[str, Any], name: str) -> Artifact:
    result: ExportResult = run["result"]
    return next(a for a in result.artifacts if a.name == f"tiny_mobilenet_{name}")


def predict(run: dict[str, Any], art: Artifact) -> np.ndarray:
    """The artefact's logits on fresh images, through its runner in ``runtimes``."""
    return load_runner(art.entry, run["out"]).predict(run["x"])


def test_every_artefact_written_atomically(run: dict[str, Any]) -> None:
    assert run["result"].ok, run["result"].failures
    assert {a["name"] for a in run["manifest"]["artifacts"]} == EXPECTED
    names = {p.name for p in run["out"].iterdir()}
    assert not [n for n in names if n.startswith(".")]  # no temporary files or folders left
    assert {"tiny_mobilenet_executorch_fp32.json", "manifest.json"} <= names


@pytest.mark.parametrize("fmt", ["tflite", "executorch", "onnx"])
def test_fp32_matches_torch(run: dict[str, Any], fmt: str) -> None:
    art = artefact(run, f"{fmt}_fp32")
    got = predict(run, art)
    want = reference_outputs(run["model"], run["x"])
    assert np.ptp(want) > 5  # decisive logits, so the check means something
    assert np.abs(got - want).max() <= FP32_TOL


@pytest.mark.parametrize("fmt", ["tflite", "executorch"])
def test_int8_matches_fake_quantized_torch(run: dict[str, Any], fmt: str) -> None:
    art = artefact(run, f"{fmt}_int8")
    assert art.reference is not None
    got = predict(run, art)
    want = reference_outputs(art.reference, run["x"])  # PT2E's converted model
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
    assert np.abs(got - want).max() <= 0.05 * np.ptp(want)


def test_onnx_int8_agrees_with_float(run: dict[str, Any]) -> None:
    art = artefact(run, "onnx_int8")
    got = predict(run, art)
    want = reference_outputs(run["model"], run["x"])
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    truth = colour_labels(run["pixels"], 2)
    assert (got.argmax(1) == truth).mean() >= (want.argmax(1) == truth).mean() - 0.1


def test_tflite_int8_io_is_int8_nhwc_with_recorded_quantization(run: dict[str, Any]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    entry = next(a for a in run["manifest"]["artifacts"] if a["name"].endswith("tflite_int8"))
    it = Interpreter(model_path=str(run["out"] / entry["path"]))
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert entry["input"]["layout"] == "NHWC" and list(inp["shape"]) == [1, SIZE, SIZE, 3]
    for spec, detail in ((entry["input"], inp), (entry["output"], out)):
        assert spec["dtype"] == "int8" and detail["dtype"] == np.int8
        assert spec["quantization"] == {"scale": pytest.approx(detail["quantization"][0]),
                                        "zero_point": detail["quantization"][1]}


def test_manifest_describes_each_artefact(run: dict[str, Any]) -> None:
    m = run["manifest"]
    ckpt_sha = sha256_file(run["ckpt"])
    assert m["manifest_version"] == 1 and m["source_checkpoint"]["sha256"] == ckpt_sha
    assert m["source_checkpoint"] | {"path": None} == {
        "path": None, "sha256": ckpt_sha, "arch": "tiny_mobilenet", "num_classes": 2}
    assert m["labels"] == ["other", "melanoma"] and m["positive_index"] == 1
    assert m["temperature"] == 1.5 and m["threshold"] == 0.3
    assert m["preprocessing"]["size"] == SIZE and m["preprocessing"]["resize"] == "squash"
    calib = m["calibration"]
    # Two class sub-folders make an image-folder dataset: only its train split calibrates.
    assert calib["kind"] == "imagefolder" and calib["seed"] == 3
    assert calib["samples"] == len(calib["image_ids"]) == 16
    assert calib["class_balanced"] is False  # its classes (a, b) are not the model's labels
    for tool in ("torch", "litert-torch", "executorch", "coremltools", "onnxruntime"):
        assert m["tool_versions"][tool][0].isdigit()
    for e in m["artifacts"]:
        path = run["out"] / e["path"]
        assert e["bytes"] == path_bytes(path) > 0 and e["sha256"] == sha256_file(path)
        assert e["name"] == f"tiny_mobilenet_{e['format']}_{e['precision']}"
        assert {k: e[k] for k in ("labels", "positive_index", "temperature", "threshold",
                                  "preprocessing")} == {k: m[k] for k in (
            "labels", "positive_index", "temperature", "threshold", "preprocessing")}
        assert e["source_checkpoint_sha256"] == ckpt_sha and e["export_seconds"] > 0
        assert e["input"]["layout"] == {"tflite": "NHWC"}.get(e["format"], "NCHW")
        assert e["output"]["kind"] == ("probabilities" if e["format"] == "coreml" else "logits")
        quantized = e["precision"] in ("int8", "int8_float_io", "w8", "w8a8")
        assert ("quantization_recipe" in e) == quantized and ("graph_report" in e) == quantized
        assert e["calibrated"] is True and e["target_sensitivity"] == 0.95
        runtime = e["verification"]["runtime"]
        assert runtime.startswith("not run on this host") if e["format"] == "coreml" else (
            e["verification"]["images"] == 8 and e["verification"]["top1_agreement"] >= 0.75)
    fp32 = [e for e in m["artifacts"] if e["precision"] == "fp32"]
    assert all(e["verification"]["max_abs_diff"] <= FP32_TOL for e in fp32)
    recipes = {e["name"]: e.get("quantization_recipe") for e in m["artifacts"]}
    assert recipes["tiny_mobilenet_tflite_int8"]["rewrites"] == list(
        get_exporter("tflite").int8.rewrites)  # type: ignore[union-attr]
    assert recipes["tiny_mobilenet_coreml_w8a8"]["quantizer"] == "executorch CoreMLQuantizer"


@pytest.mark.parametrize("fmt", ["tflite", "executorch", "coreml", "onnx"])
def test_metadata_is_embedded(run: dict[str, Any], fmt: str) -> None:
    read = get_exporter(fmt).read_metadata
    assert read is not None
    for e in run["manifest"]["artifacts"]:
        if e["format"] != fmt:
            continue
        meta = read(run["out"] / e["path"])
        assert meta is not None, e["name"]
        for key in ("name", "precision", "input", "output", "labels", "preprocessing",
                    "temperature", "threshold", "positive_index", "source_checkpoint_sha256",
                    "tool_versions"):
            assert meta[key] == e[key], (e["name"], key)


@pytest.mark.parametrize("name", ["tflite_int8", "tflite_int8_float_io", "executorch_int8",
                                  "onnx_int8", "coreml_w8a8"])
def test_restamp_embeds_another_decision_and_keeps_the_graph(run: dict[str, Any], name: str,
                                                             tmp_path: Path) -> None:
    """The repair ladder's kept candidate gets its own decision without a second export: the
    embedded entry (file or sidecar) carries it, the outputs are the same, sha256 and bytes
    describe the new file. Core ML has the temperature in its graph: no restamp."""
    import shutil
    from dataclasses import replace

    from exporters.finish import restamp

    art = artefact(run, name)
    decision = replace(art.entry.decision, temperature=2.5, threshold=0.125)
    if name.startswith("coreml"):
        before = sha256_file(art.path)
        assert restamp(art, decision) is None and sha256_file(art.path) == before
        return
    for f in (art.entry.path, *art.entry.sidecars):
        shutil.copy(run["out"] / f, tmp_path / f)
    stamped = restamp(replace(art, path=tmp_path / art.entry.path), decision)
    assert stamped is not None and stamped.entry.decision == decision
    meta = get_exporter(art.format).read_metadata(stamped.path)  # type: ignore[misc]
    assert (meta["temperature"], meta["threshold"]) == (2.5, 0.125)
    assert meta["name"] == art.name and meta.get("precision_plan") == art.entry.precision_plan
    assert stamped.entry.sha256 == sha256_file(stamped.path) != (
        art.entry.sha256 if art.format != "executorch" else "")  # a .pte is copied as is
    assert stamped.entry.bytes == path_bytes(stamped.path)
    assert np.array_equal(load_runner(stamped.entry, tmp_path).predict(run["x"]),
                          predict(run, art))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    again = restamp(stamped, decision)  # the old entry is replaced, not left behind
    assert again is not None and again.entry.sha256 == stamped.entry.sha256


def test_onnx_files_pass_the_checker(run: dict[str, Any]) -> None:
    import onnx

    for name in ("onnx_fp32", "onnx_int8"):
        proto = onnx.load(str(artefact(run, name).path))
        onnx.checker.check_model(proto, full_check=True)
        keys = {p.key for p in proto.metadata_props}
        assert {"edgekd_manifest", "labels", "threshold", "preprocessing"} <= keys


@pytest.mark.parametrize("precision", ["fp16", "w8", "w8a8"])
def test_coreml_is_a_vision_image_classifier(run: dict[str, Any], precision: str) -> None:
    from exporters.coreml import read_spec

    spec = read_spec(artefact(run, f"coreml_{precision}").path)
    assert spec["model_type"] == "mlProgram" and spec["input_is_image"]
    assert spec["input_size"] == [SIZE, SIZE] and spec["color_space"] == "RGB"
    assert spec["labels"] == ["other", "melanoma"]
    assert (spec["predicted_feature"], spec["predicted_probabilities"]) == (
        "classLabel", "classLabel_probs")
    ops = spec["op_counts"]
    eight_bit = ops.get("constexpr_affine_dequantize", 0) + ops.get(
        "constexpr_blockwise_shift_scale", 0)
    assert (eight_bit > 0) == (precision != "fp16")
    assert (ops.get("quantize", 0) > 0) == (precision == "w8a8")  # activations too
    assert "edgekd_manifest" in spec["metadata"]


def test_coreml_wrapper_is_the_eval_preprocessing_plus_temperature(run: dict[str, Any]) -> None:
    from exporters.coreml import image_classifier

    wrapper = image_classifier(run["model"], Preprocessing(size=SIZE), 1.5)
    pixels = torch.from_numpy(run["pixels"][:8]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        got = wrapper(pixels)
        logits = run["model"](torch.from_numpy(run["x"][:8]))
    assert torch.allclose(got, torch.softmax(logits / 1.5, dim=1), atol=1e-5)


def test_other_architecture_and_class_count(tmp_path: Path) -> None:
    """tiny_resnet with 7 classes through the CLI: fp32 everywhere, Core ML 8-bit weights
    without calibration data, INT8 for ONNX with it."""
    ckpt = write_checkpoint(tmp_path / "r.pth", arch="tiny_resnet", num_classes=7, size=SIZE)
    folder = write_image_folder(tmp_path / "calib", n=8, size=40)
    out = tmp_path / "out"
    assert main([str(ckpt), "--out", str(out), "--precisions", "fp32"]) == 0
    assert main([str(ckpt), "--out", str(out), "--formats", "coreml", "--precisions",
                 "int8"]) == 0
    assert main([str(ckpt), "--out", str(out), "--formats", "onnx", "--precisions", "int8",
                 "--calib-data", str(folder), "--calib-samples", "8",
                 "--allow-few-calib-images"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["labels"]) == 7 and m["source_checkpoint"]["num_classes"] == 7
    assert {a["name"].removeprefix("tiny_resnet_") for a in m["artifacts"]} == {
        "tflite_fp32", "executorch_fp32", "coreml_fp16", "coreml_w8", "onnx_fp32", "onnx_int8"}
    assert m["calibration"]["samples"] == 8
    for e in m["artifacts"]:
        assert e["output"]["shape"][-1] == 7
        if "max_abs_diff" in e["verification"] and e["precision"] == "fp32":
            assert e["verification"]["max_abs_diff"] <= FP32_TOL
