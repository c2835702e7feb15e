"""Train a teacher, or distil a student from one: ``python -m kd_core.train teacher|student``
(options and usage in ``kd_core.train_args``; ``--help`` lists every default).

``run`` is load -> fit -> calibrate-and-save. Everything is checked before any work or any
file is written (``kd_core.trainer.plan_run``). While training, ``OUT/last.pth`` holds the run
in progress, the best epoch's weights included; a Ctrl-C or a crash loses at most the epoch in
flight and the same command resumes. ``OUT/best.pth``, the deployable checkpoint, is written
once, at the end, with its temperature and threshold fitted on validation.

This module imports only the standard library at load time, so ``--help`` is fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_core import cli
from kd_core.train_args import build_parser, config_from_args

if TYPE_CHECKING:
    from kd_core.config import Config

log = logging.getLogger(__name__)


def run(role: str, cfg: Config, out: Path, teacher_ckpt: Path | None = None,
        force: bool = False) -> Path:
    """Train ``role`` ("teacher" or "student") with ``cfg`` into ``out``; return the path of the
    calibrated ``out/best.pth``. Bad input raises a ``kd_core.cli.BadInput`` before any work;
    a finished run with the same configuration is returned as it is."""
    from kd_core import trainer
    from kd_core.engine import NonFiniteLossError, fit
    from kd_core.finalize import calibrate_and_save

    out = Path(out)
    plan = trainer.plan_run(role, cfg, out, Path(teacher_ckpt) if teacher_ckpt else None, force)
    if plan.done:
        log.info("%s already holds this run's calibrated result (--force retrains)",
                 plan.best_path)
        return plan.best_path
    data = trainer.load_data(plan)
    trainer.start(plan)
    model = trainer.build_model(plan, len(data.labels))
    try:
        result = fit(model, trainer.make_step(plan, data), data.train, data.val, plan.rt,
                     plan.fit_options(data.positive_index), out, plan.key, plan.record,
                     resume=not force)
    except NonFiniteLossError as exc:
        raise NonFiniteLossError(f"{exc}; {out / 'last.pth'} keeps the last finished epoch; "
                                 "lower --lr and rerun with --force") from None
    if not plan.rt.is_main:
        return plan.best_path
    return calibrate_and_save(plan, model, data, result)


def _main(args: Any) -> int:
    cfg = config_from_args(args)
    teacher = getattr(args, "teacher_ckpt", None)
    run(args.role, cfg, args.out, teacher, args.force)
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    try:
        return cli.run(lambda: _main(args))
    finally:
        if "torch.distributed" in sys.modules:
            from kd_core.runtime import close_runtime

            close_runtime()


def __getattr__(name: str) -> Any:
    """``default_prepared_dir``: kept importable from here for older callers; its home is
    ``kd_core.data.sources``."""
    if name == "default_prepared_dir":
        from kd_core.data.sources import default_prepared_dir

        return default_prepared_dir
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
