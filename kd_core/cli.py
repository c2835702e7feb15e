"""One command-line convention for every EdgeKD CLI: exit codes, errors, interrupts, help.

Exit codes (documented in the README and in every ``--help``):

- 0: the job was done (and, where there is one, the gate passed);
- 1: the job failed, or the parity gate refused an artefact;
- 2: bad input: a file, flag or value, named in a one-line ``error:`` message, found before any
  work where it can be (argparse's own usage errors exit 2 too);
- 130: interrupted (Ctrl-C); finished outputs are kept, nothing is half-written, and rerunning
  the same command resumes.

A CLI is ``main(argv) -> int`` that builds its parser with ``parser(...)`` and hands its body to
``run(...)``. Library code raises ``BadInput`` (or a subclass) for user errors and ``JobFailed``
when the job itself failed; it never prints tracebacks for either. Importing this module costs
nothing beyond the standard library, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = ("Exit codes: 0 ok, 1 the job failed or the gate refused, 2 bad input, "
              "130 interrupted (rerun the same command to resume).")
INTERRUPTED = "interrupted; rerun the same command to resume"
PACKAGES = ("kd_core", "exporters", "runtimes", "benchmarks")
_HANDLER_NAME = "edgekd-cli"


class BadInput(ValueError):
    """Bad user input: the message names the file, flag or value and the problem (one line)."""


class JobFailed(RuntimeError):
    """The job ran and failed (an export, a training run, a refused gate); exit code 1."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends every option's default to its help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in ("?", "*"):
            return f"{text} (default: %(default)s)".lstrip()
        return text


def parser(prog: str, description: str | None = None, epilog: str | None = None,
           **kwargs: object) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that shows every default and ends its help with the exit codes."""
    text = f"{epilog}\n\n{EXIT_CODES}" if epilog else EXIT_CODES
    return argparse.ArgumentParser(prog=prog, description=description, epilog=text,
                                   formatter_class=HelpFormatter, **kwargs)  # type: ignore[arg-type]


def add_command(subparsers: Any, name: str, help: str, description: str | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
    """A sub-command's parser (``prog CMD``) with the same help conventions as ``parser``."""
    text = f"{epilog}\n\n{EXIT_CODES}" if epilog else EXIT_CODES
    sub: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description or help, epilog=text,
        formatter_class=HelpFormatter)
    return sub


def message(exc: BaseException) -> str:
    """An exception's message (a ``KeyError``'s key without quotes); messages are one line."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return str(msg).strip() or type(exc).__name__


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def run(body: Callable[[], int], bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run a CLI body with the convention: ``BadInput`` (and ``bad_input``) -> 2, ``JobFailed``
    -> 1, Ctrl-C -> 130, each as one line on stderr; anything else is a bug and propagates."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except JobFailed as exc:
        error(message(exc))
        return EXIT_FAILED
    except (BadInput, *bad_input) as exc:  # type: ignore[misc]
        error(message(exc))
        return EXIT_BAD_INPUT


def setup_logging(verbose: bool = False) -> None:
    """Send the packages' log records (``logging.getLogger(__name__)`` in library code) to
    stdout as plain lines: INFO and up, DEBUG with ``verbose``. A CLI calls this once in
    ``main``; library code never configures logging and never prints."""
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in PACKAGES:
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if h.get_name() == _HANDLER_NAME]:
            log.removeHandler(old)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        log.propagate = False
