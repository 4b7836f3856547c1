"""Read-only queries for status, health, metrics, export and the change log."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, NamedTuple

from choreo_ingest.clock import rfc3339
from choreo_ingest.errors import StateError
from choreo_ingest.models import ProviderRecord, ProviderState, QueuedItem
from choreo_ingest.store.change_log import newest_seq
from choreo_ingest.store.dialect import AnyConnection, in_values, is_postgres, no_limit
from choreo_ingest.store.entity_rows import REFS
from choreo_ingest.store.schema import MAX_INTEGER
from choreo_ingest.store.writes import STATE

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

_REFS_PER_QUERY = 500


@dataclass(frozen=True)  # not a NamedTuple: a field named `count` would shadow tuple.count
class BlockedRemovals:
    count: int
    reason: str | None
    cycle_id: int | None


class CycleRow(NamedTuple):
    cycle_id: int
    started_at: float
    completed_at: float | None
    pages: int
    upserted: int
    unchanged: int
    removed: int
    blocked: int
    errors: int
    outcome: str | None


class EntityLocation(NamedTuple):
    """An entity's identity columns and body: where a file mirror puts it and what it writes."""

    kind: str
    namespace: str
    name: str
    body: dict[str, Any]


class ChangeRow(NamedTuple):
    seq: int
    at: float
    op: str
    ref: str
    provider: str

    def to_json(self) -> dict[str, Any]:
        """As the change feed and `changes` show it."""
        return {
            "seq": self.seq,
            "at": rfc3339(self.at),
            "op": self.op,
            "ref": self.ref,
            "provider": self.provider,
        }


def load_provider(conn: AnyConnection, name: str, *, strict: bool = True) -> ProviderRecord:
    """The provider's stored record. A state or cursor no version of this schema writes (a newer
    choreo-ingest's, put back by a rollback) is a StateError; not `strict` (for `reset`), the
    record is read as idle with no cursor instead."""
    row = conn.execute(
        f"""SELECT state, cycle_id, cursor, next_action_at, attempts, last_error, last_burst_at,
               last_burst_duration, cycle_started_at, last_completed_at, last_cycle_duration,
               blocked_removals FROM {STATE} WHERE provider = ?""",
        [name],
    ).fetchone()
    if row is None:
        return ProviderRecord(name=name)
    cursor_text = row[2]
    try:
        state = ProviderState(row[0])
        cursor = None if cursor_text is None else json.loads(cursor_text)
    except ValueError as error:
        if not strict:
            state, cursor, cursor_text = ProviderState.IDLE, None, None
        else:
            raise StateError(
                f"provider {name!r}: its stored state cannot be read ({error}); a newer "
                "choreo-ingest may have written it: upgrade, or start the provider again with "
                f"`choreo-ingest reset {name}`"
            ) from None
    return ProviderRecord(
        name=name,
        state=state,
        cycle_id=row[1],
        cursor=cursor,
        next_action_at=row[3],
        attempts=row[4],
        last_error=row[5],
        last_burst_at=row[6],
        last_burst_duration=row[7],
        cycle_started_at=row[8],
        last_completed_at=row[9],
        last_cycle_duration=row[10],
        blocked_removals=row[11],
        cursor_bytes=0 if cursor_text is None else len(cursor_text.encode()),
    )


def provider_names(conn: AnyConnection) -> list[str]:
    return [row[0] for row in conn.execute(f"SELECT provider FROM {STATE} ORDER BY provider")]


def entity_counts(conn: AnyConnection, provider: str) -> dict[str, int]:
    """The provider's entities per kind, ordered by kind, from the counts kept as they change."""
    rows = conn.execute(
        "SELECT kind, count FROM entity_counts WHERE provider = ? AND count > 0 ORDER BY kind",
        [provider],
    )
    return dict(rows)


def counters(conn: AnyConnection, provider: str) -> dict[str, int]:
    rows = conn.execute("SELECT name, value FROM counters WHERE provider = ?", [provider])
    return dict(rows)


def blocked_removals(conn: AnyConnection, provider: str) -> BlockedRemovals:
    row = conn.execute(
        f"""SELECT blocked_removals, blocked_reason, blocked_cycle_id FROM {STATE}
            WHERE provider = ?""",
        [provider],
    ).fetchone()
    if row is None or row[2] is None or not row[0]:  # none left blocked: no reason either
        return BlockedRemovals(count=0, reason=None, cycle_id=None)
    return BlockedRemovals(count=row[0], reason=row[1], cycle_id=row[2])


def pending_removal_refs(conn: AnyConnection, provider: str, limit: int | None = None) -> list[str]:
    """The refs a blocked sweep would remove (recomputed from the active set)."""
    blocked = blocked_removals(conn, provider)
    if blocked.cycle_id is None:
        return []
    rows = conn.execute(
        f"""SELECT entity_ref FROM {REFS} WHERE provider = ? AND last_seen_cycle < ?
            ORDER BY entity_ref LIMIT ?""",
        [provider, blocked.cycle_id, no_limit(conn) if limit is None else limit],
    )
    return [row[0] for row in rows]


def last_cycle(conn: AnyConnection, provider: str, *, completed: bool = False) -> CycleRow | None:
    where = "AND completed_at IS NOT NULL" if completed else ""
    row = conn.execute(
        f"""SELECT cycle_id, started_at, completed_at, pages, upserted, unchanged, removed,
               blocked, errors, outcome FROM cycles WHERE provider = ? {where}
            ORDER BY cycle_id DESC LIMIT 1""",
        [provider],
    ).fetchone()
    return None if row is None else CycleRow(*row)


def read_queue(
    conn: AnyConnection, provider: str, queue: str, after: int, limit: int
) -> list[QueuedItem]:
    rows = conn.execute(
        """SELECT position, key, value FROM queue_items
           WHERE provider = ? AND queue = ? AND position > ? ORDER BY position LIMIT ?""",
        [provider, queue, after, limit],
    )
    return [QueuedItem(position=p, key=k, value=json.loads(v)) for p, k, v in rows]


def iter_entities(conn: AnyConnection, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Every entity body, ordered by ref; streamed, never all in memory."""
    if kind is None:
        rows = conn.stream("SELECT ref, provider, body FROM entities ORDER BY ref")
    else:
        # lower() of the column folds ASCII only (SQLite; PostgreSQL's C collation); of the
        # parameter it would fold as the database's collation does: the kind is folded here.
        wanted = kind.translate(_ASCII_LOWER)
        rows = conn.stream(
            "SELECT ref, provider, body FROM entities WHERE lower(kind) = ? ORDER BY ref", [wanted]
        )
    with closing(rows):  # closed before its connection, whatever stops the iteration
        for ref, provider, body in rows:
            yield stored_body(ref, provider, body)


def stored_body(ref: str, provider: str, body: str) -> dict[str, Any]:
    """An entity's stored body; one that is not JSON (damaged on disk, where SQLite sees no
    damage) is a StateError saying what to do: a cycle writes only what changed, so it would
    never write that body again."""
    try:
        entity = json.loads(body)
        problem = None if isinstance(entity, dict) else "not a JSON object"
    except ValueError as error:
        problem = f"not JSON: {error}"
    if problem is not None:
        raise StateError(
            f"state store: corrupt (the stored body of {ref} is {problem}): restore the state "
            f"from a backup, or `choreo-ingest reset {provider} --purge` and its next cycle "
            "writes every entity again"
        )
    return dict(entity)


def entity_body(conn: AnyConnection, ref: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT provider, body FROM entities WHERE ref = ?", [ref]).fetchone()
    return None if row is None else stored_body(ref, row[0], row[1])


def entity_location(conn: AnyConnection, ref: str) -> EntityLocation | None:
    row = conn.execute(
        "SELECT kind, namespace, name, provider, body FROM entities WHERE ref = ?", [ref]
    ).fetchone()
    if row is None:
        return None
    return EntityLocation(row[0], row[1], row[2], stored_body(ref, row[3], row[4]))


def iter_entity_locations(conn: AnyConnection) -> Iterator[EntityLocation]:
    """Every entity with its identity columns, ordered by ref; streamed, never all in memory."""
    rows = conn.stream(
        "SELECT ref, kind, namespace, name, provider, body FROM entities ORDER BY ref"
    )
    with closing(rows):
        for ref, kind, namespace, name, provider, body in rows:
            yield EntityLocation(kind, namespace, name, stored_body(ref, provider, body))


def entity_scopes(conn: AnyConnection, provider: str, refs: Sequence[str]) -> dict[str, str]:
    """The scopes of those of `refs` the provider's catalog holds, by ref."""
    found: dict[str, str] = {}
    for start in range(0, len(refs), _REFS_PER_QUERY):
        condition, values = in_values(conn, "ref", refs[start : start + _REFS_PER_QUERY])
        # By ref alone, through the primary key: with `provider = ?` in the query SQLite
        # walks the provider's part of the (provider, scope) index (160 ms at 300,000).
        rows = conn.execute(
            f"SELECT ref, scope, provider FROM entities WHERE {condition}", [values]
        )
        found.update((ref, scope) for ref, scope, owner in rows if owner == provider)
    return found


def _body_size(conn: AnyConnection) -> str:
    """A body's size, as the answer caps count it: on PostgreSQL its bytes, which `octet_length`
    reads from the stored header (never fewer than its characters; `length` decompressed each
    large body: 345 ms against 1.7 ms for a page of 200 KB entities), elsewhere its characters."""
    return "octet_length(body)" if is_postgres(conn) else "length(body)"


def entity_bodies(
    conn: AnyConnection, refs: Sequence[str], max_chars: int | None = None
) -> dict[str, dict[str, Any]] | None:
    """The bodies of those of `refs` the catalog holds, by ref; None, none of them read, when
    more than one of them hold over `max_chars` characters of stored text (the database counts
    them: PostgreSQL's client holds a query's whole answer)."""
    # One statement for any number of refs (see entity_rows._existing_hashes).
    conditions = [
        in_values(conn, "ref", refs[start : start + _REFS_PER_QUERY])
        for start in range(0, len(refs), _REFS_PER_QUERY)
    ]
    if max_chars is not None:
        held, chars, size = 0, 0, _body_size(conn)
        for condition, values in conditions:
            sql = f"SELECT count(*), coalesce(sum({size}), 0) FROM entities WHERE {condition}"
            count, length = conn.execute(sql, [values]).fetchone()
            held, chars = held + int(count), chars + int(length)
        if held > 1 and chars > max_chars:
            return None
    found: dict[str, dict[str, Any]] = {}
    for condition, values in conditions:
        rows = conn.execute(f"SELECT ref, provider, body FROM entities WHERE {condition}", [values])
        found.update((ref, stored_body(ref, provider, body)) for ref, provider, body in rows)
    return found


def entities_after(
    conn: AnyConnection, ref: str | None, limit: int, max_chars: int | None = None
) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """Up to `limit` entities, ordered by ref, after `ref` (from the first when None), and
    whether more follow. With `max_chars`, the page ends once it holds that many characters of
    stored text (the first entity is taken whatever its size): the database counts them and
    sends no more (PostgreSQL's client holds a query's whole answer)."""
    after = "" if ref is None else "WHERE ref > ?"
    sizes = f"SELECT ref, {_body_size(conn)} AS size FROM entities {after} ORDER BY ref LIMIT ?"
    sized = f"""SELECT ref, count(*) OVER () AS listed,
            row_number() OVER (ORDER BY ref) AS place,
            sum(size) OVER (ORDER BY ref) - size AS before
        FROM ({sizes}) AS page"""
    # The bodies are joined to the refs that fit: the database holds no more of them than fit.
    sql = f"""SELECT entities.ref, entities.provider, entities.body, sized.listed
        FROM ({sized}) AS sized JOIN entities ON entities.ref = sized.ref
        WHERE sized.place <= ? AND sized.before < ? ORDER BY entities.ref"""
    bound = max_chars if max_chars is not None else MAX_INTEGER
    params = [*([] if ref is None else [ref]), limit + 1, limit, bound]
    rows = conn.execute(sql, params).fetchall()
    page = [(found, stored_body(found, provider, body)) for found, provider, body, _ in rows]
    return page, bool(rows) and int(rows[0][3]) > len(page)


def last_change_seq(conn: AnyConnection) -> int:
    """The last sequence number given to a change, pruned or not; 0 before the first change."""
    return newest_seq(conn)


def change_at(conn: AnyConnection, seq: int) -> float | None:
    """When change `seq` was made, or None (pruned, or never made)."""
    at = conn.scalar("SELECT at FROM changes WHERE seq = ?", [seq])
    return None if at is None else float(at)


def changes(conn: AnyConnection, since: int, limit: int | None) -> list[ChangeRow]:
    rows = conn.execute(
        "SELECT seq, at, op, ref, provider FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
        [since, no_limit(conn) if limit is None else limit],
    )
    return [ChangeRow(*row) for row in rows]
