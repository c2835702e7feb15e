"""The deploy contract: decision, manifest round trip and strictness, gate verdicts, CLI codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from kd_core import cli
from kd_core.deploy import (
    ContractError,
    Decision,
    GateVerdict,
    Manifest,
    ManifestEntry,
    compare_outputs,
    gate_status,
    load_manifest,
    read_verdicts,
    record_verdicts,
    write_manifest,
)
from kd_core.io import loads_json

DECISION = {"labels": ["other", "melanoma"], "positive_index": 1, "temperature": 1.5,
            "threshold": 0.3, "target_sensitivity": 0.95}
PREP = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": "squash",
        "interpolation": "bilinear_antialias"}


def entry_dict(name: str = "m_onnx_fp32") -> dict:
    return {"name": name, "path": f"{name}.onnx", "format": "onnx", "precision": "fp32",
            "bytes": 10, "sha256": "ab" * 32,
            "input": {"name": "image", "shape": [1, 3, 32, 32], "layout": "NCHW",
                      "dtype": "float32", "quantization": None},
            "output": {"name": "logits", "shape": [1, 2], "dtype": "float32",
                       "quantization": None, "kind": "logits"},
            "preprocessing": PREP, **DECISION, "future_field": {"kept": True}}


def manifest_dict() -> dict:
    return {"manifest_version": 1, "created_by": "test", "preprocessing": PREP, **DECISION,
            "artifacts": [entry_dict()], "failures": []}


def test_decision_probabilities_and_decide() -> None:
    d = Decision.from_dict(DECISION, "t")
    z = np.array([[0.0, 1.5], [3.0, 0.0]])
    p = d.probabilities(z)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p[0, 1], 1 / (1 + math.exp(-1.0)))
    assert d.decide(z).tolist() == [True, False]
    assert d.min_sensitivity == pytest.approx(0.93)
    multi = Decision(("a", "b", "c"), None, 1.0, None, None)
    assert multi.decide(np.array([[0, 2, 1.0]])).tolist() == [1]


@pytest.mark.parametrize("field,value,needle", [
    ("temperature", float("nan"), "temperature must be a finite number"),
    ("temperature", 0.0, "temperature must be in"),
    ("threshold", 5.0, "threshold must be a probability"),
    ("threshold", None, "threshold must be a finite number"),
    ("positive_index", 2, "positive_index must be 0..1"),
    ("positive_index", True, "positive_index must be 0..1"),
    ("labels", ["a", "a"], "labels repeat"),
    ("labels", "ab", "labels must be a list"),
    ("target_sensitivity", 1.5, "target_sensitivity must be in"),
])
def test_decision_rejects_bad_fields(field: str, value: object, needle: str) -> None:
    with pytest.raises(ContractError, match=needle) as err:
        Decision.from_dict({**DECISION, field: value}, "ckpt.pth")
    assert str(err.value).startswith("ckpt.pth:")


def test_manifest_round_trip_keeps_unknown_fields(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest_dict()))
    m = load_manifest(tmp_path)
    assert m.entry("m_onnx_fp32").extra == {"future_field": {"kept": True}}
    write_manifest(m, tmp_path / "out")
    again = load_manifest(tmp_path / "out" / "manifest.json")
    assert again == m
    assert again.to_dict() == loads_json((tmp_path / "out" / "manifest.json").read_text())


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.update(manifest_version=99), "manifest_version 99"),
    (lambda d: d["artifacts"][0].update(temperature=float("nan")), "not valid JSON"),
    (lambda d: d["artifacts"][0].update(path="../x.onnx"), "inside the manifest"),
    (lambda d: d["artifacts"][0]["input"].update(shape="1x3"), "input.shape"),
    (lambda d: d["artifacts"][0].pop("format"), "format must be"),
    (lambda d: d["artifacts"].append(entry_dict()), "names repeat"),
    (lambda d: d["artifacts"][0]["output"].update(quantization={"scale": -1, "zero_point": 0}),
     "scale > 0"),
])
def test_manifest_loader_is_strict(tmp_path: Path, mutate: object, needle: str) -> None:
    data = manifest_dict()
    mutate(data)  # type: ignore[operator]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ContractError, match=needle):
        load_manifest(tmp_path)


def test_write_manifest_refuses_nan_and_leaves_old_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest_dict()))
    m = load_manifest(tmp_path)
    before = (tmp_path / "manifest.json").read_bytes()
    bad = Manifest(m.decision, m.preprocessing, m.artifacts, extra={"x": float("inf")})
    with pytest.raises(ContractError, match="non-finite"):
        write_manifest(bad, tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == before


def test_gate_verdicts_bind_to_sha(tmp_path: Path) -> None:
    entry = ManifestEntry.from_dict(entry_dict(), "t")
    assert gate_status(entry, read_verdicts(tmp_path)) == "not run"
    v = GateVerdict(entry.name, "pass", "ab" * 32, "2026-11-29T00:00:00+00:00", "ham", "holdout",
                    100)
    record_verdicts(tmp_path, [v])
    assert gate_status(entry, read_verdicts(tmp_path)) == "pass"
    record_verdicts(tmp_path, [GateVerdict(**{**v.__dict__, "sha256": "cd" * 32})])
    assert gate_status(entry, read_verdicts(tmp_path)) == "stale"
    (tmp_path / "gate.json").write_text("{not json")
    with pytest.raises(ContractError, match=r"gate\.json"):
        read_verdicts(tmp_path)


def test_compare_outputs() -> None:
    got = compare_outputs(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 1.5], [0, 1.0]]))
    assert got == {"max_abs_diff": 1.0, "top1_agreement": 0.5}


def test_cli_run_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def raises(exc: BaseException) -> int:
        raise exc

    assert cli.run(lambda: 0) == 0
    assert cli.run(lambda: raises(cli.BadInput("x.pth: bad"))) == 2
    assert cli.run(lambda: raises(cli.JobFailed("export failed"))) == 1
    assert cli.run(lambda: raises(KeyboardInterrupt())) == 130
    err = capsys.readouterr().err
    assert "error: x.pth: bad" in err and "error: export failed" in err
    assert cli.INTERRUPTED in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):  # a bug is not hidden
        cli.run(lambda: 1 // 0)


def test_help_shows_defaults() -> None:
    p = cli.parser("prog", "desc")
    p.add_argument("--runs", type=int, default=50, help="timed runs")
    p.add_argument("--flag", action="store_true", help="a flag")
    text = p.format_help()
    assert "timed runs (default: 50)" in text and "Exit codes: 0 ok" in text
    assert "(default: False)" not in text
