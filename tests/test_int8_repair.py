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
from exporters.int8.options import Int8Options
from exporters.int8.plan import FloatSite, PrecisionPlan, find_sites
from exporters.int8.sensitivity import rank_sites
from exporters.validation_data import ValidationSet
from kd_core.data.transforms import Preprocessing
from kd_core.deploy import Decision
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
        assert self.planted.bias is not None
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
    keep = Int8Options(plan=PrecisionPlan(tuple(FloatSite(n, "accuracy") for n in sorted(top2))))
    repaired = quantize_pt2e(model, example, calib, "executorch", keep)
    val = _images(64, 3)
    assert _kl(model, repaired, val) < 0.1 * _kl(model, everything, val)


def _val(y: np.ndarray) -> ValidationSet:
    n = len(y)
    return ValidationSet("test", tuple(str(i) for i in range(n)),
                         np.zeros((n, 8, 8, 3), np.uint8), y, Preprocessing(size=8))


def test_recalibration_restores_sensitivity_of_shifted_int8_logits() -> None:
    from kd_core.metrics import softmax, threshold_for_sensitivity

    rng = np.random.default_rng(0)
    s = rng.normal(-2.0, 2.0, 3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-s))).astype(np.int64)
    val = _val(y)
    float_logits = np.stack([np.zeros_like(s), s], 1)
    shipped = Decision(("benign", "melanoma"), 1, 1.0,
                       threshold_for_sensitivity(y, softmax(float_logits)[:, 1], 0.95), 0.95)
    tol, floor = Tolerances(), shipped.min_sensitivity
    ref = score(float_logits, val, shipped, {"roc_auc": 0, "ece": 1}, float_logits, tol,
                floor).metrics
    int8_logits = float_logits - np.array([0.0, 0.8])  # the positive class drifted down
    before = score(int8_logits, val, shipped, ref, float_logits, tol, floor)
    assert floor is not None and before.metrics["sensitivity"] < floor
    assert any("sensitivity" in v for v in before.violations)
    decision = refit(int8_logits, val, shipped)
    assert decision.labels == shipped.labels and decision.target_sensitivity == 0.95
    after = score(int8_logits, val, decision, ref, float_logits, tol, floor)
    assert after.metrics["sensitivity"] >= 0.95
    assert after.metrics["roc_auc"] == pytest.approx(ref["roc_auc"])
    assert not any("sensitivity" in v or "roc_auc" in v for v in after.violations)


def test_recalibration_keeps_the_shipped_temperature_where_the_nll_fit_has_the_worse_ece(
) -> None:
    """Temperature scaling minimizes the NLL; the gate reads ECE. Logits whose positive tail is
    overconfident for some images: the NLL fit (T 1.14) has ECE 0.031, the shipped T=1 0.022.
    The refit keeps T=1 and still moves the threshold to the target sensitivity."""
    from kd_core.calibration import fit_temperature
    from kd_core.finalize import evaluate
    from kd_core.metrics import softmax, threshold_for_sensitivity

    rng = np.random.default_rng(35)
    s = rng.normal(-2.5, 1.5, 1500)
    y = (rng.random(1500) < 1 / (1 + np.exp(-s))).astype(np.int64)
    z = s + 0.6 * np.sign(s) * np.abs(s) ** 1.3 * rng.choice([0, 1], 1500, p=[0.7, 0.3])
    logits = np.stack([np.zeros_like(z), z], 1)
    shipped = Decision(("benign", "melanoma"), 1, 1.0, 0.5, 0.95)

    def ece(t: float) -> float:
        return float(evaluate(logits, y, ["benign", "melanoma"], 1, None, t, 0, 0)["ece"])

    fitted = fit_temperature(logits, y)
    assert fitted == pytest.approx(1.14, abs=0.01) and ece(fitted) > ece(1.0) + 0.005
    decision = refit(logits, _val(y), shipped)
    assert decision.temperature == 1.0
    assert decision.threshold == threshold_for_sensitivity(y, softmax(logits)[:, 1], 0.95)
    # Where the fit is the better calibrated, it is kept.
    shifted = refit(logits * 3.0, _val(y), shipped)
    assert shifted.temperature == pytest.approx(fit_temperature(logits * 3.0, y))
    assert shifted.temperature != 1.0


def _model_labelled(prepared: Path, ckpt: Path, out: Path, gap: float = 2.0) -> Path:
    """A copy of ``prepared`` whose validation split is labelled by the float model's own
    argmax, keeping only images whose logit margin is beyond ``gap``: separable with room, so
    INT8 ranks it as the float model does, whatever the shipped temperature and threshold."""
    import csv
    import shutil

    from exporters.job import load_settings
    from kd_core.data.dataset import decode_images
    from kd_core.data.prepared import load_split
    from kd_core.data.transforms import normalize

    shutil.copytree(prepared, out)
    model, cfg = load_settings(ckpt)
    split = load_split(out, "val")
    x = normalize(decode_images(split.paths, cfg.preprocessing), cfg.preprocessing)
    with torch.no_grad():
        z = model(torch.from_numpy(x)).numpy()
    margin = z[:, 1] - z[:, 0]
    path = out / "val_data.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    kept = []
    for row, m in zip(rows, margin, strict=True):
        if abs(m) > gap:
            row["target"], row["dx"] = ("1", "mel") if m > 0 else ("0", "nv")
            kept.append(row)
    assert {r["target"] for r in kept} == {"0", "1"}, margin
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from exporters_support import prepared_synthetic, write_checkpoint

    root = tmp_path_factory.mktemp("repair")
    prepared = prepared_synthetic(root, n_images=120, size=32)
    # A shipped decision far off (probabilities near 0.5 at T=50, threshold 0.97): the INT8
    # artefact misses the sensitivity floor on validation until its own temperature and
    # threshold are fitted (the checkpoint's calibration record agrees with the decision).
    record = {"split": "val", "n": 100, "temperature": 50.0, "threshold": 0.97,
              "target_sensitivity": 0.95}
    off = write_checkpoint(root / "off.pth", size=32, steps=20, temperature=50.0,
                           threshold=0.97, calibration=record)
    return {"ckpt": write_checkpoint(root / "ck.pth", size=32, steps=20), "off_threshold": off,
            "prepared": prepared, "root": root,
            "model_labelled": _model_labelled(prepared, off, root / "model_labelled")}


def _export(setup: dict[str, Path], name: str, *extra: str, ckpt: str = "ckpt",
            fmt: str = "onnx") -> dict[str, Any]:
    """The INT8 entry of a one-format export (plus ``file_sha256``, ``out`` and the other
    entries under ``others``)."""
    from exporters.all import main

    out = setup["root"] / name
    argv = [str(setup[ckpt]), "--out", str(out), "--formats", fmt, "--precisions", "int8",
            "--calib-data", str(setup["prepared"]), "--calib-samples", "16", "--jobs", "1",
            "--allow-few-calib-images", *extra]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entry, *others = manifest["artifacts"]
    assert entry["precision"] == "int8"
    entry["file_sha256"] = hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest()
    entry["out"], entry["others"] = out, others
    return dict(entry)


def _embedded(entry: dict[str, Any]) -> dict[str, Any]:
    from exporters import get_exporter

    reader = get_exporter(entry["format"]).read_metadata
    assert reader is not None
    meta = reader(entry["out"] / entry["path"])
    assert meta is not None
    return meta


def test_repair_never_reads_the_holdout_and_off_changes_nothing(setup: dict[str, Path]) -> None:
    from kd_core.data.prepared import load_split

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
                       "--repair-budget-min", "1", "--max-ece-delta", "0.02")
    finally:
        watching[0] = False
    assert any(p.endswith("val_data.csv") for p in opened)
    assert not [p for p in opened if p.endswith("holdout_data.csv") or p in holdout]
    record = auto["repair"]
    assert record["mode"] == "auto" and record["validation"]["split"] == "val"
    assert record["tolerances"]["max_ece_delta"] == 0.02  # the gate the ladder aimed at
    assert "near_ties" not in record  # judged on sensitivity, not top-1 agreement
    assert record["rung"] in ("none", "recalibrate", "better_calibration", "mixed_precision",
                              "failed")
    if record["rung"] == "none":
        assert auto["file_sha256"] == plain["file_sha256"]
    else:  # whatever was kept carries its own decision and the record of what was tried
        assert record["attempts"] and "before" in record and "after" in record


def test_recalibrate_rung_embeds_the_artefacts_own_decision(setup: dict[str, Path]) -> None:
    from benchmarks.harness import int8_fields
    from kd_core.deploy import ManifestEntry

    entry = _export(setup, "recal", "--repair", "recalibrate", "--val-data",
                    str(setup["model_labelled"]), ckpt="off_threshold")
    record = entry["repair"]
    assert record["mode"] == "recalibrate" and record["sensitivity_floor"] == pytest.approx(0.93)
    assert record["before"]["threshold"] == pytest.approx(0.97)
    assert "sensitivity" in " ".join(record["before"]["violations"])
    assert [a["rung"] for a in record["attempts"]] == ["recalibrate"]  # recalibrate: rung 1 only
    assert record["rung"] == "recalibrate" and record["after"]["passed"], record
    assert record["after"]["sensitivity"] >= 0.95
    # The refitted decision is the artefact's own, in its manifest entry and embedded in it.
    assert entry["threshold"] == pytest.approx(record["after"]["threshold"]) != 0.97
    assert entry["temperature"] == pytest.approx(record["after"]["temperature"])
    meta = _embedded(entry)
    assert (meta["threshold"], meta["temperature"]) == (entry["threshold"], entry["temperature"])
    assert "repair" not in meta  # the ladder's record is in manifest.json only
    fields = int8_fields(ManifestEntry.from_dict(entry, "test"))  # what the report shows
    assert fields == {"repair_rung": record["rung"], "float_sites": []}


def _planted_timings(setup: dict[str, Path], fmt: str) -> tuple[str, Path]:
    """(the slow site, a timings file where the model's first depthwise conv is slower in int8
    than in float and every other site faster)."""
    from exporters.int8.speed import SiteTiming, SiteTimings, save_timings
    from exporters.job import load_settings

    model, _ = load_settings(setup["ckpt"])
    sites = find_sites(model, (torch.zeros(1, 3, 32, 32),))
    slow = next(s for s in sites if s.kind == "depthwise")
    timings = SiteTimings(fmt, "planted", 1, 30, tuple(
        SiteTiming(s.name, 30.0, 10.0, 2.0) if s is slow else SiteTiming(s.name, 5.0, 20.0, 1.0)
        for s in sites))
    return slow.name, save_timings(timings, setup["root"] / f"timings_{fmt}.json")


def test_speed_plan_file_keeps_the_slow_site_float_deterministically(
        setup: dict[str, Path]) -> None:
    slow_name, path = _planted_timings(setup, "onnx")
    first = _export(setup, "speed_a", "--speed-plan", str(path))
    again = _export(setup, "speed_b", "--speed-plan", str(path))
    assert first["file_sha256"] == again["file_sha256"]  # same timings, same artefact
    plan = first["precision_plan"]
    assert [(s["name"], s["reason"]) for s in plan["float_sites"]] == [(slow_name, "speed")]
    assert plan["speed"]["applied"] is True and plan["speed"]["speed_sites"] == [slow_name]
    assert _embedded(first)["precision_plan"]["float_sites"][0]["name"] == slow_name
    assert len(first["quantization_recipe"]["nodes_to_exclude"]) == 1
    floats = first["graph_report"]["optimized_counts"]["float"]
    assert floats.get("Conv", 0) + floats.get("FusedConv", 0) == 1, floats


@pytest.mark.parametrize("extra, message", [
    (("--repair", "recalibrate"), "--repair recalibrate needs labelled validation images"),
    (("--repair-budget-min", "0", "--val-data", "PREPARED"), "--repair-budget-min"),
    (("--speed-plan", "nope.json"), "--speed-plan: nope.json: unreadable site-timings file"),
    (("--min-top1-agreement", "1.5", "--val-data", "PREPARED"),
     "--min-top1-agreement must be between 0 and 1, got 1.5"),
    (("--repair", "auto", "--val-data", "PREPARED", "--precisions", "fp32"),
     "makes no quantized artefact to repair"),
])
def test_bad_int8_flags_exit_2_before_any_work(setup: dict[str, Path], extra: tuple[str, ...],
                                               message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from exporters.all import main

    out = setup["root"] / "refused"
    args = [a.replace("PREPARED", str(setup["prepared"])) for a in extra]
    argv = [str(setup["ckpt"]), "--out", str(out), "--formats", "onnx", "--calib-data",
            str(setup["prepared"]), *args]
    assert main(argv) == 2
    err = capsys.readouterr()
    assert message in err.out + err.err and not out.exists()


def test_float_io_tflite_carries_the_int8_artefacts_plan_and_repair(
        setup: dict[str, Path]) -> None:
    """LiteRT's int8_float_io is the int8 flatbuffer with float I/O: the same graph, so the
    same float sites, repair record and recalibrated decision (entry and embedded)."""
    slow_name, path = _planted_timings(setup, "tflite")
    int8 = _export(setup, "float_io", "--speed-plan", str(path), "--repair", "recalibrate",
                   "--val-data", str(setup["model_labelled"]), ckpt="off_threshold",
                   fmt="tflite")
    (float_io,) = int8["others"]
    assert float_io["precision"] == "int8_float_io"
    assert [s["name"] for s in int8["precision_plan"]["float_sites"]] == [slow_name]
    for key in ("precision_plan", "repair", "temperature", "threshold"):
        assert float_io[key] == int8[key], key
    assert int8["repair"]["rung"] == "recalibrate" and int8["threshold"] != 0.97
    float_io["out"] = int8["out"]
    for entry in (int8, float_io):
        meta = _embedded(entry)
        assert (meta["threshold"], meta["temperature"]) == (int8["threshold"],
                                                           int8["temperature"])
        assert meta["precision_plan"]["float_sites"][0]["name"] == slow_name


def test_of_two_failing_candidates_the_one_closer_to_the_gate_ranks_first() -> None:
    rng = np.random.default_rng(0)
    student = rng.normal(0, 2, (2000, 3))
    y = student.argmax(1)
    val = _val(y)
    decision = Decision(("a", "b", "c"), None, 1.0, None, None)
    ref = score(student, val, decision, {"roc_auc": 0, "ece": 1}, student, Tolerances(),
                None).metrics

    def flipped(share: float) -> np.ndarray:  # ``share`` of the images swap their top two
        out = student.copy()
        idx = rng.permutation(len(out))[: int(share * len(out))]
        top = out[idx].argmax(1)
        out[idx, top] -= 10.0
        return out

    tol = Tolerances(min_top1_agreement=0.99)
    far = score(flipped(0.06), val, decision, ref, student, tol, None)
    near = score(flipped(0.015), val, decision, ref, student, tol, None)
    assert any("top-1 agreement" in v for v in far.violations + near.violations)
    assert near.metrics["argmax_agreement_vs_student"] > far.metrics[
        "argmax_agreement_vs_student"]
    assert near.rank() < far.rank()


def test_rung_3_never_keeps_more_than_half_the_macs_float() -> None:
    """Plan sizes double while the top-k plan's float MACs share stays within the limit, end at
    the largest k within it, and never reach every site (that would be the fp32 model)."""
    from exporters.int8.repair import MAX_FLOAT_MACS, plan_sizes

    share = [0.1, 0.2, 0.3, 0.4, 0.45, 0.6, 0.9, 1.0]
    assert plan_sizes(share) == [1, 2, 4, 5]
    assert plan_sizes(share, limit=0.4) == [1, 2, 4]
    assert plan_sizes(share, limit=1.0) == [1, 2, 4, 8]
    assert plan_sizes([0.7, 1.0]) == []  # one site already holds most of the MACs
    even = list(np.cumsum(np.full(64, 1 / 64)))
    assert plan_sizes(even) == [1, 2, 4, 8, 16, 32]
    assert max(plan_sizes(even)) < 64 and MAX_FLOAT_MACS == 0.5


@pytest.mark.parametrize("needed", [1, 2, 3, 4, 8, 16, 32, 33])
def test_rung_3_finds_the_fewest_passing_sites_in_few_tries(needed: int) -> None:
    """The top site alone, then the most sites, then a binary search: the fewest that pass
    (the gate passes from ``needed`` sites on), and two tries when even the most fail."""
    from exporters.int8.repair import fewest_passing

    sizes = [1, 2, 4, 8, 16, 32]
    tried: list[int] = []

    def passes(k: int) -> bool:
        tried.append(k)
        return k >= needed

    got = fewest_passing(sizes, passes)
    assert got == min((k for k in sizes if k >= needed), default=None)
    assert tried[:2] == ([1] if needed == 1 else [1, 32])
    assert len(tried) == len(set(tried)) <= 2 + 3  # log2 of the 4 sizes between, rounded up
    if needed > 32:
        assert tried == [1, 32]


def test_rung_3_out_of_time_keeps_the_fewest_found_passing() -> None:
    from exporters.int8.repair import fewest_passing

    budget = iter([False, True, False])  # k=1 fails, k=32 passes, k=4 fails, then no time

    def passes(k: int) -> bool | None:
        return next(budget, None)

    assert fewest_passing([1, 2, 4, 8, 16, 32], passes) == 32
    assert fewest_passing([1, 2, 4], lambda k: None) is None
    assert fewest_passing([], lambda k: True) is None


def test_qat_tries_rung_3_plans_closest_to_passing_first(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """After plain QAT, the rung-3 plan that came closest (smallest ``Scored.rank``) goes
    first: each QAT try costs minutes, so the likeliest to pass is tried inside the budget."""
    import exporters.calibration_data as calibration_data
    from exporters.base import ExportSettings
    from exporters.int8 import repair as ladder_mod

    class _Calib:
        source, prep, seed = "calib", Preprocessing(size=16), 0

        def __len__(self) -> int:
            return 8

    monkeypatch.setattr(calibration_data, "load_calibration", lambda *a, **k: _Calib())

    def plan(*names: str) -> PrecisionPlan:
        return PrecisionPlan(tuple(FloatSite(n, "accuracy") for n in names))

    ladder = ladder_mod.Ladder("executorch", None, (), tmp_path, None,  # type: ignore[arg-type]
                               np.zeros(1), np.zeros(1), {}, Tolerances(), None, 1e9)
    ladder.mixed_plans = [(plan("a"), (0.03, 1)), (plan("a", "b"), (0.01, 1)),
                          (plan("a", "b", "c", "d"), (0.02, 2))]
    tried: list[frozenset[str]] = []

    def record(rung: str, detail: str, cfg: Any, int8: Int8Options) -> bool:
        tried.append(int8.plan.names())
        return False

    monkeypatch.setattr(ladder, "try_options", record)
    cfg = ExportSettings("tiny", Decision(("a", "b"), 1), Preprocessing(size=16), "sha",
                         calibration=_Calib(),  # type: ignore[arg-type]
                         int8=Int8Options(qat_steps=5, repair="auto"))
    ladder_mod._qat(ladder, cfg)
    assert tried == [frozenset(), {"a", "b"}, {"a", "b", "c", "d"}, {"a"}]


def test_no_try_starts_that_would_end_past_the_budget(tmp_path: Path) -> None:
    """The budget bounds the ladder: a try that would end past it, if it took as long as the
    last one, is not started (the first one always is)."""
    import time

    from exporters.int8 import repair as ladder_mod

    ladder = ladder_mod.Ladder("executorch", None, (), tmp_path, None,  # type: ignore[arg-type]
                               np.zeros(1), np.zeros(1), {}, Tolerances(), None, 60.0)
    ladder.budget_start = time.monotonic() - 40.0
    assert not ladder.out_of_time()  # nothing tried yet: 40 of 60 s spent
    ladder.last_try_s = 15.0
    assert not ladder.out_of_time()  # would end at 55 s
    ladder.last_try_s = 25.0
    assert ladder.out_of_time()  # would end at 65 s


@pytest.mark.parametrize(("more_shortfall", "observer_images"), [(0.05, 8), (0.01, 32)])
def test_the_observer_try_builds_on_the_images_that_came_closer(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, more_shortfall: float,
        observer_images: int) -> None:
    """Rung 2 tries 4x the calibration images, then the other observer: on the 4x images if
    they came closer than the best so far, else on the original ones (an ONNX Runtime histogram
    calibration on 4096 images costs minutes)."""
    import exporters.calibration_data as calibration_data
    from exporters.base import ExportSettings
    from exporters.int8 import repair as ladder_mod
    from exporters.int8.candidates import Scored

    class _Calib:
        source, prep, seed = "calib", Preprocessing(size=16), 0

        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

    monkeypatch.setattr(calibration_data, "load_calibration", lambda *a, **k: _Calib(32))
    cfg = ExportSettings("tiny", Decision(("a", "b"), 1), Preprocessing(size=16), "sha",
                         calibration=_Calib(8),  # type: ignore[arg-type]
                         int8=Int8Options(repair="auto"))
    ladder = ladder_mod.Ladder("executorch", None, (), tmp_path, None,  # type: ignore[arg-type]
                               np.zeros(1), np.zeros(1), {}, Tolerances(), None, 1e9)
    assert cfg.int8 is not None
    ladder.best = ladder_mod.Candidate(cfg.int8, cfg, cfg.decision, Scored({}, ("auc",), 0.02))
    images: list[int] = []

    def record(rung: str, detail: str, cand_cfg: Any, int8: Int8Options) -> bool:
        images.append(len(cand_cfg.calibration))
        scored = Scored({}, ("auc",), more_shortfall if len(images) == 1 else 0.5)
        return ladder.consider(rung, detail, ladder_mod.Candidate(int8, cand_cfg, cfg.decision,
                                                                  scored), 0.0)

    monkeypatch.setattr(ladder, "try_options", record)
    assert not ladder_mod._better_calibration(ladder, cfg)
    assert images == [32, observer_images]


def test_the_float_pass_runs_once_per_model_and_validation_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An export worker repairs its formats one after another: the float model's validation
    logits are computed once, and again for a model changed in place or another set."""
    from exporters.int8 import candidates, sensitivity

    calls: list[int] = []
    real = sensitivity.float_logits

    def counting(model: nn.Module, images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return real(model, images)

    monkeypatch.setattr(sensitivity, "float_logits", counting)
    monkeypatch.setattr(candidates, "_FLOAT_PASS", [])
    torch.manual_seed(0)
    linear = nn.Linear(3 * 8 * 8, 2)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    pixels = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    prep = Preprocessing(size=8)
    val = ValidationSet("v", tuple("abcdef"), pixels, np.array([0, 1] * 3), prep)
    images, first = candidates.float_pass(model, val)
    again = candidates.float_pass(model, val)[1]
    assert calls == [6] and again is first
    assert np.allclose(first, model(torch.from_numpy(images)).detach().numpy(), atol=1e-5)
    with torch.no_grad():
        linear.bias.add_(1.0)  # changed in place: the same object, other logits
    shifted = candidates.float_pass(model, val)[1]
    assert calls == [6, 6] and np.allclose(shifted, first + 1.0, atol=1e-5)
    other = ValidationSet("w", val.image_ids, pixels, val.labels, prep)
    candidates.float_pass(model, other)
    assert calls == [6, 6, 6]


def test_near_ties_counts_images_within_one_int8_step_and_a_failed_summary_says_so() -> None:
    """The share of images whose float top two logits are closer than one int8 step of the
    logits' range: the images rounding alone can flip, named when a top-1 repair fails."""
    from exporters.all import repair_text
    from exporters.int8.candidates import near_ties

    logits = np.array([[2.55, 0.0, -2.55],    # range 5.1: one int8 step is 0.02
                       [1.0, 0.99, 0.0],      # margin 0.01: within a step
                       [1.0, 0.97, 0.0],      # margin 0.03: not
                       [0.5, 0.0, 0.5]])      # an exact tie
    ties = near_ties(logits)
    assert ties == {"int8_logit_step": 0.02, "share_within_step": 0.5}
    assert near_ties(np.array([[1.0], [-1.0]]))["share_within_step"] == 0.0
    row = {"argmax_agreement_vs_student": 0.95}
    failed = {"rung": "failed", "before": row, "after": {"argmax_agreement_vs_student": 0.98},
              "near_ties": ties}
    text = repair_text(failed)
    assert "top-1 agreement 0.9500 -> 0.9800" in text
    assert "50.0 % of the validation images" in text and "one int8 step, 0.02" in text
    assert "int8 step" not in repair_text({**failed, "rung": "mixed_precision"})
    assert repair_text({"rung": "not run", "note": "no runtime"}) == "; repair not run: no runtime"


def test_a_repair_judged_on_top1_agreement_records_its_near_ties(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A 3-class argmax model's repair record carries ``near_ties`` of the float logits on
    validation (a binary one judged on sensitivity does not: the end-to-end test above)."""
    from exporters.base import ExportSettings
    from exporters.int8 import candidates
    from exporters.int8 import repair as ladder_mod
    from exporters.int8.candidates import near_ties

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    pixels = np.random.default_rng(2).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    val = ValidationSet("v", tuple(str(i) for i in range(30)), pixels,
                        np.arange(30) % 3, Preprocessing(size=8))
    monkeypatch.setattr(candidates, "_FLOAT_PASS", [])
    student = candidates.float_pass(model, val)[1]
    monkeypatch.setattr(ladder_mod, "runtime_logits", lambda art, images: student + 0.001)
    cfg = ExportSettings("tiny", Decision(("a", "b", "c"), None, threshold=None),
                         Preprocessing(size=8), "sha",
                         int8=Int8Options(repair="auto", validation=val))
    arts, _, record = ladder_mod.repair("onnx", model, (), cfg, [None],  # type: ignore[list-item]
                                        tmp_path)
    assert record["rung"] == "none" and arts == [None]
    assert record["near_ties"] == near_ties(student)
    assert record["near_ties"]["int8_logit_step"] > 0
