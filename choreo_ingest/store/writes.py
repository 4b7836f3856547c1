"""The write path: pages, cycles, the sweep and event deltas, each one transaction.

A crash at any instant leaves a page (or a cycle completion, or a delta) applied or not at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from choreo_ingest.models import (
    UNAVAILABLE_FACT,
    Delta,
    Entity,
    EntityIteratorResult,
    PageStats,
    ProviderRecord,
    SweepResult,
)
from choreo_ingest.store.connection import canonical_json
from choreo_ingest.store.dialect import (
    AnyConnection,
    in_values,
    is_postgres,
    refresh_statistics,
    row_key,
)
from choreo_ingest.store.index import clear_index, prune_index, write_facts, write_index
from choreo_ingest.store.meta import renew_store_id

REFS = "openchoreo_incremental_entity_refs"
LARGE_SWEEP = 10_000
"""Stale refs past which a sweep first refreshes the planner's statistics (PostgreSQL)."""
STATE = "openchoreo_incremental_ingestion_state"
_IN_BATCH = 500  # SQLite's default limit on bound variables is generous; keep statements small


class SweepGuards(NamedTuple):
    reject_empty_source_collections: bool
    reject_removals_above_percentage: float | None


def save_provider(conn: AnyConnection, record: ProviderRecord, now: float) -> None:
    cursor_text = None if record.cursor is None else canonical_json(record.cursor)
    conn.execute(
        f"""
        INSERT INTO {STATE} (provider, state, cycle_id, cursor, next_action_at, attempts,
            last_error, last_burst_at, last_burst_duration, cycle_started_at, last_completed_at,
            last_cycle_duration, blocked_removals, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (provider) DO UPDATE SET
            state = excluded.state, cycle_id = excluded.cycle_id, cursor = excluded.cursor,
            next_action_at = excluded.next_action_at, attempts = excluded.attempts,
            last_error = excluded.last_error, last_burst_at = excluded.last_burst_at,
            last_burst_duration = excluded.last_burst_duration,
            cycle_started_at = excluded.cycle_started_at,
            last_completed_at = excluded.last_completed_at,
            last_cycle_duration = excluded.last_cycle_duration,
            blocked_removals = excluded.blocked_removals, updated_at = excluded.updated_at
        """,
        [
            record.name,
            record.state.value,
            record.cycle_id,
            cursor_text,
            record.next_action_at,
            record.attempts,
            record.last_error,
            record.last_burst_at,
            record.last_burst_duration,
            record.cycle_started_at,
            record.last_completed_at,
            record.last_cycle_duration,
            record.blocked_removals,
            now,
        ],
    )


def start_cycle(conn: AnyConnection, record: ProviderRecord, now: float) -> None:
    """Begin cycle `record.cycle_id` (already bumped by the caller): fresh queues, history row."""
    with conn.transaction():
        conn.execute("DELETE FROM queue_items WHERE provider = ?", [record.name])
        conn.execute(
            """INSERT INTO cycles (provider, cycle_id, started_at) VALUES (?, ?, ?)
               ON CONFLICT (provider, cycle_id) DO UPDATE SET started_at = excluded.started_at,
                   completed_at = NULL, pages = 0, upserted = 0, unchanged = 0, removed = 0,
                   blocked = 0, errors = 0, outcome = NULL""",
            [record.name, record.cycle_id, now],
        )
        save_provider(conn, record, now)


def commit_page(
    conn: AnyConnection,
    provider: str,
    cycle_id: int,
    page: EntityIteratorResult,
    cursor_text: str | None,
    now: float,
) -> PageStats:
    """Apply one page: entities, seen refs, queue pushes, cursor, counters, change log."""
    with conn.transaction():
        stats = _upsert_entities(conn, provider, cycle_id, page.entities, now)
        _push_queue_items(conn, provider, page)
        write_index(conn, provider, cycle_id, page.index)
        write_facts(conn, provider, page.facts, now)
        _remove_scopes(conn, provider, page.removal_scopes, set(), now)
        conn.execute(
            f"UPDATE {STATE} SET cursor = ?, updated_at = ? WHERE provider = ?",
            [cursor_text, now, provider],
        )
        conn.execute(
            """UPDATE cycles SET pages = pages + 1, upserted = upserted + ?,
               unchanged = unchanged + ? WHERE provider = ? AND cycle_id = ?""",
            [stats.upserted, stats.unchanged, provider, cycle_id],
        )
        bump_counters(
            conn,
            provider,
            {
                "pages": 1,
                "entities_upserted": stats.upserted,
                "entities_unchanged": stats.unchanged,
                **page.counters,
            },
        )
    return stats


def complete_cycle(
    conn: AnyConnection, record: ProviderRecord, guards: SweepGuards, now: float
) -> SweepResult:
    """Sweep what this cycle did not see (unless a guard blocks it) and save `record` as given."""
    provider, cycle_id = record.name, record.cycle_id
    with conn.transaction():
        stale = _count(conn, "provider = ? AND last_seen_cycle < ?", [provider, cycle_id])
        reason = _blocking_reason(conn, provider, cycle_id, stale, guards)
        removed = 0
        if reason is None:
            if stale >= LARGE_SWEEP:
                refresh_statistics(conn, REFS, "entities")
            removed = _remove_refs_where(conn, provider, "last_seen_cycle < ?", [cycle_id], now)
            prune_index(conn, provider, cycle_id)
            record.blocked_removals = 0
            blocked_cycle: int | None = None
        else:
            record.blocked_removals = stale
            blocked_cycle = cycle_id
        conn.execute(
            f"UPDATE {STATE} SET blocked_cycle_id = ?, blocked_reason = ? WHERE provider = ?",
            [blocked_cycle, reason, provider],
        )
        outcome = "blocked" if reason else "completed"
        conn.execute(
            """UPDATE cycles SET completed_at = ?, removed = ?, blocked = ?, outcome = ?
               WHERE provider = ? AND cycle_id = ?""",
            [now, removed, record.blocked_removals, outcome, provider, cycle_id],
        )
        bump_counters(conn, provider, {f"cycles_{outcome}": 1})
        save_provider(conn, record, now)
    return SweepResult(removed=removed, blocked=record.blocked_removals, reason=reason)


def record_failure(conn: AnyConnection, record: ProviderRecord, now: float) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE cycles SET errors = errors + 1 WHERE provider = ? AND cycle_id = ?",
            [record.name, record.cycle_id],
        )
        bump_counters(conn, record.name, {"bursts_failed": 1})
        save_provider(conn, record, now)


def record_unavailable(
    conn: AnyConnection, record: ProviderRecord, problem: str, now: float
) -> None:
    with conn.transaction():
        bump_counters(conn, record.name, {"bursts_failed": 1})
        write_facts(conn, record.name, {UNAVAILABLE_FACT: problem}, now)
        save_provider(conn, record, now)


def set_facts(conn: AnyConnection, provider: str, facts: dict[str, str | None], now: float) -> None:
    with conn.transaction():
        write_facts(conn, provider, facts, now)


def approve_removals(conn: AnyConnection, provider: str, now: float) -> int:
    """Apply a blocked sweep: remove what the blocked cycle did not see. Returns the count."""
    with conn.transaction():
        blocked_cycle = conn.scalar(
            f"SELECT blocked_cycle_id FROM {STATE} WHERE provider = ?", [provider]
        )
        if blocked_cycle is None:
            return 0
        removed = _remove_refs_where(conn, provider, "last_seen_cycle < ?", [blocked_cycle], now)
        conn.execute(
            f"""UPDATE {STATE} SET blocked_cycle_id = NULL, blocked_reason = NULL,
                blocked_removals = 0, updated_at = ? WHERE provider = ?""",
            [now, provider],
        )
        conn.execute(
            "UPDATE cycles SET removed = removed + ? WHERE provider = ? AND cycle_id = ?",
            [removed, provider, blocked_cycle],
        )
    return removed


def apply_delta(
    conn: AnyConnection, provider: str, cycle_id: int, delta: Delta, now: float
) -> tuple[PageStats, int]:
    """Apply an event's delta in one transaction: upserts count as seen, removals leave the set."""
    with conn.transaction():
        return apply_delta_rows(conn, provider, cycle_id, delta, now)


def apply_delta_rows(
    conn: AnyConnection, provider: str, cycle_id: int, delta: Delta, now: float
) -> tuple[PageStats, int]:
    """`apply_delta` inside a transaction the caller holds."""
    stats = _upsert_entities(conn, provider, cycle_id, delta.upserts, now)
    write_index(conn, provider, cycle_id, delta.index)
    removed = 0
    for ref in delta.removals:
        removed += _remove_refs_where(conn, provider, "entity_ref = ?", [ref], now)
    removed += _remove_scopes(
        conn, provider, delta.removal_scopes, {entity.ref for entity in delta.upserts}, now
    )
    _recount_blocked(conn, provider)
    bump_counters(conn, provider, {"entities_upserted": stats.upserted})
    return stats, removed


def _recount_blocked(conn: AnyConnection, provider: str) -> None:
    """Keep a blocked sweep's count exact when an event removes (or sees again) one of the refs
    it holds back: what `removals approve` would remove is what the count says."""
    conn.execute(
        f"""UPDATE {STATE} SET blocked_removals = (
                SELECT count(*) FROM {REFS} r
                WHERE r.provider = {STATE}.provider AND r.last_seen_cycle < {STATE}.blocked_cycle_id
            ) WHERE provider = ? AND blocked_cycle_id IS NOT NULL""",
        [provider],
    )


def _remove_scopes(
    conn: AnyConnection, provider: str, scopes: Sequence[str], kept: set[str], now: float
) -> int:
    """Remove the provider's entities in each scope or below it (`acme` takes `acme/x/y`),
    except the refs in `kept`; returns how many."""
    removed = 0
    for scope in scopes:
        # Collected first: _remove_refs_where deletes the entities before the refs, so a
        # condition that reads the entities table would match nothing by then.
        scoped = [
            ref
            for (ref,) in conn.execute(
                "SELECT ref FROM entities WHERE provider = ? "
                "AND (scope = ? OR substr(scope, 1, ?) = ?)",
                [provider, scope, len(scope) + 1, scope + "/"],
            )
            if ref not in kept
        ]
        for start in range(0, len(scoped), _IN_BATCH):
            batch = scoped[start : start + _IN_BATCH]
            marks = ",".join("?" * len(batch))
            removed += _remove_refs_where(
                conn, provider, f"entity_ref IN ({marks})", list(batch), now
            )
    return removed


def reset_provider(conn: AnyConnection, record: ProviderRecord, *, purge: bool, now: float) -> int:
    """Back to idle with a fresh cycle next run; `purge` also removes its entities and refs, and
    renews the store id (consumers of the change log copy the catalog again)."""
    with conn.transaction():
        removed = 0
        if purge:
            removed = _remove_refs_where(conn, record.name, "1 = 1", [], now)
            _delete_entities(conn, record.name, "provider = ?", [record.name])
            clear_index(conn, record.name)
            renew_store_id(conn, now)
        conn.execute("DELETE FROM queue_items WHERE provider = ?", [record.name])
        conn.execute(
            f"UPDATE {STATE} SET blocked_cycle_id = NULL, blocked_reason = NULL WHERE provider = ?",
            [record.name],
        )
        save_provider(conn, record, now)
    return removed


def forget_provider(conn: AnyConnection, provider: str, now: float) -> int:
    """Remove everything the state holds of a provider the config no longer has: its entities
    (each logged as a delete, so the mirror and Backstage drop them too), then its refs, state,
    cycles, queues, index, facts, counters (its metrics) and events, and renews the store id
    (consumers of the change log copy the catalog again). Returns the entities removed.
    """
    with conn.transaction():
        conn.execute(
            "INSERT INTO changes (at, op, ref, provider) "
            "SELECT ?, 'delete', ref, provider FROM entities WHERE provider = ? ORDER BY ref",
            [now, provider],
        )
        removed = _delete_entities(conn, provider, "provider = ?", [provider])
        _delete_refs(conn, provider, "1 = 1", [])
        for table in (
            STATE,
            "cycles",
            "queue_items",
            "provider_index",
            "provider_facts",
            "counters",
            "event_inbox",
        ):
            conn.execute(f"DELETE FROM {table} WHERE provider = ?", [provider])
        renew_store_id(conn, now)
    return int(removed)


def bump_counters(conn: AnyConnection, provider: str, increments: dict[str, int]) -> None:
    rows = [(provider, name, value) for name, value in increments.items() if value]
    conn.executemany(
        """INSERT INTO counters (provider, name, value) VALUES (?, ?, ?)
           ON CONFLICT (provider, name) DO UPDATE SET value = counters.value + excluded.value""",
        rows,
    )


def _upsert_entities(
    conn: AnyConnection, provider: str, cycle_id: int, entities: Sequence[Entity], now: float
) -> PageStats:
    by_ref = {entity.ref: entity for entity in entities}
    encoded = {ref: canonical_json(entity.body) for ref, entity in by_ref.items()}
    from hashlib import sha256  # OpenSSL's loading is not for the calls that only read

    hashes = {ref: sha256(text.encode()).hexdigest()[:32] for ref, text in encoded.items()}
    existing = _existing_hashes(conn, list(by_ref))
    changed = [ref for ref in by_ref if existing.get(ref) != (hashes[ref], provider)]
    upserted = [
        (
            ref,
            by_ref[ref].kind,
            by_ref[ref].namespace,
            by_ref[ref].name,
            by_ref[ref].scope,
            encoded[ref],
            hashes[ref],
            provider,
            now,
        )
        for ref in changed
    ]
    seen = [(provider, ref, cycle_id, cycle_id, now, now) for ref in by_ref]
    if is_postgres(conn):
        # One statement a page, not one a row: the count triggers (0005_counts) then run once
        # a page (see pg_schema._counts).
        if upserted:
            conn.execute(
                f"{_ENTITIES_INSERT} SELECT * FROM unnest({_ENTITY_ARRAYS}) {_ENTITIES_CONFLICT}",
                [list(column) for column in zip(*upserted, strict=True)],
            )
    else:
        conn.executemany(
            f"{_ENTITIES_INSERT} VALUES ({_ENTITY_MARKS}) {_ENTITIES_CONFLICT}", upserted
        )
    conn.executemany(
        "INSERT INTO changes (at, op, ref, provider) VALUES (?, 'upsert', ?, ?)",
        [(now, ref, provider) for ref in changed],
    )
    if is_postgres(conn):
        if seen:
            conn.execute(
                f"""{_REFS_INSERT} SELECT CAST(? AS TEXT), ref, CAST(? AS BIGINT),
                       CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION)
                    FROM unnest(CAST(? AS TEXT[])) AS ref {_REFS_CONFLICT}""",
                [provider, cycle_id, cycle_id, now, now, list(by_ref)],
            )
    else:
        conn.executemany(f"{_REFS_INSERT} VALUES (?, ?, ?, ?, ?, ?) {_REFS_CONFLICT}", seen)
    return PageStats(upserted=len(changed), unchanged=len(by_ref) - len(changed))


_ENTITIES_INSERT = """INSERT INTO entities
    (ref, kind, namespace, name, scope, body, hash, provider, updated_at)"""
_ENTITY_MARKS = ", ".join("?" * 9)
_ENTITY_ARRAYS = ", ".join([*["CAST(? AS TEXT[])"] * 8, "CAST(? AS DOUBLE PRECISION[])"])
_ENTITIES_CONFLICT = """ON CONFLICT (ref) DO UPDATE SET kind = excluded.kind,
    namespace = excluded.namespace, name = excluded.name, scope = excluded.scope,
    body = excluded.body, hash = excluded.hash, provider = excluded.provider,
    updated_at = excluded.updated_at"""
_REFS_INSERT = f"""INSERT INTO {REFS} (provider, entity_ref, first_seen_cycle, last_seen_cycle,
    first_seen_at, last_seen_at)"""
_REFS_CONFLICT = """ON CONFLICT (provider, entity_ref) DO UPDATE SET
    last_seen_cycle = excluded.last_seen_cycle, last_seen_at = excluded.last_seen_at"""


def _existing_hashes(conn: AnyConnection, refs: list[str]) -> dict[str, tuple[str, str]]:
    # One statement for any page size: `IN (?, ?, ...)` would compile (and keep, in the
    # connection's statement cache) one statement per distinct number of entities in a page.
    condition, values = in_values(conn, "ref", refs)
    rows = conn.execute(f"SELECT ref, hash, provider FROM entities WHERE {condition}", [values])
    return {ref: (hash_, owner) for ref, hash_, owner in rows}


def _push_queue_items(conn: AnyConnection, provider: str, page: EntityIteratorResult) -> None:
    by_queue: dict[str, list[tuple[str, str]]] = {}
    for item in page.queue_items:
        by_queue.setdefault(item.queue, []).append((item.key, canonical_json(item.value)))
    for queue, items in by_queue.items():
        last = conn.scalar(
            "SELECT coalesce(max(position), 0) FROM queue_items WHERE provider = ? AND queue = ?",
            [provider, queue],
        )
        conn.executemany(
            """INSERT INTO queue_items (provider, queue, position, key, value)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [
                (provider, queue, int(last) + offset, key, value)
                for offset, (key, value) in enumerate(items, start=1)
            ],
        )


def _blocking_reason(
    conn: AnyConnection, provider: str, cycle_id: int, stale: int, guards: SweepGuards
) -> str | None:
    if not stale:
        return None
    if guards.reject_empty_source_collections:
        # What the cycle's pages saw; entities applied from events do not count.
        seen = conn.scalar(
            "SELECT upserted + unchanged FROM cycles WHERE provider = ? AND cycle_id = ?",
            [provider, cycle_id],
        )
        if not seen:
            return (
                f"the cycle saw no entities while {stale} are active (rejectEmptySourceCollections)"
            )
    threshold = guards.reject_removals_above_percentage
    if threshold is not None:
        before = _count(conn, "provider = ? AND first_seen_cycle < ?", [provider, cycle_id])
        share = 100.0 * stale / before if before else 100.0
        if share > threshold:
            return (
                f"{stale} of {before} active entities ({share:.1f}%) would be removed, "
                f"above rejectRemovalsAbovePercentage {threshold:g}"
            )
    return None


def _count(conn: AnyConnection, where: str, params: Iterable[object]) -> int:
    return int(conn.scalar(f"SELECT count(*) FROM {REFS} WHERE {where}", list(params)))


def _remove_refs_where(
    conn: AnyConnection, provider: str, where: str, params: list[object], now: float
) -> int:
    """Remove the provider's refs matching `where` and the entities it owns, logging deletes."""
    args = [provider, *params]
    # Driven by the matching refs, each entity found through its primary key: filtering on
    # `entities.provider` instead makes SQLite scan every entity of the provider.
    owned = f"""FROM {REFS} r JOIN entities e ON e.ref = r.entity_ref AND e.provider = r.provider
        WHERE r.provider = ? AND {where}"""
    conn.execute(
        "INSERT INTO changes (at, op, ref, provider) "
        f"SELECT ?, 'delete', e.ref, r.provider {owned}",
        [now, *args],
    )
    key = row_key(conn)
    _delete_entities(conn, provider, f"{key} IN (SELECT e.{key} {owned})", args)
    removed = _delete_refs(conn, provider, where, params)
    bump_counters(conn, provider, {"entities_removed": removed})
    return removed


# Counts on delete. PostgreSQL's statement triggers (migration 0005) count every statement's
# deletes. SQLite's row triggers on delete are gone since 0006 (they cost a sweep about a second
# per 100,000 entities), so on SQLite every delete from `entities` or the refs goes through
# these two, which take the counts down in the same transaction.


def _delete_entities(conn: AnyConnection, provider: str, where: str, params: list[object]) -> int:
    """Delete the entities matching `where` (all of them `provider`'s) and count them out."""
    delete = f"DELETE FROM entities WHERE {where}"
    if is_postgres(conn):
        return int(conn.execute(delete, params).rowcount)
    kinds = Counter(kind for (kind,) in conn.execute(f"{delete} RETURNING kind", params))
    conn.executemany(
        "UPDATE entity_counts SET count = count - ? WHERE provider = ? AND kind = ?",
        [(taken, provider, kind) for kind, taken in kinds.items()],
    )
    if kinds:
        conn.execute("DELETE FROM entity_counts WHERE provider = ? AND count <= 0", [provider])
    return sum(kinds.values())


def _delete_refs(conn: AnyConnection, provider: str, where: str, params: list[object]) -> int:
    """Delete `provider`'s refs matching `where` and count them out."""
    delete = f"DELETE FROM {REFS} WHERE provider = ? AND {where}"
    removed = int(conn.execute(delete, [provider, *params]).rowcount)
    if removed and not is_postgres(conn):
        conn.execute(
            "UPDATE ref_counts SET count = count - ? WHERE provider = ?", [removed, provider]
        )
        conn.execute("DELETE FROM ref_counts WHERE provider = ? AND count <= 0", [provider])
    return removed
