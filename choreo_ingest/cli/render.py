"""All terminal output: JSON documents on stdout, tables for people, one-line errors on stderr.

The only module that imports rich. A reader that closes stdout early (`export | head -1`) has
taken what it wanted: every write here turns that into StdoutClosed, a quiet exit 0.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 160
"""Tables written to a file or pipe are not folded to 80 columns."""
PIPED_BOX = box.ASCII
"""Tables written to a file or pipe are drawn in ASCII: a mail, a log or `grep` needs no
box-drawing characters (nor a UTF-8 locale)."""


class StdoutClosed(SystemExit):
    """stdout's reader went away: the command stops here and exits 0, saying nothing.

    A SystemExit, so that no `except Exception` on the way out takes it for a bug.
    """

    def __init__(self) -> None:
        super().__init__(0)


def _stdout_closed() -> NoReturn:
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
        _stdout_closed()


class _StdoutConsole(Console):
    def on_broken_pipe(self) -> None:  # rich's own would exit 1
        self.quiet = True
        _stdout_closed()


_out = _StdoutConsole(width=None if sys.stdout.isatty() else PIPED_WIDTH)
_err = Console(stderr=True, soft_wrap=True)


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
    sys.stderr.write(f"choreo-ingest: error: {message}\n")
    sys.stderr.flush()


def note_line(message: str) -> None:
    _err.print(message, markup=False, highlight=False)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(
        title=title, title_justify="left", box=box.HEAVY_HEAD if stdout_is_tty() else PIPED_BOX
    )
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    _out.print(grid)


def key_values(title: str | None, pairs: Mapping[str, Any]) -> None:
    grid = Table(title=title, title_justify="left", show_header=False, box=None)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs.items():
        grid.add_row(key, "" if value is None else str(value))
    _out.print(grid)


@contextmanager
def live_status(enabled: bool) -> Iterator[LiveLine]:
    """A single self-updating line on stderr (meant for a TTY): `update(text)` replaces it.

    While it shows, whatever is written to `sys.stderr` (log lines: `logs` looks stderr up at
    every line) goes through the live display, which prints it above the line and draws the line
    again below: written straight to the terminal, a log line would be glued to the end of the
    progress line and the next refresh would draw over the rest. stdout is left alone (it may be
    a pipe while stderr is the terminal).
    """
    line = LiveLine(enabled)
    if not enabled:
        yield line
        return
    live = Live(
        "",
        console=_err,
        refresh_per_second=8,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=True,
    )
    with live:
        line.live = live
        yield line


class LiveLine:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.live: Live | None = None

    def update(self, text: str) -> None:
        if self.live is not None:
            self.live.update(Text(text), refresh=True)  # Text: no markup in the line
