"""What an INT8 export is asked to do beyond its format's recipe: ``Int8Options``, carried on
``ExportSettings.int8`` (None: the plain recipe, every site INT8, nothing after the export).

- ``plan``, ``observer`` and ``qat`` steer one quantization: the format exporters pass the
  options to ``quantize_pt2e`` / ``tflite_convert_kwargs`` / ``quantize_onnx``, which keep the
  plan's sites float (the recipe's ``float_sites`` way) and calibrate with ``observer`` (or,
  with ``qat``, fine-tune on the calibration images: ``exporters.int8.qat``).
- ``speed``, ``timings``, ``repair``, ``repair_budget_min``, ``qat_steps``, ``tolerances`` and
  ``validation`` are the objectives run after a format's export (``exporters.int8.objectives``).

``exporters.run`` builds them from ``ExportOptions`` before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporters.int8.plan import PrecisionPlan
from kd_core.parity import Tolerances

if TYPE_CHECKING:
    from exporters.int8.qat import QatSpec
    from exporters.int8.speed import SiteTimings
    from exporters.validation_data import ValidationSet

SPEED_MODES = ("off", "auto", "measure")  # or the path of a site-timings file


@dataclass(frozen=True)
class Int8Options:
    """INT8 choices that the checkpoint and the recipe do not fix."""

    plan: PrecisionPlan = field(default_factory=PrecisionPlan)
    observer: str | None = None  # None: the recipe's (PT2E observer or ONNX calibration method)
    qat: QatSpec | None = None  # fine-tune under fake quantization instead of calibrating
    qat_steps: int = 0  # the ladder's opt-in rung 4 (0: off)
    speed: str = "off"  # off | measure | auto | the site-timings file the timings came from
    timings: tuple[SiteTimings, ...] = ()  # from that file (auto: the recipes' stored ones)
    repair: str = "off"  # off | recalibrate | auto (resolved: never auto without validation)
    repair_budget_min: float | None = None  # the ladder's wall clock per format; None: no limit
    tolerances: Tolerances = field(default_factory=Tolerances)  # the gate the ladder aims at
    validation: ValidationSet | None = field(default=None, repr=False, compare=False)

    def active(self) -> bool:
        """True when something runs after the export: a speed objective or a repair."""
        return self.speed != "off" or (self.repair != "off" and self.validation is not None)

    def timings_for(self, fmt: str, arch: str, image_size: int) -> SiteTimings | None:
        """The given timings that apply to ``fmt`` and this model (``speed.pick_timings``)."""
        from exporters.int8.speed import pick_timings

        return pick_timings(self.timings, fmt, arch, image_size)
