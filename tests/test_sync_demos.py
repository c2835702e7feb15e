"""exporters.sync_demos on a fake export folder: choice of artefact, trimmed manifest, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporters.sync_demos import main
from kd_core.io import sha256_file


def _entry(out: Path, name: str, fmt: str, precision: str) -> dict[str, Any]:
    if fmt == "coreml":
        path = out / f"{name}.mlpackage"
        (path / "Data").mkdir(parents=True)
        (path / "Data" / "weights.bin").write_bytes(name.encode() * 10)
        (path / "Manifest.json").write_text("{}")
    else:
        path = out / f"{name}.tflite"
        path.write_bytes(name.encode() * 10)
    return {"name": name, "path": path.name, "format": fmt, "precision": precision,
            "sha256": sha256_file(path), "labels": ["other", "melanoma"]}


@pytest.fixture
def export(tmp_path: Path) -> Path:
    out = tmp_path / "export"
    out.mkdir()
    entries = [_entry(out, n, f, p) for n, f, p in [
        ("m_tflite_fp32", "tflite", "fp32"), ("m_tflite_int8", "tflite", "int8"),
        ("m_coreml_fp16", "coreml", "fp16"), ("m_coreml_w8", "coreml", "w8"),
        ("m_onnx_fp32", "onnx", "fp32")]]
    manifest = {"manifest_version": 1, "labels": ["other", "melanoma"], "threshold": 0.2,
                "artifacts": entries, "failures": []}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _sync(export: Path, tmp_path: Path, *extra: str) -> tuple[int, Path, Path]:
    android, ios = tmp_path / "assets", tmp_path / "ios"
    code = main([str(export), "--android", str(android), "--ios", str(ios), *extra])
    return code, android, ios


def test_defaults_pick_int8_tflite_and_w8_coreml(export: Path, tmp_path: Path) -> None:
    code, android, ios = _sync(export, tmp_path)
    assert code == 0
    trimmed = json.loads((android / "manifest.json").read_text())
    assert [a["name"] for a in trimmed["artifacts"]] == ["m_tflite_int8"]
    assert "failures" not in trimmed and trimmed["threshold"] == 0.2
    assert (android / "m_tflite_int8.tflite").read_bytes() == \
        (export / "m_tflite_int8.tflite").read_bytes()
    ios_manifest = json.loads((ios / "manifest.json").read_text())
    (entry,) = ios_manifest["artifacts"]
    assert entry["name"] == "m_coreml_w8"
    assert sha256_file(ios / entry["path"]) == entry["sha256"]
    assert sorted(p.name for p in android.iterdir()) == ["m_tflite_int8.tflite", "manifest.json"]


def test_named_artefact_replaces_the_previous_one(export: Path, tmp_path: Path) -> None:
    assert _sync(export, tmp_path)[0] == 0
    code, android, ios = _sync(export, tmp_path, "--tflite", "m_tflite_fp32",
                               "--coreml", "m_coreml_fp16")
    assert code == 0
    assert sorted(p.name for p in android.iterdir()) == ["m_tflite_fp32.tflite", "manifest.json"]
    assert sorted(p.name for p in ios.iterdir()) == ["m_coreml_fp16.mlpackage", "manifest.json"]


def test_missing_manifest_is_a_clear_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, android, _ = _sync(tmp_path / "nowhere", tmp_path)
    assert code == 2
    assert "no manifest" in capsys.readouterr().err
    assert not android.exists()


def test_unknown_name_lists_the_choices(export: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, android, _ = _sync(export, tmp_path, "--tflite", "nope")
    err = capsys.readouterr().err
    assert code == 2 and "m_tflite_fp32, m_tflite_int8" in err
    assert not android.exists()


def test_missing_or_changed_artefact_stops_before_writing(export: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    (export / "m_coreml_w8.mlpackage" / "Data" / "weights.bin").write_bytes(b"changed")
    code, android, ios = _sync(export, tmp_path)
    assert code == 2 and "sha256 differs" in capsys.readouterr().err
    assert not android.exists() and not ios.exists()  # Android is not half-synced either
    (export / "m_tflite_int8.tflite").unlink()
    assert _sync(export, tmp_path, "--no-ios")[0] == 2
    assert "is missing" in capsys.readouterr().err


def test_one_app_only(export: Path, tmp_path: Path) -> None:
    code, android, ios = _sync(export, tmp_path, "--no-android")
    assert code == 0 and not android.exists() and (ios / "manifest.json").is_file()
    assert _sync(export, tmp_path, "--no-android", "--no-ios")[0] == 2
