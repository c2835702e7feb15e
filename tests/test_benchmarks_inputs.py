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
EARLIER = '{"meta": {}, "rows": []}\n'
CLIS = ("benchmarks.run", "benchmarks.pipeline", "benchmarks.report", "benchmarks.android",
        "benchmarks.latency", "benchmarks.studies.int8_speed", "benchmarks.studies.export_check",
        "benchmarks.studies.train_speed", "benchmarks.browser")


@pytest.fixture()
def place(tmp_path: Path) -> dict[str, Path]:
    """Input paths that exist (their content is never reached) and an output folder holding
    earlier results."""
    for name in ("arts", "data"):
        (tmp_path / name).mkdir()
    (tmp_path / "student.pth").write_bytes(b"not reached")
    out = tmp_path / "R"
    out.mkdir()
    (out / "results.json").write_text(EARLIER)
    return {"arts": tmp_path / "arts", "data": tmp_path / "data",
            "student": tmp_path / "student.pth", "out": out, "tmp": tmp_path}


def bench(place: dict[str, Path], *extra: str, out: Path | None = None) -> list[str]:
    return ["--artifacts", str(place["arts"]), "--student-ckpt", str(place["student"]),
            "--data-dir", str(place["data"]), "--out", str(out or place["out"]), *extra]


def untouched(place: dict[str, Path]) -> bool:
    files = sorted(p.relative_to(place["tmp"]).as_posix() for p in place["tmp"].rglob("*"))
    return files == ["R", "R/results.json", "arts", "data", "student.pth"] and \
        (place["out"] / "results.json").read_text() == EARLIER


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


@pytest.mark.parametrize(("extra", "message"), [
    (("--formats", "onnx,tensorrt"), "--formats: unknown format(s) tensorrt; known formats:"),
    (("--threads", "0"), "--threads must be >= 1, got 0"),
    (("--min-top1-agreement", "1.5"), "--min-top1-agreement must be between 0 and 1, got 1.5"),
    (("--qat-steps", "200"), "--qat-steps is a rung of --repair auto (with --val-data), not of "
     "--repair off"),
    (("--val-data", "VAL", "--repair", "recalibrate", "--qat-steps", "200"),
     "--qat-steps is a rung of --repair auto (with --val-data), not of --repair recalibrate"),
])
def test_export_check_bad_flags_exit_2_before_any_work(
        place: dict[str, Path], extra: tuple[str, ...], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``exporters.all``'s INT8 flags pass through and are checked before the checkpoint is
    built or the data read."""
    from benchmarks.studies.export_check import main as export_check

    out = place["tmp"] / "EC"
    flags = [str(place["data"]) if f == "VAL" else f for f in extra]
    assert export_check(["--data", str(place["data"]), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and untouched(place)


def test_an_unwritable_out_is_found_before_any_work(place: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    blocker = place["tmp"] / "student.pth"  # a file: nothing can be created below it
    assert main(bench(place, out=blocker / "R")) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {blocker / 'R'}: {blocker} is a file, not a folder\n"
    assert main(bench(place, out=blocker)) == 2
    assert f"--out {blocker}: exists and is not a folder" in capsys.readouterr().err
    assert main(bench(place, "--prepared-dir", str(blocker / "P"))) == 2
    assert f"--prepared-dir {blocker / 'P'}: {blocker} is a file" in capsys.readouterr().err
    assert untouched(place)


def test_unreadable_earlier_results_are_found_before_any_work(
        place: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Phone rows of an existing results.json are kept, so it must be readable: checked first."""
    (place["out"] / "results.json").write_text('{"meta": {}, "rows": [{"p50_ms": NaN}]}')
    assert main(bench(place)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {place['out'] / 'results.json'}: cannot read results (NaN")
    assert err.count("\n") == 1
    assert "NaN" in (place["out"] / "results.json").read_text()


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


BAD_VALUES = (None, "x", "", [], {}, [1, "a"], float("nan"), float("inf"), 1e308, -1, 0, True)


def test_mutated_manifests_exit_2_with_one_line(tmp_path: Path) -> None:
    """Missing keys, wrong types, NaN, huge values anywhere in a manifest entry or at its top:
    exit 2 and one ``error:`` line (from the manifest, or else from the junk checkpoint
    behind it), never a traceback."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    from android_fake_adb import write_contract_manifest

    from kd_core.io import loads_json

    arts = tmp_path / "arts"
    arts.mkdir()
    (arts / "m.onnx").write_bytes(b"onnx")
    good = loads_json(write_contract_manifest(arts, [
        {"name": "m_onnx_fp32", "path": "m.onnx", "format": "onnx", "precision": "fp32"}
    ]).read_text())
    assert isinstance(good, dict)
    (tmp_path / "student.pth").write_bytes(b"not a checkpoint")
    entry_keys = sorted(good["artifacts"][0])
    top_keys = sorted(good)
    where = st.one_of(st.tuples(st.just("top"), st.sampled_from(top_keys)),
                      st.tuples(st.just("entry"), st.sampled_from(entry_keys)),
                      st.tuples(st.just("io"), st.sampled_from(["shape", "quantization"])))

    @hypothesis.settings(max_examples=60, deadline=None, database=None)
    @hypothesis.given(where=where, delete=st.booleans(), value=st.sampled_from(BAD_VALUES))
    def check(where: tuple[str, str], delete: bool, value: object) -> None:
        import copy
        import io
        import json
        from contextlib import redirect_stderr

        data = copy.deepcopy(good)
        level, key = where
        target = {"top": data, "entry": data["artifacts"][0],
                  "io": data["artifacts"][0]["input"]}[level]
        if delete:
            target.pop(key, None)
        else:
            target[key] = value
        (arts / "manifest.json").write_text(json.dumps(data))
        err = io.StringIO()
        with redirect_stderr(err):
            code = main(["--artifacts", str(arts), "--student-ckpt", str(tmp_path / "student.pth"),
                         "--data-dir", str(tmp_path), "--out", str(tmp_path / "R")])
        assert code == 2 and err.getvalue().startswith("error: "), (where, delete, value)
        assert err.getvalue().count("\n") == 1, err.getvalue()
        # The other CLIs that read an export folder's manifest: predict and the demo sync.
        demos = [f"--{app}={tmp_path / app}" for app in ("android", "ios", "web")]
        for other, argv in ((predict_main, [str(arts), str(tmp_path / "photo.png")]),
                            (sync_main, [str(arts), *demos])):
            err = io.StringIO()
            with redirect_stderr(err):
                code = other(argv)
            assert code == 2 and err.getvalue().startswith("error: "), (other, err.getvalue())
            assert err.getvalue().count("\n") == 1, err.getvalue()

    from PIL import Image

    from exporters.sync_demos import main as sync_main
    from runtimes.predict import main as predict_main

    Image.new("RGB", (40, 40), (120, 80, 60)).save(tmp_path / "photo.png")
    check()
    assert not (tmp_path / "R").exists()
    assert not any((tmp_path / app).exists() for app in ("android", "ios", "web"))
