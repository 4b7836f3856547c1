"""`run` and `refresh`: the commands that call the API (`run_flow` does the work and the
printing; the lean entry runs a plain `run` through it without typer)."""

from __future__ import annotations

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
from choreo_ingest.cli.failures import ERROR_FIELDS
from choreo_ingest.cli.run_flow import require_api_for, run_command, run_reported
from choreo_ingest.invocation import refresh, refresh_json
from choreo_ingest.provider_scope import checked_provider

ProviderOption = Annotated[
    str | None, typer.Option("--provider", "-p", help="Run only this configured provider.")
]


def run(
    ctx: typer.Context,
    provider: ProviderOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Burst now, ignoring the interval, rest or backoff.")
    ] = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Do at most one burst per provider (or nothing, if nothing is due), then exit.

    Exit codes:
    - 0 done, or nothing was due
    - 1 a bug
    - 2 config error
    - 3 a burst or the events' drain failed (backoff scheduled)
    - 4 state store error
    - 74 stdout could not be written (what the run did stands)
    - 75 another run holds the lock
    - 130 interrupted (last page saved)
    """
    with reported_errors(json_output, **ERROR_FIELDS["run"]):
        session = open_session(ctx, config, db)
        code = run_command(session, provider=provider, force=force, json_output=json_output)
    raise typer.Exit(code)


def refresh_command(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="The provider to make due.")],
    now: Annotated[bool, typer.Option("--now", help="Run that burst right away.")] = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Make PROVIDER due at once (ends a rest or a backoff); the next `run` acts on it."""
    with reported_errors(json_output, **(ERROR_FIELDS["refresh"] if now else {})):
        session = open_session(ctx, config, db)
        checked_provider(session.config, session.state, provider)
        if now:
            require_api_for(session, provider)
        state = refresh(session.state, provider, session.clock, config=session.config, create=now)
        if not now:
            if json_output:
                render.print_json(refresh_json(provider, state))
            elif render.stdout_is_tty():
                render.print_text(f"{provider}: due now ({state.value}); the next run acts on it")
            return
        code = run_reported(session, provider=provider, force=False, json_output=json_output)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command("refresh")(refresh_command)
