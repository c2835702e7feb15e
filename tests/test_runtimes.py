"""Runtimes: every runner against torch on a tiny model exported by the real exporters.

fp32 (ONNX Runtime, LiteRT, ExecuTorch) must match torch within 1e-4 (scaled by the logit
magnitude above 1, as the exporters' own check); INT8 (slow: PT2E/QDQ exports) must keep the
argmax and stay within a quantized tolerance. The base runner's layout and I/O quantization
rules are checked against ``runtimes.quant`` with a numpy model; Core ML reports "needs macOS".
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bench_support import SIZE, export, student_checkpoint
from exporters_support import smooth_images, write_checkpoint, write_image_folder

import runtimes
from kd_core.checkpoint import load_model
from kd_core.data.transforms import Preprocessing, normalize
from kd_core.deploy import ManifestEntry, fp32_tolerance
from runtimes import (
    Runner,
    RuntimeLoadError,
    RuntimeUnavailable,
    list_runtimes,
    load_runner,
    register_runtime,
)
from runtimes.quant import dequantize, quantize
from runtimes.torch_eager import checkpoint_entry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return student_checkpoint(tmp_path_factory.mktemp("rt") / "student.pth", synth_prepared)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return normalize(smooth_images(12, SIZE, 5), Preprocessing(size=SIZE))


@pytest.fixture(scope="module")
def torch_logits(ckpt: Path, images: np.ndarray) -> np.ndarray:
    model, _ = load_model(ckpt)
    with torch.no_grad():
        return np.asarray(model(torch.from_numpy(images)).numpy(), dtype=np.float64)


@pytest.fixture(scope="module")
def fp32_dir(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(ckpt, tmp_path_factory.mktemp("fp32"), ("onnx", "tflite", "executorch"))


def entries(folder: Path) -> dict[str, dict[str, Any]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {a["format"] + "_" + a["precision"]: a for a in manifest["artifacts"]}


def entry_dict(**over: Any) -> dict[str, Any]:
    """A complete manifest entry (docs/MANIFEST.md) with ``over`` replacing fields."""
    io = {"name": "image", "shape": [1, 3, 8, 8], "layout": "NCHW", "dtype": "float32",
          "quantization": None}
    return {"name": "m", "path": "m.bin", "format": "onnx", "precision": "fp32", "input": io,
            "output": {"name": "logits", "shape": [1, 2], "dtype": "float32",
                       "quantization": None, "kind": "logits"},
            "labels": ["other", "melanoma"], "positive_index": 1, "temperature": 1.0,
            "threshold": 0.5, "preprocessing": Preprocessing(size=8).to_dict(), **over}


# ---- registry and interface -----------------------------------------------------------------


def test_registry_lists_every_format_and_rejects_duplicates() -> None:
    assert list_runtimes()[:5] == ["torch", "onnx", "tflite", "executorch", "coreml"]
    assert runtimes.get_runtime("tflite").label == "LiteRT interpreter"
    assert runtimes.get_runtime("coreml").module == "runtimes.coreml"
    with pytest.raises(ValueError, match="registered twice"):
        register_runtime("onnx", "ONNX Runtime")(Runner)
    with pytest.raises(KeyError, match="no runtime for format 'tensorrt'"):
        runtimes.get_runtime("tensorrt")


def test_import_needs_no_backend() -> None:
    code = ("import sys, runtimes; runtimes.list_runtimes(); print(sorted(m for m in "
            "('torch', 'onnxruntime', 'ai_edge_litert', 'executorch', 'coremltools') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


class NumpyRunner(Runner):
    """A linear model in numpy on the artefact's own tensors (NHWC int8 in, int8 out)."""

    runtime = "numpy"

    def _load(self) -> None:
        self.w = np.load(self.path)
        self.calls = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        assert x.dtype == np.int8 and x.shape[-1] == 3 and len(x) == 1
        assert self.in_quant is not None and self.out_quant is not None
        xf = (x.astype(np.float64) - self.in_quant["zero_point"]) * self.in_quant["scale"]
        logits = xf.reshape(len(x), -1) @ self.w
        return quantize(logits, self.out_quant["scale"], self.out_quant["zero_point"])


def test_base_runner_applies_layout_and_quantization_rules(tmp_path: Path) -> None:
    register_runtime("test_numpy", "numpy")(NumpyRunner)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4 * 4 * 3, 2)) * 0.1
    np.save(tmp_path / "w.npy", w)
    qin: dict[str, Any] = {"scale": 0.02, "zero_point": -3}
    qout: dict[str, Any] = {"scale": 0.05, "zero_point": 2}
    entry = ManifestEntry.from_dict(entry_dict(
        name="lin", format="test_numpy", path="w.npy",
        input={"shape": [1, 4, 4, 3], "layout": "NHWC", "dtype": "int8", "quantization": qin},
        output={"shape": [1, 2], "dtype": "int8", "quantization": qout, "kind": "logits"}),
        "test")
    x = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    runner = load_runner(entry, tmp_path, threads=1)
    got = runner.predict(x)
    assert isinstance(runner, NumpyRunner) and runner.calls == 5  # fixed batch 1: one per image
    xq = quantize(np.moveaxis(x, 1, -1), qin["scale"], qin["zero_point"])
    xf = dequantize(xq, qin["scale"], qin["zero_point"]).reshape(5, -1)
    want = dequantize(quantize(xf @ w, qout["scale"], qout["zero_point"]), qout["scale"],
                      qout["zero_point"])
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float64 and runner.load_seconds >= 0
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\)"):
        runner.predict(x[0])
    runtimes.RUNTIMES.pop("test_numpy")


def test_load_runner_errors_name_the_file(tmp_path: Path) -> None:
    entry = entry_dict(path="missing.onnx")
    with pytest.raises(RuntimeLoadError, match=r"missing\.onnx: artefact not found"):
        load_runner(entry, tmp_path)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(RuntimeLoadError, match=r"bad\.onnx: ONNX Runtime cannot load it"):
        load_runner({**entry, "path": "bad.onnx"}, tmp_path)
    with pytest.raises(RuntimeLoadError, match="format must be a non-empty string"):
        load_runner({k: v for k, v in entry.items() if k != "format"}, tmp_path)
    with pytest.raises(RuntimeLoadError, match="checkpoint not found"):
        checkpoint_entry(tmp_path / "nope.pth")


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML predicts on macOS")
def test_coreml_reports_needs_macos(tmp_path: Path) -> None:
    (tmp_path / "m.mlpackage").mkdir()
    entry = entry_dict(name="m_coreml_fp16", format="coreml", path="m.mlpackage",
                       input={"shape": [1, 3, 8, 8], "dtype": "image"},
                       output={"shape": [2], "kind": "probabilities"})
    with pytest.raises(RuntimeUnavailable, match="needs macOS"):
        load_runner(entry, tmp_path)


# ---- every runner against torch -------------------------------------------------------------


def test_torch_runner_matches_the_model(ckpt: Path, images: np.ndarray,
                                        torch_logits: np.ndarray) -> None:
    entry = checkpoint_entry(ckpt)
    assert entry.extra["arch"] == "tiny_mobilenet" and entry.decision.target_sensitivity == 0.95
    runner = load_runner(entry, ckpt.parent, threads=2)
    np.testing.assert_allclose(runner.predict(images), torch_logits, atol=1e-5, rtol=0)
    assert runner.runtime.startswith("PyTorch")


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "executorch"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fp32_runner_matches_torch(fmt: str, threads: int, fp32_dir: Path, images: np.ndarray,
                                   torch_logits: np.ndarray) -> None:
    entry = entries(fp32_dir)[f"{fmt}_fp32"]
    runner = load_runner(entry, fp32_dir, threads)
    got = runner.predict(images)
    assert got.shape == torch_logits.shape
    tol = fp32_tolerance(float(np.abs(torch_logits).max()))
    assert np.abs(got - torch_logits).max() <= tol


def test_tflite_runner_rejects_a_stale_manifest(fp32_dir: Path) -> None:
    entry = entries(fp32_dir)["tflite_fp32"]
    stale = {**entry, "input": {**entry["input"], "dtype": "int8",
                                "quantization": {"scale": 0.1, "zero_point": 0}}}
    with pytest.raises(RuntimeLoadError, match="manifest says quantization"):
        load_runner(stale, fp32_dir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A briefly trained tiny model (decisive logits), calibration images from its own
    distribution, held-out images and its torch logits: what INT8 is judged on."""
    root = tmp_path_factory.mktemp("int8")
    ckpt = write_checkpoint(root / "trained.pth", size=SIZE, steps=60)
    calib = write_image_folder(root / "calib", 48, size=SIZE, seed=11)
    x = normalize(smooth_images(48, SIZE, 21), Preprocessing(size=SIZE))
    model, _ = load_model(ckpt)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).double().numpy()
    return {"ckpt": ckpt, "calib": calib, "x": x, "want": want}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "executorch"])
def test_int8_runner_keeps_torch_decisions(fmt: str, trained: dict[str, Any],
                                           tmp_path: Path) -> None:
    folder = export(trained["ckpt"], tmp_path, (fmt,), ("int8",), calib=trained["calib"])
    entry = entries(folder)[f"{fmt}_int8"]
    if fmt == "tflite":  # int8 in and out: the runner quantizes and dequantizes
        assert entry["input"]["dtype"] == "int8" and entry["input"]["quantization"]
        assert entry["output"]["quantization"]
    got = load_runner(entry, folder, threads=2).predict(trained["x"])
    want = trained["want"]
    assert np.median(np.abs(got - want)) <= 0.02 * float(np.ptp(want))  # measured ~0.007
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9
