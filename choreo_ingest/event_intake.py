"""Taking events into the inbox: checked as the provider would apply them, stored without the
run lock and without an API call (`event`, `serve`'s event routes), counted, or purged. The drain
that applies them is `events`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from choreo_ingest.clock import Clock
from choreo_ingest.config import DEFAULT_INBOX_CAPACITY, Config
from choreo_ingest.errors import InboxFull, LockHeld
from choreo_ingest.event_backlog import request_refresh
from choreo_ingest.event_input import Rejected, parse_events
from choreo_ingest.providers.base import IncrementalEntityProvider
from choreo_ingest.providers.registry import load_provider
from choreo_ingest.store import StateRef, Store, state_location


@dataclass(frozen=True)
class EventReceipt:
    """What became of events handed in (`event`, serve's event routes)."""

    provider: str
    stored: int
    ignored: int
    rejected: list[Rejected]
    created: int = 0
    """Of those stored, the `created` events (what `ArrivalRate` tells a replay by)."""
    ignored_created: int = 0  # of those ignored (a forwarder's start sends them too)
    made_state: bool = False
    """No state was there: one was made for these events (a new install's, or a mistyped
    `--db`'s)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "ignored": self.ignored,
            "rejected": [{"index": item.index, "problem": item.problem} for item in self.rejected],
        }


def receive_events(
    state: StateRef,
    config: Config,
    provider_name: str,
    text: str,
    clock: Clock,
    *,
    provider: IncrementalEntityProvider | None = None,
    storing: AbstractContextManager[float | None] | None = None,
) -> EventReceipt:
    """Check events as the provider (loaded, unless given) would apply them and store the valid
    ones in its inbox (no run lock, no API call), within `storing` (`serve`'s turns, which say
    how long the write may wait for SQLite's lock). InboxFull when the inbox is full: then a
    refresh is scheduled."""
    provider = provider or load_provider(provider_name, config)
    parsed = parse_events(text, provider)
    with storing or nullcontext() as busy_seconds:
        stored, made = stored_events(
            state,
            provider_name,
            parsed.valid,
            clock,
            rejected=len(parsed.rejected),
            ignored=parsed.ignored,
            capacity=config.inbox_capacity,
            busy_seconds=busy_seconds,
        )
    created = sum(body.get("action") == "created" for body in parsed.valid) if stored else 0
    return EventReceipt(
        provider_name,
        stored,
        parsed.ignored,
        parsed.rejected,
        created=created,
        ignored_created=parsed.ignored_created,
        made_state=made,
    )


def stored_events(
    state: StateRef,
    provider: str,
    bodies: list[dict[str, Any]],
    clock: Clock,
    *,
    rejected: int = 0,
    ignored: int = 0,
    capacity: int = DEFAULT_INBOX_CAPACITY,
    busy_seconds: float | None = None,
) -> tuple[int, bool]:
    """Put events in the inbox without the run lock (a burst may be running); count `rejected`
    and `ignored` ones (for `choreo_ingest_events_total{outcome}`). Returns how many were stored,
    and whether the state was made for them (none was there).

    Past `capacity` pending events the new ones are refused (InboxFull) and the next run
    refreshes the provider: the changes they carried reach the catalog through a fresh walk.
    `busy_seconds`: how long to wait for SQLite's write lock (else its usual 10 s)."""
    with state_location(state).open() as store:
        if busy_seconds is not None:
            store.limit_lock_wait(busy_seconds)
        pending = store.pending_migrations()
        made = bool(pending) and not store.applied_migrations()  # asked only of a schema behind
        if pending:
            _migrated(store, state, clock)
        try:
            stored = len(store.add_events(provider, bodies, clock.now(), capacity=capacity))
        except InboxFull as full:
            request_refresh(store, provider, clock.now())
            # Counted as dropped, as the backlog's are: a full inbox left no trace in metrics.
            store.bump_counters(provider, {"events_dropped": full.refused})
            raise
        if rejected or ignored:
            store.bump_counters(provider, {"events_rejected": rejected, "events_ignored": ignored})
        return stored, made


SCHEMA_WAIT_SECONDS = 10.0
"""How long `event` waits for a run that holds the lock to migrate the schema, or to let go."""


def _migrated(store: Store, state: StateRef, clock: Clock) -> None:
    """Bring a new (or older) state file's schema up to date, under the run lock. A run that
    holds the lock migrates first thing, and a run of an older release (an upgrade under cron)
    never does but lets go within its burst: wait for either instead of giving up (an event
    must not be lost because cron started a run at the same moment)."""
    give_up_at = clock.monotonic() + SCHEMA_WAIT_SECONDS
    while True:
        try:
            with state_location(state).run_lock():
                store.migrate()
            return
        except LockHeld:
            if not store.pending_migrations():
                return
            if clock.monotonic() >= give_up_at:
                raise
            clock.sleep(0.05)


def purge_events(state: StateRef, provider: str | None = None) -> int:
    """Empty the inbox (of one provider), pending and parked events alike. Takes no run lock, as
    `event` takes none: a drain that meets a purged event has nothing left to delete. Returns how
    many events were removed."""
    if not state_location(state).exists():
        return 0
    with state_location(state).open() as store:
        store.require_current_schema()
        return store.purge_events(provider)
