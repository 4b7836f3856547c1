"""An error turned into what the user sees: one line on stderr (and with --json, one document
on stdout, unless stdout itself failed or the command printed its own) and an exit code. The
typer commands (`common.reported_errors`), the lean entry and the lean `run` (`run_flow`) all
report through `reported`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from choreo_ingest.cli.exit_codes import ExitCode, exit_code_for
from choreo_ingest.cli.output import StdoutFailed, document_written, error_line, print_json
from choreo_ingest.errors import ChoreoIngestError, interrupted
from choreo_ingest.models import RunOutcome

EVENT_COUNTS = ("applied", "retried", "parked", "dropped")
"""What `run --json`'s `events` says of the inbox: the fields of `events.DrainStats` so named."""
NO_EVENTS: Mapping[str, Any] = {**dict.fromkeys(EVENT_COUNTS, 0), "held": []}
"""`run --json`'s `events` where the run applied none (it failed, or found the lock held);
`held` lists the providers whose events wait after the way to the API failed."""
RUN_ERROR_FIELDS = {"outcome": RunOutcome.ERROR.value, "providers": [], "events": NO_EVENTS}
"""What `run --json` prints besides `exitCode` and `error` when it fails before any burst: the
keys of every `run --json` document."""
ERROR_FIELDS: dict[str, Mapping[str, Any]] = {
    "run": RUN_ERROR_FIELDS,
    "refresh": RUN_ERROR_FIELDS,  # with --now, which runs; without it, none (as `reset`)
    "health": {"healthy": False},
    "check": {"ok": False, "checks": []},
    "event": {"stored": 0, "ignored": 0, "rejected": []},
}
"""A command's usual keys that its `--json` error document carries (a usage error's too)."""

_GLOBAL_OPTIONS_WITH_VALUES = frozenset({"--config", "-c", "--db"})


def command_fields(args: list[str]) -> tuple[bool, Mapping[str, Any]]:
    """(whether `args` ask for --json, the usual keys of the command they name) for an error
    found before any command could say it: an interrupt while modules load, an option click
    refused before it knew the command (`run --json --config` with no path)."""
    options = _options(args)
    values = {index + 1 for index, arg in enumerate(options) if arg in _GLOBAL_OPTIONS_WITH_VALUES}
    named = (arg for index, arg in enumerate(options) if index not in values)
    command = next((arg for arg in named if arg in ERROR_FIELDS), "")
    return "--json" in options, error_fields(command, options)


def error_fields(command: str, args: list[str]) -> Mapping[str, Any]:
    """The usual keys of `command`'s `--json` error document: a `refresh` has a run's only with
    `--now`, which runs; without it, none (as `reset`)."""
    if command == "refresh" and "--now" not in _options(args):
        return {}
    return ERROR_FIELDS.get(command, {})


def _options(args: list[str]) -> list[str]:
    """`args` before a `--`, after which nothing is an option."""
    return args[: args.index("--")] if "--" in args else args


def reported(error: BaseException, as_json: bool, fields: Mapping[str, Any]) -> int:
    """Say what went wrong; returns the exit code. A bug is named as one, its traceback at -vv.
    A stdout that cannot be written is said on stderr alone; when it fails only as the JSON
    document is printed, the error's own code stands, the failed write said beside it."""
    from choreo_ingest.logs import get_logger, scrub_secrets  # not on the idle path

    if isinstance(error, (ChoreoIngestError, StdoutFailed)):
        message, code = str(error), exit_code_for(error)
    elif interrupted(error):
        message, code = "interrupted", ExitCode.INTERRUPTED
    else:
        get_logger("choreo_ingest.cli").debug("internal_error", exc_info=error)
        shown = f"{type(error).__name__}: {error}"
        message = f"internal error: {shown} (a bug; run with -vv for details)"
        code = ExitCode.INTERNAL_ERROR
    message = scrub_secrets(message)  # a path or a value may hold the token (`state.path`)
    error_line(message)
    if as_json and not isinstance(error, StdoutFailed):
        if "outcome" in fields and code in _OUTCOME_OF:  # the outcome says what happened
            fields = {**fields, "outcome": _OUTCOME_OF[code]}
        print_error_document({**fields, "exitCode": int(code), "error": message})
    return int(code)


def print_error_document(document: Mapping[str, Any]) -> None:
    """An error's `--json` document; a stdout that cannot take it is said on stderr, beside the
    error (whose exit code stands). None where the command printed its document already (an
    interrupt that came as it was written): stdout carries one document, the error is said on
    stderr alone."""
    if document_written():
        return
    try:
        print_json(document)
    except StdoutFailed as failed:
        error_line(str(failed))


_OUTCOME_OF = {
    ExitCode.INTERRUPTED: RunOutcome.INTERRUPTED.value,
    ExitCode.LOCKED: RunOutcome.LOCKED.value,
}
