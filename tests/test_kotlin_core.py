"""android_demo's pure-Kotlin core against the Python definitions, with a real kotlinc.

Preprocessing (kd_core.data.transforms): resized uint8 pixels exact, the float tensor within 1e-5,
the int8 tensor exact. Decisions (docs/MANIFEST.md): softmax(logits / T) and p[pos] >= threshold
equal to numpy's. The safetensors parity files agree with benchmarks/android/parity.py, and the
app refuses the image kinds Python refuses.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import kotlin_support as ks
import numpy as np
import pytest
from PIL import Image

from kd_core.data.transforms import Preprocessing, load_rgb, normalize, resize_uint8

HAM_HIRES = ks.ROOT.parent / "shared" / "data" / "ham10000" / "images_hires"  # used when present
# (width, height): HAM10000's 200x150, odd sizes, upscales (to 224), extreme aspects
SHAPES = [(200, 150), (97, 131), (150, 200), (224, 224), (60, 45), (31, 17), (640, 480), (23, 300)]
INT8_INPUT = (float(np.float32(0.0186)), -14)


@pytest.fixture(scope="module")
def classpath() -> str:
    return ks.classpath_or_skip()


def _synthetic_png(path: Path, width: int, height: int, seed: int) -> Path:
    """Noise on smooth gradients: plenty of exact .5 cases after dyadic filters, and edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1),
                     (xx + yy) % 256], axis=-1)
    noise = rng.integers(-40, 41, size=(height, width, 3))
    img = np.clip(base + noise * (rng.random((height, width, 1)) < 0.5), 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("kotlin_images")
    out = [_synthetic_png(d / f"syn_{w}x{h}.png", w, h, i) for i, (w, h) in enumerate(SHAPES)]
    for src in sorted(HAM_HIRES.glob("ISIC_*.jpg"))[:2] if HAM_HIRES.is_dir() else []:
        png = d / f"{src.stem}.png"  # decoded once by PIL, so both sides see the same pixels
        Image.fromarray(load_rgb(src)).save(png)
        out.append(png)
    return out


def test_core_unit_tests(classpath: str) -> None:
    proc = ks.run_java("org.edgekd.core.TestMainKt")
    assert re.search(r"\b0 failed\b", proc.stdout), proc.stdout


def _read(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def _quantize_ref(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The rule the apps use: float32 x / scale, round half to even, clamp."""
    q = np.round(x / np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


@pytest.mark.parametrize(("size", "rule", "layout"), [
    (224, "squash", "NHWC"), (224, "center_crop", "NCHW"), (32, "center_crop", "NHWC"),
    (8, "squash", "NCHW"),
])
def test_preprocessing_matches_python(classpath: str, images: list[Path], tmp_path: Path,
                                      size: int, rule: str, layout: str) -> None:
    prep = Preprocessing(size=size, resize=rule)
    scale, zp = INT8_INPUT
    ks.run_cli("preprocess", "--size", str(size), "--resize", rule, "--layout", layout,
               "--mean", ",".join(map(str, prep.mean)), "--std", ",".join(map(str, prep.std)),
               "--scale", repr(scale), "--zero-point", str(zp), "--out", str(tmp_path),
               *map(str, images))
    for path in images:
        pixels = resize_uint8(load_rgb(path), size, rule)
        x = normalize(pixels, prep)  # 3 x H x W
        if layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(1, 2, 0))
        kt_pixels = _read(tmp_path / f"{path.stem}.u8", np.uint8, pixels.shape)
        diff_px = np.argwhere(kt_pixels != pixels)
        assert diff_px.size == 0, f"{path.name}: {len(diff_px)} pixels differ, e.g. {diff_px[:3]}"
        kt_x = _read(tmp_path / f"{path.stem}.f32", np.float32, x.shape)
        assert float(np.abs(kt_x - x).max()) <= 1e-5, path.name
        kt_q = _read(tmp_path / f"{path.stem}.i8", np.int8, x.shape)
        assert np.array_equal(kt_q, _quantize_ref(x, scale, zp)), path.name


@pytest.mark.parametrize(("scale", "zero_point"), [
    (0.0186, -14), (2.0**-6, 0), (0.025924652814865112, 3), (0.006248214282095432, -128),
])
def test_int8_quantization_of_every_pixel_value(classpath: str, tmp_path: Path, scale: float,
                                                zero_point: int) -> None:
    """All 3 x 256 reachable normalized values. The last two scales are ones where float32 and
    float64 division round one value differently: the apps follow the float32 rule."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    png = tmp_path / "levels.png"
    Image.fromarray(np.stack([values, values[::-1], values.T], axis=-1), "RGB").save(png)
    prep = Preprocessing(size=16)
    ks.run_cli("preprocess", "--size", "16", "--resize", "squash", "--layout", "NCHW",
               "--mean", ",".join(map(str, prep.mean)), "--std", ",".join(map(str, prep.std)),
               "--scale", repr(scale), "--zero-point", str(zero_point), "--out", str(tmp_path),
               str(png))
    x = normalize(resize_uint8(load_rgb(png), 16), prep)
    kt_q = _read(tmp_path / "levels.i8", np.int8, x.shape)
    assert np.array_equal(kt_q, _quantize_ref(x, scale, zero_point))


def _softmax_ref(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _decide_kotlin(tmp_path: Path, data: np.ndarray, classes: int, temperature: float,
                   threshold: float, pos: int, quant: tuple[float, int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    src, out = tmp_path / "logits.bin", tmp_path / "decided"
    data.astype(data.dtype.newbyteorder("<")).tofile(src)
    extra = ["--scale", repr(quant[0]), "--zero-point", str(quant[1])] if quant else []
    ks.run_cli("decide", "--classes", str(classes), "--temperature", repr(temperature),
               "--threshold", repr(threshold), "--positive-index", str(pos), *extra,
               str(src), str(out))
    n = data.size // classes
    probs = _read(Path(f"{out}.prob"), np.float64, (n, classes))
    return probs, _read(Path(f"{out}.dec"), np.uint8, (n,)).astype(bool)


def _edge_logits(classes: int) -> np.ndarray:
    """Rows whose softmax every libm computes exactly: ties, and saturated rows."""
    rows = [np.zeros(classes), np.full(classes, -3.25), np.full(classes, 40.0)]
    sat = np.zeros(classes)
    sat[-1] = 2000.0
    return np.stack([*rows, sat, -sat])


@pytest.mark.parametrize(("classes", "pos", "temperature", "threshold"), [
    (2, 1, 1.31, 0.083), (2, 1, 1.0, 0.5), (2, 1, 0.7, float(np.nextafter(0.5, 1.0))),
    (7, 4, 2.0, 1 / 7), (7, 4, 1.0, float(np.nextafter(1 / 7, 1.0))), (2, 0, 1.0, 0.0),
    (2, 1, 1.0, 1.0),
])
def test_decisions_match_python(classpath: str, tmp_path: Path, classes: int, pos: int,
                                temperature: float, threshold: float) -> None:
    rng = np.random.default_rng(classes * 100 + pos)
    logits = np.concatenate([rng.normal(0, 3, (500, classes)), _edge_logits(classes)])
    probs, decisions = _decide_kotlin(tmp_path, logits, classes, temperature, threshold, pos)
    ref = _softmax_ref(logits, temperature)
    assert float(np.abs(probs - ref).max()) <= 1e-15
    # Different libms may differ by an ulp in exp; no row lies that close to the threshold
    # except the edge rows, whose probabilities are exact (1/K, 0 or 1) on both sides.
    edge = slice(500, None)
    assert np.array_equal(probs[edge], ref[edge])
    assert np.array_equal(decisions, ref[:, pos] >= threshold)
    assert 0 < decisions.sum() < len(decisions) or threshold in (0.0, 1.0)


def test_int8_output_decisions_match_python(classpath: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    q = rng.integers(-128, 128, size=(400, 2)).astype(np.int8)
    q[:20, 1] = q[:20, 0]  # equal logits: p = 0.5 exactly
    scale, zp = float(np.float32(0.05)), 3
    probs, decisions = _decide_kotlin(tmp_path, q, 2, 1.31, 0.5, 1, (scale, zp))
    ref = _softmax_ref((q.astype(np.float64) - zp) * scale, 1.31)
    assert float(np.abs(probs - ref).max()) <= 1e-15
    assert np.array_equal(decisions, ref[:, 1] >= 0.5)
    assert decisions[:20].all()


@pytest.mark.parametrize(("dtype", "quant"), [("int8", (0.05, 3)), ("float32", None)])
def test_parity_files_match_host_format(classpath: str, tmp_path: Path, dtype: str,
                                        quant: tuple[float, int] | None) -> None:
    """Safetensors both ways: the host writes inputs with the `safetensors` package, the Kotlin
    core (Safetensors.kt) reads them, runs a fake model and writes outputs the host reads."""
    parity = pytest.importorskip("benchmarks.android.parity")
    rng = np.random.default_rng(3)
    shape = (5, 4, 4, 3)
    x = rng.integers(-128, 128, shape) if dtype == "int8" else rng.normal(size=shape)
    x = x.astype(dtype)
    src, dst = tmp_path / "inputs.safetensors", tmp_path / "outputs.safetensors"
    parity.write_tensor_file(src, parity.INPUTS, x, {"kind": "inputs", "layout": "NHWC"})
    extra = ["--scale", str(quant[0]), "--zero-point", str(quant[1])] if quant else []
    ks.run_cli("parity", "--classes", "2", "--out-dtype", dtype, "--in-dtype", dtype,
               "--sample-shape", "4,4,3", *extra, str(src), str(dst))
    out, meta = parity.read_tensor_file(dst, parity.OUTPUTS, str(dst))
    assert out.shape == (5, 2) and out.dtype == np.dtype(dtype)
    assert np.array_equal(out, x.reshape(5, -1)[:, :2])  # the fake model copies 2 elements
    assert meta["kind"] == "logits" and meta["format"] == parity.FORMAT
    if quant:
        assert (float(meta["scale"]), int(meta["zero_point"])) == quant
        logits = parity.outputs_to_logits(out, meta, str(dst))
        assert np.array_equal(logits, (out.astype(np.float64) - quant[1]) * quant[0])
    else:
        assert "scale" not in meta


def _image_files(folder: Path) -> list[Path]:
    """Every kind of file PIL writes that a phone decodes: RGB and the kinds load_rgb refuses."""
    rng = np.random.default_rng(9)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "RGB")
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8), "L"))
    made = {"RGB": rgb, "L": rgb.convert("L"), "P": rgb.convert("P"), "RGBA": rgba,
            "LA": rgb.convert("LA"), "1": rgb.convert("1"), "CMYK": rgb.convert("CMYK"),
            "I;16": rgb.convert("L").convert("I;16")}
    files = []
    for fmt, ext, modes in [("PNG", "png", ["RGB", "L", "P", "RGBA", "LA", "1", "I;16"]),
                            ("JPEG", "jpg", ["RGB", "L", "CMYK"]),
                            ("WEBP", "webp", ["RGB", "RGBA"]),
                            ("GIF", "gif", ["RGB", "P"]),
                            ("BMP", "bmp", ["RGB", "L", "P", "1"])]:
        for mode in modes:
            path = folder / f"{mode.replace(';', '_')}.{ext}"
            made[mode].save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
            files.append(path)
    return files


def test_image_kinds_are_refused_as_python_refuses(classpath: str, tmp_path: Path) -> None:
    """The app refuses exactly the files kd_core.data.transforms.load_rgb refuses, and for the
    kinds PNG, JPEG and WebP carry (greyscale, palette, CMYK, RGBA) with Python's words."""
    from kd_core.data.transforms import ImageError

    files = _image_files(tmp_path)
    verdicts = ks.run_cli("image-kind", *map(str, files)).stdout.splitlines()
    assert len(verdicts) == len(files)
    for path, kotlin in zip(files, verdicts, strict=True):
        try:
            load_rgb(path)
            python = "ok"
        except ImageError as exc:
            python = str(exc)
        assert (kotlin == "ok") == (python == "ok"), (path.name, kotlin, python)
        if path.suffix in (".png", ".jpg", ".webp"):
            assert kotlin == python, path.name
    refused = {p.name for p, v in zip(files, verdicts, strict=True) if v != "ok"}
    assert {"L.png", "P.png", "RGBA.png", "CMYK.jpg", "L.jpg", "RGBA.webp"} <= refused


def test_kotlin_version_matches_gradle() -> None:
    """scripts/kotlin.sh compiles with the same Kotlin the Android project builds with."""
    script = (ks.ROOT / "scripts" / "kotlin.sh").read_text()
    pinned = re.search(r'KOTLIN_VERSION="\$\{KOTLIN_VERSION:-([^}]+)\}"', script)
    catalog = tomllib.loads((ks.ROOT / "android_demo/gradle/libs.versions.toml").read_text())
    assert pinned is not None
    assert catalog["versions"]["kotlin"] == pinned.group(1)
