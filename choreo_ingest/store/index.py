"""A provider's own lookup index and facts: what it must find again that is not an entity.

The index holds rows a provider writes with its pages and deltas (a workload, grouped by the
component it belongs to) and reads back by key or by group with one indexed statement, so a join
across pages goes through the store instead of a map that grows with the platform. Each row
remembers the cycle that last wrote it; a completed cycle prunes the rows it did not write.

Facts are a few named strings per provider (which API generation the source speaks, a problem
that only the provider can see), shown by `status` and the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from choreo_ingest.models import JSON, IndexEntry, SweepFollower, in_scope
from choreo_ingest.store.connection import canonical_json, storable_text
from choreo_ingest.store.dialect import AnyConnection, in_values, is_postgres


def write_index(
    conn: AnyConnection, provider: str, cycle_id: int, entries: Sequence[IndexEntry]
) -> None:
    """Upsert (or, for a None value, delete) index rows inside the caller's transaction."""
    if not entries:
        return
    latest = {(entry.table, entry.key): entry for entry in entries}
    conn.executemany(
        "DELETE FROM provider_index WHERE provider = ? AND tbl = ? AND key = ?",
        [(provider, e.table, e.key) for e in latest.values() if e.value is None],
    )
    conn.executemany(
        """INSERT INTO provider_index (provider, tbl, key, grp, value, cycle_id)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (provider, tbl, key) DO UPDATE SET grp = excluded.grp,
               value = excluded.value, cycle_id = excluded.cycle_id""",
        [
            (provider, e.table, e.key, e.group, canonical_json(e.value), cycle_id)
            for e in latest.values()
            if e.value is not None
        ],
    )


def prune_index(conn: AnyConnection, provider: str, cycle_id: int) -> int:
    """Drop the rows the completed cycle `cycle_id` did not write; returns how many."""
    cursor = conn.execute(
        "DELETE FROM provider_index WHERE provider = ? AND cycle_id < ?", [provider, cycle_id]
    )
    return int(cursor.rowcount)


def stale_index_rows(
    conn: AnyConnection, provider: str, cycle_id: int, follower: SweepFollower
) -> list[IndexEntry]:
    """The rows of the follower's tables that the completion of cycle `cycle_id` is to prune
    (written before it), in the groups where a row the cycle wrote waits (its value's text holds
    `follower.waiting`): one statement, which reads no stale row of a group where none waits."""
    if not follower.tables:
        return []
    tables, values = in_values(conn, "tbl", follower.tables)
    holds_text = "strpos(value, ?) > 0" if is_postgres(conn) else "instr(value, ?) > 0"
    rows = conn.execute(
        f"""SELECT tbl, key, grp, value FROM provider_index
            WHERE provider = ? AND {tables} AND cycle_id < ? AND grp IN (
                SELECT grp FROM provider_index
                WHERE provider = ? AND {tables} AND cycle_id >= ? AND {holds_text})
            ORDER BY tbl, grp, key""",
        [provider, values, cycle_id, provider, values, cycle_id, follower.waiting],
    )
    return [IndexEntry(table, key, group, json.loads(value)) for table, key, group, value in rows]


def followed_events(
    conn: AnyConnection, provider: str, cycle_id: int, follower: SweepFollower | None
) -> list[JSON]:
    """The events `follower` names for the index rows the sweep of cycle `cycle_id` prunes in
    the groups where a row it wrote waits, called before the pruning, in its transaction (one
    statement when it prunes none of them)."""
    if follower is None:
        return []
    pruned = stale_index_rows(conn, provider, cycle_id, follower)
    if not pruned:
        return []

    def current(table: str, groups: Sequence[str]) -> dict[str, list[IndexEntry]]:
        return index_by_group(conn, provider, table, groups, min_cycle=cycle_id)

    return list(follower.events(pruned, current))


def keep_index_scopes(
    conn: AnyConnection, provider: str, cycle_id: int, scopes: Sequence[str], *, since: int = 0
) -> None:
    """Mark as written in cycle `cycle_id` the rows written since cycle `since` whose key is in
    a scope of `scopes` or below it (`acme/web` for `acme`), or ends in one after a space (a
    subject: `owner_unusable Component acme/web`), so that its completion keeps them with the
    scopes' entities."""
    if not scopes:
        return
    rows = conn.execute(
        "SELECT tbl, key FROM provider_index WHERE provider = ? AND cycle_id < ? AND cycle_id >= ?",
        [provider, cycle_id, since],
    )
    kept = [
        (cycle_id, provider, table, key)
        for table, key in rows
        if any(in_scope(key, scope) or in_scope(key.rpartition(" ")[2], scope) for scope in scopes)
    ]
    conn.executemany(
        "UPDATE provider_index SET cycle_id = ? WHERE provider = ? AND tbl = ? AND key = ?", kept
    )


def clear_index(conn: AnyConnection, provider: str) -> None:
    conn.execute("DELETE FROM provider_index WHERE provider = ?", [provider])


def index_by_key(
    conn: AnyConnection,
    provider: str,
    table: str,
    keys: Sequence[str],
    *,
    min_cycle: int = 0,
) -> dict[str, IndexEntry]:
    """The rows of `table` with these keys written in cycle `min_cycle` or later (absent keys
    are left out)."""
    if not keys:
        return {}
    condition, values = in_values(conn, "key", keys)
    rows = conn.execute(
        f"""SELECT key, grp, value FROM provider_index WHERE provider = ? AND tbl = ?
            AND {condition} AND cycle_id >= ?""",
        [provider, table, values, min_cycle],
    )
    return {key: IndexEntry(table, key, group, json.loads(value)) for key, group, value in rows}


def index_by_group(
    conn: AnyConnection,
    provider: str,
    table: str,
    groups: Sequence[str],
    *,
    min_cycle: int = 0,
) -> dict[str, list[IndexEntry]]:
    """The rows of `table` in each of `groups` written in cycle `min_cycle` or later, each group's
    rows ordered by key; a group without rows maps to an empty list."""
    found: dict[str, list[IndexEntry]] = {group: [] for group in groups}
    if not groups:
        return found
    condition, values = in_values(conn, "grp", list(found))
    rows = conn.execute(
        f"""SELECT grp, key, value FROM provider_index WHERE provider = ? AND tbl = ?
            AND {condition} AND cycle_id >= ? ORDER BY grp, key""",
        [provider, table, values, min_cycle],
    )
    for group, key, value in rows:
        found[group].append(IndexEntry(table, key, group, json.loads(value)))
    return found


def index_by_group_prefix(
    conn: AnyConnection, provider: str, table: str, prefix: str
) -> list[IndexEntry]:
    """The rows of `table` whose group begins with `prefix`, ordered by group and key. The
    groups' index finds them: byte order (SQLite's BINARY, PostgreSQL's `COLLATE "C"` columns)
    keeps a prefix's groups together, from the prefix to the prefix with its last character the
    next one; a scan of the table's rows costs 0.4 s at 300,000 claims, at every project gone."""
    within, bounds = "", []
    if prefix and ord(prefix[-1]) < 0xD7FF:
        within, bounds = (
            "AND grp >= ? AND grp < ?",
            [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)],
        )
    rows = conn.execute(
        f"""SELECT grp, key, value FROM provider_index WHERE provider = ? AND tbl = ? {within}
           AND substr(grp, 1, ?) = ? ORDER BY grp, key""",
        [provider, table, *bounds, len(prefix), prefix],
    )
    return [IndexEntry(table, key, group, json.loads(value)) for group, key, value in rows]


def write_facts(
    conn: AnyConnection, provider: str, facts: Mapping[str, str | None], now: float
) -> None:
    """Set (or, for None, remove) a provider's facts inside the caller's transaction."""
    conn.executemany(
        "DELETE FROM provider_facts WHERE provider = ? AND name = ?",
        [(provider, name) for name, value in facts.items() if value is None],
    )
    conn.executemany(
        """INSERT INTO provider_facts (provider, name, value, updated_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (provider, name) DO UPDATE SET value = excluded.value,
               updated_at = excluded.updated_at""",
        [
            (provider, name, storable_text(value), now)
            for name, value in facts.items()
            if value is not None
        ],
    )


def write_fact_unless(
    conn: AnyConnection, provider: str, fact: tuple[str, str], kept: str, now: float
) -> None:
    """Set a provider's fact (name, value) inside the caller's transaction, unless it holds
    `kept` already (a worse reason, which a milder one must not hide)."""
    conn.execute(
        """INSERT INTO provider_facts (provider, name, value, updated_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (provider, name) DO UPDATE SET value = excluded.value,
               updated_at = excluded.updated_at
           WHERE provider_facts.value <> ?""",
        [provider, *fact, now, kept],
    )


def read_facts(conn: AnyConnection, provider: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, value FROM provider_facts WHERE provider = ? ORDER BY name", [provider]
    )
    return dict(rows)
