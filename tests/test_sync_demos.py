"""exporters.sync_demos on a generated export folder: the gate verdict travels with the artefact
(refused unless it passed for its current bytes, or shipped marked "not parity-checked"), the
training data's name, the choice of artefact (the web demo's: float32 I/O only), the trimmed
manifest, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.sync_demos import NOT_CHECKED, UNKNOWN_DATA, main
from kd_core.data.transforms import Preprocessing
from kd_core.deploy import (
    MANIFEST_NAME,
    Decision,
    GateVerdict,
    Manifest,
    ManifestEntry,
    load_manifest,
    record_verdicts,
    write_manifest,
)
from kd_core.io import sha256_file

DECISION = Decision(("other", "melanoma"), 1, temperature=1.3, threshold=0.2)
PREP = Preprocessing(size=32)
NAMES = [("m_tflite_fp32", "tflite", "fp32"), ("m_tflite_int8", "tflite", "int8"),
         ("m_tflite_int8_float_io", "tflite", "int8_float_io"),
         ("m_coreml_fp16", "coreml", "fp16"), ("m_coreml_w8", "coreml", "w8"),
         ("m_onnx_fp32", "onnx", "fp32")]


def _entry(out: Path, name: str, fmt: str, precision: str, dataset: str | None
           ) -> ManifestEntry:
    if fmt == "coreml":
        path = out / f"{name}.mlpackage"
        (path / "Data").mkdir(parents=True)
        (path / "Data" / "weights.bin").write_bytes(name.encode() * 10)
        (path / "Manifest.json").write_text("{}")
    else:
        path = out / f"{name}.{fmt}"
        path.write_bytes(name.encode() * 10)
    dtype, quant = ("int8", {"scale": 0.02, "zero_point": 0}) if precision == "int8" else \
        ("float32", None)
    io = {"name": "x", "shape": [1, 3, 32, 32], "dtype": dtype, "quantization": quant}
    return ManifestEntry(name=name, path=path.name, format=fmt, precision=precision, input=io,
                         output={"name": "y", "shape": [1, 2], "dtype": dtype,
                                 "quantization": quant, "kind": "logits"},
                         decision=DECISION, preprocessing=PREP, sha256=sha256_file(path),
                         dataset=dataset)


def make_export(out: Path, dataset: str | None = "synthetic demo data",
                names: list[tuple[str, str, str]] = NAMES) -> Path:
    out.mkdir()
    entries = tuple(_entry(out, n, f, p, dataset) for n, f, p in names)
    write_manifest(Manifest(decision=DECISION, preprocessing=PREP, artifacts=entries,
                            dataset=dataset), out)
    return out


def gate(export: Path, verdict: str = "pass", **names: str) -> None:
    """Record verdicts as benchmarks.run does (bound to each artefact's current sha256)."""
    manifest = load_manifest(export)
    record_verdicts(export, [
        GateVerdict(e.name, names.get(e.name, verdict), e.sha256 or "", "2026-11-29T10:00:00",
                    "ham10000", "holdout", 1495,
                    ("delta ROC-AUC -0.015 < -0.01",) if names.get(e.name, verdict) == "fail"
                    else ())
        for e in manifest.artifacts])


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return make_export(tmp_path / "export")


def _sync(export: Path, tmp_path: Path, *extra: str) -> tuple[int, Path, Path]:
    android, ios = tmp_path / "assets", tmp_path / "ios"
    code = main([str(export), "--android", str(android), "--ios", str(ios), "--web",
                 str(tmp_path / "web"), *extra])
    return code, android, ios


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_never_benchmarked_export_is_refused_naming_the_gate(
        export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, android, ios = _sync(export, tmp_path)
    err = _one_line_error(capsys)
    assert code == 2
    assert "m_tflite_int8" in err and "gate status 'not run'" in err and "--allow-ungated" in err
    assert not android.exists() and not ios.exists() and not (tmp_path / "web").exists()


def test_gated_export_is_copied_with_its_verdict_and_dataset(export: Path,
                                                             tmp_path: Path) -> None:
    gate(export)
    code, android, ios = _sync(export, tmp_path)
    assert code == 0
    trimmed = load_manifest(android)
    (entry,) = trimmed.artifacts
    assert entry.name == "m_tflite_int8" and trimmed.failures == ()
    assert entry.extra["gate"]["status"] == "pass"
    assert "ham10000 (holdout, n=1495), 2026-11-29" in entry.extra["gate"]["detail"]
    assert entry.dataset == trimmed.dataset == "synthetic demo data"
    assert (android / entry.path).read_bytes() == (export / "m_tflite_int8.tflite").read_bytes()
    (ios_entry,) = load_manifest(ios).artifacts
    assert ios_entry.name == "m_coreml_w8"
    assert sha256_file(ios / ios_entry.path) == ios_entry.sha256
    assert sorted(p.name for p in android.iterdir()) == ["m_tflite_int8.tflite", MANIFEST_NAME]
    web = load_manifest(tmp_path / "web")
    (web_entry,) = web.artifacts  # LiteRT.js takes no int8 tensors: the float-I/O variant
    assert web_entry.name == "m_tflite_int8_float_io" and web_entry.extra["gate"]["status"] == \
        "pass"
    assert sha256_file(tmp_path / "web" / web_entry.path) == web_entry.sha256


def test_failed_artefact_is_refused(export: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    gate(export, m_tflite_int8="fail")
    code, android, _ = _sync(export, tmp_path)
    err = _one_line_error(capsys)
    assert code == 2 and "m_tflite_int8 failed the parity gate" in err
    assert "gate status 'fail'" in err and "delta ROC-AUC" in err
    assert not android.exists()


def test_changed_after_gating_is_stale(export: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    gate(export)
    manifest = load_manifest(export)
    artefact = export / "m_tflite_int8.tflite"
    artefact.write_bytes(b"re-exported")  # a new export of the same name, not yet benchmarked
    entries = tuple(e if e.name != "m_tflite_int8" else
                    ManifestEntry(**{**e.__dict__, "sha256": sha256_file(artefact)})
                    for e in manifest.artifacts)
    write_manifest(Manifest(**{**manifest.__dict__, "artifacts": entries}), export)
    code, _, _ = _sync(export, tmp_path, "--no-ios")
    assert code == 2 and "gate status 'stale'" in _one_line_error(capsys)


def test_allow_ungated_ships_it_marked_not_parity_checked(export: Path, tmp_path: Path) -> None:
    gate(export, m_coreml_w8="fail")
    code, android, ios = _sync(export, tmp_path, "--allow-ungated")
    assert code == 0
    assert load_manifest(android).artifacts[0].extra["gate"]["status"] == "pass"
    ios_gate = load_manifest(ios).artifacts[0].extra["gate"]
    assert ios_gate["status"] == NOT_CHECKED and "gate status: fail" in ios_gate["detail"]


def test_older_export_without_dataset_says_unknown(tmp_path: Path) -> None:
    export = make_export(tmp_path / "old", dataset=None)
    gate(export)
    code, android, _ = _sync(export, tmp_path, "--no-ios")
    assert code == 0
    assert load_manifest(android).artifacts[0].dataset == UNKNOWN_DATA


def test_named_artefact_replaces_the_previous_one(export: Path, tmp_path: Path) -> None:
    gate(export)
    assert _sync(export, tmp_path)[0] == 0
    code, android, ios = _sync(export, tmp_path, "--tflite", "m_tflite_fp32",
                               "--coreml", "m_coreml_fp16")
    assert code == 0
    assert sorted(p.name for p in android.iterdir()) == ["m_tflite_fp32.tflite", MANIFEST_NAME]
    assert sorted(p.name for p in ios.iterdir()) == ["m_coreml_fp16.mlpackage", MANIFEST_NAME]


def test_missing_manifest_is_a_clear_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, android, _ = _sync(tmp_path / "nowhere", tmp_path)
    assert code == 2 and "manifest not found" in _one_line_error(capsys)
    assert not android.exists()


def test_unknown_name_lists_the_choices(export: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, android, _ = _sync(export, tmp_path, "--tflite", "nope")
    assert code == 2 and "m_tflite_fp32, m_tflite_int8" in _one_line_error(capsys)
    assert not android.exists()


def test_missing_or_changed_artefact_stops_before_writing(
        export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gate(export)
    (export / "m_coreml_w8.mlpackage" / "Data" / "weights.bin").write_bytes(b"changed")
    code, android, ios = _sync(export, tmp_path)
    assert code == 2 and "sha256 differs" in _one_line_error(capsys)
    assert not android.exists() and not ios.exists()  # Android is not half-synced either
    (export / "m_tflite_int8.tflite").unlink()
    assert _sync(export, tmp_path, "--no-ios")[0] == 2
    assert "is missing" in _one_line_error(capsys)


def test_unwritable_destination_is_found_first(export: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    gate(export)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main([str(export), "--android", str(blocker / "assets"), "--ios",
                 str(tmp_path / "ios")])
    assert code == 2 and "--android" in _one_line_error(capsys)
    assert not (tmp_path / "ios").exists()


def test_one_app_only(export: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    gate(export)
    code, android, ios = _sync(export, tmp_path, "--no-android")
    assert code == 0 and not android.exists() and (ios / MANIFEST_NAME).is_file()
    assert _sync(export, tmp_path, "--no-android", "--no-ios", "--no-web")[0] == 2
    assert "nothing to do" in _one_line_error(capsys)


def test_web_demo_gets_float_io_only(export: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    gate(export)
    code, android, _ = _sync(export, tmp_path, "--web-artifact", "m_tflite_int8")
    err = _one_line_error(capsys)
    assert code == 2 and "m_tflite_int8 has input int8 and output int8" in err
    assert "float32, int32, uint8" in err and not android.exists()
    code = _sync(export, tmp_path, "--no-android", "--no-ios", "--web-artifact",
                 "m_tflite_fp32")[0]
    assert code == 0 and load_manifest(tmp_path / "web").artifacts[0].name == "m_tflite_fp32"
    assert sorted(p.name for p in (tmp_path / "web").iterdir()) == [
        "m_tflite_fp32.tflite", MANIFEST_NAME]  # the previous web model is gone


def test_web_demo_falls_back_to_fp32_and_honours_the_gate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = make_export(tmp_path / "old", names=[n for n in NAMES if n[2] != "int8_float_io"])
    gate(export, m_tflite_fp32="fail")
    code = _sync(export, tmp_path, "--no-android", "--no-ios")[0]
    err = _one_line_error(capsys)
    assert code == 2 and "m_tflite_fp32 failed the parity gate" in err
    assert not (tmp_path / "web").exists()
    assert _sync(export, tmp_path, "--no-android", "--no-ios", "--allow-ungated")[0] == 0
    (entry,) = load_manifest(tmp_path / "web").artifacts
    assert entry.name == "m_tflite_fp32" and entry.extra["gate"]["status"] == NOT_CHECKED
    only_int8 = make_export(tmp_path / "int8", names=[NAMES[1]])
    gate(only_int8)
    assert _sync(only_int8, tmp_path / "x", "--no-android", "--no-ios")[0] == 2
    err = _one_line_error(capsys)
    assert "no tflite artefact of precision int8_float_io/fp32 for the web demo" in err
    assert "--web-artifact NAME" in err
