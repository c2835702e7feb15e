"""Bad input to the benchmark CLIs is found before any work: exit 2, one line naming the flag or
file and the problem, nothing written or overwritten; every CLI's --help shows its defaults and
the exit codes, fast and without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import main

ROOT = Path(__file__).resolve().parents[1]
CLIS = ("benchmarks.run", "benchmarks.pipeline", "benchmarks.report", "benchmarks.android",
        "benchmarks.latency", "benchmarks.studies.int8_speed", "benchmarks.studies.export_check",
        "benchmarks.studies.train_speed")


@pytest.fixture()
def place(tmp_path: Path) -> dict[str, Path]:
    """Input paths that exist (their content is never reached) and an output folder holding
    earlier results."""
    for name in ("arts", "data"):
        (tmp_path / name).mkdir()
    (tmp_path / "student.pth").write_bytes(b"not reached")
    out = tmp_path / "R"
    out.mkdir()
    (out / "results.json").write_text("earlier results\n")
    return {"arts": tmp_path / "arts", "data": tmp_path / "data",
            "student": tmp_path / "student.pth", "out": out, "tmp": tmp_path}


def bench(place: dict[str, Path], *extra: str, out: Path | None = None) -> list[str]:
    return ["--artifacts", str(place["arts"]), "--student-ckpt", str(place["student"]),
            "--data-dir", str(place["data"]), "--out", str(out or place["out"]), *extra]


def untouched(place: dict[str, Path]) -> bool:
    files = sorted(p.relative_to(place["tmp"]).as_posix() for p in place["tmp"].rglob("*"))
    return files == ["R", "R/results.json", "arts", "data", "student.pth"] and \
        (place["out"] / "results.json").read_text() == "earlier results\n"


@pytest.mark.parametrize(("extra", "message"), [
    (("--formats", "tensorrt"), "--formats: unknown tensorrt; known formats: torch, onnx"),
    (("--formats", "onnx,tensorrt,"), "--formats: unknown tensorrt;"),
    (("--threads", "0"), "--threads must list thread counts >= 1, got 0"),
    (("--threads", "1,0"), "--threads must list thread counts >= 1, got 1,0"),
    (("--runs", "0"), "--runs must be >= 1, got 0"),
    (("--warmup", "-1"), "--warmup must be >= 0, got -1"),
    (("--limit", "1"), "--limit must be >= 2, got 1"),
])
def test_bad_flags_exit_2_before_any_work(place: dict[str, Path], extra: tuple[str, ...],
                                          message: str, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(bench(place, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert untouched(place)


def test_an_unwritable_out_is_found_before_any_work(place: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    blocker = place["tmp"] / "student.pth"  # a file: nothing can be created below it
    assert main(bench(place, out=blocker / "R")) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {blocker / 'R'}: cannot be created ({blocker} is not a " \
                  "folder)\n"
    assert main(bench(place, out=blocker)) == 2
    assert f"--out {blocker}: exists and is not a folder" in capsys.readouterr().err
    assert untouched(place)


def test_missing_inputs_name_the_file(place: dict[str, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(bench(place)) == 2
    err = capsys.readouterr().err
    assert err == f"error: {place['arts'] / 'manifest.json'}: manifest not found (run python -m " \
                  f"exporters.all CKPT --out {place['arts']})\n"
    assert untouched(place)


def test_every_cli_help_shows_defaults_and_exit_codes_without_torch() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for module in CLIS:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"],
                              capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        assert proc.returncode == 0, (module, proc.stderr[-500:])
        assert "130 interrupted" in proc.stdout, module
        assert "(default: " in proc.stdout or module == "benchmarks.report", module  # no defaults
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
        assert "torch" not in imported, module
