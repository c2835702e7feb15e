"""The data layer: metadata reading, lesion-aware splits, bad inputs, and the real HAM10000."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd_core.data.__main__ import main as data_main
from kd_core.data.ham10000 import SPLIT_FILES, load_split, prepare, read_metadata
from kd_core.data.splits import SplitError, split_lesions

CSV_FILES = ("labeled_ham10000.csv", *SPLIT_FILES.values(), "split_metadata.json")


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_metadata(data_dir: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    path = data_dir / "HAM10000_metadata.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = edit(rows)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_prepare(data_dir: Path, out: Path, *extra: str) -> int:
    return data_main(["prepare", "--data-dir", str(data_dir), "--out", str(out), *extra])


# ---------------------------------------------------------------- the split itself


def test_split_keeps_lesions_together_and_is_order_independent() -> None:
    rng = np.random.default_rng(0)
    lesions = [f"L{rng.integers(0, 700):04d}" for _ in range(1000)]
    dx = ["mel" if int(lesion[1:]) % 9 == 0 else "nv" for lesion in lesions]
    splits = split_lesions(lesions, dx, seed=3)
    owner: dict[str, str] = {}
    for lesion, split in zip(lesions, splits, strict=True):
        assert owner.setdefault(lesion, split) == split
    counts = {s: splits.count(s) for s in ("train", "val", "holdout")}
    assert abs(counts["train"] / 1000 - 0.70) < 0.02
    order = rng.permutation(1000)
    shuffled = split_lesions([lesions[i] for i in order], [dx[i] for i in order], seed=3)
    assert [splits[i] for i in order] == shuffled
    assert split_lesions(lesions, dx, seed=4) != splits


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(SplitError, match="fractions"):
        split_lesions(["a", "b"], ["nv", "mel"], fractions=(0.5, 0.5, 0.5))


# ---------------------------------------------------------------- prepare on generated data


def test_prepare_writes_reproducible_splits(synth_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_prepare(synth_dir, a) == 0
    assert run_prepare(synth_dir, b, "--force") == 0
    for name in CSV_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert run_prepare(synth_dir, a) == 0
    assert "reusing splits" in capsys.readouterr().out
    meta = json.loads((a / "split_metadata.json").read_text())
    assert meta["seed"] == 42 and len(meta["metadata_sha256"]) == 64
    header = (a / "train_data.csv").read_text().splitlines()[0].split(",")
    assert header == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization",
                      "image_path", "target"]
    splits = {s: load_split(a, s) for s in SPLIT_FILES}
    assert sum(len(s) for s in splits.values()) == 400
    assert all(s.targets.sum() > 0 for s in splits.values())
    assert all(p.is_file() for s in splits.values() for p in s.paths)
    np.testing.assert_array_equal(splits["val"].targets,
                                  [int(d == "mel") for d in splits["val"].dx])


def test_dataverse_style_metadata_gives_the_same_split(synth_dir: Path, tmp_path: Path) -> None:
    data = copy_dataset(synth_dir, tmp_path / "dv")
    kaggle = (data / "HAM10000_metadata.csv").read_text()
    lines = kaggle.splitlines()
    out = [lines[0] + ",dataset"]
    for line in lines[1:]:
        cols = line.split(",")
        cols[4] = str(int(float(cols[4]))) if cols[4] else ""
        out.append(",".join(cols) + ",vidir_modern")
    (data / "dataverse.csv").write_bytes(("\r\n".join(out) + "\r\n").encode())
    assert prepare(synth_dir, tmp_path / "k", verbose=False)
    assert prepare(data, tmp_path / "d", metadata="dataverse.csv", verbose=False)
    for split in SPLIT_FILES:
        assert load_split(tmp_path / "k", split).image_ids == load_split(
            tmp_path / "d", split).image_ids
    assert read_metadata(data / "dataverse.csv").columns[-1] == "dataset"


def test_flat_images_folder_is_found(synth_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "flat"
    data.mkdir()
    shutil.copy(synth_dir / "HAM10000_metadata.csv", data)
    (data / "images").mkdir()
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        for f in (synth_dir / part).iterdir():
            shutil.copy(f, data / "images" / f.name)
    assert run_prepare(data, tmp_path / "out") == 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_metadata", "metadata file not found"),
        ("missing_column", "missing column(s) dx"),
        ("duplicate_id", "duplicate image_id"),
        ("missing_image", "missing on disk"),
        ("empty_class", "melanoma class is empty"),
        ("no_positives_in_a_split", "would get no melanoma"),
        ("unknown_dx", "unknown dx"),
    ],
)
def test_bad_metadata_fails_clearly(case: str, message: str, synth_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = copy_dataset(synth_dir, tmp_path / "d")
    meta = data / "HAM10000_metadata.csv"
    if case == "missing_metadata":
        meta.unlink()
    elif case == "missing_column":
        rewrite_metadata(data, lambda rows: [{k: v for k, v in r.items() if k != "dx"}
                                             for r in rows])
    elif case == "duplicate_id":
        rewrite_metadata(data, lambda rows: [*rows, rows[3]])
    elif case == "missing_image":
        next((data / "HAM10000_images_part_2").iterdir()).unlink()
    elif case == "empty_class":
        rewrite_metadata(data, lambda rows: [{**r, "dx": "nv" if r["dx"] == "mel" else r["dx"]}
                                             for r in rows])
    elif case == "no_positives_in_a_split":
        def one_mel_lesion(rows: list[dict[str, str]]) -> list[dict[str, str]]:
            first = next(r["lesion_id"] for r in rows if r["dx"] == "mel")
            return [{**r, "dx": "nv"} if r["dx"] == "mel" and r["lesion_id"] != first else r
                    for r in rows]
        rewrite_metadata(data, one_mel_lesion)
    elif case == "unknown_dx":
        rewrite_metadata(data, lambda rows: [{**rows[0], "dx": "melanoma"}, *rows[1:]])
    assert run_prepare(data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "out" / "split_metadata.json").exists()


@pytest.mark.parametrize(("mode", "kind"), [("L", "greyscale"), ("CMYK", "CMYK"),
                                            ("RGBA", "alpha"), ("corrupt", "cannot decode")])
def test_bad_images_are_named_and_only_skipped_on_request(
        mode: str, kind: str, synth_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = copy_dataset(synth_dir, tmp_path / "d")
    victim = sorted((data / "HAM10000_images_part_1").iterdir())[5]
    if mode == "corrupt":
        victim.write_bytes(victim.read_bytes()[: 200])
    elif mode == "RGBA":  # JPEG has no alpha: the image becomes a PNG of the same id
        Image.open(victim).convert(mode).save(victim.with_suffix(".png"), format="PNG")
        victim.unlink()
        victim = victim.with_suffix(".png")
    else:
        Image.open(victim).convert(mode).save(victim.with_suffix(".tmp"), format="JPEG")
        victim.with_suffix(".tmp").replace(victim)
    assert run_prepare(data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert victim.name in err and kind in err and "--skip-corrupt" in err
    assert run_prepare(data, tmp_path / "out", "--skip-corrupt") == 0
    out = capsys.readouterr().out
    assert "skipped 1 corrupt or non-RGB image(s)" in out and victim.stem in out
    meta = json.loads((tmp_path / "out" / "split_metadata.json").read_text())
    assert meta["skipped"] == [victim.stem] and meta["counts"]["all"]["images"] == 399


def test_a_csv_that_is_not_utf8_is_named(synth_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = copy_dataset(synth_dir, tmp_path / "d")
    meta = data / "HAM10000_metadata.csv"
    lines = meta.read_text().splitlines()
    lines[3] += "\u00e9"  # a localization spelled in latin-1
    meta.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    assert run_prepare(data, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{meta}:4: not UTF-8 text (byte 0xe9)" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_damaged_split_file_is_named(synth_prepared: Path, tmp_path: Path) -> None:
    from kd_core.data.ham10000 import DataError

    prepared = copy_dataset(synth_prepared, tmp_path / "p")
    (prepared / "val_data.csv").write_text("lesion_id,image_id\nHAM_1,ISIC_1\n")
    with pytest.raises(DataError, match=r"val_data\.csv: unreadable split file \(KeyError"):
        load_split(prepared, "val")


def test_resolve_prepared_uses_the_cache_and_names_the_dataset(
        synth_dir: Path, synth_prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kd_core.data.ham10000 import DataError
    from kd_core.data.sources import dataset_name, default_prepared_dir, resolve_prepared

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    assert resolve_prepared(synth_prepared) == synth_prepared  # already prepared: as it is
    out = resolve_prepared(synth_dir, seed=42)
    assert out == default_prepared_dir(synth_dir) and out.is_relative_to(tmp_path / "cache")
    for name in CSV_FILES:
        assert (out / name).read_bytes() == (synth_prepared / name).read_bytes(), name
    assert dataset_name(out) == "synthetic demo data"
    with pytest.raises(DataError, match="not a data source: expected a prepared split folder"):
        resolve_prepared(tmp_path)


# ---------------------------------------------------------------- the real HAM10000


@pytest.mark.real_data
def test_real_ham10000_split(real_ham10000: Path, tmp_path: Path) -> None:
    out = prepare(real_ham10000, tmp_path / "a", verbose=False)
    meta = json.loads((out / "split_metadata.json").read_text())
    counts = meta["counts"]
    assert counts["all"]["images"] == 10015 and counts["all"]["lesions"] == 7470
    lesions = {s: set() for s in SPLIT_FILES}  # type: dict[str, set[str]]
    for split, name in SPLIT_FILES.items():
        with (out / name).open(newline="") as fh:
            lesions[split] = {r["lesion_id"] for r in csv.DictReader(fh)}
    assert not (lesions["train"] & lesions["val"] or lesions["train"] & lesions["holdout"]
                or lesions["val"] & lesions["holdout"])
    for split, target in (("train", 0.70), ("val", 0.15), ("holdout", 0.15)):
        assert abs(counts[split]["images"] / 10015 - target) <= 0.01, split
        assert abs(counts[split]["prevalence"] - 0.111) <= 0.01, split
    again = prepare(real_ham10000, tmp_path / "b", verbose=False)
    for name in CSV_FILES:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    dataverse = prepare(real_ham10000, tmp_path / "c", metadata="HAM10000_metadata_dataverse.csv",
                        verbose=False)
    for split in SPLIT_FILES:
        assert load_split(out, split).image_ids == load_split(dataverse, split).image_ids


def test_decoded_images_are_cached_and_an_unwritable_cache_is_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cached_images`` decodes once into the cache folder and reads it back after; a cache
    folder it cannot write only costs the next call the decoding."""
    from kd_core.data import dataset
    from kd_core.data.transforms import Preprocessing

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(paths[-1])
    prep = Preprocessing(size=8)
    first = dataset.cached_images(paths, prep, tmp_path / "cache")
    assert first.shape == (3, 8, 8, 3) and len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("decoded again")

    monkeypatch.setattr(dataset, "decode_images", no_decoding)
    assert np.array_equal(dataset.cached_images(paths, prep, tmp_path / "cache"), first)
    monkeypatch.undo()
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    assert np.array_equal(dataset.cached_images(paths, prep, blocked / "cache"), first)
