"""Every command's `--help`, as rich renders it: paragraphs wrap to the terminal, never at the
line breaks of the docstring they come from, and a list keeps one item a line."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from choreo_ingest.cli.app import app, flowed

from sim_support import run_cli

LIST_ITEM = re.compile(r"[-*] ")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HELP_PADDING = 2
"""rich leaves a column free on either side of the help text."""


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The app's own path, and every command's and group's below it."""
    found = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += command_paths(sub, (*path, name))
    return found


COMMAND_PATHS = command_paths(typer.main.get_command(app))


def description(path: tuple[str, ...], columns: int) -> list[str]:
    """The lines of the help between its usage line and its first panel, without the padding."""
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert done.exit_code == 0, done.output
    lines = ANSI.sub("", done.output).splitlines()
    start = next(index for index, line in enumerate(lines) if line.lstrip().startswith("Usage:"))
    end = next((index for index, line in enumerate(lines) if line.startswith("╭")), len(lines))
    return [line[1:].rstrip() for line in lines[start + 1 : end]]


def fragments(lines: list[str], width: int) -> list[tuple[str, str]]:
    """Pairs of lines where the first ends although the next one's first word would have fit:
    a hard line break of the source, not a wrap."""
    return [
        (line, after)
        for line, after in itertools.pairwise(lines)
        if line
        and after
        and not LIST_ITEM.match(after)
        and len(line) + 1 + len(after.split()[0]) <= width - HELP_PADDING
    ]


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize(
    "path", COMMAND_PATHS, ids=[" ".join(path) or "choreo-ingest" for path in COMMAND_PATHS]
)
def test_help_paragraphs_wrap_to_the_terminal_not_at_the_sources_line_breaks(
    path: tuple[str, ...], columns: int
) -> None:
    lines = description(path, columns)

    assert any(lines), "no help text"
    assert fragments(lines, columns) == []
    assert max(map(len, lines)) <= columns - HELP_PADDING


@pytest.mark.parametrize(
    "path", COMMAND_PATHS, ids=[" ".join(path) or "choreo-ingest" for path in COMMAND_PATHS]
)
def test_every_option_name_is_shown_whole_on_80_columns(path: tuple[str, ...]) -> None:
    """rich cuts a name its column cannot hold (`--oauth-client-se…`): an operator cannot type
    what the help does not show."""
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    shown = ANSI.sub("", done.output)
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]

    names = [name for param in command.params for name in (*param.opts, *param.secondary_opts)]

    assert [name for name in names if name.startswith("-") and name not in shown] == []


@pytest.mark.parametrize("columns", [80, 200])
def test_each_exit_code_of_run_is_a_whole_line(columns: int) -> None:
    lines = description(("run",), columns)

    assert lines[lines.index("Exit codes:") + 1 :][:8] == [
        "- 0 done, or nothing was due",
        "- 1 a bug",
        "- 2 config error",
        "- 3 a burst or the events' drain failed (backoff scheduled)",
        "- 4 state store error",
        "- 74 stdout could not be written (what the run did stands)",
        "- 75 another run holds the lock",
        "- 130 interrupted (last page saved)",
    ]


class TestFlowed:
    def test_joins_the_lines_of_each_paragraph(self) -> None:
        assert flowed("Summary line.\n\nOne sentence\nwrapped in the source.\n\nAnother.") == (
            "Summary line.\n\nOne sentence wrapped in the source.\n\nAnother."
        )

    def test_keeps_list_items_on_lines_of_their_own_and_joins_their_continuations(self) -> None:
        text = "Exit codes:\n- 0 done\n- 2 config error (a bad\n  --listen)\n* 4 state"

        assert flowed(text) == "Exit codes:\n- 0 done\n- 2 config error (a bad --listen)\n* 4 state"


@pytest.mark.parametrize("args", [(), ("simulate",)], ids=["nothing", "a-group-alone"])
def test_a_command_line_naming_no_command_gets_the_help_on_stderr_and_exit_2(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    done = run_cli(*args, cwd=tmp_path)

    assert done.returncode == 2
    assert done.stdout == ""  # stdout carries data only
    assert "Usage: choreo-ingest" in done.stderr
