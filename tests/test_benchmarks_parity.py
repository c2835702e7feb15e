"""The parity gate's rules on hand-made rows: limits, skipped rows, failed rows, messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.parity import ParityGateError, Tolerances, check, gate, gate_report

FIXTURE = Path(__file__).parent / "fixtures" / "results_fixture.json"


def results(target: float = 0.95, **artifact_acc: Any) -> dict[str, Any]:
    student = {"roc_auc": 0.88, "sensitivity": 0.96, "threshold": 0.04, "ece": 0.02}
    decision = {"labels": ["other", "melanoma"], "positive_index": 1, "temperature": 1.0,
                "threshold": 0.04, "target_sensitivity": target}
    return {"rows": [
        {"name": "student", "role": "student", "status": "ok", "accuracy": student,
         "decision": decision},
        {"name": "m_onnx_int8", "role": "artifact", "format": "onnx", "precision": "int8",
         "status": "ok", "accuracy": {**student, **artifact_acc}},
    ]}


def test_a_faithful_artifact_passes() -> None:
    assert gate(results(roc_auc=0.8751, sensitivity=0.93, ece=0.03)) == []


@pytest.mark.parametrize(("acc", "metric", "text"), [
    ({"roc_auc": 0.8749}, "roc_auc", "roc_auc delta -0.0051 exceeds 0.005"),
    ({"roc_auc": 0.8851}, "roc_auc", "roc_auc delta +0.0051 exceeds 0.005"),
    ({"sensitivity": 0.9299}, "sensitivity", "sensitivity 0.9299 at threshold 0.04 is below 0.93"),
    ({"sensitivity": float("nan")}, "sensitivity", "sensitivity nan"),
    ({"ece": 0.0301}, "ece", "ece 0.0301 exceeds float student ECE 0.0200 + 0.01"),
])
def test_each_violation_names_the_artifact_and_the_metric(acc: dict[str, float], metric: str,
                                                          text: str) -> None:
    (v,) = gate(results(**acc))
    assert (v.name, v.format, v.precision, v.metric) == ("m_onnx_int8", "onnx", "int8", metric)
    assert str(v).startswith(f"FAIL m_onnx_int8: {text}")


def test_a_multiclass_model_with_a_positive_class_is_held_to_top1_agreement_too() -> None:
    """Seven diagnoses with melanoma called at a threshold: sensitivity and top-1 agreement."""
    seven = {"num_classes": 7, "argmax_agreement_vs_student": 0.975}
    (v,) = gate(results(**seven))
    assert v.metric == "top1_agreement" and "0.9750 is below 0.98" in v.message
    assert gate(results(**seven), Tolerances(min_top1_agreement=0.97)) == []
    both = {v.metric for v in gate(results(**seven, sensitivity=0.9))}
    assert both == {"top1_agreement", "sensitivity"}
    # Binary: top-1 agreement is the decision at 0.5, not the shipped one; not gated.
    assert gate(results(num_classes=2, argmax_agreement_vs_student=0.9)) == []


def test_tolerances_are_settable() -> None:
    loose = Tolerances(max_auc_delta=0.02, min_sensitivity=0.5, max_ece_delta=0.05)
    assert gate(results(roc_auc=0.87, sensitivity=0.6, ece=0.06), loose) == []
    strict = Tolerances(max_auc_delta=0.0, min_sensitivity=0.97, max_ece_delta=0.0)
    assert {v.metric for v in gate(results(), strict)} == {"sensitivity"}


def test_the_sensitivity_floor_derives_from_the_students_target() -> None:
    """target - margin (kd_core.deploy.Decision.min_sensitivity), unless overridden."""
    assert gate_report(results()).min_sensitivity == pytest.approx(0.93)
    (v,) = gate(results(target=0.9, sensitivity=0.879))
    assert (v.metric, v.limit) == ("sensitivity", pytest.approx(0.88))
    assert gate(results(target=0.9, sensitivity=0.881)) == []
    assert gate(results(target=0.9, sensitivity=0.2), Tolerances(min_sensitivity=0.1)) == []
    no_decision = results()
    del no_decision["rows"][0]["decision"]
    with pytest.raises(ValueError, match="records no decision"):
        gate(no_decision)


def test_a_gate_that_checked_nothing_fails() -> None:
    data = results()
    data["rows"][1]["status"] = "needs macOS"
    report = gate_report(data)
    assert report.checked == () and report.violations == () and not report.passed
    assert "no artefact was checked" in report.notes[0]
    data["rows"].pop()
    assert not gate_report(data).passed


def test_unavailable_rows_are_skipped_and_failed_rows_fail() -> None:
    data = results()
    data["rows"].append({"name": "m_coreml_fp16", "role": "artifact", "status": "needs macOS"})
    data["rows"].append({"name": "m_tflite_int8", "role": "artifact", "format": "tflite",
                         "precision": "int8", "status": "error: RuntimeLoadError: bad file"})
    report = gate_report(data).to_dict()
    assert report["skipped"] == [{"name": "m_coreml_fp16", "reason": "needs macOS"}]
    assert report["checked"] == ["m_onnx_int8", "m_tflite_int8"] and not report["passed"]
    (v,) = report["violations"]
    assert (v["name"], v["metric"]) == ("m_tflite_int8", "status")
    with pytest.raises(ParityGateError, match="FAIL m_tflite_int8: did not run"):
        check(data)


def test_phone_rows_and_the_teacher_are_not_gated() -> None:
    data = results()
    bad = {"roc_auc": 0.5, "sensitivity": 0.1, "threshold": 0.04, "ece": 0.5}
    data["rows"] += [{"name": "t", "role": "teacher", "status": "ok", "accuracy": bad},
                     {"name": "m_onnx_int8", "role": "artifact", "location": "android",
                      "status": "ok", "accuracy": bad}]
    assert gate(data) == []


def test_no_scored_student_is_an_error() -> None:
    data = results()
    data["rows"][0]["status"] = "error: crashed"
    with pytest.raises(ValueError, match="no scored float student"):
        gate(data)


def test_fixture_gate_matches_its_rows() -> None:
    data = json.loads(FIXTURE.read_text())
    report = gate_report(data).to_dict()
    want = copy.deepcopy(data["gate"])
    for got_v, want_v in zip(report["violations"], want["violations"], strict=True):
        assert got_v.pop("value") == pytest.approx(want_v.pop("value"))
        assert got_v.pop("limit") == pytest.approx(want_v.pop("limit"))
    assert report == want
