"""`event`: take OpenChoreo change events into the inbox (no API call, no run lock)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from choreo_ingest.cli import render
from choreo_ingest.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    open_session,
    reported_errors,
)
from choreo_ingest.cli.exit_codes import ExitCode
from choreo_ingest.errors import ConfigError
from choreo_ingest.events import parse_events, store_events
from choreo_ingest.providers.registry import load_provider


def event(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="[FILE|-]", help="Events as JSON, a JSON array or NDJSON.")
    ] = "-",
    provider: Annotated[
        str, typer.Option("--provider", "-p", help="The provider that applies them.")
    ] = "openchoreo",
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Queue events for the next `run`; invalid ones are rejected one by one (exit 2), and events
    about kinds the provider does not ingest are acknowledged and counted, not queued."""
    with reported_errors(json_output, stored=0, rejected=[]):
        session = open_session(ctx, config, db)
        if provider not in session.config.providers:
            configured = ", ".join(session.config.providers)
            raise ConfigError(
                f"provider {provider!r} is not configured (configured: {configured}); "
                "its events would never be applied",
                path="--provider",
            )
        parsed = parse_events(_read(source), load_provider(provider, session.config))
        stored = store_events(
            session.state_path,
            provider,
            parsed.valid,
            session.clock,
            rejected=len(parsed.rejected),
            ignored=parsed.ignored,
        )
        for rejected in parsed.rejected:
            render.error_line(str(rejected))
        code = ExitCode.USAGE if parsed.rejected else ExitCode.OK
        if json_output:
            render.print_json(
                {
                    "stored": stored,
                    "ignored": parsed.ignored,
                    "rejected": [
                        {"index": item.index, "problem": item.problem} for item in parsed.rejected
                    ],
                    "exitCode": int(code),
                }
            )
        elif render.stdout_is_tty():
            render.print_text(f"{stored} events queued for {provider}")
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from error


def register(app: typer.Typer) -> None:
    app.command()(event)
