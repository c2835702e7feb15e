"""Leave-one-site-out end to end on synthetic data with a site column (quick profile: a tiny
model, a few steps), its reuse of finished folds and its errors; the site folds and age bands
on the real HAM10000 metadata."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from clinical_support import SITES, sited_metadata

from benchmarks.loso import PROFILES, LosoConfig, LosoError, fold_rows, load_sites, main
from benchmarks.subgroups import age_band
from kd_core.io import loads_json


def test_loso_trains_on_three_sites_and_tests_on_the_fourth(
        synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metadata = sited_metadata(synth_dir, tmp_path / "with_sites.csv")
    out = tmp_path / "loso"
    argv = ["--data-dir", str(synth_dir), "--out", str(out), "--profile", "quick",
            "--metadata", str(metadata), "--device", "cpu"]
    assert main(argv) == 0
    data = loads_json((out / "loso.json").read_text())
    assert isinstance(data, dict)
    with metadata.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    sites = Counter(r["dataset"] for r in rows)
    folds = {f["site"]: f for f in data["folds"]}
    assert set(folds) == set(SITES)
    for site, f in folds.items():
        assert f["train_sites"] == sorted(set(SITES) - {site})
        assert f["n"] + f["excluded_shared_lesions"] == sites[site]
        assert f["train_images"] == len(rows) - sites[site]
        assert 0.0 <= f["threshold"] <= 1.0 and f["internal_roc_auc"] is not None
        prepared = out / site / "prepared"  # split by lesion among the training sites only
        with (prepared / "train_data.csv").open(newline="") as fh:
            assert {r["dataset"] for r in csv.DictReader(fh)} <= set(SITES) - {site}
    assert folds["delta"]["n_pos"] == 0 and folds["delta"]["roc_auc"] is None  # no melanoma
    assert folds["delta"]["specificity"] is not None
    alpha = folds["alpha"]
    assert alpha["n_pos"] > 0 and alpha["roc_auc_ci_low"] <= alpha["roc_auc"] <= \
        alpha["roc_auc_ci_high"]
    md = (out / "loso.md").read_text()
    assert md.count("\n| ") == 1 + len(SITES) and "no melanomas" in md
    assert (out / "loso.csv").read_text().splitlines()[0].startswith("site,n,n_pos")
    capsys.readouterr()
    assert main([*argv, "--sites", "alpha"]) == 0  # a finished fold is reused, not retrained
    assert "reusing the finished fold" in capsys.readouterr().out


def test_loso_refuses_metadata_without_sites(synth_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(synth_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no `dataset` column" in err and "\n" not in err
    metadata = sited_metadata(synth_dir, tmp_path / "with_sites.csv")
    assert main(["--data-dir", str(synth_dir), "--out", str(tmp_path / "o"), "--metadata",
                 str(metadata), "--sites", "omega"]) == 2
    assert "--sites omega: not in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the inputs were checked


@pytest.mark.real_data
def test_real_sites_folds_and_age_bands(real_ham10000: Path) -> None:
    dataverse = real_ham10000 / "HAM10000_metadata_dataverse.csv"
    if not dataverse.is_file():
        pytest.skip("the Dataverse metadata is not beside the real data")
    cfg = LosoConfig(str(real_ham10000), "unused", PROFILES["quick"])
    meta, sites = load_sites(cfg)
    assert sites == ["vidir_molemax", "vidir_modern", "rosendahl", "vienna_dias"]
    counts = Counter(r["dataset"] for r in meta.rows)
    assert [counts[s] for s in sites] == [3954, 3363, 2259, 439]
    for site in sites:
        train, test, excluded = fold_rows(meta.rows, site, "dataset")
        assert len(train) == 10015 - counts[site] and len(test) + excluded == counts[site]
        assert not {r["lesion_id"] for r in train} & {r["lesion_id"] for r in test}
    mel = Counter(age_band(r["age"]) for r in meta.rows if r["dx"] == "mel")  # CLINICAL.md
    assert mel == {"0-19": 1, "20-39": 92, "40-59": 361, "60-79": 496, "80+": 161,
                   "missing": 2}
    with pytest.raises(LosoError, match="no `dataset` column"):
        load_sites(LosoConfig(str(real_ham10000), "unused", PROFILES["quick"],
                              metadata="HAM10000_metadata.csv"))
