"""The demo apps' contract with manifest.json, and what they tell the person holding the phone.

Every field the apps read is listed once, in android_demo/core/manifest_fields.json. The tests check
that list against what the Kotlin and Swift sources actually read, against docs/MANIFEST.md, and
against a manifest that ``exporters.all`` writes for a tiny checkpoint (TFLite INT8 + Core ML); then
gate and sync that export into the apps and run the Kotlin core on it next to the Python pipeline
and LiteRT. The UI text of both apps is checked over their sources: screening language (above or
below the model's referral threshold; this does not rule out melanoma; see a clinician), the
not-a-medical-device notice, the training data's name, the parity-gate status, and no
"Decision: melanoma".
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kotlin_support as ks
import numpy as np
import pytest
from app_support import tiny_export
from PIL import Image

from kd_core.deploy import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[1]
FIELDS = json.loads((ROOT / "android_demo/core/manifest_fields.json").read_text())
SOURCES = {
    "android": ROOT / "android_demo/core/src/main/kotlin/org/edgekd/core/Manifest.kt",
    "ios": ROOT / "ios_demo/EdgeKDDemo/Manifest.swift",
}
ACCESSORS = {"string": "string", "number": "number", "int": "integer", "obj": "object",
             "objOrNull": "object|null", "objList": "array<object>",
             "stringList": "array<string>", "numberList": "array<number>",
             "intList": "array<integer>"}
CALL = re.compile(r"\.(" + "|".join(ACCESSORS) + r')\("([A-Za-z_]+)"\)')
APPS = ("android", "ios")


def fields_for(app: str) -> list[dict[str, Any]]:
    return [f for f in FIELDS["fields"] if app in f["apps"]]


def source_reads(app: str) -> set[tuple[str, str]]:
    """(key, type) of every typed accessor call in the app's manifest reader."""
    text = SOURCES[app].read_text()
    return {(key, ACCESSORS[fn]) for fn, key in CALL.findall(text)}


def _is(value: Any, typ: str) -> bool:
    if typ == "object|null":
        return value is None or isinstance(value, dict)
    if typ.startswith("array<"):
        return isinstance(value, list) and all(_is(v, typ[6:-1]) for v in value)
    if typ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "object": dict}[typ])


def _check(root: dict[str, Any], path: str, typ: str, where: str) -> list[str]:
    node: Any = root
    parts = path.split(".")
    for i, key in enumerate(parts):
        if node is None and i > 0:
            return []  # a null parent (float artefact's quantization): nothing below to read
        if not isinstance(node, dict) or key not in node:
            return [f"{where}: lacks {'.'.join(parts[: i + 1])}"]
        node = node[key]
    return [] if _is(node, typ) else [f"{where}: {path} is {node!r}, expected {typ}"]


def contract_errors(manifest: dict[str, Any], app: str, synced: bool = True) -> list[str]:
    """Every field ``app`` reads, with its JSON type, in ``manifest`` (or why not). An export's
    own manifest (``synced=False``) need not have the fields exporters.sync_demos adds."""
    fmt = FIELDS["formats"][app]
    errors: list[str] = []
    entries = [a for a in manifest.get("artifacts") or [] if a.get("format") == fmt]
    if not entries:
        return [f"no {fmt} artefact for {app}"]
    for f in fields_for(app):
        if not synced and f.get("added_by") == "sync_demos":
            continue
        if f["path"].startswith("artifacts[]."):
            for a in entries:
                errors += _check(a, f["path"].removeprefix("artifacts[]."), f["type"], a["name"])
        else:
            errors += _check(manifest, f["path"], f["type"], "manifest")
    return errors


def doc_example() -> dict[str, Any]:
    """docs/MANIFEST.md's example, placeholders filled, plus a Core ML entry per its rules."""
    prep = {"size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "resize": "squash", "interpolation": "bilinear_antialias"}
    decision = {"preprocessing": prep, "labels": ["other", "melanoma"], "positive_index": 1,
                "temperature": 1.31, "threshold": 0.083}
    tflite = {
        "name": "mobilenet_v3_small_tflite_int8", "path": "mobilenet_v3_small_tflite_int8.tflite",
        "format": "tflite", "precision": "int8", "bytes": 1852345, "sha256": "0" * 64,
        "input": {"name": "image", "shape": [1, 224, 224, 3], "layout": "NHWC", "dtype": "int8",
                  "quantization": {"scale": 0.0186, "zero_point": -14}},
        "output": {"name": "logits", "shape": [1, 2], "dtype": "int8",
                   "quantization": {"scale": 0.05, "zero_point": 3}, "kind": "logits"},
        **decision,
    }
    coreml = {
        "name": "mobilenet_v3_small_coreml_w8", "path": "mobilenet_v3_small_coreml_w8.mlpackage",
        "format": "coreml", "precision": "w8",
        "input": {"name": "image", "shape": [1, 3, 224, 224], "dtype": "image",
                  "quantization": None},
        "output": {"name": "classLabel_probs", "shape": [2], "dtype": "float64",
                   "quantization": None, "kind": "probabilities"},
        **decision,
    }
    return {"manifest_version": 1, "created_by": "edgekd 0.1.0", **decision,
            "artifacts": [tflite, coreml]}


# --- the list against the sources and the documentation -------------------------------------


@pytest.mark.parametrize("app", APPS)
def test_field_list_is_what_the_source_reads(app: str) -> None:
    listed = {(f["path"].split(".")[-1].removesuffix("[]"), f["type"]) for f in fields_for(app)}
    read = source_reads(app)
    assert read, f"no accessor calls found in {SOURCES[app]}"
    assert read - listed == set(), f"{app} reads fields missing from manifest_fields.json"
    assert listed - read == set(), f"manifest_fields.json lists fields {app} does not read"


def test_field_names_are_documented() -> None:
    doc = (ROOT / "docs/MANIFEST.md").read_text()
    missing = {seg for f in FIELDS["fields"] for seg in f["path"].replace("[]", "").split(".")
               if f'"{seg}"' not in doc}
    assert missing == set()


@pytest.mark.parametrize("app", APPS)
def test_doc_example_satisfies_contract(app: str) -> None:
    assert contract_errors(doc_example(), app, synced=False) == []
    missing = contract_errors(doc_example(), app)  # the app's copy needs what sync_demos adds
    assert any("lacks gate" in e for e in missing) and any("lacks dataset" in e for e in missing)


def test_contract_catches_missing_and_mistyped_fields() -> None:
    m = doc_example()
    del m["artifacts"][0]["output"]["quantization"]["zero_point"]
    m["artifacts"][0]["preprocessing"] = {**m["artifacts"][0]["preprocessing"], "size": "224"}
    m["artifacts"][1]["labels"] = "melanoma"
    android, ios = contract_errors(m, "android"), contract_errors(m, "ios")
    assert any("output.quantization.zero_point" in e for e in android)
    assert any("preprocessing.size" in e for e in android)
    assert any("labels" in e for e in ios)
    only_tflite = copy.deepcopy(m)
    only_tflite["artifacts"] = only_tflite["artifacts"][:1]
    assert contract_errors(only_tflite, "ios") == ["no coreml artefact for ios"]


# --- a real export -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """exporters.all on a tiny checkpoint: TFLite INT8 and Core ML fp16 (about a minute)."""
    return tiny_export(tmp_path_factory.mktemp("export"), coreml=True)


@pytest.fixture(scope="module")
def exported(export_dir: Path) -> dict[str, Any]:
    return json.loads((export_dir / MANIFEST_NAME).read_text())


@pytest.mark.parametrize("app", APPS)
def test_exported_manifest_has_every_field_the_app_reads(exported: dict[str, Any],
                                                         app: str) -> None:
    assert contract_errors(exported, app, synced=False) == []


@pytest.fixture(scope="module")
def synced(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The TFLite artefact gated as benchmarks.run records it (a pass for its sha256); Core ML
    cannot be gated off macOS, so it ships with --allow-ungated."""
    from exporters.sync_demos import main as sync_main
    from kd_core.deploy import GateVerdict, load_manifest, record_verdicts

    apps = tmp_path_factory.mktemp("apps")
    dest = {"android": apps / "android_assets", "ios": apps / "ios_model"}
    both = [str(export_dir), "--android", str(dest["android"]), "--ios", str(dest["ios"]),
            "--no-web"]
    assert sync_main([*both, "--no-ios"]) == 2  # never benchmarked: refused
    entry = next(e for e in load_manifest(export_dir).artifacts if e.format == "tflite")
    record_verdicts(export_dir, [GateVerdict(entry.name, "pass", entry.sha256 or "",
                                             "2026-11-29T10:00:00", "synth", "holdout", 64)])
    assert sync_main([*both, "--no-ios"]) == 0
    assert sync_main([*both, "--no-android"]) == 2  # Core ML: "not run"
    assert sync_main([*both, "--no-android", "--allow-ungated"]) == 0
    return dest


@pytest.mark.parametrize("app", APPS)
def test_synced_manifest_keeps_the_contract(synced: dict[str, Path], exported: dict[str, Any],
                                            app: str) -> None:
    from kd_core.io import sha256_file

    trimmed = json.loads((synced[app] / MANIFEST_NAME).read_text())
    assert contract_errors(trimmed, app) == []
    (entry,) = trimmed["artifacts"]
    wanted = "int8" if app == "android" else "fp16"  # Core ML: no w8/int8 in this export
    assert entry["precision"] == wanted
    assert sha256_file(synced[app] / entry["path"]) == entry["sha256"]
    original = next(a for a in exported["artifacts"] if a["name"] == entry["name"])
    added = ("path", "gate", "dataset")  # the rest is the export's entry, field for field
    assert {k: entry.get(k) for k in original if k not in added} == \
        {k: v for k, v in original.items() if k not in added}
    assert entry["dataset"] == (original.get("dataset") or exported.get("dataset")
                                or "unknown training data")
    status = "pass" if app == "android" else "not parity-checked"
    assert entry["gate"]["status"] == status


def test_kotlin_reads_the_synced_manifest(synced: dict[str, Path]) -> None:
    ks.classpath_or_skip()
    path = synced["android"] / MANIFEST_NAME
    (entry,) = json.loads(path.read_text())["artifacts"]
    proc = ks.run_cli("manifest", "--format", "tflite", str(path))
    seen = json.loads(proc.stdout)
    for key in ("name", "path", "format", "precision", "labels", "positive_index",
                "temperature", "threshold", "preprocessing", "dataset"):
        assert seen[key] == entry[key], key
    for side in ("input", "output"):
        for key, value in seen[side].items():
            assert value == entry[side][key], f"{side}.{key}"
    assert seen["gate"] == {"status": "pass", "detail": entry["gate"]["detail"]}


def test_kotlin_pipeline_with_litert_matches_python(synced: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """The app's path (Kotlin preprocessing -> model -> Kotlin decision) on the exported INT8
    model run by LiteRT on the host, against the Python preprocessing and numpy decision."""
    ks.classpath_or_skip()
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from kd_core.data.transforms import Preprocessing, preprocess

    manifest = synced["android"] / MANIFEST_NAME
    (entry,) = json.loads(manifest.read_text())["artifacts"]
    images = []
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate([(200, 150), (97, 131), (64, 64), (300, 40)]):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images[-1])
    ks.run_cli("pipeline-input", "--manifest", str(manifest), "--out", str(tmp_path),
               *map(str, images))
    interp = litert.Interpreter(model_path=str(synced["android"] / entry["path"]))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    prep = Preprocessing.from_dict(entry["preprocessing"])
    q_in, q_out = entry["input"]["quantization"], entry["output"]["quantization"]
    raws, expected = [], []
    for img in images:
        x = preprocess(img, prep).transpose(1, 2, 0)[None]  # NHWC float32
        q = np.round(x / np.float32(q_in["scale"])) + q_in["zero_point"]
        tensor = np.clip(q, -128, 127).astype(np.int8)
        kotlin = np.fromfile(tmp_path / f"{img.stem}.in", dtype=np.int8).reshape(tensor.shape)
        assert np.array_equal(kotlin, tensor), img.name
        interp.set_tensor(inp["index"], kotlin)
        interp.invoke()
        raw = interp.get_tensor(out["index"])
        raws.append(tmp_path / f"{img.stem}.out")
        raw.tofile(raws[-1])
        z = (raw.astype(np.float64) - q_out["zero_point"]) * q_out["scale"] / entry["temperature"]
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        expected.append(p[0])
    lines = ks.run_cli("pipeline-output", "--manifest", str(manifest), *map(str, raws))
    got = [json.loads(line) for line in lines.stdout.splitlines()]
    for p, g in zip(expected, got, strict=True):
        assert np.abs(np.asarray(g["probabilities"]) - p).max() <= 1e-12
        pos = entry["positive_index"]
        assert g["positive"] == bool(p[pos] >= entry["threshold"])
        assert g["label"] == entry["labels"][pos if g["positive"] else 1 - pos]


# --- what the apps say -------------------------------------------------------------------------

ANDROID_UI = [ROOT / "android_demo/core/src/main/kotlin/org/edgekd/core/Screening.kt",
              ROOT / "android_demo/app/src/main/kotlin/org/edgekd/demo/MainActivity.kt",
              ROOT / "android_demo/app/src/main/res/values/strings.xml"]
IOS_UI = [ROOT / "ios_demo/EdgeKDDemo/ContentView.swift"]
APP_SOURCES = [*ROOT.glob("android_demo/*/src/main/**/*.kt"),  # what ships, not the tests
               *ROOT.glob("android_demo/*/src/main/**/*.xml"), *ROOT.glob("ios_demo/**/*.swift")]
PHRASES = ("referral threshold", "This does not rule out melanoma", "see a clinician",
           "not a medical device", "Trained on: ", "NOT parity-checked", "Parity-checked: ")


def _ui_text(paths: list[Path]) -> str:
    return "\n".join(p.read_text() for p in paths)


def test_no_app_source_states_a_diagnosis() -> None:
    """No text the apps can show (string literals, string resources) reads as a diagnosis."""
    assert APP_SOURCES
    for path in APP_SOURCES:
        text = path.read_text()
        shown = re.findall(r'"((?:[^"\\\n]|\\.)*)"', text) + re.findall(r">([^<>]+)</string>", text)
        for literal in shown:
            assert not re.search(r"Decision|\bdiagnosis\b|\bis melanoma\b", literal), \
                (path.name, literal)


@pytest.mark.parametrize("paths", [ANDROID_UI, IOS_UI], ids=APPS)
def test_ui_uses_screening_language_notice_dataset_and_gate(paths: list[Path]) -> None:
    text = _ui_text(paths)
    for phrase in PHRASES:
        assert phrase.lower() in text.lower(), phrase


def _kotlin_constants() -> dict[str, str]:
    text = (ROOT / "android_demo/core/src/main/kotlin/org/edgekd/core/Screening.kt").read_text()
    out = {}
    for name, body in re.findall(r'const val (\w+) = ((?:"[^"]*"\s*\+?\s*)+)', text):
        out[name.replace("_", "").lower()] = "".join(re.findall(r'"([^"]*)"', body))
    return out


def _swift_constants() -> dict[str, str]:
    text = (ROOT / "ios_demo/EdgeKDDemo/ContentView.swift").read_text()
    return {n.lower(): v for n, v in re.findall(r'static let (\w+) = "([^"]*)"', text)}


def test_both_apps_say_the_same_words() -> None:
    kotlin, swift = _kotlin_constants(), _swift_constants()
    assert set(kotlin) == set(swift) == {"notice", "above", "below", "aboveadvice",
                                         "belowadvice", "notchecked"}
    assert kotlin == swift


def test_screens_show_the_result_the_training_data_and_the_gate() -> None:
    android = ANDROID_UI[1].read_text()
    for call in ("Screening.NOTICE", "Screening.headline(", "Screening.score(", "Screening.advice(",
                 "Screening.trainedOn(", "Screening.gate(", "gate.parityChecked"):
        assert call in android, call
    ios = (ROOT / "ios_demo/EdgeKDDemo/ContentView.swift").read_text()
    for call in ("Screening.notice", "Screening.above", "Screening.belowAdvice",
                 "Screening.trainedOn(spec)", "Screening.gate(spec)", "spec.parityChecked",
                 "referral threshold"):
        assert call in ios, call
