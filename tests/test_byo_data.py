"""Your own data: image folders and CSV lists are checked, split by group (stratified, seeded,
byte-reproducible) and read back by every consumer through one reader; tasks are multi-class by
default and binary with --positive; HAM10000 keeps its tasks and its splits byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd_core.data.__main__ import main as data_main
from kd_core.data.prepared import (
    SPLIT_FILES,
    DataError,
    DataInfo,
    Task,
    data_info,
    ham_info,
    load_split,
    task_for,
)
from kd_core.data.sources import data_kind, resolve_prepared, source_info

CLASSES = ("cat", "dog", "owl")


def make_image(path: Path, seed: int, mode: str = "RGB", size: int = 12) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode).save(
        path, format="PNG" if path.suffix == ".png" else "JPEG")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """3 classes x 8 images, one class in a nested folder and partly PNG."""
    root = tmp_path / "pets"
    for c, cls in enumerate(CLASSES):
        for i in range(8):
            sub = "nested/" if cls == "owl" and i % 2 else ""
            make_image(root / cls / f"{sub}{cls}{i}.{'png' if i == 3 else 'jpg'}", 10 * c + i)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def csv_dataset(root: Path, groups: bool = True) -> Path:
    """A CSV beside images/: 3 classes, 12 images each, pairs of images sharing a patient."""
    lines = ["path,label" + (",group" if groups else "")]
    for c, cls in enumerate(CLASSES):
        for i in range(12):
            make_image(root / "images" / f"{cls}_{i}.jpg", 100 * c + i)
            lines.append(f"images/{cls}_{i}.jpg,{cls}" + (f",p{c}_{i // 2}" if groups else ""))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def prepare(source: Path, out: Path, *extra: str) -> int:
    flag = "--csv" if source.suffix == ".csv" else "--data-dir"
    return data_main(["prepare", flag, str(source), "--out", str(out), *extra])


def split_bytes(out: Path) -> dict[str, bytes]:
    return {n: (out / n).read_bytes() for n in [*SPLIT_FILES.values(), "labeled_data.csv"]}


def test_image_folder_is_split_stratified_and_byte_reproducible(folder: Path, tmp_path: Path
                                                                ) -> None:
    assert data_kind(folder) == "imagefolder"
    assert prepare(folder, tmp_path / "a") == 0 and prepare(folder, tmp_path / "b") == 0
    assert split_bytes(tmp_path / "a") == split_bytes(tmp_path / "b")
    info = data_info(tmp_path / "a")
    assert (info.kind, info.name, info.classes) == ("imagefolder", "pets", CLASSES)
    splits = {s: load_split(tmp_path / "a", s) for s in SPLIT_FILES}
    assert sum(len(s) for s in splits.values()) == 24  # notes.txt is not an image
    for s in splits.values():  # every class in every split
        assert set(s.dx) == set(CLASSES) and all(p.is_file() for p in s.paths)
    assert "owl/nested/owl1.jpg" in {i for s in splits.values() for i in s.image_ids}
    assert prepare(folder, tmp_path / "c", "--seed", "7") == 0
    assert split_bytes(tmp_path / "c") != split_bytes(tmp_path / "a")  # the seed matters


def test_csv_groups_never_cross_splits(tmp_path: Path) -> None:
    csv_file = csv_dataset(tmp_path / "d")
    assert data_kind(csv_file) == "csv"
    out = resolve_prepared(csv_file, tmp_path / "p")
    seen: dict[str, str] = {}
    for name in SPLIT_FILES:
        split = load_split(out, name)
        assert set(split.dx) == set(CLASSES)
        for group in split.groups:
            assert seen.setdefault(group, name) == name, group
    assert len(seen) == 18 and data_info(out).name == "labels"
    # Row order does not change the split.
    lines = csv_file.read_text().splitlines()
    shuffled = tmp_path / "d" / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    again = resolve_prepared(shuffled, tmp_path / "q")
    for name in SPLIT_FILES:
        assert sorted(load_split(again, name).image_ids) == sorted(load_split(out, name).image_ids)


def test_labels_follow_the_model_or_the_task(folder: Path, tmp_path: Path) -> None:
    split = load_split(resolve_prepared(folder, tmp_path / "p"), "train")
    multi = split.labels_for(["cat", "dog", "owl"])
    np.testing.assert_array_equal(multi, [CLASSES.index(c) for c in split.dx])
    np.testing.assert_array_equal(split.labels_for(["owl", "dog", "cat"]),
                                  [2 - i for i in multi])
    np.testing.assert_array_equal(split.labels_for(["other", "dog"]),
                                  [int(c == "dog") for c in split.dx])
    np.testing.assert_array_equal(split.labels_for(["dog", "rest"], positive_index=0),
                                  [0 if c == "dog" else 1 for c in split.dx])
    with pytest.raises(DataError, match=r"labels \['cat', 'bird'\] do not match"):
        split.labels_for(["cat", "bird"])


def test_tasks_default_to_every_class_and_keep_ham10000s() -> None:
    info = DataInfo("imagefolder", "pets", CLASSES)
    assert task_for(info) == Task(CLASSES, None)
    assert task_for(info, positive="dog") == Task(("other", "dog"), 1)
    with pytest.raises(DataError, match="--positive bird: not a class of pets"):
        task_for(info, positive="bird")
    with pytest.raises(DataError, match="--target mel is a HAM10000 task"):
        task_for(info, "mel")
    clash = DataInfo("csv", "x", ("other", "tumour"))
    assert task_for(clash, positive="tumour").labels == ("not_tumour", "tumour")
    ham = ham_info()
    assert task_for(ham) == task_for(ham, "mel") == task_for(ham, positive="mel") == Task(
        ("other", "melanoma"), 1)
    dx = task_for(ham, "dx")
    assert dx.labels == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert dx.positive_index == 4
    assert task_for(ham, positive="nv") == Task(("other", "nv"), 1)


def test_source_info_needs_no_preparation(folder: Path, tmp_path: Path) -> None:
    assert source_info(folder).classes == CLASSES
    assert source_info(csv_dataset(tmp_path / "d")).classes == CLASSES
    assert not list(tmp_path.rglob("split_metadata.json"))


def _bad_folder(case: str, folder: Path) -> None:
    if case == "empty class":
        shutil.rmtree(folder / "dog")
        (folder / "dog").mkdir()
    elif case == "one class":
        for cls in ("dog", "owl"):
            shutil.rmtree(folder / cls)
    elif case == "too small":
        for f in sorted((folder / "dog").glob("*.jpg"))[:5]:
            f.unlink()
    elif case in ("corrupt", "greyscale"):
        victim = folder / "cat" / "cat2.jpg"
        if case == "corrupt":
            victim.write_bytes(victim.read_bytes()[:100])
        else:
            make_image(victim, 0, mode="L")


@pytest.mark.parametrize(("case", "message"), [
    ("empty class", "class folder(s) dog hold no images"),
    ("one class", "needs at least 2 class folders"),
    ("too small", "class 'dog' has 3 image(s) in 3 group(s): too few to give"),
    ("corrupt", "cat2.jpg: cannot decode image"),
    ("greyscale", "cat2.jpg: image is greyscale"),
])
def test_bad_image_folders_fail_with_one_line(case: str, message: str, folder: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    _bad_folder(case, folder)
    assert prepare(folder, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / "split_metadata.json").exists()


def test_unusable_images_are_skipped_on_request(folder: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _bad_folder("corrupt", folder)
    assert prepare(folder, tmp_path / "out", "--skip-corrupt") == 0
    assert "cat/cat2.jpg" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "split_metadata.json").read_text())
    assert meta["skipped"] == ["cat/cat2.jpg"] and meta["counts"]["all"]["images"] == 23


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("path,label,group", "file,label,group"), "missing column(s) path"),
    (lambda t: t.replace("images/cat_3.jpg,cat", "images/cat_3.jpg,", 1), ":5: empty label"),
    (lambda t: t.replace(",p0_1\n", ",\n", 1), ":4: empty group"),
    (lambda t: t + "images/cat_0.jpg,dog,p9\n", "path images/cat_0.jpg repeats line 2"),
    (lambda t: t + "images/gone.jpg,dog,p9\n", "1 image(s) listed are missing on disk"),
    (lambda t: "\n".join(x for x in t.splitlines() if ",owl," not in x or x.endswith("_0")),
     "class 'owl' has 2 image(s) in 1 group(s)"),
])
def test_bad_csv_files_name_the_line(edit: object, message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = csv_dataset(tmp_path / "d")
    csv_file.write_text(edit(csv_file.read_text()))  # type: ignore[operator]
    assert prepare(csv_file, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_folder_that_is_no_data_source_says_what_is_expected(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    (tmp_path / "empty").mkdir()
    assert prepare(tmp_path / "empty", tmp_path / "out") == 2
    assert "not a data source: expected a prepared split folder" in capsys.readouterr().err


# HAM10000's prepared splits before image-folder and CSV support (sha256 of each file).
HAM_SPLITS = {
    "train_data.csv": "e10e0a67cd76e27a95450851faa412a08ea2de35d82a5bbdb525b22b9af510d6",
    "val_data.csv": "7330cf3af642e27b605f5f6a684ff97873aa58df3594210d875acca53bb69075",
    "holdout_data.csv": "357712c27b07511d25f603eecdca34c2b284b35e18bc975a5341498276e4f632",
    "labeled_ham10000.csv": "c795955fb7e49a5759490a166087f71d58ebd1cc067ec7f8cc1c5f0b4196a98a",
}


@pytest.mark.real_data
def test_real_ham10000_splits_are_unchanged(real_ham10000: Path, tmp_path: Path) -> None:
    out = resolve_prepared(real_ham10000, tmp_path / "p", metadata="HAM10000_metadata.csv")
    got = {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in HAM_SPLITS}
    assert got == HAM_SPLITS
    # By default the Dataverse release (same rows plus the site column) is read when it is
    # there: the files gain a column, the split is the same image for image.
    default = resolve_prepared(real_ham10000, tmp_path / "d")
    for name in ("train", "val", "holdout"):
        assert load_split(default, name).image_ids == load_split(out, name).image_ids
    assert data_info(out).kind == "ham10000" and data_kind(real_ham10000) == "ham10000"
    split = load_split(out, "val")
    np.testing.assert_array_equal(split.labels_for(["other", "melanoma"]), split.targets)
