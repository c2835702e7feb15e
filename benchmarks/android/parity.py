"""On-device accuracy parity: push preprocessed tensors, run them on the phone through the demo
app's instrumentation test (org.edgekd.demo.ParityTest), pull the outputs back and score them.

``python -m benchmarks.android parity --artifacts EXPORT --inputs X.npy [--labels Y.npy]``.
Everything that can be wrong with the inputs is found before the phone is touched: the artefact
(a .tflite the app's LiteRT runs), the images' shape against the artefact's input, the label count
and range against the inputs and the artefact's labels, the host logits' shape, the output folder.
Inputs are put into the artefact's layout and dtype by its own runner (``runtimes``, the one the
exporters and the harness use), which also gives the host logits the phone is compared with;
decisions are the manifest's ``kd_core.deploy.Decision``; the comparison is
``kd_core.deploy.compare_outputs``.

Tensor files are safetensors (public spec: a little-endian u64 header length, a JSON header, the
raw little-endian data), written and read here with the ``safetensors`` package and on the phone
by android_demo's core (``Safetensors.kt``): inputs hold the tensor ``inputs`` (N x the model's
input without its batch of 1, already in its layout and dtype), outputs the tensor ``outputs``
(N x C raw values); string metadata ``format``, ``kind`` and, when quantized, ``scale`` and
``zero_point``. See docs/ANDROID_BENCHMARK.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.android.adb import (
    REMOTE_DIR,
    Adb,
    AdbError,
    find_adb,
    read_device_info,
    select_device,
)
from benchmarks.android.parsers import last_lines
from benchmarks.android.results import attach_accuracy
from kd_core import cli
from kd_core.cli import BadInput, JobFailed
from kd_core.deploy import Decision, ManifestEntry, compare_outputs, load_manifest
from kd_core.io import atomic_path, atomic_write_text

FORMAT = "edgekd-parity-1"
INPUTS, OUTPUTS = "inputs", "outputs"


class ParityError(BadInput):
    """Parity inputs, labels, logits or files that do not fit the artefact (exit 2)."""


class DeviceParityFailed(JobFailed):
    """The parity run on the phone failed (exit 1); the message quotes the phone's report."""


@dataclass(frozen=True)
class ParityConfig:
    """How to reach the demo app's parity test (defaults match android_demo)."""

    instrumentation: str = "org.edgekd.demo.test/androidx.test.runner.AndroidJUnitRunner"
    test_class: str = "org.edgekd.demo.ParityTest"
    # The app cannot write to /data/local/tmp (SELinux); it writes into its external files dir.
    device_outputs: str = "/sdcard/Android/data/org.edgekd.demo/files/edgekd/outputs.safetensors"
    timeout_s: float = 900.0


def write_tensor_file(path: Path, name: str, array: np.ndarray, metadata: Mapping[str, str]
                      ) -> None:
    """One safetensors file holding ``array`` as tensor ``name`` (little-endian, C order)."""
    from safetensors.numpy import save

    with atomic_path(path) as tmp:
        tmp.write_bytes(save({name: np.ascontiguousarray(array)}, metadata={**metadata}))


def read_tensor_file(path: Path, name: str, source: str) -> tuple[np.ndarray, dict[str, str]]:
    """Tensor ``name`` and the metadata of a safetensors file; errors name ``source``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = list(f.keys())
            if name not in names:
                raise ParityError(f"{source}: no tensor {name!r} (has {names})")
            return np.asarray(f.get_tensor(name)), dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise ParityError(f"{source}: not a readable safetensors file ({exc})") from None


def check_inputs(entry: ManifestEntry, x: np.ndarray, labels: np.ndarray | None,
                 host: np.ndarray | None) -> None:
    """Everything about the inputs that can be wrong, before any phone step; each error names
    the flag and the problem."""
    if entry.format != "tflite" or entry.output.get("kind", "logits") != "logits":
        raise ParityError(f"--artifact {entry.name}: the app's parity test runs .tflite models "
                          f"with logits output; this is {entry.format}")
    if x.ndim != 4 or x.shape[1] != 3 or x.dtype.kind != "f" or len(x) == 0:
        raise ParityError(f"--inputs: expected float32 N x 3 x H x W preprocessed images, got "
                          f"{x.dtype} {list(x.shape)}")
    shape = list(entry.input.get("shape") or [])
    want = shape[1:] if entry.input.get("layout") != "NHWC" else [shape[3], *shape[1:3]]
    if list(x.shape[1:]) != want:
        raise ParityError(f"--inputs: images are {'x'.join(map(str, x.shape[1:]))}, artefact "
                          f"{entry.name} takes {'x'.join(map(str, want))} (input {shape})")
    k = len(entry.decision.labels)
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(x) or labels.dtype.kind not in "iu":
            raise ParityError(f"--labels: expected {len(x)} integer class indices (one per "
                              f"input), got {labels.dtype} {list(labels.shape)}")
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ParityError(f"--labels: class index {int(labels.max())} outside 0..{k - 1} "
                              f"(artefact {entry.name} has {k} labels: "
                              f"{', '.join(entry.decision.labels)})")
    if host is not None and list(host.shape) != [len(x), k]:
        raise ParityError(f"--host-logits: expected {len(x)} x {k} logits, got "
                          f"{list(host.shape)}")


def instrument_command(cfg: ParityConfig, model: str, inputs: str) -> str:
    args = ["am", "instrument", "-w", "-e", "class", cfg.test_class, "-e", "model", model,
            "-e", "inputs", inputs, "-e", "outputs", cfg.device_outputs, cfg.instrumentation]
    return " ".join(shlex.quote(a) for a in args)


def check_instrumentation(text: str, cfg: ParityConfig) -> None:
    """``am instrument`` exits 0 even when the test fails: read its report instead."""
    if "Unable to find instrumentation" in text or "INSTRUMENTATION_FAILED" in text:
        raise DeviceParityFailed(
            f"instrumentation {cfg.instrumentation} is not installed: build the demo and run "
            f"./gradlew installDebug installDebugAndroidTest; am instrument ended with: "
            f"{_tail(text, 3)}")
    if "FAILURES!!!" in text or "Process crashed" in text or "OK (" not in text:
        raise DeviceParityFailed(f"parity test {cfg.test_class} failed on the phone; its last "
                                 f"lines were: {_tail(text, 5)}")


def _tail(text: str, n: int) -> str:
    """The last ``n`` non-empty lines of a phone's report, on one line."""
    return " | ".join(ln.strip() for ln in last_lines(text, n).splitlines())


def outputs_to_logits(raw: np.ndarray, meta: Mapping[str, str], source: str) -> np.ndarray:
    """The phone's raw outputs (N, C) as float64 logits (int8: ``(q - zero_point) * scale``)."""
    from runtimes.quant import dequantize

    if raw.dtype.kind in "iu":
        try:
            return dequantize(raw.reshape(len(raw), -1), float(meta["scale"]),
                              int(meta["zero_point"]))
        except (KeyError, ValueError):
            raise ParityError(f"{source}: {raw.dtype} outputs without scale/zero_point "
                              "metadata") from None
    return raw.astype(np.float64).reshape(len(raw), -1)


def run_device_parity(adb: Adb, model: Path, prepared: np.ndarray, input_meta: Mapping[str, str],
                      cfg: ParityConfig) -> np.ndarray:
    """Run ``prepared`` (the artefact's input tensors) through ``model`` on the phone; return
    the phone's logits (N, C) as float64. The phone's files are removed afterwards."""
    remote_model, remote_inputs = f"{REMOTE_DIR}/{model.name}", f"{REMOTE_DIR}/inputs.safetensors"
    with tempfile.TemporaryDirectory(prefix="edgekd_parity_") as tmp:
        local_inputs, local_outputs = Path(tmp) / "inputs.safetensors", Path(tmp) / "out"
        write_tensor_file(local_inputs, INPUTS, prepared, input_meta)
        try:
            adb.shell(f"mkdir -p {REMOTE_DIR}")
            adb.push(model, remote_model)
            adb.push(local_inputs, remote_inputs)
            adb.shell(f"rm -f {shlex.quote(cfg.device_outputs)}")
            proc = adb.shell(instrument_command(cfg, remote_model, remote_inputs),
                             timeout_s=cfg.timeout_s, check=False)
            check_instrumentation(proc.stdout + "\n" + proc.stderr, cfg)
            adb.pull(cfg.device_outputs, local_outputs)
        finally:
            with contextlib.suppress(AdbError):  # the phone is gone; the error raised says so
                adb.remove(REMOTE_DIR, cfg.device_outputs)
        raw, meta = read_tensor_file(local_outputs, OUTPUTS, cfg.device_outputs)
    if len(raw) != len(prepared):
        raise DeviceParityFailed(f"the phone returned {len(raw)} outputs for "
                                 f"{len(prepared)} inputs")
    return outputs_to_logits(raw, meta, cfg.device_outputs)


def score_logits(logits: np.ndarray, labels: np.ndarray, decision: Decision) -> dict[str, Any]:
    """AUC of the positive class and the decision's accuracy, sensitivity and specificity."""
    from sklearn.metrics import roc_auc_score

    if decision.positive_index is None:
        raise ParityError("the artefact's decision has no positive class to score")
    p = decision.positive_probability(logits)
    pred = decision.decide(logits).astype(bool)
    y = np.asarray(labels).reshape(-1) == decision.positive_index
    return {"n": int(y.size), "positives": int(y.sum()), "threshold": decision.threshold,
            "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else None,
            "accuracy": float((pred == y).mean()),
            "sensitivity": float(pred[y].mean()) if y.any() else None,
            "specificity": float((~pred[~y]).mean()) if (~y).any() else None}


def compare_logits(device: np.ndarray, host: np.ndarray, decision: Decision) -> dict[str, float]:
    """``compare_outputs`` plus how often the phone and the host take the same decision."""
    same = decision.decide(device) == decision.decide(host)
    return {**compare_outputs(device, host), "decision_agreement": float(np.mean(same))}


# ---- the CLI (python -m benchmarks.android parity) ----------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = ParityConfig()
    p = cli.parser("python -m benchmarks.android parity",
                   "Run preprocessed images through a model on the phone (the demo app's "
                   "ParityTest), pull the outputs back and score them against the labels and "
                   "the host.")
    p.add_argument("--artifacts", required=True, metavar="DIR", help="export folder (manifest)")
    p.add_argument("--artifact", metavar="NAME",
                   help="artefact name from the manifest (default: the only .tflite one)")
    p.add_argument("--inputs", required=True, metavar="X.npy",
                   help="float32 N x 3 x H x W preprocessed images (kd_core preprocessing)")
    p.add_argument("--labels", metavar="Y.npy", help="N class indices: adds AUC and decisions")
    p.add_argument("--host-logits", metavar="H.npy", help="N x C host logits to compare with "
                   "(default: the artefact run by its runtime on this host)")
    p.add_argument("--serial", metavar="S", help="device serial from `adb devices` "
                   "(default: $ANDROID_SERIAL, else the only attached device)")
    p.add_argument("--adb", metavar="PATH", help="adb executable (default: adb on PATH)")
    p.add_argument("--timeout", type=float, default=d.timeout_s, metavar="S",
                   help="seconds allowed for the run on the phone")
    p.add_argument("--instrumentation", default=d.instrumentation, help="test package/runner")
    p.add_argument("--device-outputs", default=d.device_outputs, metavar="PATH",
                   help="where the app writes its outputs")
    p.add_argument("--out", metavar="R", help="results folder: parity report, outputs, and the "
                   "accuracy on the matching phone row of R/results.json")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _load_npy(path: str | None, flag: str) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise ParityError(f"{flag} {path}: cannot read .npy ({exc})") from None


def _pick(export: str, name: str | None) -> ManifestEntry:
    manifest = load_manifest(export)
    if name:
        try:
            return manifest.entry(name)
        except KeyError as exc:
            raise ParityError(f"--artifact: {exc.args[0]}") from None
    from exporters.sync_demos import APPS, SyncError, choose_artifact

    try:  # the artefact the Android app ships (exporters.sync_demos decides it)
        return choose_artifact(manifest, APPS["android"], None, f"--artifacts {export}")
    except SyncError:
        names = ", ".join(e.name for e in manifest.artifacts) or "none"
        raise ParityError(f"--artifacts {export}: no .tflite artefact the Android app would ship "
                          f"(available: {names}); pick one with --artifact") from None


def _check_out(out: str | None) -> None:
    probe = Path(out) if out else None
    while probe is not None and not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe is not None and (not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK)):
        raise ParityError(f"--out {out}: {probe} is not a writable folder")


def _write(out: Path, entry: ManifestEntry, device: str, report: dict[str, Any],
           logits: np.ndarray) -> None:
    atomic_write_text(out / f"android_parity_{entry.name}.json", json.dumps(report, indent=2))
    with atomic_path(out / f"android_outputs_{entry.name}.npy") as tmp, tmp.open("wb") as fh:
        np.save(fh, logits)
    if "accuracy" in report:
        attach_accuracy(out, entry.name, device, report["accuracy"])


def _main(args: argparse.Namespace) -> int:
    from runtimes import load_runner

    _check_out(args.out)
    entry = _pick(args.artifacts, args.artifact)
    x = _load_npy(args.inputs, "--inputs")
    assert x is not None
    labels, host = _load_npy(args.labels, "--labels"), _load_npy(args.host_logits,
                                                                  "--host-logits")
    check_inputs(entry, x, labels, host)
    runner = load_runner(entry, Path(args.artifacts))
    prepared = runner.prepare(x.astype(np.float32))
    host = runner.predict(x) if host is None else host
    quant = entry.input.get("quantization")
    meta = {"format": FORMAT, "kind": INPUTS, "artifact": entry.name,
            "layout": str(entry.input.get("layout", "NCHW")),
            **({"scale": repr(float(quant["scale"])), "zero_point": str(int(quant["zero_point"]))}
               if quant else {})}
    cfg = ParityConfig(args.instrumentation, device_outputs=args.device_outputs,
                       timeout_s=args.timeout)
    try:
        adb = select_device(find_adb(args.adb), args.serial, args.timeout)
        device = read_device_info(adb).describe()
        logits = run_device_parity(adb, entry.file(args.artifacts), prepared, meta, cfg)
    except AdbError as exc:
        raise JobFailed(str(exc)) from None
    report: dict[str, Any] = {"artifact": entry.name, "device": device, "n": len(logits),
                              "vs_host": compare_logits(logits, host, entry.decision)}
    if labels is not None:
        report["accuracy"] = score_logits(logits, labels, entry.decision)
    print(json.dumps(report, indent=2))
    if args.out:
        _write(Path(args.out), entry, device, report, logits)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))
