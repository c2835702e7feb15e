"""INT8 calibration images: class balance, the eval preprocessing, the three folder kinds and the
minimum sample count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from exporters_support import prepared_synthetic, write_image_folder

from exporters.calibration_data import (
    MIN_SAMPLES,
    CalibrationDataError,
    balanced_indices,
    load_calibration,
)
from kd_core.data.ham10000 import load_split
from kd_core.data.transforms import Preprocessing, preprocess


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_synthetic(tmp_path_factory.mktemp("data"), n_images=120, size=48)


def test_balanced_indices() -> None:
    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    idx = balanced_indices(labels, 30, seed=1)
    assert len(idx) == len(set(idx.tolist())) == 30
    counts = np.bincount(labels[idx], minlength=3)
    assert counts[1] == 5 and abs(int(counts[0]) - int(counts[2])) <= 1  # shortfall refilled
    assert np.array_equal(idx, balanced_indices(labels, 30, seed=1))
    assert not np.array_equal(idx, balanced_indices(labels, 30, seed=2))
    assert len(balanced_indices(labels, 500, seed=0)) == len(labels)


def test_calibration_from_prepared_split(prepared: Path) -> None:
    prep = Preprocessing(size=32)
    calib = load_calibration(prepared, prep, ["other", "melanoma"], n=12, seed=5,
                             allow_few=True)
    train = load_split(prepared, "train")
    assert set(calib.image_ids) <= set(train.image_ids) and len(calib) == 12
    assert calib.class_counts == {"other": 6, "melanoma": 6}
    path = train.paths[train.image_ids.index(calib.image_ids[0])]
    assert np.array_equal(calib.normalized()[0], preprocess(path, prep))  # the eval pipeline
    again = load_calibration(prepared, prep, ["other", "melanoma"], n=12, seed=5,
                             allow_few=True)
    assert again.image_ids == calib.image_ids
    block = calib.to_manifest()
    assert block["seed"] == 5 and block["samples"] == 12
    assert block["class_balanced"] is True
    nhwc = next(calib.batches("NHWC"))
    assert tuple(nhwc.shape) == (1, 32, 32, 3) and nhwc.dtype == torch.float32


def test_calibration_from_plain_and_ham_folders(prepared: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    folder = write_image_folder(tmp_path / "imgs", n=10)
    # Class sub-folders: an image-folder dataset, balanced over its train split.
    calib = load_calibration(folder, Preprocessing(size=32), ["a", "b"], n=6, seed=0,
                             allow_few=True)
    assert calib.kind == "imagefolder" and calib.class_counts == {"a": 3, "b": 3}
    assert all(i.startswith(("a/", "b/")) for i in calib.image_ids)
    # Images without class folders: sampled without labels.
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in [*folder.rglob("*.png"), *folder.rglob("*.jpg")]:
        f.rename(plain / f"{f.parent.name}_{f.name}")
    calib = load_calibration(plain, Preprocessing(size=32), ["a", "b"], n=6, seed=0,
                             allow_few=True)
    assert calib.class_counts is None and calib.kind == "folder" and len(calib) == 6
    assert "without class balance" in caplog.text
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    data = json.loads((prepared / "split_metadata.json").read_text())["data_dir"]
    ham = load_calibration(Path(data), Preprocessing(size=32), ["other", "melanoma"], 8, 0,
                           allow_few=True)
    assert ham.kind == "ham10000"
    assert list((tmp_path / "cache" / "prepared").glob("*/train_data.csv"))
    with pytest.raises(CalibrationDataError, match="not a folder"):
        load_calibration(plain / "a_img_001.png", Preprocessing(size=32), ["a"], 4,
                         allow_few=True)


def test_too_few_images_need_the_override(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "imgs", n=5)
    with pytest.raises(CalibrationDataError, match=f"below the minimum of {MIN_SAMPLES}"):
        load_calibration(folder, Preprocessing(size=32), ["a", "b"], n=MIN_SAMPLES - 1)
    with pytest.raises(CalibrationDataError, match="only 5 calibration images"):
        load_calibration(folder, Preprocessing(size=32), ["a", "b"])
    assert len(load_calibration(folder, Preprocessing(size=32), ["a", "b"],
                                allow_few=True)) == 5
