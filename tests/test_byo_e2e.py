"""Bring your own model and data, end to end, through the real converters and runtimes:

- an image folder built from real HAM10000 images (folders by diagnosis): teacher and student
  trained, exported and benchmarked, 7-class (argmax) and binary with --positive mel;
- a plain ``torchvision.models.mobilenet_v2`` state dict: imported, exported, benchmarked, and
  classified by ``python -m runtimes.predict`` with the torch model's probabilities (fp32,
  1e-4).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.harness import BenchConfig, Results, run_benchmarks
from exporters.run import ExportOptions, export_checkpoint
from kd_core.checkpoint import load_checkpoint
from kd_core.importer import main as import_main
from kd_core.train import main as train_main
from runtimes.predict import main as predict_main

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("tflite", "executorch", "onnx")


def train(role: str, data: Path, out: Path, *extra: str) -> Path:
    arch = ["--architecture", "tiny_resnet"] if role == "teacher" else [
        "--student-arch", "tiny_mobilenet"]
    assert train_main([role, "--data-dir", str(data), "--image-size", "32", "--epochs", "2",
                       "--batch-size", "16", "--device", "cpu", "--out", str(out),
                       *arch, *extra]) == 0
    return out / "best.pth"


def export_and_bench(student: Path, teacher: Path | None, data: Path, out: Path,
                     formats: tuple[str, ...]) -> Results:
    export = export_checkpoint(student, out / "export", ExportOptions(
        formats=formats, calib_data=data, calib_samples=32, jobs=1, seed=0))
    assert export.ok, export.failures
    results = run_benchmarks(BenchConfig(
        artifacts=str(out / "export"), student_ckpt=str(student),
        teacher_ckpt=str(teacher) if teacher else None, data_dir=str(data), latency=False,
        bootstrap=20, out=str(out / "bench")))
    return results


@pytest.fixture(scope="module")
def ham_folder(real_ham10000: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 real HAM10000 images per diagnosis, 40 x 30 px, in folders named by diagnosis."""
    root = tmp_path_factory.mktemp("hamfolder") / "ham_by_dx"
    taken: dict[str, int] = {}
    with (real_ham10000 / "HAM10000_metadata.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if taken.get(row["dx"], 0) >= 20:
                continue
            src = next(real_ham10000.rglob(f"{row['image_id']}.jpg"))
            (root / row["dx"]).mkdir(parents=True, exist_ok=True)
            Image.open(src).convert("RGB").resize((40, 30)).save(
                root / row["dx"] / src.name, quality=90)
            taken[row["dx"]] = taken.get(row["dx"], 0) + 1
    assert len(taken) == 7
    return root


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("positive", [None, "mel"])
def test_image_folder_of_real_ham10000_trains_exports_and_benchmarks(
        positive: str | None, ham_folder: Path, tmp_path: Path) -> None:
    extra = ("--positive", positive) if positive else ()
    teacher = train("teacher", ham_folder, tmp_path / "teacher", *extra)
    student = train("student", ham_folder, tmp_path / "student", "--teacher-ckpt", str(teacher),
                    *extra)
    ckpt = load_checkpoint(student)
    if positive is None:
        assert ckpt["labels"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
        assert ckpt["positive_index"] is None and ckpt["threshold"] is None
    else:
        assert ckpt["labels"] == ["other", "mel"] and ckpt["positive_index"] == 1
    formats = FORMATS if positive is None else ("onnx",)
    results = export_and_bench(student, teacher, ham_folder, tmp_path, formats)
    rows = {r["name"]: r for r in results.rows}
    artefacts = [r for r in rows.values() if r["role"] == "artifact"]
    # fp32 and int8 per format, and LiteRT's float-I/O INT8 variant (the web demo's).
    assert len(artefacts) == 2 * len(formats) + ("tflite" in formats)
    for row in artefacts:
        assert row["status"] == "ok" and row["decision"]["positive_index"] == (
            None if positive is None else 1)
        acc = row["accuracy"]
        if positive is None:
            assert set(acc["per_class_sensitivity"]) == set(ckpt["labels"])
            assert acc["argmax_agreement_vs_student"] is not None
        else:
            assert 0 <= acc["sensitivity"] <= 1
        if row["precision"] == "fp32":
            assert acc["max_abs_logit_diff_vs_student"] <= 1e-4
    assert results.gate is not None and results.meta["positive"] == positive


# ---- your own model: import -> export -> benchmark -> predict ----------------------------------


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 40 images of 24 px (a bright and a dark class)."""
    root = tmp_path_factory.mktemp("own") / "own_data"
    rng = np.random.default_rng(3)
    for c, cls in enumerate(("benign", "malignant")):
        (root / cls).mkdir(parents=True)
        for i in range(40):
            img = np.clip(rng.normal(90 + 80 * c, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.jpg", quality=95)
    return root


@pytest.mark.slow
def test_a_torchvision_model_is_imported_exported_benchmarked_and_predicts(
        two_classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(num_classes=2)
    weights = tmp_path / "W.pth"
    torch.save(reference.state_dict(), weights)
    ckpt = tmp_path / "ck.pth"
    assert import_main(["import", "--arch", "mobilenet_v2", "--weights", str(weights),
                        "--labels", "benign,malignant", "--positive", "malignant",
                        "--size", "32", "--val-data", str(two_classes), "--out", str(ckpt)]) == 0
    formats = ("tflite", "onnx")
    results = export_and_bench(ckpt, None, two_classes, tmp_path, formats)
    assert {r["status"] for r in results.rows} == {"ok"}

    images = [*sorted((two_classes / "malignant").glob("*.jpg"))[:2],
              sorted((two_classes / "benign").glob("*.jpg"))[0]]
    decision = load_checkpoint(ckpt)
    from kd_core.data.transforms import Preprocessing, preprocess

    prep = Preprocessing.from_dict(decision["preprocessing"])
    with torch.no_grad():
        logits = reference.eval()(torch.from_numpy(np.stack([preprocess(p, prep)
                                                             for p in images])))
    want = torch.softmax(logits.double() / decision["temperature"], dim=1).numpy()
    for fmt in formats:
        capsys.readouterr()
        assert predict_main([str(tmp_path / "export"), *map(str, images), "--format", fmt,
                             "--precision", "fp32", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["format"] == fmt and [p["image"] for p in got["predictions"]] == [
            str(p) for p in images]
        probs = np.array([[p["probabilities"][k] for k in ("benign", "malignant")]
                          for p in got["predictions"]])
        np.testing.assert_allclose(probs, want, rtol=0, atol=1e-4)
        for p, q in zip(got["predictions"], want, strict=True):
            called = q[1] >= got["threshold"]
            assert p["decision"] == ("malignant" if called else "benign")
    # INT8 through its runtime, an artefact file, a folder of images and the checkpoint itself.
    int8 = next((tmp_path / "export").glob("*_tflite_int8.tflite"))
    assert predict_main([str(int8), str(two_classes / "benign")]) == 0
    text = capsys.readouterr().out
    assert text.count("threshold") == 40 and "tflite int8" in text
    assert predict_main([str(ckpt), str(images[0]), "--json"]) == 0
    torch_probs = json.loads(capsys.readouterr().out)["predictions"][0]["probabilities"]
    assert abs(torch_probs["malignant"] - want[0, 1]) <= 1e-6


def test_predict_refuses_bad_input_with_one_line(two_classes: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    cases = [
        ([str(tmp_path / "nowhere"), str(tmp_path / "bad.jpg")], "nowhere: not found"),
        ([str(tmp_path), str(tmp_path / "bad.jpg")], "manifest not found"),
    ]
    for argv, message in cases:
        assert predict_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_predict_help_is_fast() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "runtimes.predict",
                           "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Exit codes" in done.stdout
    heavy = [line for line in done.stderr.splitlines() if line.startswith("import time:")
             and line.rsplit("|", 1)[-1].strip().split(".")[0] in ("torch", "torchvision")]
    assert not heavy, heavy
