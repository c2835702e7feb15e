"""Training on your own data (multi-class by argmax, binary with --positive) and importing a model
trained elsewhere (kd_core.checkpoint import): tiny models, generated images, seconds each."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kd_core.checkpoint import is_calibrated, load_checkpoint, load_model
from kd_core.importer import main as import_main
from kd_core.train import main as train_main

CLASSES = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 14 images of 24 px, each class a different mean colour (learnable)."""
    root = tmp_path_factory.mktemp("pets") / "pets"
    rng = np.random.default_rng(0)
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(14):
            base = np.zeros((24, 24, 3)) + 60
            base[..., c] += 120
            img = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


def train(role: str, data: Path, out: Path, *extra: str) -> int:
    arch = ["--architecture", "tiny_resnet"] if role == "teacher" else [
        "--student-arch", "tiny_mobilenet"]
    return train_main([role, "--data-dir", str(data), "--prepared-dir", str(out.parent / "prep"),
                       "--image-size", "32", "--epochs", "2", "--batch-size", "8",
                       "--device", "cpu", "--out", str(out), *arch, *extra])


@pytest.fixture(scope="module")
def multi_teacher(pets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "teacher"
    assert train("teacher", pets, out) == 0
    return out / "best.pth"


def test_a_multi_class_teacher_decides_by_argmax(multi_teacher: Path) -> None:
    ckpt = load_checkpoint(multi_teacher)
    assert ckpt["labels"] == list(CLASSES) and ckpt["positive_index"] is None
    assert ckpt["threshold"] is None and is_calibrated(ckpt)
    assert ckpt["calibration"]["threshold"] is None and ckpt["dataset"] == "pets"
    h = ckpt["metrics"]["holdout"]
    assert set(h["per_class_sensitivity"]) == set(CLASSES)
    assert h["roc_auc"] == h["macro_roc_auc"] and 0 <= h["accuracy"] <= 1
    history = (multi_teacher.parent / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "nan" not in history[1]  # macro ROC-AUC watched each epoch
    assert (multi_teacher.parent / "plots" / "reliability.png").is_file()


def test_a_student_distils_from_a_multi_class_teacher(multi_teacher: Path, pets: Path,
                                                      tmp_path: Path) -> None:
    out = multi_teacher.parent.parent / "student"
    assert train("student", pets, out, "--teacher-ckpt", str(multi_teacher)) == 0
    student = load_checkpoint(out / "best.pth")
    assert student["labels"] == list(CLASSES) and student["positive_index"] is None


def test_binary_with_positive_and_a_mismatched_teacher(multi_teacher: Path, pets: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    runs = multi_teacher.parent.parent
    assert train("teacher", pets, runs / "binary", "--positive", "dog") == 0
    ckpt = load_checkpoint(runs / "binary" / "best.pth")
    assert ckpt["labels"] == ["other", "dog"] and ckpt["positive_index"] == 1
    assert 0 <= ckpt["threshold"] <= 1 and ckpt["metrics"]["val"]["sensitivity"] >= 0.95
    capsys.readouterr()
    assert train("student", pets, runs / "bad", "--teacher-ckpt", str(multi_teacher),
                 "--positive", "dog") == 2
    assert "teacher has 3 classes, the student is trained for 2" in capsys.readouterr().err
    assert train("teacher", pets, runs / "bad", "--positive", "bird") == 2
    assert "--positive bird: not a class of pets" in capsys.readouterr().err
    assert not (runs / "bad").exists()


# ---- import --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2(num_classes=3).state_dict(), path)
    return path


def run_import(weights: Path, out: Path, *extra: str, labels: str = "cat,dog,owl") -> int:
    return import_main(["import", "--arch", "mobilenet_v2", "--weights", str(weights),
                        "--labels", labels, "--size", "32", "--out", str(out), *extra])


def test_import_with_validation_data_is_calibrated(weights: Path, pets: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ck.pth"
    assert run_import(weights, out, "--val-data", str(pets)) == 0
    assert "calibrated on" in capsys.readouterr().out
    model, ckpt = load_model(out)
    assert is_calibrated(ckpt) and ckpt["positive_index"] is None and ckpt["threshold"] is None
    assert ckpt["calibration"]["n"] == ckpt["metrics"]["n_val"] > 0
    import torchvision

    reference = torchvision.models.mobilenet_v2(num_classes=3).eval()
    reference.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_import_binary_from_safetensors_and_without_validation(
        weights: Path, pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torchvision
    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file(torchvision.models.mobilenet_v2(num_classes=2).state_dict(), str(st))
    assert run_import(st, tmp_path / "b.pth", "--positive", "dog", "--val-data", str(pets),
                      labels="other,dog") == 0
    ckpt = load_checkpoint(tmp_path / "b.pth")
    assert ckpt["positive_index"] == 1 and is_calibrated(ckpt) and 0 <= ckpt["threshold"] <= 1
    capsys.readouterr()
    assert run_import(st, tmp_path / "u.pth", labels="other,dog") == 0
    said = capsys.readouterr().out
    assert "NOT calibrated" in said and "--allow-uncalibrated" in said
    assert not is_calibrated(load_checkpoint(tmp_path / "u.pth"))


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


@pytest.mark.parametrize(("change", "message"), [
    (["--arch", "resnet18"], "weights do not fit resnet18 with 3 classes"),
    (["--labels", "a,b"], "weights do not fit mobilenet_v2 with 2 classes"),
    (["--arch", "nonet"], "--arch 'nonet' is not a known architecture"),
    (["--positive", "cow"], "--positive cow: not one of --labels"),
    (["--labels", "a,a,b"], "--labels must name at least 2 distinct classes"),
    (["--out", "ck.txt"], "expected a checkpoint file name ending in .pth"),
    (["--size", "4"], "image size must be 8 to 2048"),
    (["--weights", "missing.pth"], "file not found"),
    (["--weights", "evil.pth"], "refused to load"),
    (["--val-data", "nowhere"], "--val-data nowhere: not found"),
])
def test_bad_imports_fail_with_one_line_before_writing(
        change: list[str], message: str, weights: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    args = {"--arch": "mobilenet_v2", "--weights": str(weights), "--labels": "cat,dog,owl",
            "--size": "32", "--out": "ck.pth"}
    args.update(dict(zip(change[::2], change[1::2], strict=True)))
    assert import_main(["import", *[x for kv in args.items() for x in kv]]) == 2
    err = capsys.readouterr()
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert "unpickled!" not in err.out and not (tmp_path / "ck.pth").exists()
