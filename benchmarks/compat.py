"""The runtimes interface the benchmarks code against (PLAN.md), in one place during the merge:
``load_runner(entry: ManifestEntry, root, threads)``, ``checkpoint_entry(path) -> ManifestEntry``
and a runtime's human label from its registry spec.

Transitional: while ``runtimes`` still takes manifest dicts, these adapt; once ``runtimes`` takes
``ManifestEntry`` (and ``RuntimeSpec.label`` exists) they pass straight through, and this module
can be replaced by direct imports.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_core.deploy import ManifestEntry

if TYPE_CHECKING:
    from runtimes import Runner


def _takes_entry(fn: Any) -> bool:
    """True when ``fn``'s first parameter is annotated as a ``ManifestEntry``."""
    params = list(inspect.signature(fn).parameters.values())
    return bool(params) and "ManifestEntry" in str(params[0].annotation)


def load_runner(entry: ManifestEntry, root: Path, threads: int = 1) -> Runner:
    """The runner of the artefact ``entry`` describes (its path relative to ``root``)."""
    import runtimes

    arg: Any = entry if _takes_entry(runtimes.load_runner) else entry.to_dict()
    return runtimes.load_runner(arg, Path(root), threads)


def checkpoint_entry(path: Path, name: str | None = None) -> ManifestEntry:
    """A checkpoint described as a manifest entry (the torch runtime runs it)."""
    from runtimes import torch_eager

    got: Any = torch_eager.checkpoint_entry(Path(path), name)
    return got if isinstance(got, ManifestEntry) else ManifestEntry.from_dict(got, str(path))


def runtime_label(fmt: str) -> str:
    """The registry's human name of ``fmt``'s runtime (for rows that failed to load)."""
    from runtimes import get_runtime

    try:
        spec = get_runtime(fmt)
    except KeyError:
        return f"no runtime for {fmt}"
    return str(getattr(spec, "label", None) or fmt)
