"""``python -m benchmarks.browser``: the web demo in headless Chromium, as an on-device client.

    python -m benchmarks.browser --artifacts DIR --data-dir D [--limit N] --out R

Stages the export's web artefact in a temporary folder as ``python -m exporters.sync_demos`` does
(by default the INT8 graph with float32 I/O; its gate record travels with it, and an ungated
artefact is staged marked "not parity-checked"), serves ``web_demo/`` on 127.0.0.1 only, and has
Debian's Chromium (driven by selenium through chromedriver) classify each image of the split the
way a user does: picked in the page's file input, decoded by the browser, preprocessed and decided
by ``web_demo/core.js``, run by LiteRT.js (WebAssembly). The same artefact runs in host LiteRT on
the same images (PIL decoding, ``kd_core`` preprocessing). One row (``location: "browser"``,
runtime ``LiteRT.js V WASM``, device ``Chromium N on <CPU>``) is merged into ``R/results.json``
with the browser's accuracy, its ΔROC-AUC, decision agreement and max |Δp| against the host run,
and the median per-image latency of both; ``R/browser/`` gets the per-image predictions, the
resolved config and a screenshot of the page after the last image. Exit codes: 0 done and within
tolerance; 1 the page failed, or a decision differs from the host's, or max |Δp| exceeds
``--max-dp``; 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.inputs import BenchInputError
from kd_core import cli

log = logging.getLogger(__name__)

LOCATION = "browser"  # of the results row
WEB_DEMO = "web"  # the demo in exporters.sync_demos.APPS
SPLITS = ("train", "val", "holdout")


@dataclass(frozen=True)
class BrowserConfig:
    artifacts: str
    data_dir: str
    out: str
    artifact: str | None = None  # None: the web demo's default (exporters.sync_demos)
    limit: int | None = None
    split: str = "holdout"
    prepared_dir: str | None = None
    chromium: str | None = None  # None: `chromium` on PATH
    chromedriver: str | None = None  # None: `chromedriver` on PATH
    timeout_s: float = 120.0
    max_dp: float = 1e-3
    bootstrap: int = 1000
    seed: int = 42


@dataclass(frozen=True)
class BrowserRun:
    row: dict[str, Any]
    meta: dict[str, Any]
    arrays: dict[str, Any]  # per image: ids, labels, logits and times of both runs
    violations: tuple[str, ...]
    screenshot: bytes


# ---- inputs ---------------------------------------------------------------------------------


def check_inputs(cfg: BrowserConfig) -> tuple[Any, str, str]:
    """(manifest entry, chromium, chromedriver); every input checked before any work."""
    from benchmarks.chromium import LITERT_JS, find_browser
    from exporters.sync_demos import APPS, choose_artifact
    from kd_core.deploy import MANIFEST_NAME, load_manifest

    if cfg.limit is not None and cfg.limit < 2:
        raise BenchInputError(f"--limit must be >= 2, got {cfg.limit}")
    if not 0 < cfg.max_dp <= 1:
        raise BenchInputError(f"--max-dp must be in (0, 1], got {cfg.max_dp}")
    manifest = load_manifest(cfg.artifacts)
    entry = choose_artifact(manifest, APPS[WEB_DEMO], cfg.artifact,
                            str(Path(cfg.artifacts) / MANIFEST_NAME))
    if entry.decision.positive_index is None:
        raise BenchInputError(f"{entry.name}: a multi-class model has no positive class; "
                                "the browser benchmark compares positive-class probabilities")
    if not entry.file(cfg.artifacts).is_file():
        raise BenchInputError(f"{entry.file(cfg.artifacts)}: artefact {entry.name} is missing")
    if not (LITERT_JS / "package.json").is_file():
        raise BenchInputError(f"{LITERT_JS}: LiteRT.js is not installed; run `npm ci` in "
                                f"{LITERT_JS.parents[2]}")
    try:
        chromium, driver = find_browser(cfg.chromium, cfg.chromedriver)
    except FileNotFoundError as exc:
        raise BenchInputError(str(exc)) from None
    _check_out(Path(cfg.out))
    return entry, chromium, driver


def _check_out(out: Path) -> None:
    from benchmarks.android.results import load_results
    from kd_core.io import check_output_dir

    check_output_dir(out, "--out")
    if (out / "results.json").exists():  # its rows are kept: it must be readable
        load_results(out / "results.json")


def load_images(cfg: BrowserConfig) -> Any:
    """The split to classify (``SplitData``), cut to ``cfg.limit`` images."""
    from kd_core.data.ham10000 import load_split
    from kd_core.data.sources import resolve_prepared

    prepared = resolve_prepared(Path(cfg.data_dir), Path(cfg.prepared_dir)
                                if cfg.prepared_dir else None, seed=cfg.seed)
    split = load_split(prepared, cfg.split)
    n = len(split) if cfg.limit is None else cfg.limit
    split = type(split)(split.image_ids[:n], split.paths[:n], split.targets[:n], split.dx[:n])
    if len(split) < 2 or split.targets.min() == split.targets.max():
        raise BenchInputError(f"{cfg.data_dir}: the {cfg.split} split's first {len(split)} "
                                "images need both melanoma and other images (raise --limit)")
    return split


# ---- the two runs ---------------------------------------------------------------------------


def host_run(entry: Any, root: Path, paths: list[Path]) -> dict[str, Any]:
    """The artefact in host LiteRT (1 thread) on PIL-decoded images: logits, per-image ms."""
    import hashlib

    import numpy as np

    from kd_core.data.transforms import normalize, preprocess_uint8
    from runtimes import load_runner

    runner = load_runner(entry, Path(root), threads=1)
    logits, times, digests = [], [], []
    for path in paths:
        pixels = preprocess_uint8(path, entry.preprocessing)
        x = normalize(pixels[None], entry.preprocessing)
        start = time.perf_counter()
        logits.append(runner.predict(x)[0])
        times.append((time.perf_counter() - start) * 1000.0)
        digests.append(hashlib.sha256(pixels.tobytes()).hexdigest())
    return {"logits": np.stack(logits), "ms": np.asarray(times), "sha256": digests,
            "runtime": runner.runtime}


def browser_run(cfg: BrowserConfig, entry: Any, paths: list[Path], chromium: str,
                driver: str) -> dict[str, Any]:
    """The page in Chromium on the same image files: its records, its facts, a screenshot."""
    from benchmarks.chromium import PageSession, serve
    from exporters.sync_demos import Target, sync

    with tempfile.TemporaryDirectory(prefix="edgekd-web-") as tmp:
        sync(Path(cfg.artifacts), [Target(WEB_DEMO, Path(tmp), entry.name)], allow_ungated=True)
        with serve(Path(tmp)) as url, PageSession(url, chromium, driver, cfg.timeout_s) as page:
            log.info("Chromium %s: %s loaded in %.0f ms", page.info["browser_version"],
                     page.info["name"], page.info["loadMs"])
            records = []
            for i, path in enumerate(paths, start=1):
                records.append(page.classify(path))
                if i % 50 == 0 or i == len(paths):
                    log.info("browser: %d / %d images", i, len(paths))
            shot = Path(tmp) / "screenshot.png"
            page.screenshot(shot)
            return {"records": records, "info": page.info, "screenshot": shot.read_bytes()}


# ---- comparison and the row -----------------------------------------------------------------


def versus_host(entry: Any, records: list[dict[str, Any]], host: dict[str, Any],
                y: Any) -> dict[str, Any]:
    """How the page's outputs and decisions compare with host LiteRT's on the same images."""
    import numpy as np

    from kd_core.metrics import roc_auc

    decision = entry.decision
    logits = np.array([r["logits"] for r in records], dtype=np.float64)
    p_page = np.array([r["positiveProbability"] for r in records], dtype=np.float64)
    dec_page = np.array([r["positive"] for r in records], dtype=bool)
    p_host = decision.positive_probability(host["logits"])
    dec_host = decision.decide(host["logits"])
    return {
        "roc_auc_delta_vs_host": roc_auc(y, p_page) - roc_auc(y, p_host),
        "decision_agreement_vs_host": float(np.mean(dec_page == dec_host)),
        "decisions_differing_vs_host": int(np.sum(dec_page != dec_host)),
        "max_abs_dp_vs_host": float(np.max(np.abs(p_page - p_host))),
        "max_abs_logit_diff_vs_host": float(np.max(np.abs(logits - host["logits"]))),
        "identical_logits_vs_host": bool(np.array_equal(logits, host["logits"])),
        "identical_pixels_vs_host": int(sum(r["pixelsSha256"] == h for r, h in zip(
            records, host["sha256"], strict=True))),
        # the page's JS decision against kd_core.deploy.Decision on the page's own logits
        "max_abs_dp_js_vs_python": float(np.max(np.abs(
            p_page - decision.positive_probability(logits)))),
        "decisions_differing_js_vs_python": int(np.sum(dec_page != decision.decide(logits))),
    }


def build_row(cfg: BrowserConfig, entry: Any, page: dict[str, Any], host: dict[str, Any],
              y: Any) -> dict[str, Any]:
    import numpy as np

    from benchmarks.accuracy import score
    from benchmarks.latency import summarize
    from runtimes import host_device

    info, records = page["info"], page["records"]
    logits = np.array([r["logits"] for r in records], dtype=np.float64)
    accuracy = score(logits, y, entry.decision, cfg.bootstrap, cfg.seed)
    accuracy.update(versus_host(entry, records, host, y))
    major = str(info.get("browser_version") or "?").split(".")[0]
    browser_ms = [r["inferenceMs"] for r in records]
    return {
        "name": entry.name, "role": "artifact", "format": entry.format,
        "precision": entry.precision, "runtime": f"LiteRT.js {info['litertVersion']} WASM",
        "device": f"Chromium {major} on {host_device()}", "location": LOCATION,
        "size_bytes": entry.bytes, "status": "ok",
        "latency": {"1": summarize(browser_ms)}, "load_ms": info["loadMs"],
        "first_ms": info["warmupMs"], "peak_memory_mb": None, "accuracy": accuracy,
        "host": {"runtime": host["runtime"], "device": host_device(),
                 "latency": {"1": summarize(list(host["ms"]))}},
        "timed": "page: LiteRT.js model.run and reading its output, per image; host: the "
                 "LiteRT runner's predict, per image, 1 thread",
        "images": len(records), "path": str(entry.file(cfg.artifacts)),
    }


def violations(row: dict[str, Any], max_dp: float) -> tuple[str, ...]:
    acc, out = row["accuracy"], []
    if acc["decisions_differing_vs_host"]:
        out.append(f"{acc['decisions_differing_vs_host']} of {row['images']} decisions differ "
                   "from host LiteRT's")
    if acc["max_abs_dp_vs_host"] > max_dp:
        out.append(f"max |Δp| vs host LiteRT {acc['max_abs_dp_vs_host']:.3g} > {max_dp}")
    return tuple(out)


def run_browser(cfg: BrowserConfig) -> BrowserRun:
    """Classify the split in Chromium and on the host; the library entry point of the CLI."""
    import numpy as np

    from benchmarks.harness import labels_for

    entry, chromium, driver = check_inputs(cfg)
    split = load_images(cfg)
    y = labels_for(entry, split)
    log.info("host LiteRT: %s on %d %s images", entry.name, len(split), cfg.split)
    host = host_run(entry, Path(cfg.artifacts), list(split.paths))
    page = browser_run(cfg, entry, list(split.paths), chromium, driver)
    row = build_row(cfg, entry, page, host, y)
    info = page["info"]
    meta = {"chromium": info.get("browser_version"), "user_agent": info.get("userAgent"),
            "litertjs": info.get("litertVersion"), "artifact": entry.name,
            "data": str(cfg.data_dir), "split": cfg.split, "n": len(split),
            "config": asdict(cfg), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    arrays = {"image_ids": np.asarray(split.image_ids), "labels": np.asarray(y),
              "browser_logits": np.array([r["logits"] for r in page["records"]]),
              "host_logits": host["logits"], "host_ms": host["ms"],
              "browser_ms": np.array([r["inferenceMs"] for r in page["records"]])}
    return BrowserRun(row, meta, arrays, violations(row, cfg.max_dp), page["screenshot"])


# ---- outputs and CLI ------------------------------------------------------------------------


def save_run(run: BrowserRun, out: Path) -> Path:
    """Merge the row into ``out/results.json`` (a row with the same name, runtime, device and
    location is replaced; every other row kept, and ``benchmarks.run`` keeps this one and
    ``meta.browser`` when it rewrites the host rows); write ``out/browser/``. Returns the
    results.json path."""
    import numpy as np

    from benchmarks.android.results import load_results, row_key
    from kd_core.io import atomic_path, atomic_write_bytes, write_json

    path = out / "results.json"
    data = load_results(path) if path.exists() else {"meta": {}, "rows": []}
    data["rows"] = [r for r in data["rows"] if row_key(r) != row_key(run.row)] + [run.row]
    data["meta"][LOCATION] = run.meta
    write_json(path, data)
    with atomic_path(out / "browser" / "predictions.npz") as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **run.arrays)
    write_json(out / "browser" / "config.json", run.meta["config"])
    atomic_write_bytes(out / "browser" / "screenshot.png", run.screenshot)
    return path


def summary(run: BrowserRun) -> str:
    r, acc = run.row, run.row["accuracy"]
    exact = " (identical logits)" if acc["identical_logits_vs_host"] else ""
    return (f"{r['name']} in {r['device']}, {r['runtime']}: {r['images']} images\n"
            f"  ROC-AUC {acc['roc_auc']:.4f} (Δ vs host LiteRT {acc['roc_auc_delta_vs_host']:+.2g})"
            f"; decisions agree {acc['decision_agreement_vs_host']:.1%}; max |Δp| "
            f"{acc['max_abs_dp_vs_host']:.3g}{exact}; pixels identical "
            f"{acc['identical_pixels_vs_host']}/{r['images']}\n"
            f"  median per-image latency: browser {r['latency']['1']['p50_ms']:.2f} ms, host "
            f"{r['host']['latency']['1']['p50_ms']:.2f} ms ({r['host']['runtime']}, 1 thread)")


def build_parser() -> argparse.ArgumentParser:
    d = BrowserConfig("", "", "")
    p = cli.parser("python -m benchmarks.browser",
                   "Run the web demo's model in headless Chromium (LiteRT.js, WebAssembly) on "
                   "real images and compare it with host LiteRT.",
                   "Needs Debian's chromium and chromium-driver, and `npm ci` in web_demo/.")
    p.add_argument("--artifacts", required=True, metavar="DIR", help="export folder (manifest)")
    p.add_argument("--data-dir", required=True, metavar="D",
                   help="HAM10000 folder (splits prepared or reused) or a prepared folder")
    p.add_argument("--out", required=True, metavar="R", help="results folder (results.json)")
    p.add_argument("--artifact", metavar="NAME", help="TFLite artefact (default: int8_float_io)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of the split")
    p.add_argument("--split", default=d.split, choices=SPLITS)
    p.add_argument("--prepared-dir", metavar="P", help="where the splits are prepared")
    p.add_argument("--chromium", metavar="PATH", help="Chromium executable (default: on PATH)")
    p.add_argument("--chromedriver", metavar="PATH", help="ChromeDriver (default: on PATH)")
    p.add_argument("--timeout", type=float, default=d.timeout_s, metavar="S",
                   help="seconds allowed for the page to load or classify one image")
    p.add_argument("--max-dp", type=float, default=d.max_dp,
                   help="largest |Δp| vs host LiteRT accepted")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="ROC-AUC CI resamples")
    p.add_argument("--seed", type=int, default=d.seed, help="split and bootstrap seed")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def _main(args: argparse.Namespace) -> int:
    cfg = BrowserConfig(args.artifacts, args.data_dir, args.out, args.artifact, args.limit,
                        args.split, args.prepared_dir, args.chromium, args.chromedriver,
                        args.timeout, args.max_dp, args.bootstrap, args.seed)
    run = run_browser(cfg)
    path = save_run(run, Path(cfg.out))
    print(f"{summary(run)}\nresults: {path}")
    if run.violations:
        raise cli.JobFailed("; ".join(run.violations))
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
