"""Commands that need only the state file: status, health, providers, reset, migrate, removals,
export, changes; and `checked_provider`, the one check of a provider name every command makes."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from choreo_ingest.change_listing import list_changes
from choreo_ingest.cli import render
from choreo_ingest.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    YesOption,
    confirm_or_abort,
    open_session,
    reported_errors,
)
from choreo_ingest.cli.exit_codes import ExitCode
from choreo_ingest.cli.failures import ERROR_FIELDS
from choreo_ingest.cli.lean import MAX_COUNT, show_changes, show_health
from choreo_ingest.cli.session import Session
from choreo_ingest.clock import rfc3339_due
from choreo_ingest.config import resolve_state_path
from choreo_ingest.errors import ConfigError
from choreo_ingest.event_retries import object_path
from choreo_ingest.invocation import (
    MigrationReport,
    approval_json,
    approve_removals,
    copy_state,
    migrate,
    reset,
    reset_json,
)
from choreo_ingest.invocation import forget as forget_provider
from choreo_ingest.metrics import ENTITY_KINDS
from choreo_ingest.mirror import entity_yaml
from choreo_ingest.models import EVENTS_HELD_FACT, ProviderState
from choreo_ingest.provider_scope import ProviderScope, checked_provider
from choreo_ingest.reporting import (
    StatusReport,
    iter_export,
    pending_removals,
    providers_json,
    removals_json,
    shorten,
    status_report,
)
from choreo_ingest.store import (
    PostgresLocation,
    StateRef,
    configured_location,
    state_location,
    state_shown,
)
from choreo_ingest.version import __version__

ProviderArgument = Annotated[
    str | None, typer.Argument(metavar="PROVIDER", help="Only this provider.")
]


def _storable(value: int | None) -> int | None:
    """A count or seq option's value, refused past what the state store holds (a usage error,
    not an OverflowError from SQLite)."""
    if value is not None and value > MAX_COUNT:
        raise typer.BadParameter(f"{value} is too large (at most {MAX_COUNT:,})")
    return value


def status(
    ctx: typer.Context,
    provider: ProviderArgument = None,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Show each provider's state, schedule, progress and blocked removals (takes no lock)."""
    with reported_errors(json_output):
        session = open_session(ctx, config, db)
        report = status_report(session.state, session.config, session.clock.now(), only=provider)
        if json_output:
            render.print_json(report.to_json())
            return
        show_status(report)


def show_status(report: StatusReport) -> None:
    render.table(
        f"{report.state_file}"
        f"{f' (schema {report.state_schema!r})' if report.state_schema else ''}"
        f" (schema version {report.schema_version}"
        f"{', a run is in progress' if report.running else ''})",
        [
            "provider",
            "api",
            "state",
            "cycle",
            "next action",
            "attempts",
            "active",
            "blocked",
            "error",
        ],
        [
            [
                item.record.name,
                item.facts.get("api", ""),
                _state_shown(item.record.state, running=report.running),
                item.cycle_shown,
                rfc3339_due(item.next_action_at),
                item.record.attempts,
                item.active_entities,
                item.removals_blocked or "",
                shorten(item.record.last_error),
            ]
            for item in report.providers
        ],
        folding="error",
    )
    for item in report.providers:  # as `health` says them: a table row can look like progress
        for problem in item.problems_shown:
            render.print_text(f"health: {item.record.name}: {problem}")
    if report.events.pending or report.events.parked:
        waiting = [
            f"{item.record.name}'s wait until {held} (the last re-read failed)"
            for item in report.providers
            if (held := item.facts.get(EVENTS_HELD_FACT))
        ]
        waiting += [
            f"{item.record.name}'s {wait['kind']} {object_path(wait)} waits alone until "
            f"{wait['until']} (its re-reads fail)"
            for item in report.providers
            for wait in item.events_waiting_alone
        ]
        counts = f"events: {report.events.pending} pending, {report.events.parked} parked"
        render.print_text("; ".join([counts, *waiting]) if report.events.pending else counts)


def _state_shown(state: ProviderState, *, running: bool) -> str:
    """A `bursting` record while no run holds the lock is a burst that did not finish."""
    if state is ProviderState.BURSTING and not running:
        return "bursting (no run holds the lock)"
    return state.value


def health(
    ctx: typer.Context,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Exit 0 if all providers are healthy, else 1 (failing, removals blocked, stale, no state)."""
    with reported_errors(json_output, **ERROR_FIELDS["health"]):
        session = open_session(ctx, config, db)
        code = show_health(session.state, session.config, as_json=json_output)
    if code != ExitCode.OK:
        raise typer.Exit(code)


def providers(
    ctx: typer.Context,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """List the providers that are installed and which of them the config runs."""
    with reported_errors(json_output):
        session = open_session(ctx, config, db)
        document = providers_json(session.config)
        rows = document["providers"]
        if json_output:
            render.print_json(document)
        else:
            render.table(
                None,
                ["provider", "source", "configured"],
                [[row["name"], row["source"], "yes" if row["configured"] else ""] for row in rows],
            )


def reset_command(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="The provider to reset.")],
    purge: Annotated[
        bool, typer.Option("--purge", help="Also remove its entities and active set.")
    ] = False,
    forget: Annotated[
        bool,
        typer.Option(
            "--forget",
            help="For a provider removed from the config: remove its state, entities and metrics "
            "(no --purge needed).",
        ),
    ] = False,
    yes: YesOption = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Start PROVIDER afresh: the next run begins a new cycle (entities stay unless --purge)."""
    with reported_errors(json_output):
        if forget and purge:  # refused before anything is opened: it would add nothing
            raise ConfigError(
                "--forget and --purge cannot be combined: --forget already removes the "
                "provider's entities; drop --purge"
            )
        session = open_session(ctx, config, db)
        if forget:
            checked_provider(session.config, session.state, provider, ProviderScope.FORGOTTEN)
            confirm_or_abort(
                f"forget provider {provider!r}: remove its state, entities and metrics?", yes
            )
            removed = forget_provider(
                session.state, provider, session.clock, config=session.config, mirror=True
            )
        else:
            checked_provider(session.config, session.state, provider)
            what = "reset" + (" and PURGE all entities of" if purge else "")
            confirm_or_abort(f"{what} provider {provider!r}?", yes)
            removed = reset(
                session.state,
                provider,
                session.clock,
                purge=purge,
                config=session.config,
                mirror=True,
            )
        if json_output:
            render.print_json(reset_json(provider, forgotten=forget, removed=removed))
        elif render.stdout_is_tty():
            done = "forgotten" if forget else "reset"
            render.print_text(f"{provider}: {done}; {removed} entities purged")


def migrate_command(
    ctx: typer.Context,
    status_only: Annotated[
        bool, typer.Option("--status", help="Only list applied and pending migrations.")
    ] = False,
    copy_to: Annotated[
        str | None,
        typer.Option(
            "--copy-to",
            metavar="PATH|URL",
            help="Copy the whole state to another store (a state file, or postgresql://...).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --copy-to: replace a state the target holds.")
    ] = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Apply pending state schema migrations (`run` does too), or copy the state elsewhere.

    `--copy-to` copies SQLite to PostgreSQL or back, holding both run locks."""
    with reported_errors(json_output):
        _check_migrate_options(status_only, copy_to, force)
        session = open_session(ctx, config, db)
        if copy_to is not None:
            _copy(session, copy_to, force, json_output)
            return
        report = migrate(session.state, apply=not status_only)
        if json_output:
            render.print_json(
                {
                    "stateFile": state_shown(session.state),
                    "exists": report.exists,
                    "schemaVersion": report.schema_version,
                    "supportedVersion": report.supported_version,
                    "release": __version__,
                    "applied": report.applied,
                    "pending": report.pending,
                    "appliedNow": report.applied_now,
                }
            )
        elif status_only:  # asked for: printed off a TTY too, one line per migration
            render.print_text(_migrated_heading(session.state, report))
            for name in report.applied:
                render.print_text(f"{name} applied")
            for name in report.pending:
                render.print_text(f"{name} pending")
        elif render.stdout_is_tty() or report.applied_now:
            render.print_text(
                f"{_migrated_heading(session.state, report)}; applied now: "
                f"{', '.join(report.applied_now) or 'nothing'}; pending: "
                f"{', '.join(report.pending) or 'nothing'}"
            )


def _migrated_heading(state: StateRef, report: MigrationReport) -> str:
    """The state and its schema version, as `status` names them (a PostgreSQL state's schema
    too: "schema 6" alone read as the name of one)."""
    location = state_location(state)
    schema = f" (schema {location.schema!r})" if isinstance(location, PostgresLocation) else ""
    missing = "" if report.exists else "; no state there yet (`run` or `migrate` makes it)"
    return (
        f"{location}{schema}: schema version {report.schema_version} "
        f"(supported {report.supported_version}, by choreo-ingest {__version__}){missing}"
    )


def _check_migrate_options(status_only: bool, copy_to: str | None, force: bool) -> None:
    """Options that do not go together are refused before anything is opened or written: a
    read-only listing never turns into a copy."""
    if status_only and copy_to is not None:
        raise ConfigError(
            "--status and --copy-to cannot be combined: --status only lists migrations, "
            "--copy-to writes a copy"
        )
    if force and copy_to is None:
        with_status = "--status and --force cannot be combined: " if status_only else ""
        raise ConfigError(f"{with_status}--force goes only with --copy-to")


def _copy(session: Session, copy_to: str, force: bool, json_output: bool) -> None:
    target = configured_location(
        resolve_state_path(copy_to, session.config, env={}, option="--copy-to"),
        session.config,
        origin="--copy-to",
    )
    copied = copy_state(session.state, target, force=force)
    if json_output:
        render.print_json({"from": str(session.state), "to": str(target), **copied.to_json()})
    elif render.stdout_is_tty():
        rows = ", ".join(f"{table} {count:,}" for table, count in copied.rows.items() if count)
        render.print_text(f"{session.state} -> {target}: {rows or 'nothing to copy'}")


def removals(
    ctx: typer.Context,
    action_or_provider: Annotated[
        str | None,
        typer.Argument(
            metavar="PROVIDER|approve",
            help="List blocked removals (a dry run), or `approve PROVIDER` to apply them.",
        ),
    ] = None,
    approved_provider: Annotated[
        str | None, typer.Argument(metavar="PROVIDER", hidden=True)
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, callback=_storable, help="Refs to list per provider.")
    ] = 100,
    cycle: Annotated[
        int | None,
        typer.Option(
            "--cycle",
            min=1,
            callback=_storable,
            help="approve: only if the blocked removals are still this cycle's (the ones listed).",
        ),
    ] = None,
    yes: YesOption = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """List removals a sweep guard blocked, or apply them with `removals approve PROVIDER`."""
    with reported_errors(json_output):
        session = open_session(ctx, config, db)
        if action_or_provider == "approve":
            if not approved_provider:
                raise ConfigError("name the provider to approve: removals approve PROVIDER")
            checked_provider(session.config, session.state, approved_provider, ProviderScope.KNOWN)
            if not yes:  # the question names what is blocked, and the answer approves only that
                [shown] = pending_removals(
                    session.state, session.config, only=approved_provider, limit=0
                )
                if not shown.count and cycle is None:
                    if json_output:
                        render.print_json(approval_json(approved_provider, 0))
                    else:
                        render.print_text(f"{approved_provider}: no blocked removals")
                    return
                cycle = shown.cycle if cycle is None else cycle
                confirm_or_abort(
                    f"remove the {shown.count:,} entities of {approved_provider!r} that cycle "
                    f"{shown.cycle} did not see?",
                    yes,
                )
            removed, approved = approve_removals(
                session.state,
                approved_provider,
                session.clock,
                config=session.config,
                cycle=cycle,
            )
            if json_output:
                render.print_json(approval_json(approved_provider, removed, approved))
            elif render.stdout_is_tty():
                render.print_text(f"{approved_provider}: {removed} entities removed")
            return
        if approved_provider is not None:
            raise ConfigError(
                f"unexpected argument {approved_provider!r}: removals [PROVIDER] "
                "or removals approve PROVIDER"
            )
        found = pending_removals(
            session.state, session.config, only=action_or_provider, limit=limit
        )
        if json_output:
            render.print_json(removals_json(found))
            return
        for item in found:
            if not item.count:
                render.print_text(f"{item.provider}: no blocked removals")
                continue
            render.print_text(
                f"{item.provider}: {item.count} removals blocked (cycle {item.cycle}): "
                f"{item.reason}"
            )
            for ref in item.refs:
                render.print_text(f"  {ref}")
            if item.count > len(item.refs):
                render.print_text(f"  ... and {item.count - len(item.refs)} more")
            render.print_text(
                f"  apply with: choreo-ingest removals approve {item.provider} --cycle {item.cycle}"
                " (it asks first; --yes in a script)"
            )


class ExportFormat(enum.StrEnum):
    NDJSON = "ndjson"
    YAML = "yaml"


def export(
    ctx: typer.Context,
    output_format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ExportFormat.NDJSON,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help=f"Only this entity kind ({', '.join(ENTITY_KINDS)}; any case)."
        ),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Print the catalog: one entity per line (ndjson) or a multi-document YAML stream."""
    with reported_errors(False):
        session = open_session(ctx, config, db)
        entities = _checked_kind(iter_export(session.state, kind), kind)
        if output_format is ExportFormat.NDJSON:
            render.print_json_lines(entities)
            return
        for entity in entities:  # the mirror's dumper: what YAML 1.1 and 1.2 both read alike
            render.print_text("---\n" + entity_yaml(entity).decode("utf-8"))


def _checked_kind(entities: Iterator[dict[str, Any]], kind: str | None) -> Iterator[dict[str, Any]]:
    """`entities`, unless `kind` is none of the kinds choreo-ingest writes and the catalog has
    no entity of it (a provider of your own may write other kinds): then a usage error."""
    if kind is None or kind.lower() in {known.lower() for known in ENTITY_KINDS}:
        return entities
    first = next(entities, None)
    if first is None:
        raise ConfigError(
            f"no entity of kind {kind!r} (kinds: {', '.join(ENTITY_KINDS)})", path="--kind"
        )
    return itertools.chain([first], entities)


def changes(
    ctx: typer.Context,
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            min=0,
            callback=_storable,
            help="Only changes after this seq; refused when some were pruned (resync).",
        ),
    ] = None,
    since_at: Annotated[
        str | None,
        typer.Option(
            "--since-at",
            help="The `at` read of change --since (--json's lastAt); another is refused "
            "(the state was put back from a copy: resync).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, callback=_storable, help="At most this many.")
    ] = None,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Tail the change log: NDJSON rows {seq, at, op, ref, provider}, or one doc with --json."""
    with reported_errors(json_output):
        if since_at is not None and since is None:
            raise ConfigError(
                "needs --since, the seq of the change read at that time", path="--since-at"
            )
        session = open_session(ctx, config, db)
        listing = list_changes(session.state, since, limit, since_at)
        show_changes(listing, since, as_json=json_output)


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(health)
    app.command()(providers)
    app.command("reset")(reset_command)
    app.command("migrate")(migrate_command)
    app.command()(removals)
    app.command()(export)
    app.command()(changes)
