"""Is an export folder what its manifest says? Every artefact present, with the manifest's sha256.

The harness checks each artefact before scoring it (a modified file is a failed row, never a
pass), and the pipeline checks a whole export folder before calling its export stage up to date.
"""

from __future__ import annotations

from pathlib import Path

from kd_core.deploy import ManifestEntry


def file_digest(path: Path) -> str | None:
    """sha256 of a file or folder, or None when it is missing."""
    from kd_core.io import sha256_file

    return sha256_file(path) if path.exists() else None


def artifact_problem(entry: ManifestEntry, root: Path, digest: str | None) -> str | None:
    """Why the artefact file (with sha256 ``digest``, None: missing) does not match its manifest
    entry, or None when it does."""
    path = entry.file(root)
    if digest is None:
        return f"error: {path}: artefact file missing (listed in the manifest)"
    if not entry.sha256:
        return f"error: {path}: the manifest records no sha256, so the file cannot be verified"
    if digest != entry.sha256:
        return (f"error: {path}: sha256 {digest[:12]}... differs from the manifest's "
                f"{entry.sha256[:12]}... (modified or damaged since export)")
    return None


def export_problems(folder: Path) -> list[str]:
    """Every mismatch between ``folder``'s manifest and its files ([] when intact); an
    unreadable manifest is one problem."""
    from kd_core.cli import BadInput
    from kd_core.deploy import load_manifest

    try:
        manifest = load_manifest(folder)
    except BadInput as exc:
        return [str(exc)]
    problems = []
    for entry in manifest.artifacts:
        problem = artifact_problem(entry, folder, file_digest(entry.file(folder)))
        if problem is not None:
            problems.append(problem.removeprefix("error: "))
        problems += [f"{folder / s}: sidecar missing" for s in entry.sidecars
                     if not (folder / s).exists()]
    return problems
