"""Run web_demo's JavaScript (Node) and page (headless Chromium) from the tests.

Node runs ``web_demo/tools/core_cli.js`` over ``web_demo/core.js`` on files Python writes, so the
Python definitions can be compared with the JS port on the same decoded pixels (as
tests/kotlin_support.py does for the Kotlin core). Tests skip when node, LiteRT.js
(``npm ci`` in web_demo/), Chromium, ChromeDriver or selenium cannot be had, unless
``EDGEKD_REQUIRE_WEB=1`` (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.data.transforms import Preprocessing
from kd_core.deploy import Decision, Manifest, ManifestEntry, write_manifest

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web_demo"
CLI = WEB / "tools" / "core_cli.js"


def required() -> bool:
    return os.environ.get("EDGEKD_REQUIRE_WEB", "") not in ("", "0")


def _skip(reason: str) -> None:
    import pytest

    if required():
        pytest.fail(f"EDGEKD_REQUIRE_WEB is set but {reason}")
    pytest.skip(reason)


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        _skip("node is not installed")
    assert node is not None
    return node


def browser_or_skip() -> tuple[str, str]:
    """(chromium, chromedriver), with LiteRT.js and selenium installed; else a skip."""
    from benchmarks.chromium import LITERT_JS, find_browser

    try:
        import selenium  # noqa: F401
    except ImportError:
        _skip("selenium is not installed (pip install -e '.[dev]')")
    if not (LITERT_JS / "package.json").is_file():
        _skip(f"LiteRT.js is not installed: run `npm ci` in {WEB}")
    try:
        return find_browser(None, None)
    except FileNotFoundError as exc:
        _skip(str(exc))
        raise


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([node_or_skip(), *args], cwd=WEB, capture_output=True, text=True,
                          timeout=600, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"node {' '.join(args[:2])} exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def write_contract(folder: Path, prep: Preprocessing, decision: Decision, *,
                   layout: str = "NHWC", in_dtype: str = "float32",
                   in_quant: tuple[float, int] | None = None, out_dtype: str = "float32",
                   out_quant: tuple[float, int] | None = None) -> Path:
    """A one-entry manifest.json (written by kd_core.deploy) for the JS core to read."""
    size = prep.size
    shape = [1, size, size, 3] if layout == "NHWC" else [1, 3, size, size]

    def quant(q: tuple[float, int] | None) -> dict[str, Any] | None:
        return None if q is None else {"scale": q[0], "zero_point": q[1]}

    entry = ManifestEntry(
        name="m_tflite_test", path="m.tflite", format="tflite", precision="test",
        input={"name": "x", "shape": shape, "layout": layout, "dtype": in_dtype,
               "quantization": quant(in_quant)},
        output={"name": "y", "shape": [1, len(decision.labels)], "dtype": out_dtype,
                "quantization": quant(out_quant), "kind": "logits"},
        decision=decision, preprocessing=prep, dataset="test data")
    folder.mkdir(parents=True, exist_ok=True)
    return write_manifest(Manifest(decision, prep, (entry,), dataset="test data"), folder)


def js_preprocess(manifest: Path, images: dict[str, np.ndarray], out: Path
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (resized uint8 pixels, model input bytes) from the JS core, for H x W x 3 uint8
    images (raw RGB files are the decoded pixels both sides share)."""
    from kd_core.io import write_json

    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, pixels in images.items():
        raw = out / f"{name}.rgb"
        raw.write_bytes(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
        jobs.append({"name": name, "path": str(raw), "width": int(pixels.shape[1]),
                     "height": int(pixels.shape[0])})
    write_json(out / "job.json", {"manifest": str(manifest), "out": str(out), "images": jobs})
    run_node(str(CLI), "preprocess", str(out / "job.json"))
    return {n: (np.fromfile(out / f"{n}.u8", dtype=np.uint8),
                np.fromfile(out / f"{n}.in", dtype=np.uint8)) for n in images}


def js_decide(manifest: Path, outputs: np.ndarray, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities N x K float64, decisions N uint8) from the JS core for N x K outputs."""
    from kd_core.io import write_json

    out.mkdir(parents=True, exist_ok=True)
    src = out / "outputs.bin"
    outputs.astype(outputs.dtype.newbyteorder("<")).tofile(src)
    write_json(out / "decide.json", {"manifest": str(manifest), "outputs": str(src),
                                     "dtype": outputs.dtype.name, "out": str(out / "decided")})
    run_node(str(CLI), "decide", str(out / "decide.json"))
    n, k = outputs.shape
    probs = np.fromfile(out / "decided.prob", dtype="<f8").reshape(n, k)
    return probs, np.fromfile(out / "decided.dec", dtype=np.uint8)
