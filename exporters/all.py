"""``python -m exporters.all CKPT``: one checkpoint -> every on-device format plus manifest.json.

Each format runs isolated: a failure is reported and the others go on; the exit code is 1 if any
requested artefact failed, 2 for bad input (checked before any work), 0 otherwise. Artefacts are
written atomically, so a failed export leaves no file behind. ``python -m exporters.<format>``
runs one format with the same options.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from exporters import Artifact, get_exporter, list_exporters
from exporters.base import (
    ExportSettings,
    Failure,
    PartialExport,
    Stopwatch,
    artefact_precisions,
    artifact_name,
    describe,
)
from exporters.calibration_data import DEFAULT_SAMPLES, CalibrationDataError, load_calibration
from exporters.int8_cli import add_int8_arguments, int8_options

FAMILIES = ("fp32", "int8", "w8a8")
DEFAULT_FAMILIES = "fp32,int8"
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class UsageError(ValueError):
    """Bad command-line input: reported before any export starts."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_parser(prog: str = "python -m exporters.all", fixed_format: str | None = None
                 ) -> argparse.ArgumentParser:
    what = f"the {fixed_format} format" if fixed_format else "every on-device format"
    p = argparse.ArgumentParser(
        prog=prog, description=f"Export a KD checkpoint to {what}, with manifest.json.",
        epilog="INT8 and w8a8 need real calibration images (--calib-data; Core ML's w8 "
               "does not): without them the command stops before any work, so pass "
               "--calib-data or --precisions fp32. Exit codes: 0 all written, 1 some export "
               "failed (the others are still written, manifest.json lists both), 2 bad input.")
    p.add_argument("checkpoint", type=Path, metavar="CKPT",
                   help="checkpoint .pth of the KD core (arch, num_classes, labels, state_dict, "
                        "preprocessing, temperature, threshold)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: <CKPT folder>/<CKPT name>_export); an existing "
                        "manifest there from the same checkpoint keeps its other formats")
    if fixed_format is None:
        p.add_argument("--formats", default=",".join(list_exporters()),
                       help="comma-separated formats (default: %(default)s)")
    p.add_argument("--precisions", default=DEFAULT_FAMILIES,
                   help="comma-separated: fp32 (Core ML: fp16), int8 (full INT8: weights and "
                        "activations; Core ML: w8, 8-bit weights with fp16 activations) and "
                        "w8a8 (Core ML only: 8-bit weights and activations via PT2E, larger and "
                        "slower to export) (default: %(default)s)")
    p.add_argument("--calib-data", type=Path, default=None, metavar="DIR",
                   help="INT8 calibration images: a prepared split folder (train split), a "
                        "HAM10000 folder (splits prepared, train split used) or a plain image "
                        "folder (no class balancing)")
    p.add_argument("--calib-samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help="calibration images, class-balanced when labels are known "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, metavar="S",
                   help="seed of the calibration sample (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads for calibration and tracing; 1 avoids thread "
                        "oversubscription on a shared machine (default: %(default)s)")
    p.add_argument("--jobs", default="auto", metavar="N",
                   help="worker processes exporting formats at once (a crash there fails only "
                        "the format it was on); 1 runs everything in this process; auto: the "
                        "cores this process may use, at most 2, since more workers add memory "
                        "but little speed (default: %(default)s)")
    add_int8_arguments(p)
    p.add_argument("--verbose", action="store_true",
                   help="show the converters' own output instead of a log tail on failure")
    return p


@dataclass(frozen=True)
class Job:
    formats: tuple[str, ...]
    families: tuple[str, ...]
    out_dir: Path
    verbose: bool


def _parse_job(args: argparse.Namespace, fixed: tuple[str, ...] | None) -> Job:
    formats = fixed or _csv(args.formats)
    known = list_exporters()
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise UsageError(f"unknown format(s) {', '.join(unknown) or '(none given)'}; "
                         f"known formats: {', '.join(known)}")
    families = _csv(args.precisions)
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise UsageError(f"unknown precision(s) {', '.join(bad) or '(none given)'}; "
                         f"use {', '.join(FAMILIES)}")
    ckpt: Path = args.checkpoint
    out = args.out if args.out is not None else ckpt.parent / f"{ckpt.stem}_export"
    return Job(tuple(dict.fromkeys(formats)), tuple(dict.fromkeys(families)), out, args.verbose)


def resolve_jobs(value: str) -> int:
    """``--jobs``: a positive number, or "auto" (the usable cores, at most 2)."""
    if value == "auto":
        usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)
        return max(1, min(2, usable))
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--jobs must be a positive number or auto, got {value!r}")
    return int(value)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test."):
            pass
    except OSError as exc:
        raise UsageError(f"{out}: output folder cannot be written ({exc.strerror or exc})"
                         ) from None


def load_settings(path: Path, families: tuple[str, ...] = ("fp32", "int8")
                  ) -> tuple[Any, ExportSettings, int]:
    """(eval model, export settings, num_classes) from a checkpoint; UsageError if it is bad."""
    from kd_core.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from kd_core.data.transforms import Preprocessing
    from kd_core.io import sha256_file

    try:
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, path)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    cfg = ExportSettings(
        arch=str(ckpt["arch"]), labels=tuple(str(x) for x in ckpt["labels"]),
        positive_index=int(ckpt["positive_index"]),
        preprocessing=Preprocessing.from_dict(ckpt["preprocessing"]),
        temperature=float(ckpt["temperature"]), threshold=float(ckpt["threshold"]),
        checkpoint_sha256=sha256_file(path), checkpoint_path=str(path), precisions=families)
    return model, cfg, int(ckpt["num_classes"])


def _calibration(args: argparse.Namespace, job: Job, cfg: ExportSettings) -> Any:
    needed = [f for f in job.formats
              if set(get_exporter(f).needs_calibration) & set(job.families)]
    if not needed:
        return None
    if args.calib_data is None:
        raise UsageError(
            f"INT8 ({', '.join(needed)}) needs real calibration images and none were given: "
            "pass --calib-data DIR "
            "(a prepared split folder, a HAM10000 folder or a folder of training images), "
            "or export float artefacts only with --precisions fp32")
    try:
        return load_calibration(args.calib_data, cfg.preprocessing, cfg.labels,
                                args.calib_samples, args.seed)
    except CalibrationDataError as exc:
        raise UsageError(str(exc)) from None


@contextlib.contextmanager
def _captured(enabled: bool) -> Iterator[Path | None]:
    """Send the converters' chatter (fd 1 and 2, and Python's sys.stdout/err) to a temp log."""
    if not enabled:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="edgekd-export-", suffix=".log")
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with open(fd, "w", buffering=1, closefd=False) as text, \
                contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            yield Path(name)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)


def _tail(log: Path | None, lines: int = 12) -> str:
    if log is None or not log.is_file():
        return ""
    text = log.read_text(errors="replace").strip().splitlines()
    return "\n".join("    | " + line for line in text[-lines:])


def _call(spec: Any, model: Any, example: tuple[Any, ...], cfg: ExportSettings, job: Job,
          wanted: list[str]) -> tuple[list[Artifact], list[Failure]]:
    try:
        return spec.export(model, example, job.out_dir, cfg), []
    except PartialExport as exc:
        return exc.artifacts, exc.failures
    except Exception as exc:
        traceback.print_exc()
        return [], [Failure(spec.name, p, describe(exc)) for p in wanted]


def run_format(fmt: str, model: Any, cfg: ExportSettings, job: Job
               ) -> tuple[list[Artifact], list[Failure], str]:
    """Run one format with its output captured: (artefacts, failures, log tail on failure)."""
    import torch

    size = cfg.preprocessing.size
    example = (torch.from_numpy(cfg.calibration.normalized()[:1]) if cfg.calibration is not None
               else torch.zeros(1, 3, size, size),)
    with _captured(not job.verbose) as log:
        arts, failures = _call(get_exporter(fmt), model, example, cfg, job,
                               artefact_precisions(fmt, job.families))
        if cfg.int8.active():
            from exporters.int8.finish import finish_format

            arts = finish_format(fmt, model, example, cfg, job.out_dir, arts)
    tail = _tail(log) if failures else ""
    if log is not None:
        log.unlink(missing_ok=True)
    return arts, failures, tail


def _print_outcome(fmt: str, arts: list[Artifact], failures: list[Failure], tail: str) -> None:
    from kd_core.io import path_bytes

    for a in arts:
        print(f"  {a.name}: {path_bytes(a.path) / 1e6:.2f} MB in {a.export_seconds:.1f} s",
              flush=True)
    for f in failures:
        print(f"  FAILED {fmt} {f.precision}: {f.error}", flush=True)
    if tail:
        print(f"  last lines of the {fmt} log:\n{tail}", flush=True)


def summary_table(arts: list[Artifact], failures: list[Failure]) -> str:
    from kd_core.io import path_bytes

    rows = [(a.format, a.precision, "ok", f"{path_bytes(a.path) / 1e6:.2f}",
             f"{a.export_seconds:.1f}", a.path.name) for a in arts]
    rows += [(f.format, f.precision, "FAILED", "-", "-", f.error[:60]) for f in failures]
    head = ("format", "precision", "status", "MB", "seconds", "file / error")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt_row.format(*head), fmt_row.format(*("-" * w for w in widths))]
    lines += [fmt_row.format(*r) for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class ExportResult:
    artifacts: list[Artifact]
    failures: list[Failure]
    manifest_path: Path
    seconds: float


def export_all(model: Any, cfg: ExportSettings, out_dir: Path, formats: tuple[str, ...],
               verbose: bool = False, num_classes: int | None = None, jobs: int = 1,
               checkpoint: Path | None = None, threads: int = 1) -> ExportResult:
    """Export ``model`` to each format (precision families ``cfg.precisions``) in ``out_dir``,
    isolating failures, and write the manifest. The library entry point behind the CLI.

    ``jobs > 1`` runs formats in worker processes (they rebuild the model from ``checkpoint``);
    their artefacts come back without the torch ``reference``.
    """
    from exporters.manifest import build_manifest, merge_previous, write_manifest

    clock = Stopwatch()
    job = Job(formats, cfg.precisions, out_dir, verbose)
    results: dict[str, tuple[list[Artifact], list[Failure]]] = {}
    if jobs > 1 and len(formats) > 1 and checkpoint is not None:
        from exporters.parallel import Task, run_parallel, share_out

        groups = share_out(formats, jobs)
        print(f"exporting in {len(groups)} worker processes: "
              + "; ".join(", ".join(g) for g in groups), flush=True)
        tasks = [Task(g, checkpoint, cfg, out_dir, verbose, threads) for g in groups]
        wanted = {f: artefact_precisions(f, cfg.precisions) for f in formats}
        for o in run_parallel(tasks, jobs, wanted):
            print(f"{o.fmt}: done", flush=True)
            _print_outcome(o.fmt, o.artifacts, o.failures, o.log_tail)
            results[o.fmt] = (o.artifacts, o.failures)
    else:
        for i, fmt in enumerate(formats, start=1):
            print(f"[{i}/{len(formats)}] {fmt}: exporting "
                  f"{', '.join(artefact_precisions(fmt, cfg.precisions))} ...", flush=True)
            arts, failed, tail = run_format(fmt, model, cfg, job)
            _print_outcome(fmt, arts, failed, tail)
            results[fmt] = (arts, failed)
    arts = [a for f in formats for a in results[f][0]]
    failures = [x for f in formats for x in results[f][1]]
    manifest = build_manifest(arts, cfg, out_dir, failures, num_classes)
    attempted = {artifact_name(cfg, f, p) for f in formats
                 for p in artefact_precisions(f, cfg.precisions)}
    path = write_manifest(merge_previous(manifest, out_dir, attempted), out_dir)
    return ExportResult(arts, failures, path, clock.seconds())


def _target_sensitivity(path: Path) -> float:
    from kd_core.checkpoint import decision_of, load_checkpoint

    target = decision_of(load_checkpoint(path), path).target_sensitivity
    return 0.95 if target is None else float(target)


def run(args: argparse.Namespace, fixed: tuple[str, ...] | None = None) -> int:
    import torch

    clock = Stopwatch()
    job = _parse_job(args, fixed)
    jobs = resolve_jobs(args.jobs)
    model, cfg, num_classes = load_settings(args.checkpoint, job.families)
    _check_writable(job.out_dir)
    cfg = replace(cfg, calibration=_calibration(args, job, cfg))
    try:
        cfg = replace(cfg, int8=int8_options(args, cfg, _target_sensitivity(args.checkpoint)))
    except ValueError as exc:  # bad --repair/--val-data/--speed-plan combination or folder
        raise UsageError(str(exc)) from None
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, args.threads))
    result = export_all(model, cfg, job.out_dir, job.formats, job.verbose, num_classes,
                        jobs=jobs, checkpoint=args.checkpoint,
                        threads=args.threads)
    from exporters.int8.finish import summary_lines

    finished = summary_lines(result.artifacts)
    if finished:
        print("\nINT8 precision plans and repairs:\n" + "\n".join(finished))
    print(f"\n{summary_table(result.artifacts, result.failures)}\n\n"
          f"manifest: {result.manifest_path}  ({len(result.artifacts)} written, "
          f"{len(result.failures)} failed; {result.seconds:.1f} s exporting, "
          f"{clock.seconds():.1f} s in all)")
    return EXIT_FAILED if result.failures else 0


def main(argv: list[str] | None = None, formats: tuple[str, ...] | None = None) -> int:
    fixed = formats[0] if formats and len(formats) == 1 else None
    prog = f"python -m exporters.{fixed}" if fixed else "python -m exporters.all"
    args = build_parser(prog, fixed).parse_args(argv)
    try:
        return run(args, formats)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
