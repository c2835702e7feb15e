"""The synthetic HAM10000 stand-in: layout, determinism, idempotence and learnability."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from kd_core.data import synthetic
from kd_core.data.transforms import load_rgb, resize_uint8

N, SIZE = 300, 64
SEXES = {"male", "female", "unknown"}
DX_TYPES = {"histo", "follow_up", "consensus", "confocal"}


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("synth") / "ham", N, SIZE, seed=1)


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / synthetic.METADATA).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _image(root: Path, image_id: str) -> Path:
    found = [root / p / f"{image_id}.jpg" for p in synthetic.PARTS
             if (root / p / f"{image_id}.jpg").is_file()]
    assert len(found) == 1, f"{image_id}: {len(found)} files"
    return found[0]


def test_metadata_layout_and_values(ds: Path) -> None:
    raw = (ds / synthetic.METADATA).read_bytes()
    assert b"\r" not in raw
    assert raw.split(b"\n")[0] == b"lesion_id,image_id,dx,dx_type,age,sex,localization"
    rows = _rows(ds)
    assert len(rows) == N
    assert len({r["image_id"] for r in rows}) == N
    for r in rows:
        assert re.fullmatch(r"HAM_\d{7}", r["lesion_id"]), r
        assert re.fullmatch(r"ISIC_\d{7}", r["image_id"]), r
        assert r["dx"] in synthetic.CLASSES and r["dx_type"] in DX_TYPES, r
        assert r["age"] == "" or re.fullmatch(r"\d{1,2}\.0", r["age"]), r
        assert r["sex"] in SEXES and r["localization"] in synthetic.LOCALIZATIONS, r
    assert sum(r["age"] == "" for r in rows) < 0.05 * N


def test_image_files_split_in_two_parts_and_decode_as_rgb(ds: Path) -> None:
    rows = _rows(ds)
    counts = [len(list((ds / p).iterdir())) for p in synthetic.PARTS]
    assert counts == [N // 2, N // 2]
    for r in rows[::15]:
        img = load_rgb(_image(ds, r["image_id"]))
        assert img.shape == (SIZE * 3 // 4, SIZE, 3) and img.dtype == np.uint8
        assert 40 < img.mean() < 240 and img.std() > 5  # a picture, not a flat fill
    marker = json.loads((ds / synthetic.MARKER).read_text())
    assert marker["counts"] == {dx: sum(r["dx"] == dx for r in rows) for dx in synthetic.CLASSES}
    assert sum(marker["counts"].values()) == N and marker["width"] == SIZE


@pytest.mark.parametrize("n", [300, 2000, 10015])
def test_class_counts_follow_ham10000(n: int) -> None:
    counts = synthetic.class_counts(n)
    total = sum(synthetic.HAM_COUNTS.values())
    assert sum(counts.values()) == n and min(counts.values()) >= 1
    for dx, c in counts.items():
        assert abs(c - n * synthetic.HAM_COUNTS[dx] / total) <= 1, (dx, c)
    assert abs(counts["mel"] - round(0.111 * n)) <= 1
    if n == total:
        assert counts == {dx: synthetic.HAM_COUNTS[dx] for dx in synthetic.CLASSES}


def test_tiny_datasets_still_have_every_class() -> None:
    assert synthetic.class_counts(7) == dict.fromkeys(synthetic.CLASSES, 1)
    assert sum(synthetic.class_counts(3).values()) == 3


def test_dataset_class_counts_match_plan(ds: Path) -> None:
    assert Counter(r["dx"] for r in _rows(ds)) == synthetic.class_counts(N)


def test_lesions_with_several_images_share_metadata_and_look_alike(ds: Path) -> None:
    rows = _rows(ds)
    by_lesion: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_lesion.setdefault(r["lesion_id"], []).append(r)
    multi = [v for v in by_lesion.values() if len(v) > 1]
    assert 0.12 < len(multi) / len(by_lesion) < 0.4  # HAM10000: 26 % of lesions
    assert 1.2 < N / len(by_lesion) < 1.5  # HAM10000: 1.34 images per lesion
    for group in multi:
        assert len({tuple(r[c] for c in synthetic.COLUMNS if c != "image_id") for r in group}) == 1

    def thumb(r: dict[str, str]) -> np.ndarray:
        return resize_uint8(load_rgb(_image(ds, r["image_id"])), 8).astype(float)

    same = [np.abs(thumb(g[0]) - thumb(g[1])).mean() for g in multi[:30]]
    other = [np.abs(thumb(a[0]) - thumb(b[0])).mean() for a, b in pairwise(multi[:31])]
    assert 0 < np.mean(same) < 0.7 * np.mean(other), (same, other)  # re-photographed, not copied


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = synthetic.generate(tmp_path / "a", 40, 32, seed=5)
    b = synthetic.generate(tmp_path / "b", 40, 32, seed=5)
    c = synthetic.generate(tmp_path / "c", 40, 32, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 42
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / synthetic.METADATA).read_bytes() != (c / synthetic.METADATA).read_bytes()
    first = _rows(a)[0]["image_id"]
    assert _image(a, first).read_bytes() != _image(c, _rows(c)[0]["image_id"]).read_bytes()


def test_second_call_is_a_no_op_and_force_is_atomic(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = synthetic.generate(tmp_path / "d", 20, 32, seed=3)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(*args: object, **kwargs: object) -> np.ndarray:
        raise RuntimeError("render called")

    monkeypatch.setattr(synthetic, "render", boom)
    assert synthetic.generate(out, 20, 32, seed=3) == out  # complete: nothing re-rendered
    with pytest.raises(RuntimeError, match="render called"):
        synthetic.generate(out, 20, 32, seed=3, force=True)
    with pytest.raises(RuntimeError, match="render called"):
        synthetic.generate(out, 21, 32, seed=3)  # other parameters: regenerates
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name != "d"]  # no temp folder left


def test_refuses_to_replace_a_foreign_folder_and_bad_parameters(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        synthetic.generate(tmp_path / "mine", 10, 32, force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="n_images"):
        synthetic.generate(tmp_path / "x", 0, 32)
    with pytest.raises(ValueError, match="size"):
        synthetic.generate(tmp_path / "x", 10, 8)


def test_cli_run_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kd_core.data.__main__ import main

    assert main(["synth", "--out", str(tmp_path / "e"), "--n-images", "14", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "14 images" in out and "mel=" in out and "lesions" in out
    assert len(_rows(tmp_path / "e")) == 14
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["synth", "--out", str(tmp_path / "mine"), "--size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a synthetic dataset" in err[0]
    assert main(["synth", "--out", str(tmp_path / "f"), "--n-images", "0"]) == 2
    assert "--n-images" in capsys.readouterr().err and not (tmp_path / "f").exists()


def _features(img: np.ndarray) -> list[float]:
    """Crude lesion features: area, colour spread, black and blue-grey share, asymmetry."""
    x = img.astype(np.float64) / 255
    lum = x.mean(2)
    skin = np.percentile(lum, 75)
    mask = lum < 0.82 * skin
    if mask.sum() < 5:
        mask = lum <= np.percentile(lum, 5)
    ys, xs = np.nonzero(mask)
    centred = np.roll(mask, (mask.shape[0] // 2 - int(ys.mean()), mask.shape[1] // 2 -
                             int(xs.mean())), (0, 1))
    inside, asymmetry = x[mask], (centred ^ centred[::-1, ::-1]).sum() / mask.sum()
    return [mask.mean(), inside.std(0).mean(), (inside.mean(1) < 0.375 * skin).mean(),
            (inside[:, 2] > inside[:, 0]).mean(), asymmetry]


def test_melanoma_is_learnable_but_not_trivial(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = synthetic.generate(tmp_path / "learn", 1000, 64, seed=0)
    rows = _rows(root)
    features = np.array([_features(load_rgb(_image(root, r["image_id"]))) for r in rows])
    y = np.array([r["dx"] == "mel" for r in rows])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_predict(model, features, y, groups=[r["lesion_id"] for r in rows],
                               cv=GroupKFold(5), method="predict_proba")[:, 1]
    auc = roc_auc_score(y, scores)
    assert 0.7 < auc < 0.99, auc
