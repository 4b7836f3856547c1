"""`event`: take OpenChoreo change events into the inbox (no API call, no run lock), or empty it."""

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
    YesOption,
    confirm_or_abort,
    open_session,
    reported_errors,
)
from choreo_ingest.cli.exit_codes import ExitCode
from choreo_ingest.cli.failures import ERROR_FIELDS
from choreo_ingest.errors import ConfigError
from choreo_ingest.event_input import decode_events
from choreo_ingest.event_intake import purge_events, receive_events
from choreo_ingest.provider_scope import ProviderScope, checked_provider
from choreo_ingest.store import PostgresLocation

PURGE = "purge"
DEFAULT_PROVIDER = "openchoreo"


def event(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-|purge",
            help="Events as JSON, a JSON array or NDJSON; or `purge [PROVIDER]` to empty the "
            "inbox (a file called purge: ./purge).",
        ),
    ] = "-",
    purged_provider: Annotated[str | None, typer.Argument(metavar="PROVIDER", hidden=True)] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider", "-p", help="The provider that applies them.  [default: openchoreo]"
        ),
    ] = None,
    yes: YesOption = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Queue events for the next `run`; invalid ones are rejected one by one (exit 2).

    Events about kinds the provider does not ingest are acknowledged and counted, not queued.

    An event is at most 64 KiB, and one call reads at most 32 MiB. A newer event about an
    object replaces the pending one; past
    events.inboxCapacity pending events (100,000) new ones are refused (exit 2). `event purge
    [PROVIDER]` empties the inbox (of PROVIDER), parked events included.
    """
    if source == PURGE:
        _purge(ctx, purged_provider, provider, yes, json_output, config, db)
        return
    with reported_errors(json_output, **ERROR_FIELDS["event"]):
        if purged_provider is not None:
            raise ConfigError(
                f"unexpected argument {purged_provider!r}: event [FILE|-] or event purge [PROVIDER]"
            )
        session = open_session(ctx, config, db)
        provider = checked_provider(
            session.config, session.state, provider or DEFAULT_PROVIDER, option="--provider"
        )
        receipt = receive_events(
            session.state, session.config, provider, _read(source), session.clock
        )
        if receipt.made_state:  # a new install's, or a mistyped --db's: said once
            state = session.state
            schema = f"schema {state.schema!r}, " if isinstance(state, PostgresLocation) else ""
            render.warning_line(
                f"{state} ({schema}{session.state_origin}): no state was there; made one for "
                f"these events ({receipt.stored} kept). Right for a new install; if `run` uses "
                "another state, they are never applied"
            )
        for rejected in receipt.rejected:
            render.error_line(str(rejected))
        code = ExitCode.USAGE if receipt.rejected else ExitCode.OK
        if json_output:
            render.print_json({**receipt.to_json(), "exitCode": int(code)})
        elif render.stdout_is_tty():
            render.print_text(f"{receipt.stored} events queued for {provider}")
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))


def _purge(
    ctx: typer.Context,
    named: str | None,
    option: str | None,
    yes: bool,
    json_output: bool,
    config: Path | None,
    db: str | None,
) -> None:
    with reported_errors(json_output, purged=0):
        if named and option and named != option:
            raise ConfigError(f"two providers to purge, {named!r} and {option!r}: name one")
        provider = named or option
        session = open_session(ctx, config, db)
        if provider is not None:
            checked_provider(session.config, session.state, provider, ProviderScope.KNOWN)
        whose = f"of {provider!r}" if provider else "of every provider"
        confirm_or_abort(f"delete every queued event {whose}, parked ones included?", yes)
        purged = purge_events(session.state, provider)
        if json_output:
            render.print_json({"provider": provider, "purged": purged})
        elif render.stdout_is_tty():
            render.print_text(f"{purged} events purged {whose}")


def _read(source: str) -> str:
    """The input as text: UTF-8 (a byte order mark is allowed), else a usage error naming it."""
    name = "stdin" if source == "-" else source
    if source == "-" and sys.stdin is None:  # the process was started with descriptor 0 closed
        raise ConfigError("stdin: closed, nothing to read (pipe the events in, or name a FILE)")
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with Path(source).open("rb") as file:
                data = file.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{name}: cannot read: {error.strerror or error}") from error
    if len(data) > MAX_INPUT_BYTES:  # parsed, it would take some 14 times as much memory
        raise ConfigError(
            f"{name}: more than {MAX_INPUT_BYTES // 2**20} MiB of events at once; queue them "
            "in parts (NDJSON: `split -l 50000`)"
        )
    return decode_events(data, name)


MAX_INPUT_BYTES = 32 * 2**20
"""The most one `event` call reads: more events than the inbox holds (100,000 of a few hundred
bytes each), and about 450 MiB of memory parsed."""


def register(app: typer.Typer) -> None:
    app.command()(event)
