"""On-device parity, host side: the EKDT tensor files, input quantization/layout, scoring, and
the push -> instrument -> pull -> cleanup sequence against a fake adb."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from android_fake_adb import FIXTURES, REMOTE, SERIAL, FakeAdb, install_fake_adb, phone_rules

from benchmarks.android.__main__ import main
from benchmarks.android.parity import (
    ParityConfig,
    ParityError,
    compare_logits,
    decode_tensor_file,
    encode_tensor_file,
    outputs_to_float,
    prepare_inputs,
    quantize,
    score_logits,
)

OUT_Q = {"scale": 0.05, "zero_point": 3}
ARTIFACT: dict[str, Any] = {
    "name": "tiny_tflite_int8", "path": "tiny_tflite_int8.tflite", "format": "tflite",
    "precision": "int8", "temperature": 1.5, "threshold": 0.4, "positive_index": 1,
    "input": {"name": "image", "shape": [1, 8, 8, 3], "layout": "NHWC", "dtype": "int8",
              "quantization": {"scale": 0.0186, "zero_point": -14}},
    "output": {"name": "logits", "shape": [1, 2], "dtype": "int8", "quantization": OUT_Q,
               "kind": "logits"},
}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    return install_fake_adb(tmp_path, monkeypatch)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8"])
def test_tensor_file_round_trip(dtype: str) -> None:
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    data = encode_tensor_file(a, {"kind": "inputs", "layout": "NCHW"})
    assert data[:4] == b"EKDT"
    header_len = int.from_bytes(data[4:8], "little")
    assert (8 + header_len) % 16 == 0  # data aligned for the app's ByteBuffer
    assert len(data) == 8 + header_len + a.nbytes
    back, header = decode_tensor_file(data)
    np.testing.assert_array_equal(back, a)
    assert header["dtype"] == dtype and header["shape"] == [3, 4, 5] and header["version"] == 1


def test_tensor_file_errors() -> None:
    good = encode_tensor_file(np.zeros((2, 2), np.float32), {"kind": "logits"})
    with pytest.raises(ParityError, match=r"logits\.bin: not an EKDT tensor file"):
        decode_tensor_file(b"NOPE" + good[4:], "logits.bin")
    with pytest.raises(ParityError, match="12 data bytes, header says 16"):
        decode_tensor_file(good[:-4])
    with pytest.raises(ParityError, match="cannot store dtype int64"):
        encode_tensor_file(np.zeros(2, np.int64), {})


def test_quantize_is_the_manifest_formula_rounding_half_to_even() -> None:
    x = np.array([1.25, -1.25, 1.75, 100.0, -100.0], dtype=np.float32)  # exact in binary
    q = quantize(x, scale=0.5, zero_point=1, dtype="int8")
    assert q.dtype == np.int8
    assert q.tolist() == [3, -1, 5, 127, -128]  # 2.5->2, -2.5->-2, 3.5->4, then +1, clamped
    assert quantize(np.array([-1.0, 0.0, 1.0]), 0.01, 128, "uint8").tolist() == [28, 128, 228]


def test_prepare_inputs_layout_and_quantization() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    q, header = prepare_inputs(x, ARTIFACT)
    assert q.shape == (4, 8, 8, 3) and q.dtype == np.int8
    v = x / np.float32(0.0186)  # float32 division, round half to even (docs/MANIFEST.md)
    expected = np.clip(np.rint(v) - 14, -128, 127)
    np.testing.assert_array_equal(q, expected.transpose(0, 2, 3, 1).astype(np.int8))
    assert header == {"kind": "inputs", "layout": "NHWC", "artifact": "tiny_tflite_int8",
                      "quantization": ARTIFACT["input"]["quantization"]}
    nchw = {"name": "f", "input": {"shape": [1, 3, 8, 8], "layout": "NCHW", "dtype": "float32"}}
    f, fh = prepare_inputs(x, nchw)
    np.testing.assert_array_equal(f, x)
    assert fh["quantization"] is None
    wrong = {"name": "f", "input": {"shape": [1, 3, 9, 9], "layout": "NCHW", "dtype": "float32"}}
    with pytest.raises(ParityError, match=r"shape \[3, 8, 8\], artefact f expects \[3, 9, 9\]"):
        prepare_inputs(x, wrong)
    with pytest.raises(ParityError, match="N x 3 x H x W"):
        prepare_inputs(x[:, :2], nchw)
    with pytest.raises(ParityError, match="input dtype 'image'"):
        prepare_inputs(x, {"name": "coreml", "input": {"dtype": "image"}})


def test_outputs_are_dequantized() -> None:
    q = np.array([[23, -17], [3, 3]], dtype=np.int8)
    np.testing.assert_allclose(outputs_to_float(q, {"quantization": OUT_Q}, {}),
                               [[1.0, -1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(outputs_to_float(q, {}, ARTIFACT), [[1.0, -1.0], [0.0, 0.0]],
                               atol=1e-6)
    with pytest.raises(ParityError, match="without quantization"):
        outputs_to_float(q, {}, {})


def _auc_by_counting(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y], p[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_score_logits_against_a_direct_count() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(40, 2))
    labels = rng.integers(0, 2, size=40)
    s = score_logits(logits, labels, temperature=1.5, threshold=0.4)
    z = logits / 1.5
    p1 = np.exp(z[:, 1]) / np.exp(z).sum(1)
    y = labels == 1
    assert s["auc"] == pytest.approx(_auc_by_counting(p1, y), abs=1e-12)
    pred = p1 >= 0.4
    assert s["sensitivity"] == pytest.approx(pred[y].mean(), abs=1e-12)
    assert s["specificity"] == pytest.approx((~pred[~y]).mean(), abs=1e-12)
    assert s["n"] == 40 and s["positives"] == int(y.sum())
    assert score_logits(logits, np.zeros(40, int))["auc"] is None  # one class: no AUC
    with pytest.raises(ParityError, match="40 outputs but 3 labels"):
        score_logits(logits, labels[:3])


def test_compare_logits() -> None:
    host = np.array([[1.0, -1.0], [0.0, 2.0], [0.5, 0.4]])
    dev = host + np.array([[0.01, 0.0], [0.0, -0.03], [-0.2, 0.0]])
    c = compare_logits(dev, host, temperature=1.0, threshold=0.5)
    assert c["max_abs_diff"] == pytest.approx(0.2)
    assert c["argmax_agreement"] == pytest.approx(2 / 3)
    assert c["decision_agreement"] == pytest.approx(2 / 3)


def _parity_setup(tmp_path: Path, fake: FakeAdb, instrument: dict[str, Any]) -> list[str]:
    export = tmp_path / "export"
    export.mkdir()
    (export / ARTIFACT["path"]).write_bytes(b"TFL3" + bytes(60))
    (export / "manifest.json").write_text(json.dumps({"artifacts": [ARTIFACT]}))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1, 1, 0]))
    q = np.array([[23, -17], [-10, 30], [5, 0], [3, 40], [-20, 25], [40, -40]], dtype=np.int8)
    (tmp_path / "phone_logits.bin").write_bytes(
        encode_tensor_file(q, {"kind": "logits", "quantization": OUT_Q}))
    host = (q.astype(np.float64) - 3) * 0.05
    host[2, 0] += 0.02  # the host and the phone differ by this much on one logit
    np.save(tmp_path / "host.npy", host)
    fake.rules(phone_rules(
        instrument={"match": r"shell am instrument ", **instrument},
        pull={"match": r" pull ", "pull_from": str(tmp_path / "phone_logits.bin")},
        rmf={"match": r"shell rm -f ", "stdout": ""},
    ))
    return ["parity", "--artifacts", str(export), "--inputs", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "y.npy"), "--host-logits", str(tmp_path / "host.npy"),
            "--out", str(tmp_path / "r")]


def test_parity_sequence_and_scores(tmp_path: Path, fake: FakeAdb,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    ok = {"stdout_file": str(FIXTURES / "am_instrument_ok.txt")}
    argv = _parity_setup(tmp_path, fake, ok)
    r = tmp_path / "r"
    r.mkdir()
    device = "Pixel 7 (gs201, arm64-v8a, Android 14)"
    row = {"name": "tiny_tflite_int8", "runtime": "LiteRT benchmark_model", "device": device,
           "location": "android", "status": "ok", "latency": {}}
    (r / "results.json").write_text(json.dumps({"meta": {}, "rows": [row]}))
    assert main(argv) == 0
    cfg, s = ParityConfig(), ["-s", SERIAL]
    model = f"{REMOTE}/tiny_tflite_int8.tflite"
    assert fake.calls()[3:] == [
        [*s, "shell", f"mkdir -p {REMOTE}"],
        [*s, "push", str(tmp_path / "export" / "tiny_tflite_int8.tflite"), model],
        [*s, "push", fake.calls()[5][3], f"{REMOTE}/inputs.bin"],
        [*s, "shell", f"rm -f {cfg.device_outputs}"],
        [*s, "shell", "am instrument -w -e class org.edgekd.demo.ParityTest -e model "
                      f"{model} -e inputs {REMOTE}/inputs.bin -e outputs {cfg.device_outputs} "
                      "org.edgekd.demo.test/androidx.test.runner.AndroidJUnitRunner"],
        [*s, "pull", cfg.device_outputs, fake.calls()[8][4]],
        [*s, "shell", f"rm -rf {REMOTE} {cfg.device_outputs}"],
    ]
    pushed, header = decode_tensor_file((fake.dir / "pushed" / "inputs.bin").read_bytes())
    expected, _ = prepare_inputs(np.load(tmp_path / "x.npy"), ARTIFACT)
    np.testing.assert_array_equal(pushed, expected)
    assert header["layout"] == "NHWC" and header["quantization"]["zero_point"] == -14
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == device and report["n"] == 6
    assert report["vs_host"]["max_abs_diff"] == pytest.approx(0.02, abs=1e-6)
    outputs = np.load(r / "android_outputs_tiny_tflite_int8.npy")
    np.testing.assert_allclose(outputs, np.load(tmp_path / "host.npy") - [[0, 0], [0, 0],
                               [0.02, 0], [0, 0], [0, 0], [0, 0]], atol=1e-6)
    y = np.load(tmp_path / "y.npy") == 1
    z = outputs / 1.5
    p1 = np.exp(z[:, 1]) / np.exp(z).sum(1)
    assert report["accuracy"]["auc"] == pytest.approx(_auc_by_counting(p1, y), abs=1e-9)
    saved = json.loads((r / "results.json").read_text())["rows"][0]
    assert saved["accuracy"] == report["accuracy"]


@pytest.mark.parametrize(("fixture", "message"), [
    ("am_instrument_missing.txt", "is not installed: build the demo"),
    ("am_instrument_failed.txt", "EACCES (Permission denied)"),
])
def test_parity_test_failures(tmp_path: Path, fake: FakeAdb, capsys: pytest.CaptureFixture[str],
                              fixture: str, message: str) -> None:
    argv = _parity_setup(tmp_path, fake, {"stdout_file": str(FIXTURES / fixture)})
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert fake.calls()[-1][2:4] == ["shell", f"rm -rf {REMOTE} {ParityConfig().device_outputs}"]
    assert not any("pull" in c for c in fake.calls())
