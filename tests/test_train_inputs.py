"""Training's bad input and interrupts (issue 15): every argument is checked before any work or
file; a refused rerun leaves OUT alone; Ctrl-C leaves no best.pth and resumes; one error line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kd_core import cli, trainer
from kd_core.checkpoint import is_calibrated, load_checkpoint
from kd_core.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--image-size", "32", "--epochs", "2", "--batch-size", "32", "--max-steps-per-epoch",
         "2", "--device", "cpu"]


def argv(role: str, data: Path, prepared: Path | None, out: Path, *extra: str) -> list[str]:
    arch = (["--architecture", "tiny_resnet"] if role == "teacher"
            else ["--student-arch", "tiny_mobilenet"])
    where = ["--prepared-dir", str(prepared)] if prepared else []
    return [role, "--data-dir", str(data), *where, "--out", str(out), *SMALL, *arch, *extra]


def error_line(err: str) -> str:
    """The one line a refused command prints on stderr (nothing else, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def finished(synth_dir: Path, synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Path:
    """A finished teacher run (tiny_resnet, 32 px); tests copy it before touching it."""
    out = tmp_path_factory.mktemp("finished") / "teacher"
    assert train_main(argv("teacher", synth_dir, synth_prepared, out)) == 0
    return out


# ---------------------------------------------------------------- arguments, before any work

BAD_TEACHER = [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--lr", "0"], "--lr must be"),
    (["--lr", "nan"], "--lr must be"),
    (["--patience", "-1"], "--patience must be 0 or more"),
    (["--min-epochs", "-2"], "--min-epochs"),
    (["--image-size", "4"], "--image-size must be an integer from 8 to 2048"),
    (["--image-size", "100000"], "--image-size"),
    (["--bn-momentum", "0"], "--bn-momentum must be a number in (0, 1]"),
    (["--bn-momentum", "1.5"], "--bn-momentum"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--focal-gamma", "-1"], "--focal-gamma"),
    (["--target-sensitivity", "0"], "--target-sensitivity must be a number in (0, 1]"),
    (["--target-sensitivity", "1.2"], "--target-sensitivity"),
    (["--max-steps-per-epoch", "0"], "--max-steps-per-epoch"),
    (["--seed", "-1"], "--seed"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--device", "tpu0"], "--device 'tpu0' is not a device"),
    (["--architecture", "resnet9000"], "--architecture 'resnet9000' is not a known architecture"),
    (["--pretrained", "/no/such/weights.pth"], "--pretrained /no/such/weights.pth"),
]
BAD_STUDENT = [
    (["--alpha", "1.5"], "--alpha must be a number from 0 to 1, got 1.5"),
    (["--alpha", "nan"], "--alpha must be"),
    (["--temperature", "0"], "--temperature must be a number in (0, 100], got 0.0"),
    (["--temperature", "-2"], "--temperature"),
    ([], "--teacher-ckpt is required for KD"),
]


@pytest.mark.parametrize(("role", "extra", "message"),
                         [("teacher", *c) for c in BAD_TEACHER]
                         + [("student", *c) for c in BAD_STUDENT])
def test_bad_arguments_are_refused_before_any_file(role: str, extra: list[str], message: str,
                                                   synth_dir: Path, synth_prepared: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert train_main(argv(role, synth_dir, synth_prepared, out, *extra)) == cli.EXIT_BAD_INPUT
    assert message in error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(synth_dir: Path, synth_prepared: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert train_main(argv("teacher", synth_dir, synth_prepared, out, "--device", "cuda")) == 2
    assert "--device cuda: no CUDA GPU is available here" in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_missing_data_dir_and_unwritable_out_are_refused(synth_prepared: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    missing = tmp_path / "nothing"
    assert train_main(argv("teacher", missing, None, tmp_path / "o")) == 2
    assert f"--data-dir {missing}: data folder not found" in error_line(capsys.readouterr().err)
    (tmp_path / "file").write_text("x")
    assert train_main(argv("teacher", synth_prepared, None, tmp_path / "file")) == 2
    assert "--out" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists() and (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(("content", "message"), [
    (os.urandom(4000), "not a torch checkpoint"),
    (b"", "not a torch checkpoint (an empty file"),
])
def test_a_teacher_that_is_not_a_checkpoint_is_named(content: bytes, message: str,
                                                     synth_dir: Path, synth_prepared: Path,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "teacher.pth"
    bad.write_bytes(content)
    out = tmp_path / "out"
    assert train_main(argv("student", synth_dir, synth_prepared, out, "--teacher-ckpt",
                           str(bad))) == 2
    line = error_line(capsys.readouterr().err)
    assert str(bad) in line and message in line and "Python objects" not in line
    assert not out.exists()


def test_teacher_and_student_image_sizes_must_match(finished: Path, synth_dir: Path,
                                                    synth_prepared: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = train_main([*argv("student", synth_dir, synth_prepared, out, "--teacher-ckpt",
                           str(finished / "best.pth")), "--image-size", "48"])
    assert rc == 2
    line = error_line(capsys.readouterr().err)
    assert "the teacher takes 32 px images" in line and "--image-size 48" in line
    assert not out.exists()


def test_a_training_state_is_not_a_teacher(finished: Path, synth_dir: Path,
                                           synth_prepared: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(argv("student", synth_dir, synth_prepared, tmp_path / "o",
                           "--teacher-ckpt", str(finished / "last.pth"))) == 2
    assert "a training state (the resume file)" in error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- reruns into the same --out


def test_refused_rerun_leaves_config_and_results_alone(finished: Path, synth_dir: Path,
                                                       synth_prepared: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rc = train_main([*argv("teacher", synth_dir, synth_prepared, out), "--architecture",
                     "tiny_mobilenet"])
    assert rc == 2
    line = error_line(capsys.readouterr().err)
    assert str(out / "last.pth") in line and "--force" in line
    assert "teacher.architecture 'tiny_resnet' -> 'tiny_mobilenet'" in line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_rerun_of_a_finished_run_does_nothing(finished: Path, synth_dir: Path,
                                              synth_prepared: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert train_main(argv("teacher", synth_dir, synth_prepared, out)) == 0
    assert "already holds this run's calibrated result" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_damaged_resume_file_is_named_and_force_starts_over(
        finished: Path, synth_dir: Path, synth_prepared: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    last = out / "last.pth"
    last.write_bytes(last.read_bytes()[:5000])
    best = (out / "best.pth").read_bytes()
    assert train_main(argv("teacher", synth_dir, synth_prepared, out)) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {last}: truncated or corrupt training state")
    assert "--force" in line
    assert (out / "best.pth").read_bytes() == best
    assert train_main([*argv("teacher", synth_dir, synth_prepared, out), "--force"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert is_calibrated(load_checkpoint(out / "best.pth"))


# ---------------------------------------------------------------- interrupts and failures


def _failing_step(monkeypatch: pytest.MonkeyPatch, at_call: int,
                  fail: Any) -> None:
    """Make the training step call ``fail(loss)`` on its ``at_call``-th call."""
    real = trainer.make_step
    calls = {"n": 0}

    def make(plan: Any, data: Any) -> Any:
        step = real(plan, data)

        def wrapped(m: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            calls["n"] += 1
            out = step(m, x, y)
            return fail(out) if calls["n"] >= at_call else out

        return wrapped

    monkeypatch.setattr(trainer, "make_step", make)


def _interrupt(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    raise KeyboardInterrupt


def test_ctrl_c_during_training_leaves_no_best_and_resumes(
        synth_dir: Path, synth_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = [*argv("teacher", synth_dir, synth_prepared, out), "--epochs", "3"]
    _failing_step(monkeypatch, at_call=3, fail=_interrupt)  # the first step of epoch 2
    assert train_main(args) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1] == cli.INTERRUPTED and "Traceback" not in err
    assert not (out / "best.pth").exists() and not (out / "metrics.json").exists()
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1
    assert not temp_files(out)
    monkeypatch.undo()
    assert train_main(args) == 0
    assert "after epoch 1" in capsys.readouterr().out
    assert is_calibrated(load_checkpoint(out / "best.pth"))
    assert len((out / "history.csv").read_text().splitlines()) == 4


def test_ctrl_c_while_calibrating_leaves_no_best_and_resumes(
        synth_dir: Path, synth_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import kd_core.finalize

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(kd_core.finalize, "calibrate", interrupted)
    assert train_main(argv("teacher", synth_dir, synth_prepared, out)) == 130
    assert capsys.readouterr().err.rstrip().splitlines()[-1] == cli.INTERRUPTED
    assert not (out / "best.pth").exists() and not temp_files(out)
    monkeypatch.undo()
    assert train_main(argv("teacher", synth_dir, synth_prepared, out)) == 0
    stdout = capsys.readouterr().out
    assert "after epoch 2" in stdout and "epoch 3" not in stdout  # nothing retrained
    assert is_calibrated(load_checkpoint(out / "best.pth"))


def test_diverging_loss_fails_with_one_line_and_keeps_last(
        synth_dir: Path, synth_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    _failing_step(monkeypatch, 3, lambda o: {**o, "loss": o["loss"] * float("nan")})
    assert train_main(argv("teacher", synth_dir, synth_prepared, out)) == cli.EXIT_FAILED
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and f"{out / 'last.pth'} keeps the last finished epoch" in line[0]
    assert not (out / "best.pth").exists()


def test_sigint_to_a_training_process(synth_dir: Path, synth_prepared: Path,
                                      tmp_path: Path) -> None:
    """A real Ctrl-C (SIGINT): exit 130, one line, no traceback, no best.pth, no temp files."""
    cmd = [sys.executable, "-m", "kd_core.train", *argv("teacher", synth_dir, synth_prepared,
                                                         tmp_path), "--epochs", "30"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    history = tmp_path / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.rstrip().splitlines()[-1] == cli.INTERRUPTED and "Traceback" not in err
    assert not (tmp_path / "best.pth").exists() and not temp_files(tmp_path)
    assert (tmp_path / "last.pth").is_file() and (tmp_path / "config.json").is_file()


# ---------------------------------------------------------------- where the splits go


def test_splits_of_a_raw_folder_go_to_the_cache(synth_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from kd_core.data.ham10000 import is_prepared_dir
    from kd_core.data.sources import default_prepared_dir

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert train_main([*argv("teacher", synth_dir, None, out), "--epochs", "1"]) == 0
    prepared = default_prepared_dir(synth_dir)
    assert prepared.is_relative_to(tmp_path / "cache") and is_prepared_dir(prepared)
    assert not (tmp_path / "artifacts").exists()
    assert load_checkpoint(out / "best.pth")["dataset"] == "synthetic demo data"
