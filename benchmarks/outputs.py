"""The harness's outputs: the results folder and the gate verdicts beside the manifest.

``save_results`` writes ``R/predictions.npz``, ``R/config.json``, ``R/results.json`` (strict
JSON: a non-finite figure is written as null; phone rows already there are kept), the report
(``results.md``, ``results.csv``, plots), and records a ``kd_core.deploy.GateVerdict`` for every
gated artefact in the export folder's ``gate.json``. Every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import BenchConfig, Results


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def gate_verdicts(results: Results, cfg: BenchConfig, results_path: Path) -> list[Any]:
    """One ``GateVerdict`` per artefact the gate checked (pass or fail, with its reasons),
    bound to the sha256 of the file that was scored."""
    from kd_core.deploy import GateVerdict

    gate = results.gate
    if gate is None:
        return []
    meta = results.meta
    by_name = {r["name"]: r for r in results.rows if r["role"] == "artifact"}
    return [GateVerdict(
        name=name, verdict="pass" if not gate.reasons(name) else "fail",
        sha256=str(results.digests.get(name) or by_name[name].get("sha256") or "missing"),
        created=str(meta["created"]), data=Path(str(cfg.data_dir)).name, split=cfg.split,
        n=int(meta["n"]), reasons=gate.reasons(name), results=str(results_path))
        for name in gate.checked]


def save_results(results: Results, cfg: BenchConfig) -> Path:
    """Write the results folder and the gate verdicts; returns ``R/results.json``."""
    from benchmarks.report import write_report
    from kd_core.config import save_config
    from kd_core.deploy import manifest_path, record_verdicts
    from kd_core.io import atomic_path, write_json

    out = Path(cfg.out)
    path = out / "results.json"
    data = finite(results.to_json())
    if path.is_file():
        from benchmarks.android.results import load_results

        old = load_results(path)
        data["rows"] += [r for r in old["rows"] if r.get("location", "host") != "host"]
        for key in ("android_devices", "browser"):  # phone and browser (benchmarks.browser)
            if key in old["meta"]:
                data["meta"][key] = old["meta"][key]
    arrays = {"y_pos": results.y_pos, "y_dx": results.y_dx,
              "image_ids": np.asarray(results.image_ids, dtype=str),
              **{f"logits__{k}": v for k, v in results.logits.items()}}
    with atomic_path(out / "predictions.npz") as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
    save_config(cfg, out / "config.json")
    write_json(path, data)
    write_report(out)
    verdicts = gate_verdicts(results, cfg, path)
    if verdicts:
        record_verdicts(manifest_path(cfg.artifacts).parent, verdicts)
    return path
