"""What a command works with: the config, where the state is, and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from choreo_ingest.cli.output import stderr_is_tty
from choreo_ingest.clock import Clock, SystemClock
from choreo_ingest.config import (
    Config,
    config_warnings,
    find_config_path,
    load_config,
    resolve_state_path,
    secret_values,
    state_origin,
)
from choreo_ingest.logs import get_logger, register_secret
from choreo_ingest.store import StateLocation, configured_location

log = get_logger("choreo_ingest.cli")


@dataclass(frozen=True)
class Session:
    config: Config
    state: StateLocation
    clock: Clock
    state_origin: str
    """Where `state` came from, as messages name it: `--db`, `$CHOREO_INGEST_DB`, `state.url`,
    `state.path` (`config.state_origin`)."""


def load_session(
    config: Path | None, db: str | None, *, log_warnings: bool = True, checking: bool = False
) -> Session:
    """The config (`--config`, else the defaults' search) and the state (`--db`, else the
    config's), with the config's secrets kept out of the logs and its warnings logged (unless
    the command reports them itself). `checking` (`check`): a `state.passwordFile` that cannot
    be read is one of its failed checks, not an error here."""
    loaded = load_config(find_config_path(config))
    return session_of(loaded, db, log_warnings=log_warnings, checking=checking)


def session_of(
    loaded: Config, db: str | None, *, log_warnings: bool = True, checking: bool = False
) -> Session:
    for secret in secret_values(loaded):
        register_secret(secret)
    for warning in config_warnings(loaded) if log_warnings else ():
        # For a person (a terminal, `-v`, `check`): off a terminal, cron would mail a deliberate
        # `insecureSkipVerify` every minute, for good.
        (log.warning if stderr_is_tty() else log.info)("config_warning", message=warning)
    origin = state_origin(db, loaded)
    resolved = resolve_state_path(db, loaded)
    state = configured_location(resolved, loaded, origin=origin, defer_password_error=checking)
    return Session(loaded, state, SystemClock(), origin)
