"""The INT8 repair ladder: sensitivity ranking, recalibration, the holdout never read, and
``--repair off`` leaving the artefacts as they were."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from exporters.int8.candidates import refit, score
from exporters.int8.plan import find_sites
from exporters.int8.sensitivity import rank_sites
from exporters.validation_data import ValidationSet
from kd_core.data.transforms import Preprocessing
from kd_core.parity import Tolerances


class _Planted(nn.Module):
    """``planted`` emits one channel 1000x larger (``consumer`` divides it back: the float
    function is unchanged), so one int8 range over that tensor zeroes the other channels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.planted = nn.Conv2d(8, 8, 1)
        self.consumer = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.planted.weight[0].mul_(1000.0)
            self.planted.bias[0].mul_(1000.0)
            self.consumer.weight[:, 0].div_(1000.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.consumer(torch.relu(self.planted(self.stem(x)))))
        return self.head(y.mean((2, 3)))


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def _kl(model: nn.Module, other: nn.Module, x: np.ndarray) -> float:
    with torch.no_grad():  # one image at a time: the exported graphs have batch 1
        p = torch.log_softmax(torch.cat([model(torch.from_numpy(i[None])) for i in x]), 1)
        q = torch.log_softmax(torch.cat([other(torch.from_numpy(i[None])) for i in x]), 1)
    return float((p.exp() * (p - q)).sum(1).mean())


def test_ranking_finds_the_planted_layer_and_keeping_it_float_repairs_int8() -> None:
    pytest.importorskip("executorch")
    from exporters.int8 import quantize_pt2e

    model = _Planted().eval()
    example = (torch.from_numpy(_images(1, 0)),)
    sites = find_sites(model, example)
    ranked = rank_sites(model, sites, _images(32, 1), _images(64, 2))
    top2 = {s.site for s in ranked[:2]}
    assert top2 == {"planted", "consumer"}, [(s.site, s.kl) for s in ranked]
    assert ranked[-1].kl < 0.01 * ranked[0].kl
    calib = [torch.from_numpy(_images(1, 10 + i)) for i in range(8)]
    everything = quantize_pt2e(model, example, calib, "executorch")
    repaired = quantize_pt2e(model, example, calib, "executorch", float_sites=frozenset(top2))
    val = _images(64, 3)
    assert _kl(model, repaired, val) < 0.1 * _kl(model, everything, val)


def _val(y: np.ndarray) -> ValidationSet:
    n = len(y)
    return ValidationSet("test", tuple(str(i) for i in range(n)),
                         np.zeros((n, 8, 8, 3), np.uint8), y, Preprocessing(size=8))


class _Settings:
    positive_index = 1


def test_recalibration_restores_sensitivity_of_shifted_int8_logits() -> None:
    from kd_core.metrics import softmax, threshold_for_sensitivity

    rng = np.random.default_rng(0)
    s = rng.normal(-2.0, 2.0, 3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-s))).astype(np.int64)
    val = _val(y)
    float_logits = np.stack([np.zeros_like(s), s], 1)
    shipped = (1.0, threshold_for_sensitivity(y, softmax(float_logits)[:, 1], 0.95))
    tol = Tolerances(min_sensitivity=0.93)
    ref = score(float_logits, val, _Settings(), {"roc_auc": 0, "ece": 1}, shipped, tol).metrics
    int8_logits = float_logits - np.array([0.0, 0.8])  # the positive class drifted down
    before = score(int8_logits, val, _Settings(), ref, shipped, tol)  # type: ignore[arg-type]
    assert before.metrics["sensitivity"] < 0.93
    assert any("sensitivity" in v for v in before.violations)
    decision = refit(int8_logits, val, 1, 0.95)
    after = score(int8_logits, val, _Settings(), ref, decision, tol)  # type: ignore[arg-type]
    assert after.metrics["sensitivity"] >= 0.95
    assert after.metrics["roc_auc"] == pytest.approx(ref["roc_auc"])
    assert not any("sensitivity" in v or "roc_auc" in v for v in after.violations)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from exporters_support import prepared_synthetic, write_checkpoint

    root = tmp_path_factory.mktemp("repair")
    return {"ckpt": write_checkpoint(root / "ck.pth", size=32, steps=20),
            "prepared": prepared_synthetic(root, n_images=80, size=32), "root": root}


def _export(setup: dict[str, Path], name: str, *extra: str) -> dict[str, Any]:
    from exporters.all import main

    out = setup["root"] / name
    argv = [str(setup["ckpt"]), "--out", str(out), "--formats", "onnx", "--precisions", "int8",
            "--calib-data", str(setup["prepared"]), "--calib-samples", "16", "--jobs", "1",
            *extra]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["artifacts"]
    entry["file_sha256"] = hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest()
    return dict(entry)


def test_repair_never_reads_the_holdout_and_off_changes_nothing(setup: dict[str, Path]) -> None:
    from kd_core.data.ham10000 import load_split

    holdout = {str(p) for p in load_split(setup["prepared"], "holdout").paths}
    opened: list[str] = []
    watching = [False]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if watching[0] and event == "open" and isinstance(args[0], str | Path):
            opened.append(str(args[0]))

    sys.addaudithook(audit)
    plain = _export(setup, "plain")
    off = _export(setup, "off", "--repair", "off", "--val-data", str(setup["prepared"]))
    assert off["file_sha256"] == plain["file_sha256"] and "repair" not in off
    watching[0] = True
    try:
        auto = _export(setup, "auto", "--val-data", str(setup["prepared"]),
                       "--repair-budget-min", "1")
    finally:
        watching[0] = False
    assert any(p.endswith("val_data.csv") for p in opened)
    assert not [p for p in opened if p.endswith("holdout_data.csv") or p in holdout]
    record = auto["repair"]
    assert record["mode"] == "auto" and record["validation"]["split"] == "val"
    assert record["rung"] in ("none", "recalibrate", "better_calibration", "mixed_precision",
                              "failed")
    if record["rung"] == "none":
        assert auto["file_sha256"] == plain["file_sha256"]
    else:  # whatever was kept carries its own decision and the record of what was tried
        assert record["attempts"] and "before" in record and "after" in record
