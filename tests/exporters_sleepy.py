"""Two formats whose export writes a temporary file and then waits: for the interrupt tests.
Imported only by the command these tests start (and its worker processes)."""

from __future__ import annotations

import time
from pathlib import Path

from exporters import register_exporter
from kd_core.io import atomic_path


def _sleepy(model: object, example: object, out_dir: Path, cfg: object) -> list[object]:
    name = f"{time.time_ns()}.bin"
    with atomic_path(out_dir / name) as tmp:
        tmp.write_bytes(b"half written")
        time.sleep(600)
    return []


for _fmt in ("sleepy_a", "sleepy_b"):
    register_exporter(_fmt, extension=".bin", tools=(), needs_calibration=())(_sleepy)
