"""The kd_core command lines follow one convention (kd_core.cli): every default and the exit
codes in ``--help``, a fast ``--help`` that imports neither torch nor scipy, and library code
that logs instead of printing."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kd_core import cli
from kd_core.ablation import build_parser as ablation_parser
from kd_core.data.__main__ import build_parser as data_parser
from kd_core.importer import build_parser as import_parser
from kd_core.train_args import build_parser as train_parser

REPO = Path(__file__).resolve().parents[1]
CLIS = ("kd_core.train", "kd_core.data", "kd_core.ablation", "kd_core.checkpoint")


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser] + [p for s in subs for p in s.choices.values()]


@pytest.mark.parametrize("build", [train_parser, data_parser, ablation_parser, import_parser])
def test_help_shows_every_default_and_the_exit_codes(
        build: Callable[[], argparse.ArgumentParser]) -> None:
    for parser in _commands(build()):
        text = " ".join(parser.format_help().split())
        assert cli.EXIT_CODES in text, parser.prog
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            assert f"(default: {action.default})" in text, (parser.prog, action.dest)


@pytest.mark.parametrize("module", CLIS)
def test_help_imports_neither_torch_nor_scipy(module: str) -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Exit codes" in done.stdout
    modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:")]
    assert len(modules) > 10  # the timing lines are there
    heavy = [m for m in modules if m.split(".")[0] in ("torch", "torchvision", "scipy")]
    assert not heavy, heavy


def _prints_outside_a_cli(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef) else function
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Name)
                    and child.func.id == "print" and name not in ("main", "_main")):
                found.append(f"{path.relative_to(REPO)}:{child.lineno} in {name or 'module'}")
            visit(child, name)

    visit(tree, "")
    return found


def test_library_code_logs_instead_of_printing() -> None:
    skip = {REPO / "kd_core" / "cli.py", REPO / "kd_core" / "data" / "__main__.py"}
    found = [hit for path in sorted((REPO / "kd_core").rglob("*.py")) if path not in skip
             for hit in _prints_outside_a_cli(path)]
    assert not found, found


def test_ctrl_c_drops_queued_file_work() -> None:
    """Image checks and decodes run in ``io.thread_pool``: a Ctrl-C does not wait for the
    queued jobs (thousands on HAM10000)."""
    import threading
    import time

    from kd_core.io import thread_pool

    done = []
    lock = threading.Lock()

    def job(i: int) -> int:
        time.sleep(0.02)
        with lock:
            done.append(i)
        return i

    with pytest.raises(KeyboardInterrupt), thread_pool(1) as pool:
        for i in pool.map(job, range(200)):
            if i == 2:
                raise KeyboardInterrupt
    assert len(done) < 10
