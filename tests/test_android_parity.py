"""On-device parity, host side: safetensors tensor files, every input check before the phone is
touched, the artefact's own runner preparing the inputs and giving the host logits, scoring with
the manifest's Decision, and the push -> instrument -> pull -> cleanup sequence against a fake
adb, on a real tiny TFLite INT8 export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from android_fake_adb import FIXTURES, REMOTE, SERIAL, FakeAdb, install_fake_adb, phone_rules
from app_support import tiny_export

from benchmarks.android.__main__ import main as android_main
from benchmarks.android.parity import (
    OUTPUTS,
    ParityConfig,
    ParityError,
    check_inputs,
    compare_logits,
    main,
    outputs_to_logits,
    read_tensor_file,
    score_logits,
    write_tensor_file,
)
from kd_core.data.transforms import Preprocessing
from kd_core.deploy import Decision, ManifestEntry, load_manifest

DECISION = Decision(("other", "melanoma"), 1, temperature=1.5, threshold=0.4)
ENTRY = ManifestEntry(
    name="tiny_tflite_int8", path="tiny_tflite_int8.tflite", format="tflite", precision="int8",
    input={"name": "image", "shape": [1, 8, 8, 3], "layout": "NHWC", "dtype": "int8",
           "quantization": {"scale": 0.0186, "zero_point": -14}},
    output={"name": "logits", "shape": [1, 2], "dtype": "int8",
            "quantization": {"scale": 0.05, "zero_point": 3}, "kind": "logits"},
    decision=DECISION, preprocessing=Preprocessing(size=8))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8"])
def test_tensor_file_is_standard_safetensors(tmp_path: Path, dtype: str) -> None:
    from safetensors.numpy import load

    a = (np.random.default_rng(0).normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / "t.safetensors"
    write_tensor_file(path, "inputs", a, {"kind": "inputs", "scale": "0.5"})
    raw = path.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + header])["__metadata__"] == {"kind": "inputs", "scale": "0.5"}
    np.testing.assert_array_equal(load(raw)["inputs"], a)  # any safetensors reader reads it
    back, meta = read_tensor_file(path, "inputs", "t")
    np.testing.assert_array_equal(back, a)
    assert back.dtype == np.dtype(dtype) and meta["scale"] == "0.5"


def test_tensor_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "logits.bin"
    bad.write_bytes(b"NOPE" * 8)
    with pytest.raises(ParityError, match=r"^phone\.st: not a readable safetensors file"):
        read_tensor_file(bad, OUTPUTS, "phone.st")
    good = tmp_path / "good.safetensors"
    write_tensor_file(good, "inputs", np.zeros((2, 2), np.float32), {})
    with pytest.raises(ParityError, match=r"no tensor 'outputs' \(has \['inputs'\]\)"):
        read_tensor_file(good, OUTPUTS, "good")


@pytest.mark.parametrize(("change", "message"), [
    ({"x": np.zeros((4, 3, 9, 9), np.float32)}, "--inputs: images are 3x9x9, artefact "
                                                 "tiny_tflite_int8 takes 3x8x8"),
    ({"x": np.zeros((4, 8, 8, 3), np.float32)}, "expected float32 N x 3 x H x W"),
    ({"labels": np.array([0, 1, 1])}, "--labels: expected 4 integer class indices"),
    ({"labels": np.array([0.0, 1.0, 1.0, 0.0])}, "--labels: expected 4 integer"),
    ({"labels": np.array([0, 1, 2, 0])}, "--labels: class index 2 outside 0..1 (artefact "
                                         "tiny_tflite_int8 has 2 labels: other, melanoma)"),
    ({"host": np.zeros((4, 3))}, "--host-logits: expected 4 x 2 logits, got [4, 3]"),
])
def test_inputs_are_checked_against_the_artefact(change: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"x": np.zeros((4, 3, 8, 8), np.float32),
                            "labels": np.array([0, 1, 1, 0]), "host": None, **change}
    with pytest.raises(ParityError) as err:
        check_inputs(ENTRY, args["x"], args["labels"], args["host"])
    assert message in str(err.value)
    onnx = ManifestEntry(**{**ENTRY.__dict__, "format": "onnx"})
    with pytest.raises(ParityError, match=r"runs \.tflite models"):
        check_inputs(onnx, np.zeros((4, 3, 8, 8), np.float32), None, None)


def test_outputs_are_dequantized_by_the_phone_metadata() -> None:
    q = np.array([[23, -17], [3, 3]], dtype=np.int8)
    np.testing.assert_allclose(outputs_to_logits(q, {"scale": "0.05", "zero_point": "3"}, "o"),
                               [[1.0, -1.0], [0.0, 0.0]], atol=1e-12)
    with pytest.raises(ParityError, match="without scale/zero_point"):
        outputs_to_logits(q, {}, "o")


def _auc_by_counting(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y], p[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_scores_use_the_manifest_decision() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(40, 2))
    labels = rng.integers(0, 2, size=40)
    s = score_logits(logits, labels, DECISION)
    z = logits / 1.5
    p1 = np.exp(z[:, 1]) / np.exp(z).sum(1)
    y = labels == 1
    assert s["auc"] == pytest.approx(_auc_by_counting(p1, y), abs=1e-12)
    pred = p1 >= 0.4
    assert s["sensitivity"] == pytest.approx(pred[y].mean(), abs=1e-12)
    assert s["specificity"] == pytest.approx((~pred[~y]).mean(), abs=1e-12)
    assert s["n"] == 40 and s["positives"] == int(y.sum())
    assert score_logits(logits, np.zeros(40, int), DECISION)["auc"] is None  # one class
    host = np.array([[1.0, -1.0], [0.0, 2.0], [0.5, 0.4]])
    dev = host + np.array([[0.01, 0.0], [0.0, -0.03], [-0.2, 0.0]])
    c = compare_logits(dev, host, Decision(("a", "b"), 1, threshold=0.5))
    assert c["max_abs_diff"] == pytest.approx(0.2)
    assert c["top1_agreement"] == pytest.approx(2 / 3)
    assert c["decision_agreement"] == pytest.approx(2 / 3)


# ---- the command against a fake phone, on a real artefact ---------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_export(tmp_path_factory.mktemp("parity_export"))


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    return install_fake_adb(tmp_path, monkeypatch)


def _setup(tmp_path: Path, export: Path, fake: FakeAdb, instrument: dict[str, Any],
           n: int = 6) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(n) % 2)
    q = rng.integers(-60, 60, size=(n, 2)).astype(np.int8)
    write_tensor_file(tmp_path / "phone.safetensors", OUTPUTS, q,
                      {"kind": "logits", "scale": "0.05", "zero_point": "3"})
    fake.rules(phone_rules(
        instrument={"match": r"shell am instrument ", **instrument},
        pull={"match": r" pull ", "pull_from": str(tmp_path / "phone.safetensors")},
        rmf={"match": r"shell rm -f ", "stdout": ""},
    ))
    argv = ["--artifacts", str(export), "--inputs", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "r")]
    return argv, (q.astype(np.float64) - 3) * 0.05


def test_parity_sequence_and_scores(tmp_path: Path, export: Path, fake: FakeAdb,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from runtimes import load_runner

    argv, phone = _setup(tmp_path, export, fake,
                         {"stdout_file": str(FIXTURES / "am_instrument_ok.txt")})
    assert android_main(["parity", *argv]) == 0
    entry = load_manifest(export).entry("tiny_mobilenet_tflite_int8")
    cfg, s = ParityConfig(), ["-s", SERIAL]
    model = f"{REMOTE}/{entry.path}"
    calls = fake.calls()
    assert calls[3:] == [
        [*s, "shell", f"mkdir -p {REMOTE}"],
        [*s, "push", str(export / entry.path), model],
        [*s, "push", calls[5][3], f"{REMOTE}/inputs.safetensors"],
        [*s, "shell", f"rm -f {cfg.device_outputs}"],
        [*s, "shell", "am instrument -w -e class org.edgekd.demo.ParityTest -e model "
                      f"{model} -e inputs {REMOTE}/inputs.safetensors -e outputs "
                      f"{cfg.device_outputs} "
                      "org.edgekd.demo.test/androidx.test.runner.AndroidJUnitRunner"],
        [*s, "pull", cfg.device_outputs, calls[8][4]],
        [*s, "shell", f"rm -rf {REMOTE} {cfg.device_outputs}"],
    ]
    runner = load_runner(entry, export)
    x = np.load(tmp_path / "x.npy")
    pushed, meta = read_tensor_file(fake.dir / "pushed" / "inputs.safetensors", "inputs", "p")
    np.testing.assert_array_equal(pushed, runner.prepare(x))  # the runner's layout and int8
    assert pushed.shape == (6, 32, 32, 3) and pushed.dtype == np.int8
    assert float(meta["scale"]) == entry.input["quantization"]["scale"]
    assert meta["zero_point"] == str(entry.input["quantization"]["zero_point"])
    report = json.loads(capsys.readouterr().out)
    host = runner.predict(x)
    assert report["vs_host"]["max_abs_diff"] == pytest.approx(np.abs(phone - host).max())
    p1 = entry.decision.positive_probability(phone)
    y = np.arange(6) % 2 == 1
    assert report["accuracy"]["auc"] == pytest.approx(_auc_by_counting(p1, y), abs=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "r" / f"android_outputs_{entry.name}.npy"),
                               phone)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--labels", "y5.npy", "--labels: expected 6 integer class indices"),
    ("--labels", "y7.npy", "--labels: class index 7 outside 0..1"),
    ("--inputs", "x64.npy", "--inputs: images are 3x64x64, artefact tiny_mobilenet_tflite_int8 "
                            "takes 3x32x32"),
    ("--artifact", "nope", "--artifact: no artefact named 'nope'"),
    ("--out", "file/r", "--out"),
])
def test_bad_input_is_refused_before_the_phone(tmp_path: Path, export: Path, fake: FakeAdb,
                                               capsys: pytest.CaptureFixture[str], flag: str,
                                               value: str, message: str) -> None:
    argv, _ = _setup(tmp_path, export, fake, {"stdout": "OK (1 test)"})
    np.save(tmp_path / "y5.npy", np.zeros(5, int))
    np.save(tmp_path / "y7.npy", np.full(6, 7))
    np.save(tmp_path / "x64.npy", np.zeros((6, 3, 64, 64), np.float32))
    (tmp_path / "file").write_text("a file, not a folder")
    path = value if flag == "--artifact" else str(tmp_path / value)
    argv = [a for i, a in enumerate(argv) if flag not in (a, argv[i - 1] if i else "")]
    assert main([*argv, flag, path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert fake.calls() == []  # adb was never run


@pytest.mark.parametrize(("fixture", "message"), [
    ("am_instrument_missing.txt", "is not installed: build the demo"),
    ("am_instrument_failed.txt", "EACCES (Permission denied)"),
])
def test_parity_test_failures(tmp_path: Path, export: Path, fake: FakeAdb,
                              capsys: pytest.CaptureFixture[str], fixture: str,
                              message: str) -> None:
    argv, _ = _setup(tmp_path, export, fake, {"stdout_file": str(FIXTURES / fixture)})
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert fake.calls()[-1][2:4] == ["shell", f"rm -rf {REMOTE} {ParityConfig().device_outputs}"]
    assert not any("pull" in c for c in fake.calls())
