"""Drive the official benchmark tools on a phone over adb and collect phone rows.

Order: host checks (artefacts, binaries: ELF, exec bit) -> adb and device (serial, state,
getprop, thermal, ABI) -> push binaries and models to ``/data/local/tmp/edgekd`` -> run each model
at each thread count -> parse -> remove ``/data/local/tmp/edgekd`` (always, in ``finally``).
"""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.android.adb import (
    REMOTE_DIR,
    Adb,
    AdbError,
    DeviceInfo,
    check_abi,
    check_binary,
    find_adb,
    read_device_info,
    read_thermal,
    select_device,
)
from benchmarks.android.parsers import PARSERS, DeviceBenchmark, ParseError
from benchmarks.android.results import combine_rows, error_row, load_results, to_result_row
from benchmarks.inputs import BenchInputError

log = logging.getLogger(__name__)

# artefact format -> (tool, config field holding the binary's host path)
TOOLS = {"tflite": "benchmark_model", "executorch": "executor_runner"}
SUFFIX_FORMATS = {".tflite": "tflite", ".pte": "executorch"}


class BenchError(BenchInputError):
    """Bad input for an Android benchmark run (artefacts, options); exit 2."""


@dataclass(frozen=True)
class AndroidBenchConfig:
    artifacts: str
    tflite_benchmark: str | None = None
    executorch_runner: str | None = None
    serial: str | None = None
    adb: str | None = None
    threads: tuple[int, ...] = (1, 4)
    runs: int = 50
    warmup: int = 5
    out: str | None = None
    timeout_s: float = 600.0
    taskset: str | None = None  # CPU mask for `taskset`, for example f0 for the big cores

    def binary(self, tool: str) -> str | None:
        return {"benchmark_model": self.tflite_benchmark,
                "executor_runner": self.executorch_runner}[tool]


@dataclass(frozen=True)
class AndroidRun:
    device: DeviceInfo
    records: tuple[DeviceBenchmark, ...]
    rows: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)


def load_artifacts(folder: str | Path) -> list[dict[str, Any]]:
    """Artefact entries of ``folder``'s manifest (``kd_core.deploy.load_manifest``), each file
    checked against the manifest's sha256; or the bare .tflite/.pte files of a folder without a
    manifest."""
    from benchmarks.integrity import artifact_problem, file_digest
    from kd_core.deploy import load_manifest, manifest_path

    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder}: artefact folder not found")
    if not manifest_path(folder).exists():
        files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIX_FORMATS)
        return [{"name": p.stem, "path": p.name, "format": SUFFIX_FORMATS[p.suffix],
                 "precision": None, "bytes": p.stat().st_size} for p in files]
    entries = []
    for entry in load_manifest(folder).artifacts:
        problem = artifact_problem(entry, folder, file_digest(entry.file(folder)))
        if problem is not None:
            raise BenchError(problem.removeprefix("error: "))
        entries.append(entry.to_dict())
    return entries


def plan_jobs(cfg: AndroidBenchConfig,
              artifacts: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(artefact entry, tool) pairs for which the user gave a binary."""
    jobs = [(a, TOOLS[a["format"]]) for a in artifacts
            if a["format"] in TOOLS and cfg.binary(TOOLS[a["format"]])]
    if not jobs:
        given = [t for t in TOOLS.values() if cfg.binary(t)]
        raise BenchError(f"{cfg.artifacts}: no artefact that {' or '.join(given)} can run "
                         "(expected .tflite for --tflite-benchmark, .pte for --executorch-runner)")
    return jobs


def benchmark_command(cfg: AndroidBenchConfig, tool: str, model: str, threads: int) -> str:
    """The shell command that times ``model`` (a path on the phone) with ``threads`` threads."""
    binary = f"{REMOTE_DIR}/{tool}"
    if tool == "benchmark_model":
        args = [binary, f"--graph={model}", f"--num_threads={threads}", "--use_xnnpack=true",
                f"--num_runs={cfg.runs}", f"--warmup_runs={cfg.warmup}",
                "--report_peak_memory_footprint=true"]
    else:
        args = [binary, f"--model_path={model}", f"--num_executions={cfg.runs}",
                f"--cpu_threads={threads}"]
    prefix = ["taskset", cfg.taskset] if cfg.taskset else []
    return " ".join(shlex.quote(a) for a in [*prefix, *args])


def run_one(adb: Adb, cfg: AndroidBenchConfig, tool: str, model: str, threads: int,
            device: str) -> DeviceBenchmark:
    """Run one timing on the phone and parse it; ParseError quotes the output's last lines."""
    proc = adb.shell(benchmark_command(cfg, tool, model, threads), timeout_s=cfg.timeout_s,
                     check=False)
    text = proc.stdout + "\n" + proc.stderr
    delegate = "xnnpack" if tool == "benchmark_model" else None
    try:
        return PARSERS[tool](text, model_path=model, threads=threads, delegate=delegate,
                             device=device)
    except ParseError as exc:
        code = f" (exit {proc.returncode})" if proc.returncode else ""
        raise ParseError(f"{tool} on {Path(model).name} with {threads} thread(s){code}: {exc}"
                         ) from None


def host_checks(cfg: AndroidBenchConfig) -> tuple[list[tuple[dict[str, Any], str]], dict[str, str]]:
    """Everything checked before adb is touched: options, output folder, artefacts, binaries
    (ELF, exec bit)."""
    from benchmarks.inputs import check_counts, check_threads
    from kd_core.io import check_output_dir

    if not cfg.tflite_benchmark and not cfg.executorch_runner:
        raise BenchError("give --tflite-benchmark PATH (and/or --executorch-runner PATH)")
    check_threads(cfg.threads)
    check_counts(runs=(cfg.runs, 1), warmup=(cfg.warmup, 0))
    if not cfg.timeout_s > 0:
        raise BenchError(f"--timeout must be > 0 seconds, got {cfg.timeout_s}")
    if cfg.out:
        check_output_dir(cfg.out, "--out")
        if (Path(cfg.out) / "results.json").is_file():  # merged into: readable, before work
            load_results(Path(cfg.out) / "results.json")
    jobs = plan_jobs(cfg, load_artifacts(cfg.artifacts))
    abis = {tool: check_binary(path) for tool in TOOLS.values() if (path := cfg.binary(tool))}
    return jobs, abis


def cleanup(adb: Adb) -> None:
    """Remove everything pushed; warn (never raise) when the phone is gone."""
    try:
        adb.remove(REMOTE_DIR)
    except AdbError as exc:
        log.warning("warning: could not remove %s from the phone: %s", REMOTE_DIR, exc)


def run_android_benchmarks(cfg: AndroidBenchConfig) -> AndroidRun:
    """Push, run, parse and clean up; see the module docstring for the order of steps."""
    from tqdm import tqdm

    jobs, abis = host_checks(cfg)
    adb = select_device(find_adb(cfg.adb), cfg.serial, cfg.timeout_s)
    info = read_device_info(adb)
    for tool, abi in abis.items():
        check_abi(cfg.binary(tool) or "", abi, info)
    device = info.describe()
    records: list[DeviceBenchmark] = []
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        adb.shell(f"mkdir -p {REMOTE_DIR}")
        for tool in abis:
            adb.push(cfg.binary(tool) or "", f"{REMOTE_DIR}/{tool}")
            adb.shell(f"chmod 755 {REMOTE_DIR}/{tool}")
        bar = tqdm(total=len(jobs) * len(cfg.threads), desc=f"phone {info.model}", unit="run",
                   file=sys.stderr, disable=None)
        for artifact, tool in jobs:
            local = Path(cfg.artifacts) / artifact["path"]
            remote = f"{REMOTE_DIR}/{local.name}"
            adb.push(local, remote)
            for threads in cfg.threads:
                try:
                    rec = run_one(adb, cfg, tool, remote, threads, device)
                    records.append(rec)
                    rows.append(to_result_row(rec, artifact))
                except ParseError as exc:
                    errors.append(str(exc))
                    rows.append(error_row(artifact, tool, device, str(exc).splitlines()[0]))
                bar.update(1)
        bar.close()
        thermal_after = read_thermal(adb)
    finally:
        cleanup(adb)
    meta = {**info.to_dict(), "description": device, "thermal_after": thermal_after,
            "threads": list(cfg.threads), "runs": cfg.runs, "warmup": cfg.warmup,
            "taskset": cfg.taskset, "remote_dir": REMOTE_DIR}
    return AndroidRun(info, tuple(records), tuple(combine_rows(rows)), tuple(errors), meta)
