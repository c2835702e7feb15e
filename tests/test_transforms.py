"""The preprocessing definition: the resize is PIL's/torch's antialiased bilinear, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kd_core.data.transforms import (
    ImageError,
    Preprocessing,
    load_rgb,
    normalize,
    preprocess,
    resize_uint8,
    resized_shape,
)


def torch_reference(img: np.ndarray, h: int, w: int) -> np.ndarray:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double()
    y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize(("h", "w", "size"), [(150, 200, 224), (150, 200, 64), (131, 97, 50),
                                             (40, 40, 96), (450, 600, 224)])
def test_squash_resize_matches_torch_antialias(h: int, w: int, size: int) -> None:
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = resize_uint8(img, size, "squash")
    ref = torch_reference(img, size, size)
    assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
    # Same filter: equal to the float reference within rounding (1/2 grey level, plus fp noise).
    assert np.abs(ours.astype(np.float64) - ref).max() <= 0.5 + 1e-6


def test_center_crop_takes_the_middle_square() -> None:
    img = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    assert resized_shape(150, 200, 96, "center_crop") == (96, 128)
    ours = resize_uint8(img, 96, "center_crop")
    ref = torch_reference(img, 96, 128)[:, 16:112]
    assert np.abs(ours.astype(np.float64) - ref).max() <= 0.5 + 1e-6


def test_pil_bilinear_agrees_within_one_level() -> None:
    img = np.random.default_rng(2).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(img).resize((64, 64), Image.BILINEAR))
    assert np.abs(resize_uint8(img, 64).astype(int) - pil).max() <= 1


def test_normalize_and_preprocess(tmp_path: Path) -> None:
    prep = Preprocessing(size=32)
    img = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    x = preprocess(tmp_path / "x.png", prep)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    expect = (resize_uint8(img, 32) / 255.0 - np.array(prep.mean)) / np.array(prep.std)
    np.testing.assert_allclose(x, np.moveaxis(expect, -1, 0), atol=1e-6)
    assert normalize(np.zeros((2, 8, 8, 3), np.uint8), prep).shape == (2, 3, 8, 8)
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_load_rgb_rejects_non_rgb(tmp_path: Path) -> None:
    Image.new("L", (8, 8)).save(tmp_path / "g.png")
    with pytest.raises(ImageError, match=r"g\.png: image is greyscale"):
        load_rgb(tmp_path / "g.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="cannot decode"):
        load_rgb(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="resize"):
        Preprocessing(resize="stretch")


def test_normalize_in_chunks_is_image_by_image() -> None:
    """A large batch is normalized a chunk at a time (no whole-set float temporaries): the very
    numbers per-image normalization gives, channels first."""
    from kd_core.data import transforms

    prep = Preprocessing(size=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    n = transforms.NORMALIZE_CHUNK * 2 + 3
    x = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    got = normalize(x, prep)
    assert got.shape == (n, 3, 8, 8) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, np.stack([normalize(img, prep) for img in x]))
    x[0, 0, 0], x[0, 0, 1] = 0, 255  # both ends of every channel's table
    got = normalize(x, prep)
    # The lookup table is bitwise the float32 arithmetic, on every pixel.
    expected = (x.astype(np.float32) / np.float32(255) - np.float32(prep.mean)) / np.float32(
        prep.std)
    assert np.array_equal(got, np.moveaxis(expected, -1, 1))
    with pytest.raises(ValueError, match="uint8"):
        normalize(x.astype(np.float32), prep)
