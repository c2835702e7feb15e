"""``load_checkpoint`` checks every field (issue 15, item 6): a damaged checkpoint is one
``CheckpointError`` naming the file and the field, never another exception, and the CLIs that
read checkpoints (``exporters.all``, ``benchmarks.run``) exit 2 with one line, no traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kd_core.checkpoint import (
    BINARY_LABELS,
    REQUIRED_KEYS,
    CheckpointError,
    build_checkpoint,
    calibration_record,
    is_calibrated,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from kd_core.data.transforms import Preprocessing
from kd_core.models import create_model

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model("tiny_mobilenet", 2)
    return build_checkpoint(model, "tiny_mobilenet", BINARY_LABELS, Preprocessing(size=32),
                            temperature=1.5, threshold=0.3, dataset="synthetic demo data",
                            calibration=calibration_record("val", 60, 1.5, 0.3, 0.95))


def _saved(ckpt: Any, path: Path) -> Path:
    torch.save(ckpt, path)
    return path


def test_a_valid_checkpoint_loads_and_is_calibrated(base: dict[str, Any], tmp_path: Path) -> None:
    ckpt = load_checkpoint(save_checkpoint(base, tmp_path / "ok.pth"))
    assert is_calibrated(ckpt) and ckpt["positive_index"] == 1
    assert model_from_checkpoint(ckpt)(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    assert not is_calibrated({**ckpt, "threshold": 0.31})  # edited after calibration
    assert not is_calibrated({k: v for k, v in ckpt.items() if k != "calibration"} | {
        "metrics": {"best": {"epoch": 3}}})  # what an interrupted run used to leave


def _set(key: str, value: Any) -> Mutation:
    return lambda c: c.__setitem__(key, value)


def _sub(key: str, sub: str, value: Any) -> Mutation:
    return lambda c: c[key].__setitem__(sub, value)


def _weight(fn: Callable[[torch.Tensor], Any]) -> Mutation:
    def mutate(c: dict[str, Any]) -> None:
        name = next(iter(c["state_dict"]))
        c["state_dict"][name] = fn(c["state_dict"][name])
    return mutate


BAD: list[tuple[str, Mutation, str]] = [
    ("nan temperature", _set("temperature", math.nan), "temperature must be a finite number"),
    ("inf temperature", _set("temperature", math.inf), "temperature must be a finite number"),
    ("zero temperature", _set("temperature", 0.0), "temperature must be in (0, 1000]"),
    ("threshold 5", _set("threshold", 5.0), "threshold must be a probability in [0, 1], got 5.0"),
    ("threshold text", _set("threshold", "0.5"), "threshold must be a finite number"),
    ("format 99", _set("format_version", 99), "format_version 99 is not supported"),
    ("format text", _set("format_version", "1"), "format_version '1' is not supported"),
    ("labels text", _set("labels", "other,melanoma"), "labels must be a list of non-empty str"),
    ("labels ints", _set("labels", [0, 1]), "labels must be a list of non-empty strings"),
    ("labels count", _set("labels", ["a", "b", "c"]), "labels has 3 names for num_classes=2"),
    ("labels repeat", _set("labels", ["a", "a"]), "labels repeat a name"),
    ("num_classes float", _set("num_classes", 2.0), "num_classes must be an integer >= 2"),
    ("num_classes text", _set("num_classes", "2"), "num_classes must be an integer >= 2"),
    ("size text", _sub("preprocessing", "size", "32"), "preprocessing is malformed"),
    ("size float", _sub("preprocessing", "size", 32.5), "preprocessing is malformed"),
    ("std zero", _sub("preprocessing", "std", [0, 0, 0]), "preprocessing is malformed"),
    ("mean short", _sub("preprocessing", "mean", [0.5]), "preprocessing is malformed"),
    ("resize", _sub("preprocessing", "resize", "stretch"), "preprocessing is malformed"),
    ("preprocessing text", _set("preprocessing", "squash"), "preprocessing is malformed"),
    ("state list", _set("state_dict", [1, 2]), "state_dict must be a non-empty dict"),
    ("weight list", _weight(lambda t: t.tolist()), "is a list, not a tensor"),
    ("weight shape", _weight(lambda t: torch.zeros(3, 3)), "weights do not fit tiny_mobilenet"),
    ("weight nan", _weight(lambda t: torch.full_like(t, math.nan)), "holds NaN or infinite"),
    ("weight missing", lambda c: c["state_dict"].popitem(), "weights do not fit"),
    ("arch unknown", _set("arch", "resnet9000"), "arch 'resnet9000' is not a known architecture"),
    ("arch int", _set("arch", 5), "arch must be an architecture name"),
    ("positive index", _set("positive_index", 7), "positive_index must be 0..1"),
    ("target", _set("target_sensitivity", 2), "target_sensitivity must be in (0, 1]"),
    ("calibration text", _set("calibration", "yes"), "calibration must be a dict"),
    ("calibration nan", _sub("calibration", "temperature", math.nan), "calibration.temperature"),
    ("config list", _set("config", []), "config must be a dict"),
    ("metrics text", _set("metrics", "x"), "metrics must be a dict"),
    ("missing threshold", lambda c: c.pop("threshold"), "checkpoint lacks threshold"),
    ("training state", _set("kind", "training_state"), "a training state (the resume file)"),
]


@pytest.mark.parametrize(("name", "mutate", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_field_is_one_checkpoint_error_naming_file_and_field(
        name: str, mutate: Mutation, message: str, base: dict[str, Any], tmp_path: Path) -> None:
    ckpt = copy.deepcopy(base)
    mutate(ckpt)
    path = _saved(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


@pytest.mark.parametrize(("content", "message"), [
    (b"\x00\x01random bytes" * 100, "not a torch checkpoint (neither a zip archive nor a pickle"),
    (b"", "not a torch checkpoint (an empty file"),
    (b"\x80\x02garbage" * 10, "truncated or corrupt checkpoint"),
])
def test_files_that_are_not_checkpoints_say_so(content: bytes, message: str,
                                               tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="^" + str(path).replace(".", r"\.")) as info:
        load_checkpoint(path)
    assert message in str(info.value) and "Python objects" not in str(info.value)
    with pytest.raises(CheckpointError, match="expected a checkpoint dict, got list"):
        load_checkpoint(_saved([1, 2], tmp_path / "list.pth"))


def test_a_truncated_checkpoint_is_corrupt(base: dict[str, Any], tmp_path: Path) -> None:
    whole = save_checkpoint(base, tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")


# ---------------------------------------------------------------- property: any damage

FIELDS = (*REQUIRED_KEYS, "positive_index", "target_sensitivity", "calibration", "config",
          "metrics", "dataset")
ODD = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5.0, -0.0]),
    st.text(max_size=6), st.lists(st.integers(-3, 3), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(torch.zeros(2)), st.just(torch.full((3,), math.nan)))


@st.composite
def damage(draw: st.DrawFn) -> tuple[str, Mutation]:
    """One way to damage a checkpoint: a key gone or replaced, a sub-field of preprocessing
    or calibration replaced, a weight reshaped, emptied, poisoned or replaced."""
    kind = draw(st.sampled_from(["drop", "replace", "preprocessing", "calibration", "weight"]))
    if kind == "drop":
        key = draw(st.sampled_from(REQUIRED_KEYS))
        return f"drop {key}", lambda c: c.pop(key)
    if kind == "replace":
        key, value = draw(st.sampled_from(FIELDS)), draw(ODD)
        return f"{key} = {value!r:.40}", _set(key, value)
    if kind in ("preprocessing", "calibration"):
        sub = draw(st.sampled_from(["size", "mean", "std", "resize", "interpolation"]
                                   if kind == "preprocessing" else
                                   ["temperature", "threshold", "n", "split"]))
        value = draw(ODD)
        return f"{kind}.{sub} = {value!r:.40}", _sub(kind, sub, value)
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    fill = draw(st.sampled_from([0.0, math.nan, math.inf, 1e38]))
    return f"weight {shape} {fill}", _weight(lambda t: torch.full(shape, fill))


def _cli(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def bench_inputs(base: dict[str, Any], synth_prepared: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An export folder whose manifest lists one (stand-in) artefact, and a data folder."""
    from kd_core.checkpoint import decision_of
    from kd_core.deploy import Manifest, ManifestEntry, write_manifest
    from kd_core.io import sha256_file

    folder = tmp_path_factory.mktemp("export")
    art = folder / "tiny_mobilenet_onnx_fp32.onnx"
    art.write_bytes(b"stand-in artefact")
    prep, decision = Preprocessing(size=32), decision_of(base)
    entry = ManifestEntry(
        name=art.stem, path=art.name, format="onnx", precision="fp32",
        input={"name": "image", "shape": [1, 3, 32, 32], "layout": "NCHW", "dtype": "float32",
               "quantization": None},
        output={"name": "logits", "shape": [1, 2], "dtype": "float32", "quantization": None},
        decision=decision, preprocessing=prep, bytes=art.stat().st_size, sha256=sha256_file(art))
    write_manifest(Manifest(decision=decision, preprocessing=prep, artifacts=(entry,)), folder)
    return folder, synth_prepared


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(change=damage())
def test_any_damage_is_a_checkpoint_error_and_every_cli_exits_2(
        change: tuple[str, Mutation], base: dict[str, Any], bench_inputs: tuple[Path, Path],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from PIL import Image

    from benchmarks.run import main as bench_main
    from exporters.all import main as export_main
    from runtimes.predict import main as predict_main

    what, mutate = change
    work = tmp_path_factory.mktemp("damaged")
    ckpt = copy.deepcopy(base)
    mutate(ckpt)
    path = _saved(ckpt, work / "student.pth")
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), what
        event("refused")
    else:  # the damage was harmless (e.g. an optional field set to a valid value)
        model_from_checkpoint(loaded, path)
        event("harmless")
        return
    export, data = bench_inputs
    photo = work / "photo.png"
    Image.new("RGB", (40, 40), (120, 80, 60)).save(photo)
    for main, argv in (
            (predict_main, [str(path), str(photo)]),
            (export_main, [str(path), "--out", str(work / "export"), "--precisions", "fp32"]),
            (bench_main, ["--artifacts", str(export), "--student-ckpt", str(path), "--data-dir",
                          str(data), "--out", str(work / "bench"), "--no-latency"])):
        rc, err = _cli(main, argv)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (what, rc, err)
        assert str(path) in lines[0], (what, lines)


def test_an_architecture_that_cannot_be_built_on_the_meta_device_loads(tmp_path: Path) -> None:
    """RegNet computes its widths with tensors, so the cheap shape check cannot use 'meta'."""
    from exporters_support import write_checkpoint

    path = write_checkpoint(tmp_path / "regnet.pth", arch="regnet_y_400mf", size=32)
    loaded = load_checkpoint(path)
    assert loaded["arch"] == "regnet_y_400mf"
    with pytest.raises(CheckpointError, match="shape"):
        bad = copy.deepcopy(loaded)
        bad["state_dict"]["fc.weight"] = torch.zeros(3, 440)
        load_checkpoint(_saved(bad, tmp_path / "bad.pth"))
