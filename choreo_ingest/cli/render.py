"""All terminal output: the plain writers of `output` (JSON documents on stdout, one-line errors
on stderr), plus tables and a live line for people.

The only module that imports rich. A broken pipe under rich ends like one under `output`: a quiet
StdoutClosed, exit 0; any other failed write is StdoutFailed, as there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from choreo_ingest.cli.output import (
    StdoutClosed,
    StdoutFailed,
    error_line,
    flush_stdout,
    print_json,
    print_json_lines,
    print_text,
    stderr_is_tty,
    stderr_lines_in_json,
    stdout_closed,
    stdout_failed,
    stdout_is_tty,
    warning_line,
    writing_stdout,
)

PIPED_WIDTH = 160
"""Tables written to a file or pipe are not folded to 80 columns."""
PIPED_BOX = box.ASCII
"""Tables written to a file or pipe are drawn in ASCII: a mail, a log or `grep` needs no
box-drawing characters (nor a UTF-8 locale)."""


class _StdoutConsole(Console):
    def on_broken_pipe(self) -> None:  # rich's own would exit 1
        self.quiet = True
        stdout_closed()


_out = _StdoutConsole(width=None if stdout_is_tty() else PIPED_WIDTH)
_err = Console(stderr=True, soft_wrap=True)


def note_line(message: str) -> None:
    _err.print(message, markup=False, highlight=False)


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    folding: str | None = None,
) -> None:
    """`folding`: the one column whose cells fold to fit the terminal (an error text); the
    others keep each cell on one line (a name, a time), else every column folds. Where the
    terminal is too narrow for those lines, each row is shown as lines of `column: value`."""
    cells = [[_plain(cell) for cell in row] for row in rows]
    if folding is not None and cells and _too_narrow(columns, cells, folding):
        if title is not None:
            _print(_title(title) or Text())
        for number, row in enumerate(cells):
            if number:
                _print(Text())
            key_values(None, dict(zip(columns, row, strict=True)))
        return
    grid = Table(
        title=_title(title),
        title_justify="left",
        box=box.HEAVY_HEAD if stdout_is_tty() else PIPED_BOX,
    )
    for column in columns:
        grid.add_column(
            _plain(column), overflow="fold", no_wrap=folding is not None and column != folding
        )
    for row in cells:
        grid.add_row(*row)
    _print(grid)


FOLDED_MIN_WIDTH = 20
"""The narrowest a folding column is drawn before the rows are shown as lines instead."""


def _too_narrow(columns: Sequence[str], rows: Sequence[Sequence[Text]], folding: str) -> bool:
    """Whether the unfolded columns' widest cells, a folding column of FOLDED_MIN_WIDTH and the
    table's rules (a space each side of a cell, a bar between) exceed the terminal's width."""
    widths = [
        max([len(column), *(row[index].cell_len for row in rows)])
        for index, column in enumerate(columns)
        if column != folding
    ]
    return sum(widths) + FOLDED_MIN_WIDTH + 3 * len(columns) + 1 > _out.width


def key_values(title: str | None, pairs: Mapping[str, Any]) -> None:
    grid = Table(title=_title(title), title_justify="left", show_header=False, box=None)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs.items():
        grid.add_row(_plain(key), _plain(value))
    _print(grid)


def _print(grid: Table | Text) -> None:
    """On stdout; rich would write nothing at all where stdout is closed (`>&-`)."""
    with writing_stdout():
        _out.print(grid)


def _title(title: str | None) -> Text | None:
    return None if title is None else Text(title, style="table.title")


def _plain(value: Any) -> Text:
    """`value` as text shown as it is: a table holds what the server or the operator wrote (an
    error text, a path), where rich would read `[/]` or `[link=...]` as markup and `:x:` as an
    emoji code."""
    return Text("" if value is None else str(value))


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


__all__ = [
    "LiveLine",
    "StdoutClosed",
    "StdoutFailed",
    "error_line",
    "flush_stdout",
    "key_values",
    "live_status",
    "note_line",
    "print_json",
    "print_json_lines",
    "print_text",
    "stderr_is_tty",
    "stderr_lines_in_json",
    "stdout_closed",
    "stdout_failed",
    "stdout_is_tty",
    "table",
    "warning_line",
]
