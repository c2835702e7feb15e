"""Shared fixtures: a small generated HAM10000-layout dataset, and the real one when present."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Prepared splits and other cached files go to a throw-away folder, never to ~/.cache (set at
# import, before any test runs; subprocesses inherit it).
_CACHE = tempfile.mkdtemp(prefix="edgekd-test-cache-")
os.environ["EDGEKD_CACHE"] = _CACHE


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


def real_data_dir() -> Path | None:
    """``../shared/data/ham10000`` beside the repository (or $EDGEKD_HAM10000), if present."""
    path = Path(os.environ.get("EDGEKD_HAM10000", REPO.parent / "shared" / "data" / "ham10000"))
    return path if (path / "HAM10000_metadata.csv").is_file() else None


@pytest.fixture(scope="session")
def real_ham10000() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("real HAM10000 not found beside the repository (../shared/data/ham10000)")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 synthetic images at 48 px in the Kaggle HAM10000 layout."""
    from kd_core.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synth") / "ham", n_images=400, size=48, seed=7)


@pytest.fixture(scope="session")
def synth_prepared(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kd_core.data.ham10000 import prepare

    return prepare(synth_dir, tmp_path_factory.mktemp("prepared") / "p", seed=42, verbose=False)
