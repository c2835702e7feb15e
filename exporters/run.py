"""Export a checkpoint to on-device formats: the library behind ``python -m exporters.all``.

    result = export_checkpoint(Path("runs/student/best.pth"), Path("runs/export"),
                               ExportOptions(formats=("tflite", "onnx"), calib_data=data))

Every argument, the checkpoint (readable, consistent and calibrated, unless
``allow_uncalibrated``), the output folder (writable; an existing ``manifest.json`` readable) and
the calibration images are checked before any export starts; bad input raises a
``kd_core.cli.BadInput`` subclass naming the flag, file or value. Each format runs isolated (a
failure is recorded and the others go on), in this process or in worker processes
(``jobs``). ``manifest.json`` is merged and rewritten atomically after each format, so the
folder and its manifest agree even after an interrupt; an interrupt stops the workers and
removes every temporary file before it propagates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters import get_exporter, list_exporters, precision_families
from exporters.base import (
    STAGING_PREFIX,
    Artifact,
    ExportSettings,
    Failure,
    Stopwatch,
    UsageError,
    staging_dir,
)
from exporters.calibration_data import DEFAULT_SAMPLES, check_sample_count, load_calibration
from exporters.job import FormatResult, load_settings, run_format
from exporters.manifest import Merge, merge_manifest, read_previous
from kd_core.deploy import Manifest, manifest_path, write_manifest
from kd_core.io import path_bytes
from kd_core.parity import Tolerances

if TYPE_CHECKING:
    from exporters.int8.options import Int8Options
    from exporters.int8.speed import SiteTimings

    Int8Checked = tuple[str, str, tuple[SiteTimings, ...]]  # repair mode, speed plan, timings

log = logging.getLogger(__name__)
DEFAULT_BUDGET_MIN = 10.0  # the repair ladder's wall-clock minutes per format (the issue's)
REPAIR_MODES = ("auto", "off", "recalibrate")  # --repair: the ladder, none, its rung 1
DEFAULT_SPEED_PLAN = "auto"  # the stored timings of known architectures; see README/MANIFEST


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...] | None = None  # None: every registered format
    precisions: tuple[str, ...] = ("fp32", "int8")  # families: fp32, int8, w8a8
    calib_data: Path | None = None  # needed by INT8 (and Core ML's w8a8)
    calib_samples: int = DEFAULT_SAMPLES
    seed: int = 42  # of the calibration sample and torch
    jobs: int | None = None  # worker processes; None: the usable cores, at most 2; 1: here
    threads: int = 1  # torch CPU threads
    verbose: bool = False  # the converters' own output on the console
    allow_uncalibrated: bool = False  # export a checkpoint without a calibration record
    allow_few_calib_images: bool = False  # calibrate INT8 on fewer than MIN_SAMPLES images
    val_data: Path | None = None  # labelled validation images (its val split) for INT8 repair
    repair: str | None = None  # auto | off | recalibrate; None: auto with val_data, else off
    repair_budget_min: float = DEFAULT_BUDGET_MIN
    qat_steps: int = 0  # the ladder's opt-in QAT rung (0: off)
    repair_tolerances: Tolerances = field(default_factory=Tolerances)  # the gate aimed at
    speed_plan: str = DEFAULT_SPEED_PLAN  # off | auto | measure | a site-timings JSON file


@dataclass(frozen=True)
class ExportResult:
    artifacts: tuple[Artifact, ...]  # written by this run
    failures: tuple[Failure, ...]
    manifest_path: Path
    seconds: float
    kept: tuple[str, ...] = ()  # entries of the folder's earlier manifest still listed
    replaced: tuple[str, ...] = ()  # earlier entries this run re-exported
    dropped: tuple[str, ...] = ()  # earlier entries no longer listed, with the reason

    @property
    def ok(self) -> bool:
        return not self.failures


def auto_jobs() -> int:
    """The cores this process may use, at most 2: more workers add memory, little speed."""
    usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
    return max(1, min(2, usable))


def check_formats(formats: tuple[str, ...], families: tuple[str, ...]) -> None:
    """Known formats and families, and every format and family makes some artefact."""
    known = list_exporters()
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise UsageError(f"--formats: unknown format(s) {', '.join(unknown) or '(none given)'}; "
                         f"known formats: {', '.join(known)}")
    choices = precision_families()
    bad = [f for f in families if f not in choices]
    if bad or not families:
        raise UsageError(f"--precisions: unknown precision(s) {', '.join(bad) or '(none given)'}"
                         f"; use {', '.join(choices)}")
    asked = f"--formats {','.join(formats)} --precisions {','.join(families)}"
    for fmt in formats:
        spec = get_exporter(fmt)
        if not spec.artefact_precisions(families):
            raise UsageError(f"{asked}: {fmt} makes nothing for {','.join(families)} (it makes "
                             f"{', '.join(spec.precisions)}); nothing would be exported")
    for fam in families:
        if not any(fam in get_exporter(f).precisions for f in formats):
            makers = [f for f in known if fam in get_exporter(f).precisions]
            raise UsageError(f"{asked}: none of these formats makes {fam} (only "
                             f"{', '.join(makers)})")


def check_out_dir(out: Path) -> None:
    """``out`` can be written (or created); nothing is created here."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out}: output folder cannot be created ({probe} is not a "
                         "folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: output folder cannot be written ({probe}: permission "
                         "denied)")


def _calibration_formats(formats: tuple[str, ...], families: tuple[str, ...]) -> list[str]:
    return [f for f in formats if set(get_exporter(f).needs_calibration) & set(families)]


def _check_calibration(options: ExportOptions, formats: tuple[str, ...],
                       families: tuple[str, ...]) -> bool:
    """Whether calibration images are needed; if so, that they were asked for sensibly."""
    needed = _calibration_formats(formats, families)
    if not needed:
        return False
    if options.calib_data is None:
        raise UsageError(
            f"INT8 ({', '.join(needed)}) needs real calibration images and none were given: "
            "pass --calib-data DIR (a prepared split folder, a HAM10000 folder or a folder of "
            "training images), or export float artefacts only with --precisions fp32")
    check_sample_count(options.calib_samples, options.allow_few_calib_images)
    return True


def export_checkpoint(checkpoint: Path, out: Path, options: ExportOptions) -> ExportResult:
    """Export ``checkpoint`` into ``out`` (see the module docstring); seeds torch with
    ``options.seed`` and runs it with ``options.threads`` threads."""
    import torch

    clock = Stopwatch()
    formats, families, jobs, int8 = _checked(options, out)
    previous = read_previous(out)
    model, settings = load_settings(checkpoint, families, options.allow_uncalibrated)
    calibrate = _check_calibration(options, formats, families)
    if not settings.calibrated:
        log.warning("%s: exporting an uncalibrated checkpoint (--allow-uncalibrated); every "
                    "manifest entry says \"calibrated\": false", checkpoint)
    if calibrate:
        assert options.calib_data is not None
        settings = replace(settings, calibration=load_calibration(
            options.calib_data, settings.preprocessing, settings.labels, options.calib_samples,
            options.seed, options.allow_few_calib_images))
    settings = replace(settings, int8=_int8_options(options, int8, settings))
    threads = torch.get_num_threads()
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    try:
        result = _export(model, settings, out, formats, previous, jobs=jobs,
                         checkpoint=checkpoint, threads=options.threads, verbose=options.verbose)
    finally:
        torch.set_num_threads(threads)
    return replace(result, seconds=clock.seconds())


def check_options(options: ExportOptions, out: Path) -> None:
    """The checks ``export_checkpoint`` makes before any work (``UsageError``), for callers
    that have work of their own to do first."""
    _checked(options, out)


def _checked(options: ExportOptions, out: Path
             ) -> tuple[tuple[str, ...], tuple[str, ...], int, Int8Checked]:
    """(formats, precision families, jobs, ``_check_int8``'s answer) of valid ``options``."""
    formats = tuple(dict.fromkeys(options.formats or list_exporters()))
    families = tuple(dict.fromkeys(options.precisions))
    check_formats(formats, families)
    jobs = auto_jobs() if options.jobs is None else options.jobs
    if jobs < 1 or options.threads < 1:
        raise UsageError(f"--jobs and --threads must be >= 1, got {jobs} and {options.threads}")
    check_out_dir(out)
    return formats, families, jobs, _check_int8(options, formats, families)


def _check_int8(options: ExportOptions, formats: tuple[str, ...], families: tuple[str, ...]
                ) -> Int8Checked:
    """(repair mode, speed plan, the ``--speed-plan`` file's timings), both "off" when no
    format makes a planned INT8 artefact; a bad combination or file is a ``UsageError``
    before any work."""
    from exporters.int8.options import SPEED_MODES
    from exporters.int8.plan import PlanError
    from exporters.int8.speed import load_all_timings

    repair = options.repair or ("auto" if options.val_data is not None else "off")
    if repair not in REPAIR_MODES:
        raise UsageError(f"--repair must be one of {', '.join(REPAIR_MODES)}, got {repair!r}")
    if repair != "off" and options.val_data is None:
        raise UsageError(f"--repair {repair} needs labelled validation images: pass --val-data "
                         "DIR (a prepared split folder or a HAM10000 folder)")
    if not 0 < options.repair_budget_min < float("inf"):
        raise UsageError(f"--repair-budget-min must be a positive number of minutes, got "
                         f"{options.repair_budget_min}")
    if options.qat_steps < 0:
        raise UsageError(f"--qat-steps must be >= 0, got {options.qat_steps}")
    if options.qat_steps and repair != "auto":
        raise UsageError(f"--qat-steps is a rung of --repair auto (with --val-data), not of "
                         f"--repair {repair}")
    planned = any(set(get_exporter(f).planned_precisions())
                  & set(get_exporter(f).artefact_precisions(families)) for f in formats)
    if options.repair not in (None, "off") and not planned:
        raise UsageError(f"--repair {repair}: --formats {','.join(formats)} --precisions "
                         f"{','.join(families)} makes no quantized artefact to repair")
    timings: tuple[SiteTimings, ...] = ()
    if options.speed_plan not in SPEED_MODES:
        try:
            timings = load_all_timings(Path(options.speed_plan))
        except PlanError as exc:
            raise UsageError(f"--speed-plan: {exc} (use {', '.join(SPEED_MODES)} or a "
                             "site-timings file)") from None
    if not planned:
        return "off", "off", ()
    return repair, options.speed_plan, timings


def _int8_options(options: ExportOptions, checked: Int8Checked,
                  settings: ExportSettings) -> Int8Options | None:
    """What the INT8 exports are asked beyond their recipes (None: nothing), with the
    validation split loaded for a repair (``UsageError`` for an unusable folder)."""
    from exporters.int8.options import Int8Options
    from exporters.validation_data import load_validation

    repair, speed, timings = checked
    if speed == "auto":  # the timings the recipes ship for this architecture, if any
        from exporters.int8.speed import load_all_timings

        paths = [r.stored_timings_path() for f in list_exporters()
                 if (r := get_exporter(f).int8) is not None]
        timings = tuple(t for p in paths if p is not None for t in load_all_timings(p)
                        if t.arch == settings.arch)
        speed = "auto" if timings else "off"
    if repair == "off" and speed == "off":
        return None
    validation = None
    if repair != "off":
        assert options.val_data is not None
        validation = load_validation(options.val_data, settings.preprocessing, settings.decision)
    return Int8Options(speed=speed, timings=timings, repair=repair,
                       repair_budget_min=options.repair_budget_min, qat_steps=options.qat_steps,
                       tolerances=options.repair_tolerances, validation=validation)


def export_model(model: Any, settings: ExportSettings, out: Path, formats: tuple[str, ...],
                 *, jobs: int = 1, checkpoint: Path | None = None, threads: int = 1,
                 verbose: bool = False) -> ExportResult:
    """Export an in-memory model with ready settings (studies, tests). ``jobs > 1`` needs
    ``checkpoint``: worker processes rebuild the model from it."""
    check_formats(formats, settings.precisions)
    check_out_dir(out)
    return _export(model, settings, out, formats, read_previous(out), jobs=jobs,
                   checkpoint=checkpoint, threads=threads, verbose=verbose)


def _export(model: Any, settings: ExportSettings, out: Path, formats: tuple[str, ...],
            previous: Manifest | None, *, jobs: int, checkpoint: Path | None, threads: int,
            verbose: bool) -> ExportResult:
    clock = Stopwatch()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    arts: list[Artifact] = []
    failures: list[Failure] = []
    done: set[str] = set()
    merge = Merge(Manifest(settings.decision, settings.preprocessing, ()))
    try:
        with contextlib.closing(_results(model, settings, out, formats, jobs, checkpoint,
                                         threads, verbose)) as results:
            for got in results:
                _log_outcome(got)
                arts += got.artifacts
                failures += got.failures
                done.add(got.fmt)
                merge = merge_manifest(arts, failures, settings, out, previous, done)
                write_manifest(merge.manifest, out)
    except BaseException:  # workers are stopped (closing) before the sweep
        remove_temporary(out, created)
        raise
    if merge.replaced:
        log.info("replaced in the manifest: %s", ", ".join(merge.replaced))
    return ExportResult(tuple(arts), tuple(failures), manifest_path(out), clock.seconds(),
                        merge.kept, merge.replaced, merge.dropped)


def _results(model: Any, settings: ExportSettings, out: Path, formats: tuple[str, ...],
             jobs: int, checkpoint: Path | None, threads: int, verbose: bool
             ) -> Generator[FormatResult, None, None]:
    """``FormatResult`` per format, from this process or from worker processes."""
    if jobs <= 1 or len(formats) <= 1 or checkpoint is None:
        for i, fmt in enumerate(formats, start=1):
            precisions = get_exporter(fmt).artefact_precisions(settings.precisions)
            log.info("[%d/%d] %s: exporting %s ...", i, len(formats), fmt, ", ".join(precisions))
            yield run_format(fmt, model, settings, out)
        return
    from exporters.parallel import Task, registering_modules, run_parallel, share_out

    groups = share_out(formats, jobs)
    log.info("exporting in %d worker processes: %s", len(groups),
             "; ".join(", ".join(g) for g in groups))
    with staging_dir(out) as logs:
        tasks = [Task(g, checkpoint, settings, out, threads,
                      None if verbose else logs / f"worker-{i}.log", registering_modules(g))
                 for i, g in enumerate(groups)]
        yield from run_parallel(tasks, jobs)


def _log_outcome(got: FormatResult) -> None:
    for a in got.artifacts:
        log.info("  %s: %.2f MB in %.1f s", a.name, path_bytes(a.path) / 1e6,
                 a.entry.export_seconds or 0.0)
    for f in got.failures:
        log.warning("  FAILED %s %s: %s", f.format, f.precision, f.error)
    if got.log_tail:
        log.warning("  last lines of the %s log:\n%s", got.fmt, got.log_tail)


def remove_temporary(out: Path, created: bool) -> None:
    """After an interrupt or crash: the temporary files and staging folders of this package in
    ``out`` (``kd_core.io.atomic_path``'s ``.*.tmp``; ``.staging.*``); ``out`` itself if this
    run created it and left it empty."""
    for path in [*out.glob(".*.tmp"), *out.glob(f"{STAGING_PREFIX}*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()
