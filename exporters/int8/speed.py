"""The speed objective of a precision plan: keep float the sites where INT8 is slower.

Per site, a runtime's per-op profile (``exporters.int8.profile``) gives the time of its op in
the INT8 graph and in the float graph of the same rewritten model, plus what keeping it float
adds: a dequantize of its input and a quantize of its output (``boundary_us``). Keeping the site
float saves ``gain_us = int8_us - (fp32_us + boundary_us)``; ``speed_plan`` keeps float every
site whose gain clears ``SpeedRule`` (an absolute and a relative floor against timing noise).
It is a pure function of the timings: the same timings give the same plan, so timings measured
once on a quiet machine (``save_timings``/``load_timings``) reproduce a plan exactly. The
finishing step then re-times the whole graph and keeps the plan only if it is faster there too
(``confirmed``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exporters.int8.plan import PlanError, PrecisionPlan, Site, float_site

TIMINGS_VERSION = 1


@dataclass(frozen=True)
class SiteTiming:
    """Median per-op times of one site (microseconds) in one runtime."""

    site: str
    int8_us: float
    fp32_us: float
    boundary_us: float = 0.0  # dequantize input + quantize output when the site runs float

    @property
    def gain_us(self) -> float:
        """Time saved per inference by keeping this site float (negative: INT8 is faster)."""
        return self.int8_us - (self.fp32_us + self.boundary_us)


@dataclass(frozen=True)
class SpeedRule:
    """A site goes float only when the gain is at least ``min_gain_us`` and at least
    ``min_gain_fraction`` of its INT8 time (per-op timings of small ops are noisy)."""

    min_gain_us: float = 1.0
    min_gain_fraction: float = 0.1

    def keeps_float(self, t: SiteTiming) -> bool:
        return t.gain_us >= max(self.min_gain_us, self.min_gain_fraction * t.int8_us)


@dataclass(frozen=True)
class SiteTimings:
    """What a runtime's profiler measured for every site, with where and how."""

    format: str
    runtime: str
    threads: int
    runs: int
    sites: tuple[SiteTiming, ...]
    host: str = ""
    arch: str = ""  # the model measured (its registry name) and its input size, when known
    image_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"version": TIMINGS_VERSION, "format": self.format, "runtime": self.runtime,
                "threads": self.threads, "runs": self.runs, "host": self.host,
                "arch": self.arch, "image_size": self.image_size,
                "sites": [asdict(t) for t in self.sites]}

    def describe(self) -> str:
        what = f"{self.arch}, {self.image_size} px, " if self.arch else ""
        return f"{what}{self.runtime}, {self.threads} thread(s), {self.host}"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> SiteTimings:
        try:
            if d.get("version") != TIMINGS_VERSION:
                raise ValueError(f"version {d.get('version')!r}")
            sites = tuple(SiteTiming(str(s["site"]), float(s["int8_us"]), float(s["fp32_us"]),
                                     float(s.get("boundary_us", 0.0))) for s in d["sites"])
            return cls(str(d["format"]), str(d.get("runtime", "")), int(d.get("threads", 1)),
                       int(d.get("runs", 0)), sites, str(d.get("host", "")),
                       str(d.get("arch", "")), int(d.get("image_size", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{source}: not a site-timings file ({exc})") from None


def speed_plan(timings: Sequence[SiteTiming], sites: Sequence[Site],
               rule: SpeedRule | None = None) -> PrecisionPlan:
    """The float sites the timings justify, in the model's site order (deterministic)."""
    rule = rule or SpeedRule()
    by_name = {t.site: t for t in timings}
    unknown = sorted(set(by_name) - {s.name for s in sites})
    if unknown:
        raise PlanError(f"timings name unknown site(s) {', '.join(unknown)}")
    chosen = []
    for site in sites:
        t = by_name.get(site.name)
        if t is not None and rule.keeps_float(t):
            chosen.append(float_site(site, sites, "speed", {
                "int8_us": round(t.int8_us, 3), "fp32_us": round(t.fp32_us, 3),
                "boundary_us": round(t.boundary_us, 3), "gain_us": round(t.gain_us, 3)}))
    note = (f"speed: {len(chosen)} of {len(timings)} timed sites faster in float "
            f"(rule: gain >= max({rule.min_gain_us:g} us, {rule.min_gain_fraction:g} x int8))")
    return PrecisionPlan().with_sites(chosen, note)


def site_gains(timings: Sequence[SiteTiming]) -> list[dict[str, Any]]:
    """Per-site measured INT8 gain for the manifest and the summary (positive: INT8 faster)."""
    return [{"site": t.site, "int8_us": round(t.int8_us, 3), "fp32_us": round(t.fp32_us, 3),
             "boundary_us": round(t.boundary_us, 3),
             "int8_speedup": round(t.fp32_us / t.int8_us, 3) if t.int8_us > 0 else None}
            for t in timings]


def confirmed(baseline_ms: Sequence[float], planned_ms: Sequence[float],
              min_speedup: float = 1.02) -> bool:
    """Whole-graph check: the planned artefact's median time beats the baseline's by
    ``min_speedup`` (interleaved single-image runs of both)."""
    if not baseline_ms or not planned_ms:
        return False
    return statistics.median(baseline_ms) >= min_speedup * statistics.median(planned_ms)


def save_timings(timings: SiteTimings, path: Path) -> Path:
    from kd_core.io import write_json

    write_json(path, timings.to_dict())
    return path


def load_all_timings(path: Path) -> tuple[SiteTimings, ...]:
    """Every format's timings in ``path`` (one ``SiteTimings`` object or a list of them, at
    most one per format); ``PlanError`` naming the file for anything else."""
    from kd_core.io import loads_json

    try:
        data = loads_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlanError(f"{path}: unreadable site-timings file ({exc})") from None
    items = data if isinstance(data, list) else [data]
    objects = [i for i in items if isinstance(i, dict)]
    if not objects or len(objects) != len(items):
        raise PlanError(f"{path}: not a site-timings file (an object or a list of objects)")
    timings = tuple(SiteTimings.from_dict(item, str(path)) for item in objects)
    keys = [(t.format, t.arch, t.image_size) for t in timings]
    if len(set(keys)) != len(keys):
        raise PlanError(f"{path}: more than one set of timings for a format, architecture and "
                        f"size ({keys})")
    return timings


def pick_timings(timings: Sequence[SiteTimings], fmt: str, arch: str, image_size: int
                 ) -> SiteTimings | None:
    """The timings of ``fmt`` for ``arch`` (or for no named architecture), measured at the image
    size nearest ``image_size`` (which int8 kernel is slower than its fp32 one depends on the
    kernel, not much on the size); None when there are none."""
    found = [t for t in timings if t.format == fmt and t.arch in ("", arch)]
    found.sort(key=lambda t: (abs(t.image_size - image_size), t.image_size))
    return found[0] if found else None


def load_timings(path: Path, fmt: str) -> SiteTimings:
    """The timings of ``fmt`` in ``path`` (see ``load_all_timings``)."""
    found = next((t for t in load_all_timings(path) if t.format == fmt), None)
    if found is None:
        raise PlanError(f"{path}: no site timings for format {fmt}")
    return found
