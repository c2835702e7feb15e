"""Skip-if-done bookkeeping for the pipeline's stages.

A stage records, in ``RUN/stages/<stage>.json``, a key of its inputs and the sha256 of every
output when it finished. It is up to date only when its record is readable, its inputs give the
same key, every output is present with the recorded sha256, and its own check (for the export
stage: every artefact against the manifest's sha256) finds nothing wrong; otherwise it runs
again. A stage writes its record last, so an interrupted stage has none and is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """What a stage's body returns: its outputs, a one-line summary and typed results."""

    outputs: list[Path]
    summary: str
    result: dict[str, Any] = field(default_factory=dict)


def file_key(path: Path) -> str:
    """sha256 of a file or folder (``missing`` when absent), for stage inputs and outputs."""
    from kd_core.io import sha256_file

    return sha256_file(path) if path.exists() else "missing"


class Stage:
    def __init__(self, run_dir: Path, name: str, inputs: dict[str, Any], force: bool,
                 check: Callable[[], list[str]] | None = None) -> None:
        self.record_path = run_dir / "stages" / f"{name}.json"
        self.name, self.inputs, self.force, self.check = name, inputs, force, check
        self.key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()
                                  ).hexdigest()

    def _stale(self, record: dict[str, Any]) -> str | None:
        """Why a finished record no longer holds (None: it does)."""
        if record.get("key") != self.key:
            return "its inputs changed"
        outputs = record.get("outputs")
        if not isinstance(outputs, dict):
            return "its record lists no output checksums"
        for path, digest in outputs.items():
            if file_key(Path(path)) != digest:
                return f"{path} is missing or changed since the stage finished"
        problems = self.check() if self.check is not None else []
        return f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                   else "") if problems else None

    def done(self) -> dict[str, Any] | None:
        """The finished record when the stage is up to date, else None (and why, logged)."""
        from kd_core.io import loads_json

        if self.force or not self.record_path.is_file():
            return None
        try:
            record = loads_json(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.info("[%s] its record %s is unreadable; running it again", self.name,
                     self.record_path)
            return None
        if not isinstance(record, dict):
            return None
        why = self._stale(record)
        if why is not None:
            log.info("[%s] not up to date: %s", self.name, why)
            return None
        return record

    def finish(self, done: Done, seconds: float) -> dict[str, Any]:
        from kd_core.io import write_json

        record = {"stage": self.name, "key": self.key, "inputs": self.inputs,
                  "outputs": {str(p): file_key(p) for p in done.outputs},
                  "seconds": round(seconds, 1), "summary": done.summary, "result": done.result}
        write_json(self.record_path, json.loads(json.dumps(record, default=str)))
        return record


def run_stage(run_dir: Path, name: str, inputs: dict[str, Any], force: bool,
              body: Callable[[], Done], records: list[dict[str, Any]],
              check: Callable[[], list[str]] | None = None) -> dict[str, Any]:
    """Skip the stage when up to date, else run ``body`` and record it; returns the record."""
    stage = Stage(run_dir, name, inputs, force, check)
    previous = stage.done()
    if previous is not None:
        log.info("[%s] up to date, skipped (%s)", name, previous["summary"])
        records.append({**previous, "skipped": True})
        return records[-1]
    log.info("[%s] running ...", name)
    start = time.perf_counter()
    record = stage.finish(body(), time.perf_counter() - start)
    log.info("[%s] done in %.0f s: %s", name, record["seconds"], record["summary"])
    records.append({**record, "skipped": False})
    return records[-1]
