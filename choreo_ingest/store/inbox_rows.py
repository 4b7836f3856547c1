"""The inbox's rows as its writers store them: an event's text, and the coalescing that keeps
only the newest event about each object (`inbox`'s docstring says why). Apart from `inbox`, so
that a cycle's completion (`writes.complete_cycle`) can queue events in its own transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from choreo_ingest.models import JSON
from choreo_ingest.store.connection import canonical_json
from choreo_ingest.store.dialect import AnyConnection, in_values, json_field


def insert_events(
    conn: AnyConnection, provider: str, bodies: Sequence[JSON], now: float
) -> list[int]:
    """Store `bodies` as pending events, each replacing the older events about its object, inside
    the caller's transaction (which takes its turn with the inbox's other writers first: see
    `dialect.take_turn`); returns their seqs."""
    seqs = []
    for body in bodies:
        cursor = conn.execute(
            "INSERT INTO event_inbox (provider, received_at, body) VALUES (?, ?, ?) RETURNING seq",
            [provider, now, event_text(body)],
        )
        seqs.append(int(cursor.fetchone()[0]))
    if bodies:
        coalesce(conn, provider, bodies)
    return seqs


def events_not_pending(conn: AnyConnection, provider: str, bodies: Sequence[JSON]) -> list[JSON]:
    """Those of `bodies` about an object no pending event names (its key: `event_key`, or the
    same without `project`): one that does re-reads (or removes) the object anyway, and one of
    these stored after it would replace it (an org-era `deleted`, which removes without a read,
    by a `created`, which keeps an object the API still serves). One statement."""
    names = [body.get("name") for body in bodies if isinstance(body, Mapping)]
    if not names:
        return list(bodies)
    named, values = in_values(conn, json_field(conn, "body", "name"), names)
    rows = conn.execute(
        f"SELECT CAST(body AS TEXT) FROM event_inbox WHERE provider = ? AND parked = 0 AND {named}",
        [provider, values],
    )
    pending = {_key(json.loads(text)) for (text,) in rows}
    # One without `project` names the component wherever it is (v1's forwarder never sends one).
    return [body for body in bodies if not {_key(body), _key(body, project=None)} & pending]


def _key(body: JSON, **fields: object) -> tuple[object, ...]:
    """`event_key` of a body (with `fields` in place of its own), in Python."""
    found = {**(body if isinstance(body, Mapping) else {}), **fields}
    return (
        found.get("kind"),
        found.get("namespace") or None,
        found.get("name"),
        found.get("project"),
    )


def event_key(conn: AnyConnection) -> str:
    """What makes two events about the same object (the fields `event_input.to_event` reads; an
    empty namespace is no namespace)."""
    kind, namespace, name, project = (
        json_field(conn, "body", field) for field in ("kind", "namespace", "name", "project")
    )
    return f"{kind}, nullif({namespace}, ''), {name}, {project}"


def event_text(body: JSON) -> str:
    """An event as the inbox keeps it: U+0000, which JSON may escape but PostgreSQL's JSONB
    refuses (the batch would fail as a store error, and its sender retry it for ever), becomes
    U+FFFD, on either store so that both keep the same event. `event_input.parse_events` refuses
    such events before they come here; this holds for any other caller of the store."""
    text = canonical_json(body)
    return canonical_json(_without_nul(body)) if "\\u0000" in text else text


def _without_nul(value: JSON) -> JSON:
    if isinstance(value, str):
        return value.replace("\0", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def coalesce(conn: AnyConnection, provider: str, bodies: Sequence[JSON]) -> None:
    """Keep only the newest event of each key among the keys of `bodies`, pending or parked (so
    no object is ever parked twice).

    Two statements, whatever the number of keys. The names of `bodies` pick the candidates first:
    reading one field of every pending event costs a fifth of reading the whole key (0.1 s, not
    0.5 s, at 100,000 pending events).

    The newest takes over the most attempts any pending one had made: an object whose re-read
    keeps failing is parked in the end even when it changes more often than runs retry it (else
    it would be retried at every run for as long as it keeps changing, and never shown parked).
    A parked one's attempts are spent: the newer event reports a later change, and gets the
    attempts of its own (with them carried over, a blip in a later outage would park it at its
    first failure, in place of waiting out the backoff).
    """
    names = [body.get("name") for body in bodies if isinstance(body, Mapping)]
    named, values = in_values(conn, json_field(conn, "body", "name"), names)
    ranked = f"""(
        SELECT seq,
               row_number() OVER (PARTITION BY {event_key(conn)} ORDER BY seq DESC) AS newer,
               max(CASE WHEN parked = 0 THEN attempts ELSE 0 END)
                   OVER (PARTITION BY {event_key(conn)}) AS most
        FROM event_inbox
        WHERE provider = ? AND {named}
    ) AS ranked"""
    conn.execute(
        f"""UPDATE event_inbox SET attempts = ranked.most FROM {ranked}
            WHERE event_inbox.seq = ranked.seq AND ranked.newer = 1
              AND ranked.most > event_inbox.attempts""",
        [provider, values],
    )
    conn.execute(
        f"DELETE FROM event_inbox WHERE seq IN (SELECT seq FROM {ranked} WHERE newer > 1)",
        [provider, values],
    )
