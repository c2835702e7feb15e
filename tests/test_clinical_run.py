"""The clinical evaluation end to end on a small real run: the harness writes the subgroup
tables (a site without melanomas included), the plots and the model card; the CLI groups by any
column, says "n/a" for a missing site column and exits 2 on bad input; the notebooks execute."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from clinical_support import SITES, clinical_run

from benchmarks.subgroups import main
from kd_core.io import loads_json

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clinical_run(tmp_path_factory.mktemp("clinical") / "run", synth_dir)


def clinical(results: Path) -> dict[str, Any]:
    data = loads_json((results / "subgroups.json").read_text())  # strict: no NaN
    assert isinstance(data, dict)
    return data


def rows_of(data: dict[str, Any], factor: str, model: str) -> dict[str, dict[str, Any]]:
    return {r["value"]: r for r in data["groups"] if r["factor"] == factor and r["model"] == model}


def test_harness_writes_subgroups_with_intervals_and_paired_deltas(run: Path) -> None:
    bench = run / "benchmark"
    for name in ("subgroups.json", "subgroups.md", "subgroups.csv", "plots/decision_curve.png",
                 "plots/reliability_overlay.png"):
        assert (bench / name).stat().st_size > 500, name
    data, results = clinical(bench), json.loads((bench / "results.json").read_text())
    student = data["meta"]["reference"]
    assert student == "float_student_tiny_mobilenet"
    assert [m["name"] for m in data["models"]] == [r["name"] for r in results["rows"]]
    harness = {r["name"]: r["accuracy"] for r in results["rows"]}
    for m in data["models"]:  # two implementations agree on the overall figures
        o = m["overall"]
        assert o["roc_auc"] == pytest.approx(harness[m["name"]]["roc_auc"], abs=1e-9)
        assert o["sensitivity"] == pytest.approx(harness[m["name"]]["sensitivity"], abs=1e-12)
        assert o["roc_auc_ci_low"] <= o["roc_auc"] <= o["roc_auc_ci_high"]
        assert o["sensitivity_ci_low"] <= o["sensitivity"] <= o["sensitivity_ci_high"]
    with (run / "data" / "prepared" / "holdout_data.csv").open(newline="") as fh:
        holdout = list(csv.DictReader(fh))
    sites = rows_of(data, "site", student)
    assert {v: r["n"] for v, r in sites.items()} == Counter(r["dataset"] for r in holdout)
    assert set(sites) <= set(SITES) and sites["delta"]["n_pos"] == 0
    empty = sites["delta"]  # a site without melanomas: undefined, not a crash, not NaN
    assert empty["roc_auc"] is None and empty["sensitivity"] is None
    assert empty["specificity"] is not None and empty["underpowered"]
    assert any(w.startswith("site = delta: 0 melanoma(s)") for w in data["warnings"])
    int8 = rows_of(data, "overall", "tiny_mobilenet_onnx_int8")["all"]["delta"]
    assert int8["reference"] == student
    assert int8["delta_auc_ci_low"] <= int8["delta_auc"] <= int8["delta_auc_ci_high"]
    assert int8["delta_auc"] == pytest.approx(
        harness["tiny_mobilenet_onnx_int8"]["roc_auc_delta_vs_student"], abs=1e-9)
    fp32 = rows_of(data, "site", "tiny_mobilenet_onnx_fp32")
    assert all(r["delta"]["referred_only_by_model"] + r["delta"]["referred_only_by_reference"]
               <= 1 for r in fp32.values())  # fp32 follows the float student
    assert set(data["decision_curve"]["models"]) == set(harness)
    assert {f["name"] for f in data["meta"]["factors"]} == {
        "site", "sex", "age band", "localization", "dx_type"}
    assert data["site_baseline"]["roc_auc"] is not None
    md = (bench / "subgroups.md").read_text()
    assert "## By site (`dataset`)" in md and "tiny_mobilenet_onnx_int8" in md
    assert "| tiny_mobilenet_onnx_fp32 |" not in md.split("## By site")[1]  # fp32: CSV only
    header = (bench / "subgroups.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["factor", "column", "value", "model"] and "vs_ref_delta_auc" in header


def test_model_card_in_the_run_folder_and_beside_the_manifest(run: Path) -> None:
    card = (run / "MODEL_CARD.md").read_text()
    assert (run / "export" / "MODEL_CARD.md").read_text() == card
    for heading in ("Intended use", "Out-of-scope use", "Data", "Model and distillation",
                    "Performance (with 95 % intervals)", "Performance by subgroup",
                    "Calibration", "Operating point in plain words",
                    "Quantization effects per artefact", "Limitations", "TRIPOD+AI items"):
        assert f"## {heading}" in card, heading
    assert "not a medical device" in card and "untested" in card
    assert "synthetic demo data" in card and "T = 2.0 and alpha = 0.5" in card
    o = next(m for m in clinical(run / "benchmark")["models"] if m["role"] == "student")
    prev = clinical(run / "benchmark")["meta"]["prevalence"]
    mel = 1000 * prev
    referred = mel * o["overall"]["sensitivity"] + (1000 - mel) * (
        1 - o["overall"]["specificity"])
    assert f"would refer about {referred:.0f} lesions" in card
    assert "| tiny_mobilenet_onnx_int8 | onnx | int8 |" in card


def test_cli_group_by_and_bad_input(run: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "R"
    shutil.copytree(run / "benchmark", results)
    assert main([str(results), "--group-by", "sex,localization"]) == 0
    data = clinical(results)
    assert [f["name"] for f in data["meta"]["factors"]] == ["sex", "localization"]
    assert main([str(results), "--group-by", "skin_type"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --group-by skin_type: no such column") and "\n" not in err
    assert main([str(tmp_path / "missing")]) == 2
    assert "results folder not found" in capsys.readouterr().err


def test_metadata_without_sites_says_na(run: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "kaggle_prepared"
    shutil.copytree(run / "data" / "prepared", prepared)
    for name in ("train_data.csv", "holdout_data.csv"):  # the Kaggle columns only
        with (prepared / name).open(newline="") as fh:
            reader = csv.DictReader(fh)
            cols = [c for c in reader.fieldnames or [] if c != "dataset"]
            rows = list(reader)
        with (prepared / name).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, cols, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    results = tmp_path / "R"
    shutil.copytree(run / "benchmark", results)
    data = json.loads((results / "results.json").read_text())
    data["meta"]["prepared"] = str(prepared)
    (results / "results.json").write_text(json.dumps(data))
    assert main([str(results)]) == 0
    out = clinical(results)
    assert "site" not in {f["name"] for f in out["meta"]["factors"]}
    assert any(n.startswith("site: n/a, the metadata has no `dataset` column") for n in
               out["notes"])
    assert out["site_baseline"] is None and all(m["within_site_roc_auc"] is None
                                                for m in out["models"])


def test_help_and_imports_stay_free_of_torch() -> None:
    code = ("import sys, benchmarks.subgroups, benchmarks.loso, benchmarks.clinical, "
            "kd_core.stats; assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)
    for module in ("benchmarks.subgroups", "benchmarks.loso"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], check=True, env=env,
                             cwd=REPO, capture_output=True, text=True).stdout
        assert "Exit codes: 0 ok" in out


def test_notebooks_execute_against_the_run(run: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    os.environ["EDGEKD_RUN"] = str(run)
    try:
        for name in ("00_eda.ipynb", "01_benchmarks.ipynb", "02_clinical.ipynb"):
            nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
            assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
                f"{name} is stored with outputs"
            where = {"metadata": {"path": str(REPO / "notebooks")}}
            nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                    resources=where).execute()
            text = json.dumps([c.get("outputs") for c in nb.cells if c.cell_type == "code"])
            assert "Traceback" not in text, name
    finally:
        os.environ.pop("EDGEKD_RUN", None)


def test_model_card_names_the_scored_checkpoints_own_architecture(run: Path) -> None:
    """A checkpoint trained in the teacher role and scored as the student: its config.json holds
    the default student section too. The card names the architecture the export's manifest
    records for that checkpoint, with the section that trained it, and no distillation."""
    from dataclasses import replace

    from benchmarks.model_card import gather, render_card, role_archs

    inp = gather(run)
    assert inp.archs == {"student": "tiny_mobilenet", "teacher": "tiny_resnet"}
    trained = dict(inp.configs["student"])
    trained["teacher"] = {**trained["student"], "loss": "ce"}  # the role that trained it
    trained["student"] = {**trained["student"], "architecture": "mobilenet_v3_small"}
    configs = {**inp.configs, "student": trained}
    archs = role_archs(inp.meta, configs)
    assert archs["student"] == "tiny_mobilenet"  # the manifest's, not the config's default
    card = render_card(replace(inp, configs=configs, archs=archs))
    assert card.startswith("# Model card: tiny_mobilenet melanoma-vs-rest")
    line = next(s for s in card.splitlines() if s.startswith("- student:"))
    assert "`tiny_mobilenet`" in line and "loss ce" in line and "distilled" not in line
    # Without the manifest's record (another checkpoint), the config's section for the role.
    assert role_archs({}, configs)["student"] == "mobilenet_v3_small"
