"""The event inbox: events wait here, in arrival order, until a run applies them.

An event says what changed, not the new content, so of the events about one object only the
newest matters: storing an event drops the older ones with its key (provider, kind, namespace,
name, project), pending or parked. The newest keeps its place, last in arrival order, which
keeps the order right: a `deleted` after a `created` still ends with the removal, a `created`
after a `deleted` with the re-read, and whatever the newer event says is applied after the
events that arrived before it.

A parked event (its re-read kept failing: `fail_event`) stays, counted by `status`, until
a newer event about its object replaces it, or a cycle that began after it arrived completes
(`writes.complete_cycle`: that walk read the object as it is now), or the inbox is purged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from choreo_ingest.errors import InboxFull
from choreo_ingest.models import JSON, Delta, PageStats
from choreo_ingest.store.connection import storable_text
from choreo_ingest.store.dialect import AnyConnection, take_turn
from choreo_ingest.store.entity_rows import bump_counters
from choreo_ingest.store.inbox_rows import insert_events
from choreo_ingest.store.writes import apply_delta_rows


class InboxEvent(NamedTuple):
    seq: int
    provider: str
    body: JSON
    attempts: int
    received_at: float


class InboxCounts(NamedTuple):
    pending: int
    parked: int
    oldest_pending_at: float | None = None
    """When the oldest pending event arrived (`received_at`); None when none is pending, and in
    the counts of every provider together."""


def add_events(
    conn: AnyConnection,
    provider: str,
    bodies: Sequence[JSON],
    now: float,
    *,
    capacity: int,
) -> list[int]:
    """Store every event in one transaction, all of them or none, each replacing the older events
    about the same object (the module docstring says why the newest is kept). Raises
    InboxFull if that would leave more than `capacity` pending events. Returns the new seqs."""
    if not bodies:
        return []
    try:
        with conn.transaction():
            # Writers to the inbox take turns, so that the coalescing and the capacity check
            # below see every event stored before (on SQLite, BEGIN IMMEDIATE already does that).
            take_turn(conn, "inbox")
            seqs = insert_events(conn, provider, bodies, now)
            if pending_event_count(conn, provider) > capacity:
                raise _OverCapacity(_batch_left(conn, provider, seqs[0]))
    except _OverCapacity as over:
        # Rolled back: what is pending now is what was pending before (counted only here, on
        # the way out, not for every batch that fits).
        pending = pending_event_count(conn, provider)
        raise InboxFull(provider, capacity, len(bodies), pending, over.distinct) from None
    return seqs


class _OverCapacity(Exception):
    """The batch would leave too many pending events: roll it back. `distinct`: the batch's
    events left once those about the same object are coalesced."""

    def __init__(self, distinct: int) -> None:
        super().__init__(distinct)
        self.distinct = distinct


def _batch_left(conn: AnyConnection, provider: str, first_seq: int) -> int:
    # Writers to the inbox take turns and seqs only grow, so the batch's events are the pending
    # ones from its first seq on.
    return int(
        conn.scalar(
            "SELECT count(*) FROM event_inbox WHERE provider = ? AND parked = 0 AND seq >= ?",
            [provider, first_seq],
        )
    )


def pending_events(conn: AnyConnection, provider: str, limit: int) -> list[InboxEvent]:
    rows = conn.execute(
        """SELECT seq, provider, CAST(body AS TEXT), attempts, received_at FROM event_inbox
           WHERE provider = ? AND parked = 0 ORDER BY seq LIMIT ?""",
        [provider, limit],
    )
    return [
        InboxEvent(seq, name, json.loads(body), attempts, received_at)
        for seq, name, body, attempts, received_at in rows
    ]


def pending_event_count(conn: AnyConnection, provider: str) -> int:
    return int(
        conn.scalar(
            "SELECT count(*) FROM event_inbox WHERE provider = ? AND parked = 0", [provider]
        )
    )


def has_pending_events(conn: AnyConnection, provider: str) -> bool:
    """Whether the provider has an event pending: one index look, however many there are."""
    return bool(
        conn.scalar(
            """SELECT EXISTS (SELECT 1 FROM event_inbox WHERE provider = ? AND parked = 0)""",
            [provider],
        )
    )


def drop_events(conn: AnyConnection, provider: str) -> int:
    """Remove the provider's pending events (not the parked ones); returns how many."""
    with conn.transaction():
        dropped = conn.execute(
            "DELETE FROM event_inbox WHERE provider = ? AND parked = 0", [provider]
        ).rowcount
        bump_counters(conn, provider, {"events_dropped": dropped})
    return int(dropped)


def purge_events(conn: AnyConnection, provider: str | None = None) -> int:
    """Empty the inbox (of one provider): pending and parked events alike. Returns how many."""
    where, params = ("WHERE provider = ?", [provider]) if provider is not None else ("", [])
    with conn.transaction():
        purged = conn.execute(f"DELETE FROM event_inbox {where}", params).rowcount
    return int(purged)


def apply_event(
    conn: AnyConnection, provider: str, cycle_id: int, seq: int, delta: Delta, now: float
) -> tuple[PageStats, int]:
    """The event's delta and its removal from the inbox, in one transaction."""
    with conn.transaction():
        result = apply_delta_rows(conn, provider, cycle_id, delta, now)
        conn.execute("DELETE FROM event_inbox WHERE seq = ?", [seq])
        bump_counters(conn, provider, {"events_applied": 1})
    return result


def fail_event(
    conn: AnyConnection, provider: str, seq: int, error: str, *, max_attempts: int
) -> bool:
    """Count a failed attempt; park the event after `max_attempts`. Returns True if parked."""
    with conn.transaction():
        attempts = (
            int(conn.scalar("SELECT attempts FROM event_inbox WHERE seq = ?", [seq]) or 0) + 1
        )
        parked = attempts >= max_attempts
        conn.execute(
            "UPDATE event_inbox SET attempts = ?, parked = ?, last_error = ? WHERE seq = ?",
            [attempts, int(parked), storable_text(error), seq],
        )
        bump_counters(conn, provider, {"events_parked" if parked else "events_retried": 1})
    return parked


def inbox_counts(conn: AnyConnection, provider: str | None = None) -> InboxCounts:
    """From `event_inbox_waiting` alone (a provider's are read at every `serve` tick, for its
    metrics), never every event waiting; its oldest is the first pending in arrival order."""
    where, params = ("WHERE provider = ?", [provider]) if provider is not None else ("", [])
    counts = dict(
        conn.execute(
            f"SELECT parked, count(*) FROM event_inbox {where} GROUP BY parked", params
        ).fetchall()
    )
    oldest = None
    if provider is not None:
        oldest = conn.scalar(
            """SELECT received_at FROM event_inbox WHERE provider = ? AND parked = 0
               ORDER BY seq LIMIT 1""",
            [provider],
        )
    return InboxCounts(
        pending=int(counts.get(0, 0)),
        parked=sum(int(count) for parked, count in counts.items() if parked),
        oldest_pending_at=None if oldest is None else float(oldest),
    )
