"""web_demo's JavaScript core against the Python definitions, with a real Node.

Preprocessing (kd_core.data.transforms, runtimes.quant) on the same decoded pixels: resized pixels,
the float32 tensor and the int8/uint8 tensor bit-exact. Decisions (kd_core.deploy.Decision):
probabilities within 1e-15 (exact on ties and saturated rows), decisions equal. Node's own unit
tests (web_demo/test/) run here too, so `make test` runs them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import web_support as ws

from kd_core.data.transforms import Preprocessing, load_rgb, normalize, resize_uint8
from kd_core.deploy import Decision
from runtimes.quant import dequantize, quantize

HAM = ws.ROOT.parent / "shared" / "data" / "ham10000"  # real images, used when present
# (width, height): HAM10000's 200x150 and 300x225, odd sizes, upscales, extreme aspects
SHAPES = [(200, 150), (97, 131), (150, 200), (224, 224), (60, 45), (31, 17), (640, 480), (23, 300)]
BINARY = Decision(("other", "melanoma"), 1, temperature=1.31, threshold=0.083)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """Noise on smooth gradients (exact .5 cases after dyadic filters, edges), plus real
    HAM10000 images decoded by PIL when the data is present."""
    out = {}
    for i, (w, h) in enumerate(SHAPES):
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256],
                        axis=-1)
        noise = rng.integers(-40, 41, size=(h, w, 3)) * (rng.random((h, w, 1)) < 0.5)
        out[f"syn_{w}x{h}"] = np.clip(base + noise, 0, 255).astype(np.uint8)
    for folder in ("images", "images_hires"):
        for src in sorted((HAM / folder).glob("ISIC_*.jpg"))[:2] if (HAM / folder).is_dir() else []:
            out[f"{folder}_{src.stem}"] = load_rgb(src)
    return out


def test_node_unit_tests() -> None:
    proc = ws.run_node("--test", "test/")
    assert re.search(r"^# fail 0$", proc.stdout, re.M), proc.stdout[-2000:]
    assert int(re.search(r"^# pass (\d+)$", proc.stdout, re.M).group(1)) >= 10  # type: ignore[union-attr]


@pytest.mark.parametrize(("size", "rule", "layout", "dtype", "quant"), [
    (224, "squash", "NHWC", "float32", None), (224, "center_crop", "NCHW", "int8", (0.0186, -14)),
    (32, "center_crop", "NHWC", "uint8", (0.0251, 117)), (8, "squash", "NCHW", "float32", None),
    (96, "squash", "NHWC", "int8", (0.025924652814865112, 3)),
])
def test_preprocessing_matches_python(images: dict[str, np.ndarray], tmp_path: Path, size: int,
                                      rule: str, layout: str, dtype: str,
                                      quant: tuple[float, int] | None) -> None:
    prep = Preprocessing(size=size, resize=rule)
    manifest = ws.write_contract(tmp_path / "m", prep, BINARY, layout=layout, in_dtype=dtype,
                                 in_quant=quant)
    got = ws.js_preprocess(manifest, images, tmp_path / "out")
    for name, rgb in images.items():
        pixels = resize_uint8(rgb, size, rule)
        js_pixels, js_input = got[name]
        diff = np.argwhere(js_pixels.reshape(pixels.shape) != pixels)
        assert diff.size == 0, f"{name}: {len(diff)} pixels differ, e.g. {diff[:3]}"
        x = normalize(pixels, prep)  # 3 x H x W float32
        if layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(1, 2, 0))
        want = x if quant is None else quantize(x, quant[0], quant[1], dtype)
        assert js_input.tobytes() == np.ascontiguousarray(want).tobytes(), name


@pytest.mark.parametrize(("scale", "zero_point", "dtype"), [
    (0.0186, -14, "int8"), (2.0**-6, 0, "int8"), (0.025924652814865112, 3, "int8"),
    (0.006248214282095432, -128, "int8"), (0.0187, 114, "uint8"),
])
def test_quantization_of_every_pixel_value(tmp_path: Path, scale: float, zero_point: int,
                                           dtype: str) -> None:
    """All 3 x 256 reachable normalized values; the third and fourth scales are ones where
    float32 and float64 division round a value differently (the rule is float32)."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([values, values[::-1], values.T], axis=-1)
    prep = Preprocessing(size=16)
    manifest = ws.write_contract(tmp_path / "m", prep, BINARY, layout="NCHW", in_dtype=dtype,
                                 in_quant=(scale, zero_point))
    _, js_input = ws.js_preprocess(manifest, {"levels": rgb}, tmp_path / "out")["levels"]
    want = quantize(normalize(resize_uint8(rgb, 16), prep), scale, zero_point, dtype)
    assert js_input.tobytes() == want.tobytes()


def _edge_logits(classes: int) -> np.ndarray:
    """Rows whose softmax every libm computes exactly: ties, and saturated rows."""
    sat = np.zeros(classes)
    sat[-1] = 2000.0
    return np.stack([np.zeros(classes), np.full(classes, -3.25), np.full(classes, 40.0), sat,
                     -sat])


@pytest.mark.parametrize(("classes", "pos", "temperature", "threshold"), [
    (2, 1, 1.31, 0.083), (2, 1, 1.0, 0.5), (2, 1, 0.7, float(np.nextafter(0.5, 1.0))),
    (7, 4, 2.0, 1 / 7), (7, 4, 1.0, float(np.nextafter(1 / 7, 1.0))), (2, 0, 1.0, 0.0),
    (2, 1, 1.0, 1.0), (12, 3, 1.5, 0.2),
])
def test_decisions_match_python(tmp_path: Path, classes: int, pos: int, temperature: float,
                                threshold: float) -> None:
    labels = tuple(f"c{i}" for i in range(classes))
    decision = Decision(labels, pos, temperature=temperature, threshold=threshold)
    manifest = ws.write_contract(tmp_path / "m", Preprocessing(size=8), decision)
    rng = np.random.default_rng(classes * 100 + pos)
    logits = np.concatenate([rng.normal(0, 3, (500, classes)), _edge_logits(classes)])
    probs, decided = ws.js_decide(manifest, logits, tmp_path / "out")
    ref = decision.probabilities(logits)
    assert float(np.abs(probs - ref).max()) <= 1e-15
    assert np.array_equal(probs[500:], ref[500:])  # exact where every libm is
    assert np.array_equal(decided.astype(bool), decision.decide(logits))
    assert 0 < decided.sum() < len(decided) or threshold in (0.0, 1.0)


def test_multiclass_decides_by_argmax(tmp_path: Path) -> None:
    decision = Decision(tuple("abcdefg"), None, temperature=1.2, threshold=None)
    manifest = ws.write_contract(tmp_path / "m", Preprocessing(size=8), decision)
    logits = np.random.default_rng(5).normal(0, 2, (300, 7))
    probs, decided = ws.js_decide(manifest, logits, tmp_path / "out")
    assert float(np.abs(probs - decision.probabilities(logits)).max()) <= 1e-15
    assert np.array_equal(decided, decision.decide(logits))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantized_outputs_are_dequantized_as_python(tmp_path: Path, dtype: str) -> None:
    scale, zero = float(np.float32(0.05)), 3 if dtype == "int8" else 131
    manifest = ws.write_contract(tmp_path / "m", Preprocessing(size=8), BINARY,
                                 out_dtype=dtype, out_quant=(scale, zero))
    info = np.iinfo(dtype)
    q = np.random.default_rng(7).integers(info.min, info.max + 1, size=(400, 2)).astype(dtype)
    q[:20, 1] = q[:20, 0]  # equal logits: p = 0.5
    probs, decided = ws.js_decide(manifest, q, tmp_path / "out")
    ref = BINARY.probabilities(dequantize(q, scale, zero))
    assert float(np.abs(probs - ref).max()) <= 1e-15
    assert np.array_equal(decided.astype(bool), BINARY.decide(dequantize(q, scale, zero)))
    assert np.array_equal(probs[:20, 1], np.full(20, 0.5))


def test_contract_is_read_from_a_python_manifest(tmp_path: Path) -> None:
    import json

    prep = Preprocessing(size=96, resize="center_crop")
    manifest = ws.write_contract(tmp_path / "m", prep, BINARY, in_dtype="uint8",
                                 in_quant=(0.02, 128))
    got = json.loads(ws.run_node(str(ws.CLI), "contract", str(manifest)).stdout)
    assert got["dataset"] == "test data"
    assert got["preprocessing"] == {"size": 96, "mean": list(prep.mean), "std": list(prep.std),
                                    "resize": "center_crop"}
    assert got["decision"] == {"labels": ["other", "melanoma"], "positiveIndex": 1,
                               "temperature": 1.31, "threshold": 0.083, "targetSensitivity": 0.95}
    assert got["input"] == {"layout": "NHWC", "dtype": "uint8", "shape": [1, 96, 96, 3],
                            "quant": {"scale": 0.02, "zeroPoint": 128}}

