"""Exporter registry, command line and bad input: fast tests (real ONNX exports of a tiny model).

Every bad input exits 2 with one ``error:`` line naming the flag or file, before any work:
nothing is written, an existing export folder is left byte for byte as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from exporters_support import write_checkpoint, write_image_folder

import exporters
from exporters import get_exporter, list_exporters
from exporters.all import main
from kd_core.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "litert_torch", "executorch", "coremltools", "onnx", "onnxruntime",
            "ai_edge_litert")
FP32_ONNX = ["--formats", "onnx", "--precisions", "fp32", "--jobs", "1"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", size=32)


@pytest.fixture(scope="module")
def exported(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder holding the ONNX fp32 artefact and its manifest."""
    out = tmp_path_factory.mktemp("exported") / "out"
    assert main([str(ckpt), "--out", str(out), *FP32_ONNX]) == 0
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with its sha256."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def run_bad(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for part in expected:
        assert part in err, err
    return err


# ---- registry and help ----------------------------------------------------------------------

def test_registry_and_cli_import_neither_torch_nor_a_backend() -> None:
    code = ("import sys, exporters, exporters.all; print(exporters.list_exporters()); "
            f"print([m for m in {BACKENDS!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["['tflite', 'executorch', 'coreml', 'onnx']", "[]"]


@pytest.mark.parametrize("module", ["exporters.all", "exporters.tflite", "exporters.coreml"])
def test_help_imports_no_torch_and_shows_every_default(module: str) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert not {m for m in imported if m.split(".")[0] in BACKENDS}
    help_text = " ".join(proc.stdout.split())
    for text in ("CKPT", "--out", "--precisions", "(default: fp32,int8)", "--calib-data",
                 "(default: 1024)", "--allow-uncalibrated", "--allow-few-calib-images",
                 "(default: auto)", "coreml: fp16", "Exit codes: 0 ok"):
        assert text in help_text, text
    assert ("--formats" in help_text) == (module == "exporters.all")


def test_registry_holds_the_per_format_facts() -> None:
    coreml, tflite = get_exporter("coreml"), get_exporter("tflite")
    assert coreml.precisions == {"fp32": ("fp16",), "int8": ("w8",), "w8a8": ("w8a8",)}
    assert coreml.preferred == ("w8", "fp16") and tflite.preferred == ("int8",)
    assert tflite.int8 is not None and "decompose_hardswish" in tflite.int8.rewrites
    assert get_exporter("onnx").int8.quantizer == "onnxruntime"  # type: ignore[union-attr]
    assert coreml.int8 is not None and coreml.int8.quantizer == "coreml"
    assert all(get_exporter(f).read_metadata is not None for f in list_exporters())
    assert get_exporter("executorch").cost > coreml.cost
    assert exporters.precision_families() == ("fp32", "int8", "w8a8")
    with pytest.raises(ValueError, match="registered twice"):
        exporters.register_exporter("onnx", extension=".onnx", tools=())(lambda *a: [])
    with pytest.raises(KeyError, match="known formats: tflite"):
        get_exporter("tensorrt")


def test_a_format_module_is_its_own_command(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "exporters.onnx", str(ckpt), "--out", str(out),
                           "--precisions", "fp32"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["name"] for e in manifest["artifacts"]] == ["tiny_mobilenet_onnx_fp32"]


# ---- bad input: exit 2, one line, nothing written -------------------------------------------

def test_missing_corrupt_and_incomplete_checkpoints(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    run_bad([str(tmp_path / "nope.pth"), "--out", str(out)], capsys, "nope.pth",
            "checkpoint not found")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    run_bad([str(bad), "--out", str(out), *FP32_ONNX], capsys, "bad.pth", "corrupt")
    for key in ("preprocessing", "labels"):
        path = write_checkpoint(tmp_path / f"no_{key}.pth", size=32, drop=(key,))
        run_bad([str(path), "--out", str(out), *FP32_ONNX], capsys, f"no_{key}.pth",
                f"lacks {key}")
    assert not out.exists()  # refused before anything was created


@pytest.mark.parametrize(("extra", "field"), [
    ({"temperature": float("nan")}, "temperature"),
    ({"threshold": 5.0}, "threshold"),
])
def test_inconsistent_decision_is_refused(extra: dict[str, float], field: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_checkpoint(tmp_path / "odd.pth", size=32, **extra)
    out = tmp_path / "out"
    run_bad([str(path), "--out", str(out), *FP32_ONNX, "--allow-uncalibrated"], capsys,
            "odd.pth", field)
    assert not out.exists()


def test_uncalibrated_checkpoint_is_refused_unless_allowed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_checkpoint(tmp_path / "best.pth", size=32, calibrated=False,
                            dataset="synthetic demo data")
    out = tmp_path / "out"
    run_bad([str(path), "--out", str(out), *FP32_ONNX], capsys, "best.pth", "not calibrated",
            "--allow-uncalibrated")
    assert not out.exists()
    assert main([str(path), "--out", str(out), *FP32_ONNX, "--allow-uncalibrated"]) == 0
    assert "exporting an uncalibrated checkpoint" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["calibrated"] for e in manifest["artifacts"]] == [False]
    assert manifest["dataset"] == manifest["artifacts"][0]["dataset"] == "synthetic demo data"
    assert manifest["artifacts"][0]["target_sensitivity"] == 0.95


def test_unknown_and_empty_format_precision_combinations(
        ckpt: Path, exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(exported)
    out = str(exported)
    run_bad([str(ckpt), "--out", out, "--formats", "onnx,tensorrt"], capsys,
            "--formats", "unknown format(s) tensorrt", "known formats: tflite, executorch")
    run_bad([str(ckpt), "--out", out, "--precisions", "int4"], capsys,
            "--precisions", "unknown precision(s) int4")
    run_bad([str(ckpt), "--out", out, "--formats", "onnx", "--precisions", "w8a8"], capsys,
            "--formats onnx --precisions w8a8", "onnx makes nothing for w8a8")
    run_bad([str(ckpt), "--out", out, "--formats", "onnx", "--precisions", "fp32,w8a8"], capsys,
            "none of these formats makes w8a8", "only coreml")
    run_bad([str(ckpt), "--out", out, "--jobs", "0"], capsys, "--jobs must be a positive")
    run_bad([str(ckpt), "--out", out, *FP32_ONNX, "--threads", "0"], capsys, "--threads")
    assert snapshot(exported) == before  # the export folder and its manifest untouched


def test_unwritable_output_folder(ckpt: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    run_bad([str(ckpt), "--out", str(blocker / "out"), *FP32_ONNX], capsys,
            "--out", "output folder cannot be created")


def test_unreadable_manifest_in_out_is_never_overwritten(
        ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"manifest_version": 1, "temperature": NaN}')
    before = snapshot(out)
    run_bad([str(ckpt), "--out", str(out), *FP32_ONNX], capsys, "manifest.json",
            "choose another --out")
    assert snapshot(out) == before


def test_calibration_data_is_checked_before_any_work(
        ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    int8 = [str(ckpt), "--out", str(out), "--formats", "onnx"]
    run_bad(int8, capsys, "INT8 (onnx) needs real calibration images", "--calib-data DIR",
            "--precisions fp32")
    few = write_image_folder(tmp_path / "few", n=4)
    run_bad([*int8, "--calib-data", str(few), "--calib-samples", "4"], capsys,
            "--calib-samples 4 is below the minimum of 32", "--allow-few-calib-images")
    run_bad([*int8, "--calib-data", str(few)], capsys, "few: only 4 calibration images",
            "--allow-few-calib-images")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    run_bad([*int8, "--calib-data", str(empty)], capsys, "empty", "no images")
    run_bad([*int8, "--calib-data", str(tmp_path / "none")], capsys,
            "calibration folder not found")
    assert not out.exists()


# ---- failures, merging ----------------------------------------------------------------------

def test_failure_is_isolated_and_leaves_no_files(
        ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from kd_core.io import atomic_path

    def broken(model: object, example: object, out_dir: Path, cfg: object) -> list[object]:
        with atomic_path(out_dir / "half_written.tflite") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("converter crashed half way")

    monkeypatch.setitem(exporters.EXPORTERS, "tflite",
                        replace(get_exporter("tflite"), export=broken))
    out = tmp_path / "out"
    code = main([str(ckpt), "--out", str(out), "--formats", "tflite,onnx", "--precisions",
                 "fp32", "--jobs", "1"])
    text = capsys.readouterr().out
    assert code == 1
    assert "FAILED tflite fp32: RuntimeError: converter crashed half way" in text
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json",
                                                     "tiny_mobilenet_onnx_fp32.onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["tiny_mobilenet_onnx_fp32"]
    assert manifest["failures"] == [{"format": "tflite", "precision": "fp32",
                                     "error": "RuntimeError: converter crashed half way"}]
    rows = [line.split()[:3] for line in text.splitlines()]
    assert ["onnx", "fp32", "ok"] in rows and ["tflite", "fp32", "FAILED"] in rows


def test_merging_keeps_earlier_entries_and_says_what_changed(
        ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from exporters.run import ExportOptions, export_checkpoint

    out = tmp_path / "out"
    coreml = ExportOptions(formats=("coreml",), precisions=("fp32",), jobs=1)
    export_checkpoint(ckpt, out, coreml)
    onnx = ExportOptions(formats=("onnx",), precisions=("fp32",), jobs=1)
    first = export_checkpoint(ckpt, out, onnx)
    assert first.kept == ("tiny_mobilenet_coreml_fp16",) and first.replaced == ()
    again = export_checkpoint(ckpt, out, onnx)
    assert again.replaced == ("tiny_mobilenet_onnx_fp32",) and again.dropped == ()
    names = [a["name"] for a in json.loads(again.manifest_path.read_text())["artifacts"]]
    assert names == ["tiny_mobilenet_coreml_fp16", "tiny_mobilenet_onnx_fp32"]
    (out / "tiny_mobilenet_onnx_fp32.onnx").write_bytes(b"changed")  # not what was listed
    other = write_checkpoint(tmp_path / "other.pth", size=32, seed=3)
    result = export_checkpoint(other, out, coreml)
    assert set(result.dropped) == {"tiny_mobilenet_onnx_fp32 (exported from another checkpoint)"}
    assert result.replaced == ("tiny_mobilenet_coreml_fp16",)
    assert "no longer lists tiny_mobilenet_onnx_fp32" in caplog.text


def test_worker_processes_isolate_a_dying_format(ckpt: Path, tmp_path: Path) -> None:
    from exporters.job import load_settings
    from exporters.parallel import Task, registering_modules, run_parallel, share_out

    groups = share_out(("tflite", "executorch", "coreml", "onnx"), 2)
    assert {frozenset(g) for g in groups} == {frozenset({"executorch", "coreml"}),
                                              frozenset({"tflite", "onnx"})}
    assert registering_modules(("onnx",)) == ("exporters.onnx", "runtimes.onnx")
    _, cfg = load_settings(ckpt, ("fp32",))
    log = tmp_path / "worker.log"
    tasks = [Task(("onnx",), ckpt, cfg, tmp_path, 1, None),
             Task(("coreml", "onnx"), tmp_path / "vanished.pth", cfg, tmp_path, 1, log)]
    results = list(run_parallel(tasks, 2))
    ok = [r for r in results if r.artifacts]
    assert [a.name for r in ok for a in r.artifacts] == ["tiny_mobilenet_onnx_fp32"]
    assert ok[0].artifacts[0].reference is None  # torch modules stay in the worker
    died = [(r.fmt, r.failures[0].error) for r in results if r.failures]
    # The dead worker fails the format it was on; the rest is retried in a fresh worker.
    assert died == [("coreml", "worker process died (exit code 1)"),
                    ("onnx", "worker process died (exit code 1)")]
    assert "vanished.pth" in next(r.log_tail for r in results if r.failures)
    assert (tmp_path / "tiny_mobilenet_onnx_fp32.onnx").is_file()


# ---- Ctrl-C ---------------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_is_one_line_and_leaves_the_folder_as_it_was(
        ckpt: Path, exported: Path, tmp_path: Path, jobs: str) -> None:
    import os
    import shutil
    import signal
    import tempfile
    import time

    out = tmp_path / "out"
    shutil.copytree(exported, out)
    before = snapshot(out)
    logs = set(Path(tempfile.gettempdir()).glob("edgekd-export-*"))
    code = ("import sys; sys.path.insert(0, 'tests'); import exporters_sleepy; "
            "from exporters.all import main; sys.exit(main(sys.argv[1:]))")
    argv = [str(ckpt), "--out", str(out), "--formats", "sleepy_a,sleepy_b", "--precisions",
            "fp32", "--jobs", jobs]
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(out.glob(".*.tmp"))) < int(jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(out.glob(".*.tmp")), "the export never started"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip() == "interrupted; rerun the same command to resume", err
    assert snapshot(out) == before  # no temporary file, no staging folder, manifest intact
    assert set(Path(tempfile.gettempdir()).glob("edgekd-export-*")) == logs  # no stray logs
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # a worker (or helper) process still alive?
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("worker processes outlived the interrupted export")
