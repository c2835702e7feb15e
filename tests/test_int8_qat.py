"""QAT, the repair ladder's opt-in fourth rung: a deterministic fine-tune of a copy of the float
model into a convertible INT8 model, run by the ladder (its time recorded apart) only when asked
and when rungs 1-3 did not pass. Its effect on agreement with float is measured on a real model
(``exporters/int8/qat.py``), not on these tiny ones, where calibration alone is already close."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")


def test_qat_fine_tunes_a_copy_deterministically_into_a_convertible_int8_model() -> None:
    from exporters_support import smooth_images, trained_model

    from exporters.int8 import prepare_float_model, quantize_pt2e
    from exporters.int8 import qat as qat_module
    from exporters.int8.options import Int8Options
    from exporters.int8.qat import QatSpec
    from kd_core.data.transforms import Preprocessing, normalize

    float_model = trained_model("tiny_mobilenet", 2, 32, 0, 40).eval()
    model = prepare_float_model(float_model, "executorch")
    x = torch.from_numpy(normalize(smooth_images(160, 32, 1), Preprocessing(size=32)))
    train, held = x[:128], x[128:]
    example = (train[:1],)
    batches = [train[i : i + 1] for i in range(len(train))]
    with torch.no_grad():
        before = float_model(held)
    ptq = quantize_pt2e(model, example, batches, "executorch")
    qat = Int8Options(qat=QatSpec(steps=30, lr=1e-4))
    tuned = quantize_pt2e(model, example, batches, "executorch", qat)
    quantized = [n for n in tuned.graph.nodes if "quantize_per_tensor" in str(n.target)]
    assert quantized and not any("batch_norm" in str(n.target) for n in tuned.graph.nodes)
    exported = torch.export.export(tuned, example).module()  # the converter's re-export

    def run(m: torch.nn.Module) -> torch.Tensor:  # batch 1, as exported
        return torch.cat([m(held[i : i + 1]) for i in range(8)])

    with torch.no_grad():
        out, calibrated = run(exported), run(ptq)
        assert out.shape == (8, 2) and not torch.equal(out, calibrated)  # the weights moved
        assert (out.argmax(1) == before[:8].argmax(1)).float().mean() >= 0.75
    qat_module._MEMO.clear()  # a fresh fine-tune, not the memo
    again = quantize_pt2e(model, example, batches, "executorch", qat)
    with torch.no_grad():
        assert torch.equal(run(tuned), run(again))
        assert torch.equal(float_model(held), before)  # the float model is left as it was


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from exporters_support import prepared_synthetic, write_checkpoint

    root = tmp_path_factory.mktemp("qat")
    return {"root": root, "prepared": prepared_synthetic(root, n_images=120, size=32),
            "ckpt": write_checkpoint(root / "ck.pth", size=32, steps=20)}


def _repair(setup: dict[str, Path], name: str, *extra: str, fmt: str = "executorch"
            ) -> dict[str, object]:
    from exporters.all import main

    out = setup["root"] / name
    argv = [str(setup["ckpt"]), "--out", str(out), "--formats", fmt, "--precisions",
            "int8", "--calib-data", str(setup["prepared"]), "--calib-samples", "16", "--jobs",
            "1", "--allow-few-calib-images", "--val-data", str(setup["prepared"]),
            "--repair-budget-min", "0.1", *extra]
    assert main(argv) == 0
    entry = json.loads((out / "manifest.json").read_text())["artifacts"][0]
    record: dict[str, object] = entry["repair"]
    return record


@pytest.mark.parametrize("fmt", ["executorch", "tflite"])
def test_the_ladder_runs_qat_only_when_asked_and_records_its_time_apart(
        setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    from exporters.int8 import repair
    from exporters.int8.candidates import Scored, score

    def refuse(*args: object, **kwargs: object) -> Scored:  # the real metrics, always refused
        real = score(*args, **kwargs)  # type: ignore[arg-type]
        return Scored(real.metrics, (*real.violations, "refused by the test"))

    monkeypatch.setattr(repair, "score", refuse)  # so that every rung runs (--jobs 1)
    if fmt == "executorch":
        without = _repair(setup, "no_qat")
        assert without["rung"] == "failed" and "qat_seconds" not in without
        assert not [a for a in without["attempts"]  # type: ignore[union-attr]
                    if a["rung"] == "qat"]
    record = _repair(setup, f"qat_{fmt}", "--qat-steps", "5", fmt=fmt)
    qat = [a for a in record["attempts"] if a["rung"] == "qat"]  # type: ignore[union-attr]
    assert qat and qat[0]["detail"].startswith("5 steps on ") and "error" not in qat[0]
    assert record["qat_seconds"] == pytest.approx(sum(a["seconds"] for a in qat), abs=0.2)
    assert np.isfinite(qat[0]["roc_auc"]) and qat[0]["violations"]


def test_qat_steps_needs_the_auto_ladder(setup: dict[str, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from exporters.all import main

    out = setup["root"] / "refused"
    argv = [str(setup["ckpt"]), "--out", str(out), "--formats", "executorch", "--calib-data",
            str(setup["prepared"]), "--qat-steps", "10", "--repair", "recalibrate",
            "--val-data", str(setup["prepared"])]
    assert main(argv) == 2
    assert "--qat-steps is a rung of --repair auto" in capsys.readouterr().err
    assert not out.exists()


def test_the_kept_candidates_re_export_reuses_its_fine_tune(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The ladder tries a few QAT plans and then re-exports the kept one, often not the last:
    each distinct fine-tune runs once (the real one takes minutes)."""
    from exporters.int8 import qat as qat_module
    from exporters.int8.qat import QatSpec, qat_quantize

    runs: list[str] = []

    def fake_qat(model: torch.nn.Module, images: torch.Tensor, quantizer: object,
                 spec: QatSpec, fold_quantize: bool) -> torch.fx.GraphModule:
        runs.append(str(quantizer))
        return torch.fx.symbolic_trace(torch.nn.Linear(2, 2))

    monkeypatch.setattr(qat_module, "_qat", fake_qat)
    monkeypatch.setattr(qat_module, "_MEMO", {})
    model, images, spec = torch.nn.Linear(2, 2), torch.ones(4, 2), QatSpec(steps=1)
    for plan in ("plain", "1 site", "2 sites", "1 site"):  # the kept one: 1 site
        qat_quantize(model, images, plan, spec, tag=plan)
    assert runs == ["plain", "1 site", "2 sites"]
    for plan in ("a", "b", "c", "d", "plain"):  # a bounded memo: the oldest goes first
        qat_quantize(model, images, plan, spec, tag=plan)
    assert runs[-1] == "plain" and len(qat_module._MEMO) == qat_module.MEMO_SIZE
    count = len(runs)
    qat_quantize(model, images * 2, "plain", spec, tag="plain")  # other images: again
    scale = torch.ones(2)
    model.register_buffer("scale", scale, persistent=False)  # outside the state dict
    qat_quantize(model, images, "plain", spec, tag="plain")
    scale.add_(1.0)
    qat_quantize(model, images, "plain", spec, tag="plain")
    qat_quantize(model, images, "plain", spec, tag="plain")  # unchanged: reused
    assert len(runs) == count + 3
