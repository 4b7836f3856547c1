"""What every command shares: options, config and state path, errors turned into exits."""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Iterator, Sequence
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
from choreo_ingest.providers.registry import available_providers
from choreo_ingest.reporting import reading

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
    Path | None,
    typer.Option(
        "--db",
        help="State file (default: $CHOREO_INGEST_DB, else state.path, else ./choreo-ingest.db).",
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
    db: Path | None = None


@dataclass(frozen=True)
class Session:
    config: Config
    state_path: Path
    clock: Clock


def open_session(ctx: typer.Context, config: Path | None, db: Path | None) -> Session:
    """Config and state path from the command's options, else the global ones, else defaults."""
    shared = ctx.find_object(GlobalOptions) or GlobalOptions()
    loaded = load_config(find_config_path(config or shared.config))
    for secret in secret_values(loaded):
        register_secret(secret)
    for warning in config_warnings(loaded):
        log.warning("config_warning", message=warning)
    return Session(loaded, resolve_state_path(db or shared.db, loaded), SystemClock())


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


class ProviderScope(enum.Enum):
    """Which provider names a command takes."""

    CONFIGURED = "configured"  # it acts on the provider: run, refresh, reset, event
    KNOWN = "known"  # configured, or still in the state file: status, removals, event purge
    FORGOTTEN = "forgotten"  # in the state file, gone from the config: reset --forget


def checked_provider(
    session: Session,
    name: str,
    scope: ProviderScope = ProviderScope.CONFIGURED,
    *,
    option: str | None = None,
) -> str:
    """`name`, if the command may take it; else a usage error (exit 2) listing the names it may.

    The one check of a provider name: a typo must not reach the store, where `refresh` or
    `reset` would create a provider that then lives on in status, health and the metrics.
    """
    configured = list(session.config.providers)
    if scope is not ProviderScope.FORGOTTEN and name in configured:
        return name
    in_state = _state_provider_names(session.state_path)
    if name in in_state and (
        scope is ProviderScope.KNOWN
        or (scope is ProviderScope.FORGOTTEN and name not in configured)
    ):
        return name
    raise ConfigError(_unknown_provider(name, scope, configured, in_state), path=option)


def _state_provider_names(state_path: Path) -> list[str]:
    if not state_path.exists():
        return []
    with reading(state_path) as store:
        return store.provider_names()


def _unknown_provider(
    name: str, scope: ProviderScope, configured: Sequence[str], in_state: Sequence[str]
) -> str:
    only_in_state = [other for other in in_state if other not in configured]
    if scope is ProviderScope.FORGOTTEN:
        if name in configured:
            return (
                f"provider {name!r} is still configured; --forget is for a provider removed "
                "from the config (--purge removes the entities of a configured one)"
            )
        return f"the state file holds no provider {name!r} to forget (it holds: {_names(in_state)})"
    known = f"configured: {_names(configured)}"
    if scope is ProviderScope.KNOWN and only_in_state:
        known += f"; only in the state file: {_names(only_in_state)}"
    known += f"; installed: {_names(info.name for info in available_providers())}"
    if scope is ProviderScope.KNOWN:
        return f"unknown provider {name!r} ({known})"
    hint = ""
    if name in only_in_state:
        hint = f"; it is only in the state file: `reset {name} --forget` removes it"
    return f"provider {name!r} is not configured ({known}){hint}"


def _names(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"
