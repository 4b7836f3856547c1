"""The lean entry: the calls made most often, answered without typer, rich or pydantic.

cron calls `run` every minute and scripts call `status --json`; importing the whole application
(typer builds its parameter adapters with pydantic, structlog loads rich) would cost several
times what such a call does. `lean_main` takes these command lines:

    [GLOBAL] run [--provider NAME] [--force] [--json] [OPTIONS]
    status --json [OPTIONS]
    health [--json] [OPTIONS]
    export [--format ndjson] [OPTIONS]
    changes [--since N] [--limit N] [--json] [OPTIONS]

where OPTIONS are `--config`/`-c` and `--db` (each at most once, before or after the command)
and GLOBAL adds `-v`, and `--log-json` or `--log-console` (both: the full application's usage
error). A plain `run` off a terminal with nothing due is answered by `idle.run_if_idle` before
anything a burst needs is imported; any other `run` goes through `run_flow`, as the typer command
does. For anything else (another command or option, a config warning to log, an error to
report before anything was printed) it returns None having printed nothing, and `main` hands the
same arguments to the typer application, which does everything as before. Both print documents
built by the same core functions, and `health` and `changes` by the same renderers below.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from choreo_ingest.cache_files import file_identity
from choreo_ingest.change_listing import ChangeListing, changes_json, list_changes
from choreo_ingest.cli.exit_codes import ExitCode
from choreo_ingest.cli.failures import ERROR_FIELDS, reported
from choreo_ingest.cli.output import (
    print_json,
    print_json_lines,
    print_text,
    stderr_is_tty,
    stdout_is_tty,
)
from choreo_ingest.clock import SystemClock
from choreo_ingest.config import (
    Config,
    config_warnings,
    find_config_path,
    load_config,
    resolve_state_path,
    state_origin,
    with_secrets,
)
from choreo_ingest.errors import ChoreoIngestError, LockWaitTimedOut
from choreo_ingest.idle import Keeping, run_if_idle
from choreo_ingest.idle_answer import SHARED_OPTIONS, config_path
from choreo_ingest.reporting import iter_export, no_state_health, status_report
from choreo_ingest.store import MAX_INTEGER, StateLocation, configured_location

MAX_COUNT = MAX_INTEGER
"""The largest count or seq an option takes (`--limit`, `--since`)."""
MAX_COUNT_DIGITS = len(str(MAX_COUNT))
_VERBOSE = re.compile(r"-v+")


class _Call(NamedTuple):  # not a dataclass: each costs this entry a millisecond to define
    command: str
    options: dict[str, str]
    flags: set[str]
    verbosity: int = 0
    """`-v` (and `--verbose`) given before the command, counted."""
    log_json: bool | None = None
    """`--log-json` (True) or `--log-console` (False) before the command."""
    keeping: Keeping | None = None
    """A plain `run` of a config file: it may keep its answer."""


_Handler = Callable[[_Call, Config, StateLocation], "int | None"]


def lean_main(args: Sequence[str]) -> int | None:
    """The exit code of the command line `args` if this entry answered it; None, with nothing
    printed, when the full application must."""
    call = _parse(args)
    if call is None or (call.command != "run" and (call.verbosity or call.log_json is not None)):
        return None
    try:
        # No call here makes a request before `_run` knows it must: the kept copy of a file with
        # a token or client secret in it (withheld there) answers without PyYAML.
        path = find_config_path(_path(call.options.get("config")))
        call = call._replace(keeping=_keeping(call, path))  # before the file is read
        config = load_config(path, secrets=False)
        if config_warnings(config) and (call.verbosity or stderr_is_tty()):
            return None  # the full command says them to a person; cron is not told every minute
        db = call.options.get("db")
        origin = state_origin(db, config)
        state = configured_location(resolve_state_path(db, config), config, origin=origin)
        return _COMMANDS[call.command].handler(call, config, state)
    except LockWaitTimedOut as error:  # met again, it would wait out lock_timeout again
        return reported(error, "--json" in call.flags, _COMMANDS[call.command].json_fields)
    except ChoreoIngestError:
        return None  # met again, and reported, by the full command
    except (KeyboardInterrupt, Exception) as error:  # SIGINT or SIGTERM, or a bug: said as the
        # full command says it (a bug: one line, and with --json one document, no traceback)
        return reported(error, "--json" in call.flags, _COMMANDS[call.command].json_fields)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _keeping(call: _Call, path: Path | None) -> Keeping | None:
    """What a `run` needs to keep its answer, if the next call would find it: a config file it
    names as the kept answer's look-up does (`idle_answer.config_path`)."""
    if call.command != "run" or path is None:
        return None
    absolute = str(path.absolute())
    if config_path(call.options.get("config"), os.environ) != absolute:
        return None
    identity = file_identity(absolute)
    return None if identity is None else Keeping(absolute, identity, call.options.get("db"))


def _parse(args: Sequence[str]) -> _Call | None:
    """The command, its options and flags, if every argument is one this entry takes."""
    command: str | None = None
    options: dict[str, str] = {}
    flags: set[str] = set()
    verbosity, log_json = 0, None
    index = 0
    while index < len(args):
        arg = args[index]
        name, equals, value = arg.partition("=")
        if command is None and (arg == "--verbose" or _VERBOSE.fullmatch(arg)):
            verbosity += 1 if arg == "--verbose" else len(arg) - 1
            index += 1
            continue
        if command is None and arg in ("--log-json", "--log-console"):
            if log_json is not None and log_json != (arg == "--log-json"):
                return None  # both: the full application's usage error
            log_json = arg == "--log-json"
            index += 1
            continue
        known = SHARED_OPTIONS.get(name)
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
    return None if command is None else _Call(command, options, flags, verbosity, log_json)


def _run(call: _Call, config: Config, state: StateLocation) -> int:
    plain = not (call.flags or call.options.keys() - {"config", "db"} or call.verbosity)
    quiet = plain and call.log_json is None and not (stdout_is_tty() or stderr_is_tty())
    if quiet and run_if_idle(config, state, SystemClock(), call.keeping):
        return int(ExitCode.OK)
    from choreo_ingest.cli import import_libraries_lightly

    import_libraries_lightly()
    from choreo_ingest.cli.run_flow import run_and_report  # the engine, providers, logging

    return run_and_report(
        with_secrets(config),
        call.options.get("db"),
        verbosity=call.verbosity,
        log_json=call.log_json,
        provider=call.options.get("provider"),
        force="--force" in call.flags,
        json_output="--json" in call.flags,
    )


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
        if report.healthy and stdout_is_tty():
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
        return reported(error, False, {})
    return int(ExitCode.OK)


def _changes(call: _Call, config: Config, state: StateLocation) -> int | None:
    since, limit = _count(call.options.get("since")), _count(call.options.get("limit"))
    if (since is None and "since" in call.options) or (limit is None and "limit" in call.options):
        return None  # the full command's usage error
    if since is None and "since_at" in call.options:
        return None
    listing = list_changes(state, since, limit, call.options.get("since_at"))
    show_changes(listing, since, as_json="--json" in call.flags)
    return int(ExitCode.OK)


def show_changes(listing: ChangeListing, since: int | None, *, as_json: bool) -> None:
    """`changes`: one document with --json, else NDJSON rows."""
    if as_json:
        print_json(changes_json(listing, since))
    else:
        print_json_lines(row.to_json() for row in listing.rows)


def _count(text: str | None) -> int | None:
    """A count or seq in range; None for anything else (the full command's usage error)."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > MAX_COUNT_DIGITS:
        return None  # (int() refuses more than 4,300 digits, before any bound is checked)
    value = int(text)
    return value if value <= MAX_COUNT else None


class _Command(NamedTuple):
    handler: _Handler
    options: Mapping[str, str] = MappingProxyType({})
    flags: frozenset[str] = frozenset()
    json_fields: Mapping[str, Any] = MappingProxyType({})
    """What the full command's error document holds besides `exitCode` and `error`."""


_COMMANDS = {
    "run": _Command(
        _run,
        options={"--provider": "provider", "-p": "provider"},
        flags=frozenset({"--force", "--json"}),
        json_fields=ERROR_FIELDS["run"],
    ),
    "status": _Command(_status, flags=frozenset({"--json"})),
    "health": _Command(_health, flags=frozenset({"--json"}), json_fields=ERROR_FIELDS["health"]),
    "export": _Command(_export, options={"--format": "format", "-f": "format"}),
    "changes": _Command(
        _changes,
        options={"--since": "since", "--since-at": "since_at", "--limit": "limit"},
        flags=frozenset({"--json"}),
    ),
}
