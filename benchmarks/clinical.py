"""The clinical outputs of a results folder, in one call for the harness, the report and the
pipeline: subgroup tables and plots (``benchmarks.subgroups``) and the model card
(``benchmarks.model_card``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from benchmarks.clinical_inputs import ClinicalError
from benchmarks.model_card import write_model_card
from benchmarks.subgroups import write_subgroups

log = logging.getLogger(__name__)


def write_clinical(results_dir: str | Path, group_by: Sequence[str] | None = None,
                   required: bool = True) -> list[Path]:
    """``subgroups.{json,md,csv}``, ``plots/decision_curve.png``,
    ``plots/reliability_overlay.png`` and ``MODEL_CARD.md`` (in the run folder and beside the
    export's manifest) for ``results_dir``; returns the files written.

    A folder that cannot be evaluated (no split metadata, results of an older harness) raises
    ``ClinicalError`` (a ``BadInput``); with ``required=False`` it is logged and skipped, so a
    benchmark run never fails on its clinical appendix.
    """
    try:
        written = write_subgroups(results_dir, group_by)
    except ClinicalError as exc:
        if required:
            raise
        log.warning("clinical evaluation skipped: %s", exc)
        return []
    return written + write_model_card(results_dir)
