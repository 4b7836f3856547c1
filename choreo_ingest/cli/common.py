"""What every command shares: options, config and state path, errors turned into exits."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from choreo_ingest.cli.failures import reported
from choreo_ingest.cli.output import ask
from choreo_ingest.cli.session import Session, load_session
from choreo_ingest.errors import ConfigError, NotConfirmed

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


def open_session(
    ctx: typer.Context,
    config: Path | None,
    db: str | None,
    *,
    log_warnings: bool = True,
    checking: bool = False,
) -> Session:
    """Config and state from the command's options, else the global ones, else defaults
    (`checking`: see `load_session`)."""
    shared = ctx.find_object(GlobalOptions) or GlobalOptions()
    db = db if db is not None else shared.db  # an empty `--db` is refused, not passed over
    return load_session(config or shared.config, db, log_warnings=log_warnings, checking=checking)


@contextmanager
def reported_errors(as_json: bool, **json_fields: Any) -> Iterator[None]:
    """Turn an error into one line on stderr (plus a JSON document with --json) and an exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(reported(error, as_json, json_fields)) from None


def confirm_or_abort(question: str, yes: bool) -> None:
    """Destructive commands ask on a TTY and need --yes otherwise; a "no" is NotConfirmed (exit 2,
    as the refusal without --yes off a TTY)."""
    if yes:
        return
    if sys.stdin is None:  # descriptor 0 closed (`<&-`): nothing to answer with
        raise ConfigError(
            "refusing without confirmation: stdin is closed; pass --yes", path="--yes"
        )
    if not sys.stdin.isatty():
        raise ConfigError("refusing without confirmation off a TTY; pass --yes", path="--yes")
    if not ask(question):
        raise NotConfirmed
