"""The lean entry: the calls made most often, answered without typer, rich, httpx or structlog.

cron calls `run` every minute and scripts call `status --json`; importing the whole application
(typer builds its parameter adapters with pydantic, structlog loads rich) would cost several
times what such a call does. `lean_main` takes these command lines:

    [GLOBAL] run [OPTIONS]                   nothing due, and no terminal to talk to
    [GLOBAL] status --json [OPTIONS]
    [GLOBAL] health [--json] [OPTIONS]
    [GLOBAL] export [--format ndjson] [OPTIONS]
    [GLOBAL] changes [--since N] [--limit N] [--json] [OPTIONS]

where GLOBAL and OPTIONS are `--config`/`-c` and `--db` (each at most once). For anything else
(another command or option, a terminal, a config warning to log, an error to report, a run with
work to do) it returns None having printed nothing, and `main` hands the same arguments to the
typer application, which does everything as before. Both print documents built by the same
core functions, and `health` and `changes` by the same renderers below.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from choreo_ingest.cli.exit_codes import ExitCode, exit_code_for
from choreo_ingest.cli.output import error_line, print_json, print_json_lines, print_text
from choreo_ingest.clock import SystemClock
from choreo_ingest.config import (
    Config,
    config_warnings,
    find_config_path,
    load_config,
    resolve_state_path,
)
from choreo_ingest.errors import ChoreoIngestError
from choreo_ingest.idle import run_if_idle
from choreo_ingest.reporting import (
    changes_json,
    iter_export,
    list_changes,
    no_state_health,
    status_report,
)
from choreo_ingest.store import StateLocation, configured_location

_SHARED_OPTIONS = {"--config": "config", "-c": "config", "--db": "db"}


class _Call(NamedTuple):  # not a dataclass: each costs this entry a millisecond to define
    command: str
    options: dict[str, str]
    flags: set[str]


_Handler = Callable[[_Call, Config, StateLocation], "int | None"]


def lean_main(args: Sequence[str]) -> int | None:
    """The exit code of the command line `args` if this entry answered it; None, with nothing
    printed, when the full application must."""
    call = _parse(args)
    if call is None:
        return None
    try:
        config = load_config(find_config_path(_path(call.options.get("config"))))
        if config_warnings(config):
            return None  # the full command logs them
        state = configured_location(resolve_state_path(call.options.get("db"), config), config)
        return _COMMANDS[call.command].handler(call, config, state)
    except ChoreoIngestError:
        return None  # met again, and reported, by the full command
    except KeyboardInterrupt:  # SIGINT or SIGTERM: said as the full command says it
        error_line("interrupted")
        if "--json" in call.flags:
            fields = _COMMANDS[call.command].json_fields
            print_json({**fields, "exitCode": int(ExitCode.INTERRUPTED), "error": "interrupted"})
        return int(ExitCode.INTERRUPTED)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _parse(args: Sequence[str]) -> _Call | None:
    """The command, its options and flags, if every argument is one this entry takes."""
    command: str | None = None
    options: dict[str, str] = {}
    flags: set[str] = set()
    index = 0
    while index < len(args):
        arg = args[index]
        name, equals, value = arg.partition("=")
        known = _SHARED_OPTIONS.get(name)
        if known is None and command is not None:
            known = _COMMANDS[command].options.get(name)
        if known is not None:
            if equals and not name.startswith("--"):
                return None  # `-c=x` means the value `=x` to click: leave it to click
            if not equals:
                index += 1
                if index == len(args):
                    return None
                value = args[index]
            if not value or known in options:
                return None
            options[known] = value
        elif command is None and arg in _COMMANDS:
            command = arg
        elif command is not None and arg in _COMMANDS[command].flags:
            flags.add(arg)
        else:
            return None
        index += 1
    return None if command is None else _Call(command, options, flags)


def _run(call: _Call, config: Config, state: StateLocation) -> int | None:
    if sys.stdout.isatty() or sys.stderr.isatty():
        return None  # a person: the full command says what it did
    return int(ExitCode.OK) if run_if_idle(config, state, SystemClock()) else None


def _status(call: _Call, config: Config, state: StateLocation) -> int | None:
    if "--json" not in call.flags:
        return None  # a table: rich
    print_json(status_report(state, config, SystemClock().now()).to_json())
    return int(ExitCode.OK)


def _health(call: _Call, config: Config, state: StateLocation) -> int:
    return show_health(state, config, as_json="--json" in call.flags)


def show_health(state: StateLocation, config: Config, *, as_json: bool) -> int:
    """`health`: the report (or its problems, one per line), and its exit code."""
    if not state.exists():
        document = no_state_health(state)
        if as_json:
            print_json(document)
        else:
            print_text(document["problems"][0])
        return int(ExitCode.INTERNAL_ERROR)
    report = status_report(state, config, SystemClock().now())
    if as_json:
        print_json(report.health_json())
    else:
        for item in report.providers:
            for problem in item.health_problems:
                print_text(f"{item.record.name}: {problem}")
        if report.healthy and sys.stdout.isatty():
            print_text("healthy")
    return int(ExitCode.OK if report.healthy else ExitCode.INTERNAL_ERROR)


def _export(call: _Call, config: Config, state: StateLocation) -> int | None:
    if call.options.get("format", "ndjson") != "ndjson":
        return None  # YAML: the mirror's dumper
    return _print_lines(iter_export(state))


def _print_lines(rows: Iterator[Any]) -> int:
    """NDJSON rows; an error before the first goes to the full command (nothing is printed yet),
    one after it is reported here, as the full command would."""
    first = next(rows, None)
    if first is None:
        return int(ExitCode.OK)
    try:
        print_json_lines(itertools.chain([first], rows))
    except ChoreoIngestError as error:
        error_line(str(error))
        return int(exit_code_for(error))
    return int(ExitCode.OK)


def _changes(call: _Call, config: Config, state: StateLocation) -> int | None:
    since, limit = _count(call.options.get("since", "0")), _count(call.options.get("limit"))
    if since is None or (limit is None and "limit" in call.options):
        return None  # the full command's usage error
    show_changes(list_changes(state, since, limit), since, as_json="--json" in call.flags)
    return int(ExitCode.OK)


def show_changes(rows: Sequence[Any], since: int, *, as_json: bool) -> None:
    """`changes`: one document with --json, else NDJSON rows."""
    if as_json:
        print_json(changes_json(rows, since))
    else:
        print_json_lines(row.to_json() for row in rows)


def _count(text: str | None) -> int | None:
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


class _Command(NamedTuple):
    handler: _Handler
    options: Mapping[str, str] = MappingProxyType({})
    flags: frozenset[str] = frozenset()
    json_fields: Mapping[str, Any] = MappingProxyType({})
    """What the full command's error document holds besides `exitCode` and `error`."""


_COMMANDS = {
    "run": _Command(_run),
    "status": _Command(_status, flags=frozenset({"--json"})),
    "health": _Command(
        _health, flags=frozenset({"--json"}), json_fields=MappingProxyType({"healthy": False})
    ),
    "export": _Command(_export, options={"--format": "format", "-f": "format"}),
    "changes": _Command(
        _changes, options={"--since": "since", "--limit": "limit"}, flags=frozenset({"--json"})
    ),
}
