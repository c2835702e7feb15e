"""EDA plots on a tiny synthetic dataset, on a Dataverse-style CSV and on the real data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kd_core.data import eda, synthetic

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000"
NAMES = ["class_balance", "age_by_class", "sex_by_class", "localization_by_class",
         "images_per_lesion", "samples_per_class"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("eda") / "ham", 60, 32, seed=2)


def _check_pngs(paths: list[Path], out: Path) -> None:
    from PIL import Image

    assert [p.name for p in paths] == [f"{n}.png" for n in NAMES]
    for p in paths:
        assert p.parent == out and p.is_file()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
            im.verify()
    assert sorted(f.name for f in out.iterdir()) == sorted(p.name for p in paths)  # no temp files


def test_eda_writes_valid_pngs(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "eda"
    _check_pngs(eda.eda(tiny, out), out)


def test_dataverse_csv_with_crlf_and_flat_images_folder(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "dv"
    (root / "images").mkdir(parents=True)
    (root / "images_hires").mkdir()  # must be ignored: holds a broken file of a real id
    for part in synthetic.PARTS:
        for f in (tiny / part).iterdir():
            shutil.copy(f, root / "images" / f.name)
    text = (tiny / synthetic.METADATA).read_text().splitlines()
    lines = [text[0] + ",dataset"] + [ln.replace(".0,", ",") + ",vidir_modern" for ln in text[1:]]
    (root / "meta.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    first = text[1].split(",")[1]
    (root / "images_hires" / f"{first}.jpg").write_bytes(b"not a jpeg")
    recs = eda.read_metadata(root / "meta.csv")
    assert len(recs) == 60 and all(r.age is None or r.age == int(r.age) for r in recs)
    out = tmp_path / "out"
    _check_pngs(eda.eda(root, out, metadata="meta.csv"), out)


def test_bad_metadata_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "m.csv").write_text("lesion_id,image_id\nHAM_1,ISIC_1\n")
    with pytest.raises(ValueError, match=r"m\.csv: missing column\(s\) dx"):
        eda.read_metadata(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("lesion_id,image_id,dx\nHAM_1,ISIC_1,mel\n")
    assert eda.read_metadata(tmp_path / "m.csv")[0].sex == "unknown"
    (tmp_path / "m.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_1,melanoma,histo,50,male,back\n")
    with pytest.raises(ValueError, match=r"m\.csv:2: unknown dx 'melanoma'"):
        eda.read_metadata(tmp_path / "m.csv")
    from kd_core.data.__main__ import main

    assert main(["eda", "--data-dir", str(tmp_path), "--metadata", "m.csv",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "unknown dx" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.real_data
def test_eda_on_real_ham10000(tmp_path: Path) -> None:
    if not (REAL / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"{REAL} not present")
    recs = eda.read_metadata(REAL / "HAM10000_metadata.csv")
    assert len(recs) == 10015 and sum(r.dx == "mel" for r in recs) == 1113
    out = tmp_path / "eda"
    _check_pngs(eda.eda(REAL, out), out)
