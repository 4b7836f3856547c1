"""What every command shares: options, config and state path, errors turned into exits."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from choreo_ingest.cli import render
from choreo_ingest.cli.exit_codes import ExitCode, exit_code_for
from choreo_ingest.clock import Clock, SystemClock
from choreo_ingest.config import (
    Config,
    config_warnings,
    find_config_path,
    load_config,
    resolve_state_path,
    secret_values,
)
from choreo_ingest.errors import ChoreoIngestError, ConfigError
from choreo_ingest.logs import register_secret
from choreo_ingest.store import StateLocation, configured_location

log = structlog.get_logger("choreo_ingest.cli")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $CHOREO_INGEST_CONFIG, else ./choreo-ingest.yaml if present).",
        show_default=False,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="PATH|URL",
        help="State file, or postgresql:// URL (default: $CHOREO_INGEST_DB, else state.url or "
        "state.path, else ./choreo-ingest.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required off a TTY).")
]


@dataclass(frozen=True)
class GlobalOptions:
    config: Path | None = None
    db: str | None = None


@dataclass(frozen=True)
class Session:
    config: Config
    state: StateLocation
    clock: Clock


def open_session(ctx: typer.Context, config: Path | None, db: str | None) -> Session:
    """Config and state from the command's options, else the global ones, else defaults."""
    shared = ctx.find_object(GlobalOptions) or GlobalOptions()
    loaded = load_config(find_config_path(config or shared.config))
    for secret in secret_values(loaded):
        register_secret(secret)
    for warning in config_warnings(loaded):
        log.warning("config_warning", message=warning)
    state = configured_location(resolve_state_path(db or shared.db, loaded), loaded)
    return Session(loaded, state, SystemClock())


@contextmanager
def reported_errors(as_json: bool, **json_fields: Any) -> Iterator[None]:
    """Turn an error into one line on stderr (plus a JSON document with --json) and an exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except ChoreoIngestError as error:
        _fail(as_json, str(error), exit_code_for(error), json_fields)
    except KeyboardInterrupt:
        _fail(as_json, "interrupted", ExitCode.INTERRUPTED, json_fields)
    except Exception as error:
        log.debug("internal_error", exc_info=True)
        message = (
            f"internal error: {type(error).__name__}: {error} (a bug; run with -vv for details)"
        )
        _fail(as_json, message, ExitCode.INTERNAL_ERROR, json_fields)


def _fail(as_json: bool, message: str, code: ExitCode, fields: dict[str, Any]) -> None:
    render.error_line(message)
    if as_json:
        render.print_json({**fields, "exitCode": int(code), "error": message})
    raise typer.Exit(int(code))


def confirm_or_abort(question: str, yes: bool) -> None:
    """Destructive commands ask on a TTY and need --yes otherwise."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError("refusing without confirmation off a TTY; pass --yes", path="--yes")
    if not typer.confirm(question, default=False):
        raise typer.Exit(int(ExitCode.OK))
