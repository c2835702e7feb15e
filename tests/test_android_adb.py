"""The adb driver and the CLI: a fake ``adb`` on PATH (records every call, replays outputs) for the
whole push/run/parse/cleanup sequence and its failures, and Debian's real ``adb`` for the
no-device path (skipped when adb is not installed)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from android_fake_adb import (
    FIXTURES,
    REMOTE,
    SERIAL,
    FakeAdb,
    install_fake_adb,
    make_elf,
    phone_rules,
    write_contract_manifest,
)

from benchmarks.android.__main__ import main
from benchmarks.android.adb import Adb, AdbError, BinaryError, check_binary, elf_machine

REPO = Path(__file__).resolve().parents[1]


def make_artifacts(root: Path, with_pte: bool = False) -> Path:
    folder = root / "export"
    folder.mkdir()
    entries: list[dict[str, Any]] = [
        {"name": "mnv3_tflite_int8", "path": "mnv3_tflite_int8.tflite", "format": "tflite",
         "precision": "int8", "bytes": 4096},
        {"name": "mnv3_onnx_fp32", "path": "mnv3_onnx_fp32.onnx", "format": "onnx",
         "precision": "fp32", "bytes": 100},
    ]
    if with_pte:
        entries.append({"name": "mnv3_executorch_fp32", "path": "mnv3_executorch_fp32.pte",
                        "format": "executorch", "precision": "fp32", "bytes": 2048})
    for e in entries:
        (folder / e["path"]).write_bytes(os.urandom(e["bytes"]))
    write_contract_manifest(folder, entries)
    return folder


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    return install_fake_adb(tmp_path, monkeypatch)


def bench_args(tmp_path: Path, *extra: str, binary: Path | None = None) -> list[str]:
    binary = binary or make_elf(tmp_path / "android_aarch64_benchmark_model")
    return ["--artifacts", str(tmp_path / "export"), "--tflite-benchmark", str(binary),
            "--threads", "1,4", "--runs", "20", "--warmup", "2", *extra]


def bench_cmd(threads: int) -> str:
    return (f"{REMOTE}/benchmark_model --graph={REMOTE}/mnv3_tflite_int8.tflite "
            f"--num_threads={threads} --use_xnnpack=true --num_runs=20 --warmup_runs=2 "
            "--report_peak_memory_footprint=true")


def test_full_sequence_push_run_parse_cleanup(tmp_path: Path, fake: FakeAdb,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    export = make_artifacts(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    host_row = {"name": "mnv3_tflite_int8", "runtime": "LiteRT Python", "device": "x86_64 host",
                "location": "host", "status": "ok", "latency": {"1": {"mean_ms": 7.0}}}
    (out / "results.json").write_text(json.dumps({"meta": {"host": "ci"}, "rows": [host_row]}))
    fake.rules(phone_rules())
    assert main(bench_args(tmp_path, "--out", str(out))) == 0
    s = ["-s", SERIAL]
    binary = str(tmp_path / "android_aarch64_benchmark_model")
    assert fake.calls() == [
        ["devices"],
        [*s, "shell", "getprop"],
        [*s, "shell", "dumpsys thermalservice"],
        [*s, "shell", f"mkdir -p {REMOTE}"],
        [*s, "push", binary, f"{REMOTE}/benchmark_model"],
        [*s, "shell", f"chmod 755 {REMOTE}/benchmark_model"],
        [*s, "push", str(export / "mnv3_tflite_int8.tflite"), f"{REMOTE}/mnv3_tflite_int8.tflite"],
        [*s, "shell", bench_cmd(1)],
        [*s, "shell", bench_cmd(4)],
        [*s, "shell", "dumpsys thermalservice"],
        [*s, "shell", f"rm -rf {REMOTE}"],
    ]
    pushed = fake.dir / "pushed" / "mnv3_tflite_int8.tflite"
    assert pushed.read_bytes() == (export / "mnv3_tflite_int8.tflite").read_bytes()
    data = json.loads((out / "results.json").read_text())
    assert data["rows"][0] == host_row
    [row] = [r for r in data["rows"] if r["location"] == "android"]
    assert row["device"] == "Pixel 7 (gs201, arm64-v8a, Android 14)"
    assert (row["name"], row["format"], row["precision"]) == ("mnv3_tflite_int8", "tflite", "int8")
    assert row["runtime"] == "LiteRT benchmark_model" and row["status"] == "ok"
    assert row["latency"]["1"]["p50_ms"] == pytest.approx(4.005, rel=1e-9)
    assert row["latency"]["4"]["mean_ms"] == pytest.approx(4.0204, rel=1e-9)
    assert row["latency"]["4"]["runs"] == 50
    assert row["peak_memory_mb"] == pytest.approx(14.1)
    meta = data["meta"]["android_devices"]["Pixel 7 (gs201, arm64-v8a, Android 14)"]
    assert meta["thermal"] == "light (1)" and meta["serial"] == SERIAL
    assert "mean=4.02 ms" in capsys.readouterr().out


def test_executorch_runner_and_tflite_together(tmp_path: Path, fake: FakeAdb) -> None:
    make_artifacts(tmp_path, with_pte=True)
    runner = make_elf(tmp_path / "executor_runner")
    fake.rules(phone_rules())
    out = tmp_path / "r"
    args = bench_args(tmp_path, "--executorch-runner", str(runner), "--threads", "4",
                      "--out", str(out))
    assert main(args) == 0
    shells = [c[3] for c in fake.calls() if c[2:3] == ["shell"]]
    assert (f"{REMOTE}/executor_runner --model_path={REMOTE}/mnv3_executorch_fp32.pte "
            "--num_executions=20 --cpu_threads=4") in shells
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"mnv3_tflite_int8", "mnv3_executorch_fp32"}  # the .onnx is not run
    pte = rows["mnv3_executorch_fp32"]
    assert pte["runtime"] == "ExecuTorch executor_runner"
    assert pte["latency"]["4"]["mean_ms"] == pytest.approx(201.0 / 50, rel=1e-9)
    assert shells[-1] == f"rm -rf {REMOTE}"


def test_output_without_timing_line(tmp_path: Path, fake: FakeAdb,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    make_artifacts(tmp_path)
    bad = {"match": r"--num_threads=4 ", "rc": 1,
           "stderr": (FIXTURES / "benchmark_model_no_timing.txt").read_text()}
    fake.rules(phone_rules(bench4=bad))
    out = tmp_path / "r"
    assert main(bench_args(tmp_path, "--out", str(out))) == 1
    err = capsys.readouterr().err
    assert "error: benchmark_model on mnv3_tflite_int8.tflite with 4 thread(s) (exit 1)" in err
    assert "no timing line" in err and "ERROR: Benchmarking failed." in err
    assert fake.calls()[-1] == ["-s", SERIAL, "shell", f"rm -rf {REMOTE}"]
    [row] = json.loads((out / "results.json").read_text())["rows"]
    assert set(row["latency"]) == {"1"} and "no timing line" in row["errors"][0]


def test_an_infinite_timing_is_a_parse_error_row_not_infinity(
        tmp_path: Path, fake: FakeAdb, capsys: pytest.CaptureFixture[str]) -> None:
    from kd_core.io import loads_json

    make_artifacts(tmp_path)
    inf = {"match": r"--num_threads=4 ", "stdout": "Inference timings in us: Init: 5, First "
           "inference: 9, Warmup (avg): 8, Inference (avg): 1e400\n"}
    fake.rules(phone_rules(bench4=inf))
    out = tmp_path / "r"
    assert main(bench_args(tmp_path, "--out", str(out))) == 1
    assert "impossible avg_ms (inf)" in capsys.readouterr().err
    [row] = loads_json((out / "results.json").read_text())["rows"]  # type: ignore[index]
    assert set(row["latency"]) == {"1"} and "impossible avg_ms" in row["errors"][0]


def test_device_disconnects_mid_run(tmp_path: Path, fake: FakeAdb,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    make_artifacts(tmp_path)
    gone = {"rc": 1, "stderr": f"error: device '{SERIAL}' not found\n"}
    fake.rules(phone_rules(bench4={"match": r"--num_threads=4 ", **gone},
                           rm={"match": r"shell rm -rf ", **gone}))
    out = tmp_path / "r"
    assert main(bench_args(tmp_path, "--out", str(out))) == 1
    err = capsys.readouterr().err
    assert f"error: device '{SERIAL}' not found: it was disconnected" in err
    assert "Traceback" not in err
    assert fake.calls()[-1] == ["-s", SERIAL, "shell", f"rm -rf {REMOTE}"]  # cleanup was tried
    assert not (out / "results.json").exists()


@pytest.mark.parametrize(("devices", "extra", "message"), [
    ("", [], "no Android device is attached"),
    ("R58M12\tdevice\nemulator-5554\tdevice\n", [],
     "several devices are attached (R58M12, emulator-5554); pick one with --serial"),
    ("R58M12\tunauthorized\n", [], "device 'R58M12' is unauthorized: unlock the phone"),
    ("R58M12\toffline\n", [], "device 'R58M12' is offline"),
    ("R58M12\tdevice\n", ["--serial", "ZZZ"], "device 'ZZZ' not found (attached: R58M12)"),
])
def test_device_selection_errors(tmp_path: Path, fake: FakeAdb, capsys: pytest.CaptureFixture[str],
                                 devices: str, extra: list[str], message: str) -> None:
    make_artifacts(tmp_path)
    fake.rules(phone_rules(devices=devices))
    assert main(bench_args(tmp_path, *extra)) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert fake.calls() == [["devices"]]  # nothing pushed, nothing run


def test_serial_picks_one_of_several(tmp_path: Path, fake: FakeAdb) -> None:
    make_artifacts(tmp_path)
    fake.rules(phone_rules(devices="R58M12\tdevice\nemulator-5554\tdevice\n"))
    assert main(bench_args(tmp_path, "--serial", SERIAL, "--threads", "1")) == 0
    assert all(c[:2] == ["-s", SERIAL] for c in fake.calls()[1:])


@pytest.mark.parametrize(("machine", "executable", "message"), [
    (None, True, "not an ELF executable"),
    (183, False, "not executable (chmod +x"),
    (62, True, "built for x86_64, but Pixel 7 runs arm64-v8a, armeabi-v7a, armeabi"),
])
def test_bad_binaries_are_refused_before_any_push(
        tmp_path: Path, fake: FakeAdb, capsys: pytest.CaptureFixture[str],
        machine: int | None, executable: bool, message: str) -> None:
    make_artifacts(tmp_path)
    fake.rules(phone_rules())
    binary = tmp_path / "benchmark_model"
    if machine is None:
        binary.write_text("#!/bin/sh\necho not a phone binary\n")
        binary.chmod(0o755)
    else:
        make_elf(binary, machine, executable)
    assert main(bench_args(tmp_path, binary=binary)) == 2
    assert message in capsys.readouterr().err
    assert not any("push" in c for c in fake.calls())


def test_adb_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    make_artifacts(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(bench_args(tmp_path)) == 1
    assert "adb is not installed or not on PATH" in capsys.readouterr().err
    assert main([*bench_args(tmp_path), "--adb", str(tmp_path / "nope" / "adb")]) == 1
    assert "adb not found at" in capsys.readouterr().err


def test_bad_options_and_artifacts(tmp_path: Path, fake: FakeAdb,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake.rules(phone_rules())
    assert main(["--artifacts", str(tmp_path / "missing"), "--tflite-benchmark", "x"]) == 2
    assert "artefact folder not found" in capsys.readouterr().err
    make_artifacts(tmp_path)
    assert main(["--artifacts", str(tmp_path / "export")]) == 2
    assert "give --tflite-benchmark PATH" in capsys.readouterr().err
    for flag, value, message in (("--threads", "0", "--threads must list thread counts >= 1"),
                                 ("--runs", "0", "--runs must be >= 1, got 0"),
                                 ("--timeout", "0", "--timeout must be > 0 seconds")):
        assert main([*bench_args(tmp_path), flag, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert fake.calls() == []


def test_an_unwritable_out_is_refused_before_adb(tmp_path: Path, fake: FakeAdb,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    make_artifacts(tmp_path)
    fake.rules(phone_rules())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(bench_args(tmp_path, "--out", str(blocker / "r"))) == 2
    assert capsys.readouterr().err == (f"error: --out {blocker / 'r'}: {blocker} is a file, "
                                       "not a folder\n")
    assert fake.calls() == [] and blocker.read_text() == "not a folder"


def test_unreadable_results_are_refused_before_adb(tmp_path: Path, fake: FakeAdb,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make_artifacts(tmp_path)
    fake.rules(phone_rules())
    out = tmp_path / "r"
    out.mkdir()
    (out / "results.json").write_text("{not json")
    assert main(bench_args(tmp_path, "--out", str(out))) == 2
    assert "results.json: cannot read results" in capsys.readouterr().err
    assert fake.calls() == [] and (out / "results.json").read_text() == "{not json"


def test_a_modified_artifact_is_refused_before_adb(tmp_path: Path, fake: FakeAdb,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    export = make_artifacts(tmp_path)
    fake.rules(phone_rules())
    with (export / "mnv3_tflite_int8.tflite").open("ab") as fh:
        fh.write(b"\0")
    assert main(bench_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "mnv3_tflite_int8.tflite: sha256" in err and "differs from the manifest" in err
    assert fake.calls() == []


def test_adb_garbage_is_named_as_such(tmp_path: Path, fake: FakeAdb,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    make_artifacts(tmp_path)
    rules = phone_rules()
    rules[0] = {"match": r"^devices$", "stdout": "\x00garbage %% 12\n"}
    fake.rules(rules)
    assert main(bench_args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "'adb devices' did not print a device list" in err and "several" not in err
    fake.rules(phone_rules(devices="R58M12\tdevice\n%%junk\n"))
    assert main(bench_args(tmp_path)) == 1
    assert "printed a line that is not 'SERIAL STATE': '%%junk'" in capsys.readouterr().err
    assert all(c == ["devices"] for c in fake.calls())


def test_ctrl_c_on_the_phone_cleans_up_and_writes_nothing(
        tmp_path: Path, fake: FakeAdb, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.android.run

    make_artifacts(tmp_path)
    fake.rules(phone_rules())
    out = tmp_path / "r"
    out.mkdir()
    (out / "results.json").write_text('{"meta": {}, "rows": []}\n')

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmarks.android.run, "run_one", interrupted)
    assert main(bench_args(tmp_path, "--out", str(out))) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "interrupted; rerun the same command to resume"
    assert fake.calls()[-1] == ["-s", SERIAL, "shell", f"rm -rf {REMOTE}"]  # the phone is clean
    assert [p.name for p in out.iterdir()] == ["results.json"]
    assert (out / "results.json").read_text() == '{"meta": {}, "rows": []}\n'


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--artifacts", "--serial", "--adb", "--tflite-benchmark", "--executorch-runner",
                "--threads", "--runs", "--warmup", "--out", "--timeout", "--taskset", "parity"):
        assert opt in text
    for default in ("(default: 1,4)", "(default: 50)", "(default: 5)", "(default: 600.0)"):
        assert default in " ".join(text.split())


def test_elf_header_of_a_real_host_binary() -> None:
    expected = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[platform.machine()]
    assert elf_machine(Path(sys.executable).resolve()) == expected
    assert check_binary(Path(sys.executable).resolve()) in ("x86_64", "arm64-v8a")
    with pytest.raises(BinaryError, match="benchmark binary not found"):
        elf_machine("/nonexistent/benchmark_model")


# ------------------------------------------------------------------ the real Debian adb binary

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def real_adb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Debian's adb on a private server port; its server is killed afterwards."""
    exe = shutil.which("adb")
    if exe is None:
        pytest.skip("adb is not installed (apt-get install adb)")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(_free_port()))
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    yield exe
    subprocess.run([exe, "kill-server"], capture_output=True, timeout=30, check=False)


def test_real_adb_without_a_device_cli(tmp_path: Path, real_adb: str) -> None:
    make_artifacts(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.android", *bench_args(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: no Android device is attached (adb devices lists none); plug the phone in and "
        "enable USB debugging"]


def test_real_adb_driver_errors(real_adb: str) -> None:
    with pytest.raises(AdbError, match="no Android device is attached"):
        Adb(real_adb).shell("ls /data/local/tmp")
    with pytest.raises(AdbError, match="device 'EDGEKD0' not found: it was disconnected"):
        Adb(real_adb, serial="EDGEKD0").shell("ls")


def test_real_adb_with_an_unknown_serial(tmp_path: Path, real_adb: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    make_artifacts(tmp_path)
    assert main(bench_args(tmp_path, "--serial", "EDGEKD0")) == 1
    assert "device 'EDGEKD0' not found (attached: none)" in capsys.readouterr().err
