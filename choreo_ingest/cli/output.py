"""Plain output: JSON documents and text on stdout, one-line errors on stderr.

What the lean commands (`cli/lean.py`) print, without rich: `render` adds the tables and the
live line for people on top of these. A reader that closes stdout early (`export | head -1`) has
taken what it wanted: every write here turns that into StdoutClosed, a quiet exit 0.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn


class StdoutClosed(SystemExit):
    """stdout's reader went away: the command stops here and exits 0, saying nothing.

    A SystemExit, so that no `except Exception` on the way out takes it for a bug.
    """

    def __init__(self) -> None:
        super().__init__(0)


def stdout_closed() -> NoReturn:
    # The recipe of the Python docs (signal, "Note on SIGPIPE"): point stdout at /dev/null, so
    # the interpreter's last flush of what is still buffered cannot fail again at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's capture): nothing to redirect
        pass
    raise StdoutClosed


@contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        stdout_closed()


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    with _writing():
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def print_json_lines(rows: Iterable[Any]) -> None:
    with _writing():
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def print_text(text: str) -> None:
    with _writing():
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def flush_stdout() -> None:
    """Write out what is still buffered (StdoutClosed if the reader went away meanwhile)."""
    with _writing():
        sys.stdout.flush()


def error_line(message: str) -> None:
    """One line on stderr, never markup-interpreted (error texts contain brackets)."""
    _stderr_line(f"choreo-ingest: error: {message}")


def warning_line(message: str) -> None:
    """One line on stderr for what works but asks for a look."""
    _stderr_line(f"choreo-ingest: warning: {message}")


def _stderr_line(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()
