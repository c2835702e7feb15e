"""What an INT8 export is asked to do beyond the recipe: the precision plan, the calibration
observer, and the speed and repair objectives (``exporters.int8.speed``, ``exporters.int8.repair``).

``Int8Options`` rides on ``ExportSettings.int8``; the format exporters read ``pt2e_kwargs()`` /
``onnx_kwargs()`` and nothing else, the finishing step (``exporters.int8.finish``) the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters.int8.plan import PrecisionPlan

if TYPE_CHECKING:
    from exporters.int8.plan import Site
    from exporters.validation_data import ValidationSet

REPAIR_MODES = ("off", "recalibrate", "auto")
DEFAULT_OBSERVER = "default"  # the format's recipe: HistogramObserver (PT2E), MinMax (ONNX)
DEFAULT_BUDGET_MIN = 10.0


@dataclass(frozen=True)
class Int8Options:
    """INT8 choices that the checkpoint does not fix. The defaults reproduce the plain recipe."""

    plan: PrecisionPlan = field(default_factory=PrecisionPlan)
    observer: str = DEFAULT_OBSERVER  # PT2E observer name or ONNX CalibrationMethod name
    speed: str = "off"  # off | measure | path of a site-timings JSON
    repair: str = "off"  # off | recalibrate | auto
    repair_budget_min: float = DEFAULT_BUDGET_MIN
    qat_steps: int = 0  # > 0: QAT rung allowed (opt-in)
    target_sensitivity: float = 0.95
    validation: ValidationSet | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.repair not in REPAIR_MODES:
            raise ValueError(f"--repair must be one of {', '.join(REPAIR_MODES)}, "
                             f"got {self.repair!r}")
        if self.speed not in ("off", "measure") and not Path(self.speed).is_file():
            raise ValueError(f"--speed-plan {self.speed}: neither off, measure nor a "
                             "site-timings file")
        if not self.repair_budget_min > 0:
            raise ValueError(f"--repair-budget-min must be > 0, got {self.repair_budget_min}")

    def pt2e_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``quantize_pt2e`` for these options."""
        out: dict[str, Any] = {"float_sites": self.plan.names()}
        if self.observer != DEFAULT_OBSERVER:
            out["observer"] = self.observer
        return out

    def onnx_kwargs(self, sites: Sequence[Site]) -> dict[str, Any]:
        """Keyword arguments of ``quantize_onnx`` (``sites``: the model's, in call order)."""
        out: dict[str, Any] = {"float_sites": self.plan.names(), "sites": tuple(sites)}
        if self.observer != DEFAULT_OBSERVER:
            out["calibration"] = self.observer
        return out

    def active(self) -> bool:
        """True when the finishing step has work: a speed objective or a repair."""
        return self.speed != "off" or self.repair != "off"
