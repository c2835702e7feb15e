"""Exporter CLI, registry, calibration data and bad input: fast tests (one real ONNX export)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from exporters_support import prepared_synthetic, write_checkpoint, write_image_folder

import exporters
from exporters import EXPORTERS, Artifact, ExporterSpec, get_exporter, list_exporters
from exporters.all import main
from exporters.base import input_shape, io_spec
from exporters.calibration_data import (
    CalibrationDataError,
    balanced_indices,
    load_calibration,
)
from kd_core.data.ham10000 import load_split
from kd_core.data.transforms import Preprocessing, preprocess
from kd_core.io import atomic_path, sha256_file

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("litert_torch", "executorch", "coremltools", "onnx", "onnxruntime", "ai_edge_litert")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", size=32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_synthetic(tmp_path_factory.mktemp("data"), n_images=120, size=48)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


# ---- registry -------------------------------------------------------------------------------

def test_import_needs_no_backend() -> None:
    code = ("import sys, exporters; print(exporters.list_exporters()); "
            f"print([m for m in {BACKENDS!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["['tflite', 'executorch', 'coreml', 'onnx']", "[]"]


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    assert list_exporters()[:4] == ["tflite", "executorch", "coreml", "onnx"]
    assert get_exporter("coreml").precisions == {"fp32": ("fp16",), "int8": ("w8",),
                                                 "w8a8": ("w8a8",)}
    with pytest.raises(ValueError, match="registered twice"):
        exporters.register_exporter("onnx", ".onnx", ())(lambda *a: [])
    with pytest.raises(KeyError, match="known formats: tflite"):
        get_exporter("tensorrt")


# ---- CLI and bad input ----------------------------------------------------------------------

def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("CKPT", "--out", "--formats", "--precisions", "--calib-data",
                   "--calib-samples", "--seed", "--threads", "--jobs", "--verbose",
                   "Exit codes"):
        assert option in text


def run_bad(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    for part in expected:
        assert part in err, err
    return err


def test_missing_and_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    out = tmp_path / "out"
    run_bad([str(tmp_path / "nope.pth"), "--out", str(out)], capsys, "nope.pth",
            "checkpoint not found")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    run_bad([str(bad), "--out", str(out), "--precisions", "fp32"], capsys, "bad.pth", "corrupt")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("key", ["preprocessing", "labels"])
def test_checkpoint_without_metadata(tmp_path: Path, key: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_checkpoint(tmp_path / "partial.pth", size=32, drop=(key,))
    run_bad([str(path), "--out", str(tmp_path / "o"), "--precisions", "fp32"], capsys,
            "partial.pth", f"lacks {key}")


def test_unknown_format_and_precision(ckpt: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    run_bad([str(ckpt), "--out", str(tmp_path), "--formats", "onnx,tensorrt"], capsys,
            "unknown format(s) tensorrt", "known formats: tflite, executorch, coreml, onnx")
    run_bad([str(ckpt), "--out", str(tmp_path), "--precisions", "int4"], capsys,
            "unknown precision(s) int4")
    run_bad([str(ckpt), "--out", str(tmp_path), "--jobs", "0"], capsys,
            "--jobs must be a positive number or auto")


def test_unwritable_output_folder(ckpt: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    run_bad([str(ckpt), "--out", str(blocker / "out"), "--precisions", "fp32"], capsys,
            "output folder cannot be written")


def test_int8_without_calibration_data_refuses(ckpt: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    run_bad([str(ckpt), "--out", str(out), "--formats", "onnx"], capsys,
            "INT8 (onnx) needs real calibration images", "--calib-data DIR", "--precisions fp32")
    assert not any(out.iterdir())  # refused before any work


def test_empty_or_missing_calibration_folder(ckpt: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    run_bad([str(ckpt), "--out", str(tmp_path / "o"), "--calib-data", str(empty)], capsys,
            "empty", "no images (.jpg, .jpeg, .png) found")
    run_bad([str(ckpt), "--out", str(tmp_path / "o"), "--calib-data", str(tmp_path / "none")],
            capsys, "calibration folder not found")


# ---- calibration data -----------------------------------------------------------------------

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
    calib = load_calibration(prepared, prep, ["other", "melanoma"], n=12, seed=5)
    train = load_split(prepared, "train")
    assert set(calib.image_ids) <= set(train.image_ids) and len(calib) == 12
    assert calib.class_counts == {"other": 6, "melanoma": 6}
    path = train.paths[train.image_ids.index(calib.image_ids[0])]
    assert np.array_equal(calib.normalized()[0], preprocess(path, prep))  # the eval pipeline
    again = load_calibration(prepared, prep, ["other", "melanoma"], n=12, seed=5)
    assert again.image_ids == calib.image_ids
    block = calib.to_manifest()
    assert block["seed"] == 5 and block["samples"] == 12 and block["class_balanced"] is True
    nhwc = next(calib.batches("NHWC"))
    assert tuple(nhwc.shape) == (1, 32, 32, 3) and nhwc.dtype == torch.float32


def test_calibration_from_plain_and_ham_folders(prepared: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_image_folder(tmp_path / "imgs", n=10)
    calib = load_calibration(folder, Preprocessing(size=32), ["a", "b"], n=6, seed=0)
    assert calib.class_counts is None and calib.kind == "folder" and len(calib) == 6
    assert all(i.startswith(("a/", "b/")) for i in calib.image_ids)
    assert "without class balance" in capsys.readouterr().out
    import kd_core.train

    monkeypatch.setattr(kd_core.train, "default_prepared_dir", lambda d: tmp_path / "prep")
    data = json.loads((prepared / "split_metadata.json").read_text())["data_dir"]
    ham = load_calibration(Path(data), Preprocessing(size=32), ["other", "melanoma"], 8, 0)
    assert ham.kind == "ham10000" and (tmp_path / "prep" / "train_data.csv").is_file()
    with pytest.raises(CalibrationDataError, match="not a folder"):
        load_calibration(folder / "a" / "img_001.png", Preprocessing(size=32), ["a"], 4)


# ---- isolation, atomic writes, manifest merge -----------------------------------------------

def _broken_export(model: torch.nn.Module, example: tuple[torch.Tensor, ...], out_dir: Path,
                   cfg: object) -> list[Artifact]:
    with atomic_path(out_dir / "half_written.tflite") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("converter crashed half way")


def test_failure_is_isolated_and_leaves_no_files(
        ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    get_exporter("tflite")
    monkeypatch.setitem(EXPORTERS, "tflite",
                        ExporterSpec("tflite", _broken_export, ".tflite",
                                     {"fp32": ("fp32",)}, ()))
    out = tmp_path / "out"
    code = main([str(ckpt), "--out", str(out), "--formats", "tflite,onnx", "--precisions",
                 "fp32", "--jobs", "1"])
    text = capsys.readouterr().out
    assert code == 1
    assert "FAILED tflite fp32: RuntimeError: converter crashed half way" in text
    assert "converter crashed half way" in text.split("last lines of the tflite log:")[1]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["manifest.json", "tiny_mobilenet_onnx_fp32.onnx"]
    assert leftovers(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["tiny_mobilenet_onnx_fp32"]
    assert manifest["failures"] == [{"format": "tflite", "precision": "fp32",
                                     "error": "RuntimeError: converter crashed half way"}]
    assert manifest["calibration"] is None
    entry = manifest["artifacts"][0]
    assert entry["sha256"] == sha256_file(out / entry["path"])
    table = [line.split() for line in text.splitlines()]
    assert ["format", "precision", "status", "MB", "seconds", "file", "/", "error"] in table
    assert ["onnx", "fp32", "ok"] in [row[:3] for row in table]
    assert ["tflite", "fp32", "FAILED", "-", "-"] in [row[:5] for row in table]


def _fake_export(model: torch.nn.Module, example: tuple[torch.Tensor, ...], out_dir: Path,
                 cfg: object) -> list[Artifact]:
    from exporters.base import ExportSettings

    assert isinstance(cfg, ExportSettings)
    path = out_dir / f"{cfg.arch}_fake_fp32.bin"
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    spec = io_spec("image", input_shape(cfg, "NCHW"), "float32", "NCHW")
    return [Artifact(path.stem, path, "fake", "fp32", spec, io_spec("logits", [1, 2], "float32"))]


def test_new_format_is_one_registration_and_manifest_merges(
        ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EXPORTERS, "fake",
                        ExporterSpec("fake", _fake_export, ".bin", {"fp32": ("fp32",)}, ()))
    out = tmp_path / "out"
    assert main([str(ckpt), "--out", str(out), "--formats", "fake", "--precisions", "fp32",
                 "--jobs", "1"]) == 0
    first = json.loads((out / "manifest.json").read_text())
    assert [a["name"] for a in first["artifacts"]] == ["tiny_mobilenet_fake_fp32"]
    # A later single-format run from the same checkpoint keeps the other format's entry.
    assert main([str(ckpt), "--out", str(out), "--formats", "onnx", "--precisions", "fp32"]) == 0
    second = json.loads((out / "manifest.json").read_text())
    assert [a["name"] for a in second["artifacts"]] == ["tiny_mobilenet_fake_fp32",
                                                        "tiny_mobilenet_onnx_fp32"]
    (out / "tiny_mobilenet_fake_fp32.bin").write_bytes(b"changed")  # no longer what was listed
    assert main([str(ckpt), "--out", str(out), "--formats", "onnx", "--precisions", "fp32"]) == 0
    third = json.loads((out / "manifest.json").read_text())
    assert [a["name"] for a in third["artifacts"]] == ["tiny_mobilenet_onnx_fp32"]


def test_worker_processes_isolate_a_dying_format(ckpt: Path, tmp_path: Path) -> None:
    from exporters.all import load_settings
    from exporters.parallel import Task, run_parallel, share_out

    groups = share_out(("tflite", "executorch", "coreml", "onnx"), 2)
    assert {frozenset(g) for g in groups} == {frozenset({"executorch", "coreml"}),
                                              frozenset({"tflite", "onnx"})}
    _, cfg, _ = load_settings(ckpt, ("fp32",))
    tasks = [Task(("onnx",), ckpt, cfg, tmp_path, False, 1),
             Task(("coreml", "onnx"), tmp_path / "vanished.pth", cfg, tmp_path, False, 1)]
    wanted = {"onnx": ["fp32"], "coreml": ["fp16"]}
    outcomes = list(run_parallel(tasks, 2, wanted))
    ok = [o for o in outcomes if o.artifacts]
    assert [a.name for o in ok for a in o.artifacts] == ["tiny_mobilenet_onnx_fp32"]
    assert ok[0].artifacts[0].reference is None  # torch modules stay in the worker
    died = [(o.fmt, o.failures[0].error) for o in outcomes if o.failures]
    # The dead worker fails the format it was on; the rest is retried in a fresh worker.
    assert died == [("coreml", "worker process died (exit code 1)"),
                    ("onnx", "worker process died (exit code 1)")]
    assert (tmp_path / "tiny_mobilenet_onnx_fp32.onnx").is_file()
