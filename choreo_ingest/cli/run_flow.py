"""`run` without typer: the burst (or nothing), what it prints, and its exit code.

The lean entry (`cli/lean.py`) runs every plain `run` through `run_and_report`, so that a busy
cron call does not pay for typer's parameter machinery or rich; the typer command
(`cli/run_commands.py`) parses its options and calls `run_command` too. Both print the same.
"""

from __future__ import annotations

from typing import Any

from choreo_ingest.cli.exit_codes import RUN_OUTCOMES, ExitCode, exit_code_for
from choreo_ingest.cli.failures import ERROR_FIELDS, EVENT_COUNTS, RUN_ERROR_FIELDS, reported
from choreo_ingest.cli.output import (
    StdoutFailed,
    error_line,
    print_json,
    print_text,
    stderr_is_tty,
    stderr_lines_in_json,
    stdout_is_tty,
)
from choreo_ingest.cli.session import Session, session_of
from choreo_ingest.clock import rfc3339, rfc3339_due
from choreo_ingest.config import Config, require_api
from choreo_ingest.engine import ProviderOutcome, StopSignal
from choreo_ingest.errors import LockHeld
from choreo_ingest.events import InboxHeld
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.logs import configure_logging, get_logger
from choreo_ingest.models import ProviderAction, RunOutcome
from choreo_ingest.provider_scope import checked_provider
from choreo_ingest.providers.registry import BUILT_IN

log = get_logger("choreo_ingest.cli")


def run_and_report(
    config: Config,
    db: str | None,
    *,
    verbosity: int,
    log_json: bool | None,
    provider: str | None,
    force: bool,
    json_output: bool,
) -> int:
    """The whole `run` command for the lean entry: logging, session, run, report."""
    stderr_lines_in_json(configure_logging(verbosity=verbosity, json=log_json))
    try:
        session = session_of(config, db)
        return run_command(session, provider=provider, force=force, json_output=json_output)
    except (Exception, KeyboardInterrupt) as error:
        return reported(error, json_output, ERROR_FIELDS["run"])


def run_command(session: Session, *, provider: str | None, force: bool, json_output: bool) -> int:
    """At most one burst per provider (only `provider`'s, if given); prints the outcome."""
    if provider is not None:
        checked_provider(session.config, session.state, provider, option="--provider")
    require_api_for(session, provider)
    try:
        return run_reported(session, provider=provider, force=force, json_output=json_output)
    except LockHeld as error:
        return report_locked(json_output, str(error))


def run_reported(session: Session, *, provider: str | None, force: bool, json_output: bool) -> int:
    """`run_once`, then its outcome printed; its exit code. The stop flag stays while the
    outcome is reported: a signal once the run has ended cuts nothing short, and must not turn a
    printed outcome into an interrupt (or --json into two documents)."""
    stop = StopSignal()
    with stop.installed():
        result = run_once(
            session.config, session.state, session.clock, only=provider, force=force, stop=stop
        )
        return report_run(result, json_output)


def require_api_for(session: Session, provider: str | None) -> None:
    """The API settings, if a built-in provider is about to call its API."""
    names = [provider] if provider else list(session.config.providers)
    if any(name in BUILT_IN for name in names):
        require_api(session.config)


def report_locked(json_output: bool, message: str) -> int:
    code = int(RUN_OUTCOMES[RunOutcome.LOCKED])
    if json_output:
        print_json({**RUN_ERROR_FIELDS, "outcome": RunOutcome.LOCKED.value, "exitCode": code})
    # Overlapping calls are normal under cron: say so only to a person (or at -v).
    if stderr_is_tty():
        from choreo_ingest.cli.render import note_line  # rich: for a terminal only

        note_line(f"choreo-ingest: {message}")
    else:
        log.info("run_skipped", reason=message)
    return code


def report_run(result: RunResult, json_output: bool) -> int:
    """Print what the run did; its exit code. An output the run could not write (the mirror,
    the metrics textfile) is reported beside the providers' outcomes, with the exit code of its
    error, as any error's (`exit_code_for`: 2 for the setting that names the path). With
    `--json` the failures are in the document; a stdout that cannot take it gets them said on
    stderr instead, and the run's own code stands (74 only for a run that went well)."""
    error = result.error
    code = _exit_code(result)
    if json_output:  # the providers' failures are in the document; an output's is said too
        document: dict[str, Any] = {
            "outcome": result.outcome.value,
            "exitCode": int(code),
            "providers": [outcome_json(outcome) for outcome in result.providers],
            "events": {
                **{name: getattr(result.events, name) for name in EVENT_COUNTS},
                "held": [held_json(held) for held in result.events.held],
            },
        }
        if error is not None:
            document["error"] = result.error_text
        try:
            print_json(document)
        except StdoutFailed as failed:
            _provider_error_lines(result)
            _output_error_line(result)
            error_line(str(failed))
            return int(code or ExitCode.OUTPUT_FAILED)
        _output_error_line(result)
        return int(code)
    _provider_error_lines(result)
    if stdout_is_tty():
        for outcome in result.providers:
            if not outcome.error and outcome.action is not ProviderAction.INTERRUPTED:
                print_text(outcome_line(outcome))
    _output_error_line(result)
    return int(code)


def _exit_code(result: RunResult) -> ExitCode:
    """The code of the run's outcome, of its output's error, 1 when a provider failed on a bug
    of its own, or 2 when the only failures are providers that could not be loaded, or bursts
    and drains that met a setting to mend (`check` says 2 of them too): not upstream trouble."""
    if result.error is not None:
        return exit_code_for(result.error)
    failed = [o for o in result.providers if o.action is ProviderAction.FAILED]
    if any(o.crashed for o in failed):
        return ExitCode.INTERNAL_ERROR
    held = result.events.held
    mendable = all(o.unloadable or o.misconfigured for o in failed) and all(
        h.mendable for h in held
    )
    if result.outcome is RunOutcome.FAILED and (failed or held) and mendable:
        return ExitCode.USAGE
    return RUN_OUTCOMES[result.outcome]


def _provider_error_lines(result: RunResult) -> None:
    """A line for each provider that failed or whose events wait after the API failed, and one
    for an interrupted run (SIGTERM from a job's deadline: its log must not be empty)."""
    said = False
    waits = {(held.provider, held.error): rfc3339(held.until) for held in result.events.held}
    failed = {(outcome.name, outcome.error) for outcome in result.providers if outcome.error}
    for (provider, error), until in waits.items():
        if (provider, error) not in failed:  # the same text (a grant refused): said once, below
            error_line(f"{provider}: events wait until {until}: {error}")
    for outcome in result.providers:
        if outcome.error:
            until = waits.get((outcome.name, outcome.error))
            also = f" (its events wait until {until} too)" if until else ""
            error_line(f"{outcome.name}: {outcome.error}{also}")
        elif outcome.action is ProviderAction.INTERRUPTED:
            error_line(
                f"{outcome.name}: interrupted after {outcome.pages} page(s); the next run goes "
                "on from the last one"
            )
            said = True
    if result.outcome is RunOutcome.INTERRUPTED and not said:
        error_line("interrupted")


def _output_error_line(result: RunResult) -> None:
    for error in result.output_errors:
        error_line(str(error))


def held_json(held: InboxHeld) -> dict[str, Any]:
    return {"provider": held.provider, "until": rfc3339(held.until), "error": held.error}


def outcome_json(outcome: ProviderOutcome) -> dict[str, Any]:
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
        "nextActionAt": rfc3339_due(outcome.next_action_at),
        "error": outcome.error,
    }


def outcome_line(outcome: ProviderOutcome) -> str:
    until = rfc3339_due(outcome.next_action_at) or "-"
    if outcome.action is ProviderAction.WAITING:
        hint = "; `choreo-ingest run --force` bursts now" if outcome.next_action_at else ""
        return f"{outcome.name}: nothing due ({outcome.reason}) until {until}{hint}"
    line = (
        f"{outcome.name}: {outcome.action.value}, {outcome.pages} pages, "
        f"{outcome.entities_upserted} upserted, {outcome.entities_unchanged} unchanged"
    )
    if outcome.cycle_completed:
        line += f", cycle completed, {outcome.entities_removed} removed"
        if outcome.removals_blocked:
            line += f", {outcome.removals_blocked} removals BLOCKED (see `choreo-ingest removals`)"
    return f"{line}; {outcome.state.value} until {until}"
