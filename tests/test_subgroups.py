"""Subgroup building blocks: age bands, factor selection, per-group metrics on a group without
melanomas, and the site-only baseline on the real HAM10000 split (CLINICAL.md's figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.clinical_inputs import ClinicalError, ScoredRun
from benchmarks.subgroups import age_band, factors_for, group_metrics, site_baseline


def scored(rows: list[dict[str, str]], columns: list[str],
           train: list[dict[str, str]] | None = None) -> ScoredRun:
    y = np.array([int(r["target"]) for r in rows])
    return ScoredRun(Path("."), {}, {}, [r["image_id"] for r in rows], y, rows, columns, [],
                     train or [])


@pytest.mark.parametrize(("value", "band"), [("0", "0-19"), ("15.0", "0-19"), ("20", "20-39"),
                                             ("59.0", "40-59"), ("75", "60-79"), ("80", "80+"),
                                             ("85.0", "80+"), ("", "missing"), ("?", "missing")])
def test_age_bands(value: str, band: str) -> None:
    assert age_band(value) == band


def test_factors_follow_the_columns() -> None:
    kaggle = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "target"]
    run = scored([{"image_id": "a", "target": "0"}], kaggle)
    factors, notes = factors_for(run, None)
    assert [f.name for f in factors] == ["sex", "age band", "localization", "dx_type"]
    assert notes == ["site: n/a, the metadata has no `dataset` column (the Kaggle release lacks "
                     "it; use the Dataverse metadata; sites are never inferred)"]
    assert [f.column for f in factors_for(run, ["sex"])[0]] == ["sex"]
    with pytest.raises(ClinicalError, match="--group-by scanner: no such column"):
        factors_for(run, ["scanner"])


def test_a_group_without_melanomas_is_reported_not_crashed() -> None:
    y = np.zeros(12, dtype=np.int64)
    p = np.r_[np.full(6, 0.1), np.full(6, 0.5)]
    got = group_metrics(y, p, p >= 0.3)
    assert got["n"] == 12 and got["n_pos"] == 0 and got["underpowered"]
    assert got["roc_auc"] is None and got["roc_auc_ci_low"] is None
    assert got["sensitivity"] is None and got["sensitivity_ci_high"] is None
    assert got["specificity"] == pytest.approx(6 / 12) and got["referred"] == 6
    one = group_metrics(np.r_[y, 1], np.r_[p, 0.9], np.r_[p, 0.9] >= 0.3)
    assert one["roc_auc"] == 1.0 and one["roc_auc_ci_low"] is None  # a point, no interval


@pytest.mark.real_data
def test_site_only_baseline_on_the_real_holdout(real_ham10000: Path) -> None:
    """The lesion-grouped 70/15/15 split (seed 42) of the Dataverse metadata: CLINICAL.md's
    training-split site prevalences and the site-only baseline ROC-AUC of 0.72."""
    from kd_core.data.ham10000 import read_metadata
    from kd_core.data.splits import split_lesions

    path = real_ham10000 / "HAM10000_metadata_dataverse.csv"
    if not path.is_file():
        pytest.skip("the Dataverse metadata is not beside the real data")
    meta = read_metadata(path)
    rows = [{**r, "target": "1" if r["dx"] == "mel" else "0"} for r in meta.rows]
    split = split_lesions([r["lesion_id"] for r in rows], [r["dx"] for r in rows], seed=42)
    train = [r for r, s in zip(rows, split, strict=True) if s == "train"]
    holdout = [r for r, s in zip(rows, split, strict=True) if s == "holdout"]
    assert len(holdout) == 1495
    base = site_baseline(scored(holdout, [*meta.columns, "target"], train))
    assert base is not None
    assert base["train_prevalence"] == pytest.approx(
        {"rosendahl": 0.154, "vidir_modern": 0.204, "vidir_molemax": 0.007,
         "vienna_dias": 0.148}, abs=0.0005)
    assert round(base["roc_auc"], 2) == 0.72
    assert base["roc_auc_ci_low"] < 0.72 < base["roc_auc_ci_high"]
    molemax = [r for r in holdout if r["dataset"] == "vidir_molemax"]
    assert (len(molemax), sum(r["target"] == "1" for r in molemax)) == (566, 2)
