"""`run` and `refresh`: the commands that call the API."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
import typer

from choreo_ingest.cli import render
from choreo_ingest.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    Session,
    open_session,
    reported_errors,
)
from choreo_ingest.cli.exit_codes import RUN_OUTCOMES
from choreo_ingest.clock import rfc3339
from choreo_ingest.config import require_api
from choreo_ingest.engine import ProviderOutcome
from choreo_ingest.errors import LockHeld
from choreo_ingest.invocation import RunResult, refresh, refresh_json, run_once
from choreo_ingest.models import ProviderAction, RunOutcome
from choreo_ingest.provider_scope import checked_provider
from choreo_ingest.providers.registry import BUILT_IN

log = structlog.get_logger("choreo_ingest.cli")

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

    Exit codes: 0 done or nothing due, 2 config error, 3 burst failed (backoff scheduled),
    4 state store error, 75 another run holds the lock, 130 interrupted (last page saved).
    """
    with reported_errors(json_output, outcome=RunOutcome.ERROR.value, providers=[]):
        session = open_session(ctx, config, db)
        if provider is not None:
            checked_provider(session.config, session.state, provider, option="--provider")
        require_api_for(session, provider)
        try:
            result = run_once(
                session.config, session.state, session.clock, only=provider, force=force
            )
        except LockHeld as error:
            _report_locked(json_output, str(error))
        _report_run(result, json_output)


def refresh_command(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="The provider to make due.")],
    now: Annotated[bool, typer.Option("--now", help="Run that burst right away.")] = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Make PROVIDER due at once (ends a rest or a backoff); the next `run` acts on it."""
    with reported_errors(json_output, outcome=RunOutcome.ERROR.value, providers=[]):
        session = open_session(ctx, config, db)
        checked_provider(session.config, session.state, provider)
        if now:
            require_api_for(session, provider)
        state = refresh(session.state, provider, session.clock, config=session.config)
        if not now:
            if json_output:
                render.print_json(refresh_json(provider, state))
            elif render.stdout_is_tty():
                render.print_text(f"{provider}: due now ({state.value}); the next run acts on it")
            return
        result = run_once(session.config, session.state, session.clock, only=provider)
        _report_run(result, json_output)


def require_api_for(session: Session, provider: str | None) -> None:
    """The API settings, if a built-in provider is about to call its API."""
    names = [provider] if provider else list(session.config.providers)
    if any(name in BUILT_IN for name in names):
        require_api(session.config)


def _report_locked(json_output: bool, message: str) -> None:
    if json_output:
        render.print_json(
            {
                "outcome": RunOutcome.LOCKED.value,
                "exitCode": int(RUN_OUTCOMES[RunOutcome.LOCKED]),
                "providers": [],
            }
        )
    # Overlapping calls are normal under cron: say so only to a person (or at -v).
    if render.stderr_is_tty():
        render.note_line(f"choreo-ingest: {message}")
    else:
        log.info("run_skipped", reason=message)
    raise typer.Exit(int(RUN_OUTCOMES[RunOutcome.LOCKED]))


def _report_run(result: RunResult, json_output: bool) -> None:
    code = RUN_OUTCOMES[result.outcome]
    if json_output:
        render.print_json(
            {
                "outcome": result.outcome.value,
                "exitCode": int(code),
                "providers": [_outcome_json(outcome) for outcome in result.providers],
                "events": {
                    "applied": result.events.applied,
                    "retried": result.events.retried,
                    "parked": result.events.parked,
                },
            }
        )
    else:
        for outcome in result.providers:
            if outcome.error:
                render.error_line(f"{outcome.name}: {outcome.error}")
            elif render.stdout_is_tty():
                render.print_text(_outcome_line(outcome))
    raise typer.Exit(int(code))


def _outcome_json(outcome: ProviderOutcome) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "action": outcome.action.value,
        "state": outcome.state.value,
        "pages": outcome.pages,
        "entitiesUpserted": outcome.entities_upserted,
        "entitiesUnchanged": outcome.entities_unchanged,
        "entitiesRemoved": outcome.entities_removed,
        "removalsBlocked": outcome.removals_blocked,
        "cycleCompleted": outcome.cycle_completed,
        "nextActionAt": rfc3339(outcome.next_action_at),
        "error": outcome.error,
    }


def _outcome_line(outcome: ProviderOutcome) -> str:
    until = rfc3339(outcome.next_action_at) or "-"
    if outcome.action is ProviderAction.WAITING:
        return f"{outcome.name}: nothing due ({outcome.reason}) until {until}"
    line = (
        f"{outcome.name}: {outcome.action.value}, {outcome.pages} pages, "
        f"{outcome.entities_upserted} upserted, {outcome.entities_unchanged} unchanged"
    )
    if outcome.cycle_completed:
        line += f", cycle completed, {outcome.entities_removed} removed"
        if outcome.removals_blocked:
            line += f", {outcome.removals_blocked} removals BLOCKED (see `choreo-ingest removals`)"
    return f"{line}; {outcome.state.value} until {until}"


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command("refresh")(refresh_command)
