"""The event inbox: events wait here, in arrival order, until a run applies them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from choreo_ingest.models import JSON, Delta, PageStats
from choreo_ingest.store.catalog import apply_delta_rows, bump_counters
from choreo_ingest.store.connection import Connection, canonical_json


@dataclass(frozen=True)
class InboxEvent:
    seq: int
    provider: str
    body: JSON
    attempts: int


@dataclass(frozen=True)
class InboxCounts:
    pending: int
    parked: int


def add_events(conn: Connection, provider: str, bodies: Sequence[JSON], now: float) -> list[int]:
    """Store every event in one transaction: all of them, or none."""
    seqs = []
    with conn.transaction():
        for body in bodies:
            cursor = conn.execute(
                "INSERT INTO event_inbox (provider, received_at, body) VALUES (?, ?, ?)",
                [provider, now, canonical_json(body)],
            )
            seqs.append(int(cursor.lastrowid or 0))
    return seqs


def pending_events(conn: Connection, provider: str, limit: int) -> list[InboxEvent]:
    rows = conn.execute(
        """SELECT seq, provider, body, attempts FROM event_inbox
           WHERE provider = ? AND parked = 0 ORDER BY seq LIMIT ?""",
        [provider, limit],
    )
    return [InboxEvent(seq, name, json.loads(body), attempts) for seq, name, body, attempts in rows]


def pending_event_count(conn: Connection, provider: str) -> int:
    return int(
        conn.scalar(
            "SELECT count(*) FROM event_inbox WHERE provider = ? AND parked = 0", [provider]
        )
    )


def drop_events(conn: Connection, provider: str) -> int:
    """Remove the provider's pending events (not the parked ones); returns how many."""
    with conn.transaction():
        dropped = conn.execute(
            "DELETE FROM event_inbox WHERE provider = ? AND parked = 0", [provider]
        ).rowcount
        bump_counters(conn, provider, {"events_dropped": dropped})
    return int(dropped)


def apply_event(
    conn: Connection, provider: str, cycle_id: int, seq: int, delta: Delta, now: float
) -> tuple[PageStats, int]:
    """The event's delta and its removal from the inbox, in one transaction."""
    with conn.transaction():
        result = apply_delta_rows(conn, provider, cycle_id, delta, now)
        conn.execute("DELETE FROM event_inbox WHERE seq = ?", [seq])
        bump_counters(conn, provider, {"events_applied": 1})
    return result


def fail_event(conn: Connection, provider: str, seq: int, error: str, *, max_attempts: int) -> bool:
    """Count a failed attempt; park the event after `max_attempts`. Returns True if parked."""
    with conn.transaction():
        attempts = (
            int(conn.scalar("SELECT attempts FROM event_inbox WHERE seq = ?", [seq]) or 0) + 1
        )
        parked = attempts >= max_attempts
        conn.execute(
            "UPDATE event_inbox SET attempts = ?, parked = ?, last_error = ? WHERE seq = ?",
            [attempts, int(parked), error, seq],
        )
        bump_counters(conn, provider, {"events_parked" if parked else "events_retried": 1})
    return parked


def inbox_counts(conn: Connection) -> InboxCounts:
    row = conn.execute(
        "SELECT count(*) - coalesce(sum(parked), 0), coalesce(sum(parked), 0) FROM event_inbox"
    ).fetchone()
    return InboxCounts(pending=int(row[0]), parked=int(row[1]))
