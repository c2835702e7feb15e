"""Teacher and KD student training end to end on generated data, resume after kill -9, and
checkpoints that do not fit. Bad arguments and interrupts: test_train_inputs.py."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kd_core.checkpoint import (
    BINARY_LABELS,
    DX_LABELS,
    REQUIRED_KEYS,
    build_checkpoint,
    decision_of,
    is_calibrated,
    load_checkpoint,
    save_checkpoint,
)
from kd_core.config import TrainingConfig
from kd_core.data.dataset import Batches
from kd_core.data.transforms import Preprocessing
from kd_core.engine import FitOptions, NonFiniteLossError, fit, resolve_runtime
from kd_core.models import create_model
from kd_core.train import main as train_main
from kd_core.trainer import set_bn_momentum

REPO = Path(__file__).resolve().parents[1]


def common(data: Path, prepared: Path, out: Path, epochs: int = 2) -> list[str]:
    return ["--data-dir", str(data), "--prepared-dir", str(prepared), "--image-size", "32",
            "--epochs", str(epochs), "--batch-size", "32", "--out", str(out), "--device", "cpu"]


@pytest.fixture(scope="module")
def teacher_ckpt(synth_dir: Path, synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    assert train_main(["teacher", *common(synth_dir, synth_prepared, out),
                       "--architecture", "tiny_resnet"]) == 0
    return out / "best.pth"


def test_teacher_run_writes_a_complete_checkpoint(teacher_ckpt: Path) -> None:
    out = teacher_ckpt.parent
    ckpt = load_checkpoint(teacher_ckpt)  # weights_only=True inside
    assert set(REQUIRED_KEYS) <= set(ckpt) and ckpt["labels"] == BINARY_LABELS
    assert ckpt["preprocessing"]["size"] == 32 and ckpt["config"]["role"] == "teacher"
    assert 0 < ckpt["threshold"] < 1 and 0.05 <= ckpt["temperature"] <= 20
    # Deployable: calibrated on validation, the record matching the values it holds.
    assert is_calibrated(ckpt) and ckpt["target_sensitivity"] == 0.95
    assert ckpt["calibration"] == {"split": "val", "n": ckpt["metrics"]["n_val"],
                                   "temperature": ckpt["temperature"],
                                   "threshold": ckpt["threshold"], "target_sensitivity": 0.95}
    assert ckpt["dataset"] == "synthetic demo data"
    assert decision_of(ckpt, teacher_ckpt).threshold == ckpt["threshold"]
    assert torch.load(out / "last.pth", weights_only=True)["kind"] == "training_state"
    m = ckpt["metrics"]
    # The threshold is set on validation to reach 95 % sensitivity there.
    assert m["val"]["sensitivity"] >= 0.95
    assert m["val_calibration"]["nll_after"] <= m["val_calibration"]["nll_before"] + 1e-9
    assert {"roc_auc", "roc_auc_ci_low", "pr_auc", "ece", "brier"} <= set(m["holdout"])
    for name in ("config.json", "metrics.json", "history.csv", "last.pth",
                 "plots/training_curves.png", "plots/roc_pr.png", "plots/reliability.png"):
        assert (out / name).is_file(), name


def test_student_distils_from_the_teacher(teacher_ckpt: Path, synth_dir: Path,
                                          synth_prepared: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rc = train_main(["student", *common(synth_dir, synth_prepared, tmp_path),
                     "--teacher-ckpt", str(teacher_ckpt), "--student-arch", "tiny_mobilenet",
                     "--temperature", "2", "--alpha", "0.5"])
    assert rc == 0
    assert f"best checkpoint: {tmp_path / 'best.pth'}" in capsys.readouterr().out
    with (tmp_path / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and float(rows[0]["kd_loss"]) > 0
    assert load_checkpoint(tmp_path / "best.pth")["arch"] == "tiny_mobilenet"


def test_torchvision_state_dict_loads_unchanged(tmp_path: Path) -> None:
    import torchvision

    model = create_model("mobilenet_v3_small", 7)
    save_checkpoint(build_checkpoint(model, "mobilenet_v3_small", DX_LABELS, Preprocessing()),
                    tmp_path / "m.pth")
    ckpt = torch.load(tmp_path / "m.pth", weights_only=True)
    plain = torchvision.models.mobilenet_v3_small(num_classes=7)
    plain.load_state_dict(ckpt["state_dict"])  # strict
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(plain.eval()(x), model.eval()(x))


def test_resume_after_kill_9(synth_dir: Path, synth_prepared: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kd_core.train", "teacher",
           *common(synth_dir, synth_prepared, tmp_path, epochs=6), "--architecture", "tiny_resnet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    history = tmp_path / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # 2 epochs done
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = history.read_text().splitlines()
    assert 3 <= len(before) < 7, "the run should be killed mid-way"
    assert not (tmp_path / "best.pth").exists()  # only a finished, calibrated run has one
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    # last.pth is written before the epoch's history row: a kill between the two resumes one
    # epoch past what history.csv showed (the history is rewritten from the checkpoint).
    resumed = re.search(r"after epoch (\d+)", done.stdout)
    assert resumed is not None and int(resumed.group(1)) in (len(before) - 1, len(before))
    after = history.read_text().splitlines()
    assert len(after) == 7 and after[: len(before)] == before


def test_nan_loss_stops_and_keeps_the_last_good_epoch(tmp_path: Path) -> None:
    rt = resolve_runtime("cpu")
    prep = Preprocessing(size=16)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=gen)
    y = torch.tensor([0, 1] * 32)
    train = Batches(x, y, prep, batch_size=16, device=rt.device, train=True)
    val = Batches(x, y, prep, batch_size=64, device=rt.device)
    model = create_model("tiny_mobilenet", 2)
    calls = {"n": 0}

    def step(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(m(xb), yb)
        return {"loss": loss * float("nan") if calls["n"] > 4 else loss}

    opts = FitOptions(epochs=3, lr=1e-3, scheduler="cosine", patience=5, positive_index=1)
    with pytest.raises(NonFiniteLossError, match="nan"):
        fit(model, step, train, val, rt, opts, tmp_path, "k")
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and state["early_stopping"]["best_epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["best_weights"].values()
               if v.is_floating_point())
    assert not (tmp_path / "best.pth").exists()


def _student(args: list[str], synth_dir: Path, prepared: Path, out: Path) -> int:
    return train_main(["student", *common(synth_dir, prepared, out), "--student-arch",
                       "tiny_mobilenet", *args])


def test_teacher_of_another_class_count_is_refused(synth_dir: Path, synth_prepared: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = save_checkpoint(build_checkpoint(create_model("tiny_resnet", 7), "tiny_resnet",
                                           DX_LABELS, Preprocessing(size=32)), tmp_path / "t7.pth")
    assert _student(["--teacher-ckpt", str(bad)], synth_dir, synth_prepared, tmp_path / "o") == 2
    assert "teacher has 7 classes" in capsys.readouterr().err


def test_teacher_of_another_architecture_is_refused(synth_dir: Path, synth_prepared: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = build_checkpoint(create_model("tiny_mobilenet", 2), "tiny_resnet", BINARY_LABELS,
                            Preprocessing(size=32))
    bad = save_checkpoint(ckpt, tmp_path / "t.pth")
    assert _student(["--teacher-ckpt", str(bad)], synth_dir, synth_prepared, tmp_path / "o") == 2
    assert "weights do not fit tiny_resnet" in capsys.readouterr().err


def test_truncated_and_unsafe_checkpoints_are_refused(teacher_ckpt: Path, synth_dir: Path,
                                                      synth_prepared: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(teacher_ckpt.read_bytes()[: 3000])
    assert _student(["--teacher-ckpt", str(cut)], synth_dir, synth_prepared, tmp_path / "o") == 2
    assert "truncated or corrupt" in capsys.readouterr().err

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"arch": Evil(str(marker))}, evil)
    assert _student(["--teacher-ckpt", str(evil)], synth_dir, synth_prepared, tmp_path / "o") == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.path),))  # type: ignore[return-value]


def test_validation_without_melanoma_is_refused(synth_dir: Path, synth_prepared: Path,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    prepared = tmp_path / "prepared"
    shutil.copytree(synth_prepared, prepared)
    lines = (prepared / "val_data.csv").read_text().splitlines()
    (prepared / "val_data.csv").write_text(
        "\n".join([lines[0], *[ln for ln in lines[1:] if not ln.endswith(",1")]]) + "\n")
    rc = train_main(["teacher", *common(synth_dir, prepared, tmp_path / "o"),
                     "--architecture", "tiny_resnet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "val_data.csv: the validation split needs both melanoma and other images" in err
    assert not (tmp_path / "o" / "config.json").exists()


def test_same_seed_same_weights(synth_dir: Path, synth_prepared: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert train_main(["teacher", *common(synth_dir, synth_prepared, tmp_path / name, 1),
                           "--architecture", "tiny_resnet", "--no-cache"]) == 0
    a = load_checkpoint(tmp_path / "a" / "best.pth")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "best.pth")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isclose(load_checkpoint(tmp_path / "a" / "best.pth")["threshold"],
                      load_checkpoint(tmp_path / "b" / "best.pth")["threshold"])


def test_ddp_with_torchrun_on_cpu(synth_dir: Path, synth_prepared: Path, tmp_path: Path) -> None:
    """The same CLI under torchrun: two gloo processes share each batch; rank 0 writes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "kd_core.train", "teacher", *common(synth_dir, synth_prepared, tmp_path),
           "--architecture", "tiny_resnet"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best checkpoint:") == 1  # printed by rank 0 only
    with (tmp_path / "history.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert load_checkpoint(tmp_path / "best.pth")["arch"] == "tiny_resnet"


def test_imagenet_weights_without_network_fail_clearly(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    import urllib.error

    import torchvision.models._api as api

    from kd_core.models import PretrainedWeightsError

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError, match="--pretrained none") as info:
        create_model("mobilenet_v3_small", 2, pretrained="imagenet")
    assert "mobilenet_v3_small" in str(info.value) and "--pretrained /path/to/" in str(info.value)


def test_pretrained_from_a_local_file_keeps_a_fresh_head(tmp_path: Path) -> None:
    source = create_model("mobilenet_v3_small", 1000 // 500)  # stands in for ImageNet weights
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = create_model("mobilenet_v3_small", 7, pretrained=str(tmp_path / "w.pth"))
    assert torch.equal(model.features[0][0].weight, source.features[0][0].weight)
    assert model.classifier[-1].out_features == 7
    with pytest.raises(ValueError, match="match this architecture"):
        create_model("resnet18", 2, pretrained=str(tmp_path / "w.pth"))


def test_ablation_grid_writes_table_and_plot(teacher_ckpt: Path, synth_dir: Path,
                                             synth_prepared: Path, tmp_path: Path) -> None:
    from kd_core.ablation import main as ablation_main

    rc = ablation_main(["--temperatures", "2", "--alphas", "0.5", "--out", str(tmp_path),
                        *common(synth_dir, synth_prepared, tmp_path, epochs=1)[:-4],
                        "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                        "--teacher-ckpt", str(teacher_ckpt), "--student-arch", "tiny_mobilenet"])
    assert rc == 0
    with (tmp_path / "ablation.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["no_kd", "kd_T2_a0.5"]
    assert all(0 <= float(r["roc_auc"]) <= 1 for r in rows)
    assert "| no_kd |" in (tmp_path / "ablation.md").read_text()
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_bn_momentum_default_lets_running_statistics_keep_up_on_small_data() -> None:
    """torchvision's MobileNetV3 ships momentum 0.01: after an epoch of a few dozen steps its
    running statistics are still mostly the initial ones, and the eval-mode model collapses."""
    model = create_model("mobilenet_v3_small", 2)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.momentum for m in norms} == {0.01}
    set_bn_momentum(model, TrainingConfig().bn_momentum)
    assert {m.momentum for m in norms} == {0.1}

    def running_mean_after(momentum: float, steps: int = 30) -> float:
        bn = nn.BatchNorm1d(4, momentum=momentum).train()
        gen = torch.Generator().manual_seed(0)
        for _ in range(steps):
            bn(5.0 + torch.randn(64, 4, generator=gen))
        return float(bn.running_mean.mean())

    assert running_mean_after(0.1) > 4.5 > 2.0 > running_mean_after(0.01)
