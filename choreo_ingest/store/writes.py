"""The write path: pages, cycles, the sweep and event deltas, each one transaction.

A crash at any instant leaves a page (or a cycle completion, or a delta) applied or not at all.
The entity rows themselves are written and removed by `entity_rows`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from choreo_ingest.clock import rfc3339
from choreo_ingest.models import (
    EVENT_ASKED,
    EVENTS_LOST,
    JSON,
    PURGED_FACT,
    REFRESH_REASON_FACT,
    REFRESH_REQUESTED_FACT,
    UNAVAILABLE_FACT,
    Delta,
    EntityIteratorResult,
    PageStats,
    ProviderRecord,
    SweepFollower,
    SweepResult,
)
from choreo_ingest.store.connection import canonical_json, storable_text
from choreo_ingest.store.dialect import AnyConnection, refresh_statistics, take_turn
from choreo_ingest.store.entity_rows import (
    REFS,
    active_count,
    bump_counters,
    delete_entities,
    delete_refs,
    keep_scopes,
    remove_refs,
    remove_refs_where,
    remove_scopes,
    upsert_entities,
)
from choreo_ingest.store.inbox_rows import events_not_pending, insert_events
from choreo_ingest.store.index import (
    clear_index,
    followed_events,
    keep_index_scopes,
    prune_index,
    write_fact_unless,
    write_facts,
    write_index,
)
from choreo_ingest.store.meta import renew_store_id

LARGE_SWEEP = 10_000
"""Stale refs past which a sweep first refreshes the planner's statistics (PostgreSQL)."""
STATE = "openchoreo_incremental_ingestion_state"


WALKED = "walked"
"""A cycle's outcome once its last page is committed and until its completion says more."""


class SweepGuards(NamedTuple):
    reject_empty_source_collections: bool
    reject_removals_above_percentage: float | None


def save_provider(conn: AnyConnection, record: ProviderRecord, now: float) -> None:
    """Store `record`; its `blocked_removals` only when the row is new. The stored count is the
    store's own: pages and events recount it (`_recount_blocked`) while the caller holds a
    record loaded before them, so only the statements that decide it (a cycle's completion,
    an approval, a reset) write it."""
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
            last_cycle_duration = excluded.last_cycle_duration, updated_at = excluded.updated_at
        """,
        [
            record.name,
            record.state.value,
            record.cycle_id,
            cursor_text,
            record.next_action_at,
            record.attempts,
            storable_text(record.last_error),
            record.last_burst_at,
            record.last_burst_duration,
            record.cycle_started_at,
            record.last_completed_at,
            record.last_cycle_duration,
            record.blocked_removals,
            now,
        ],
    )


ABANDONED = "abandoned"
"""The outcome of a cycle given up before its completion (a refresh began a new one, or a
reset gave it up): it was never swept, and never will be."""
KEPT_CYCLES = 1000
"""Rows of `cycles` kept per provider, the newest: the store reads only the current and the last
completed one; the rest is history for a person reading the state (about three weeks at the
default rest)."""


def start_cycle(
    conn: AnyConnection, record: ProviderRecord, now: float, facts: dict[str, str | None]
) -> None:
    """Begin cycle `record.cycle_id` (already bumped by the caller): fresh queues, history row
    (the oldest past KEPT_CYCLES dropped), the cycle's `facts`; an earlier cycle still open is
    marked abandoned."""
    with conn.transaction():
        write_facts(conn, record.name, facts, now)
        conn.execute("DELETE FROM queue_items WHERE provider = ?", [record.name])
        conn.execute(
            "DELETE FROM cycles WHERE provider = ? AND cycle_id <= ?",
            [record.name, record.cycle_id - KEPT_CYCLES],
        )
        _abandon_open_cycles(conn, record.name, before=record.cycle_id)
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
    """Apply one page: entities, seen refs, queue pushes, kept scopes, cursor, counters, change
    log."""
    with conn.transaction():
        removed = remove_refs(conn, provider, page.removals, page.entities, now)
        stats = upsert_entities(conn, provider, cycle_id, page.entities, now)
        _push_queue_items(conn, provider, page)
        write_index(conn, provider, cycle_id, page.index)
        write_facts(conn, provider, page.facts, now)
        removed += remove_scopes(conn, provider, page.removal_scopes, set(), now)
        if page.kept_scopes:
            held = _blocked_cycle(conn, provider)  # what a blocked sweep holds back stays so
            keep_scopes(conn, provider, cycle_id, page.kept_scopes, now, since=held)
            keep_index_scopes(conn, provider, cycle_id, page.kept_scopes, since=held)
        _recount_blocked(conn, provider)  # the page may see again refs a blocked sweep holds
        conn.execute(
            f"UPDATE {STATE} SET cursor = ?, updated_at = ? WHERE provider = ?",
            [cursor_text, now, provider],
        )
        # The last page marks the cycle WALKED: a run killed before the cycle's completion
        # goes on with the sweep instead of walking the platform again.
        conn.execute(
            """UPDATE cycles SET pages = pages + 1, upserted = upserted + ?,
               unchanged = unchanged + ?, removed = removed + ?,
               outcome = CASE WHEN ? THEN ? ELSE outcome END
               WHERE provider = ? AND cycle_id = ?""",
            [stats.upserted, stats.unchanged, removed, page.done, WALKED, provider, cycle_id],
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
    conn: AnyConnection,
    record: ProviderRecord,
    guards: SweepGuards,
    now: float,
    follower: SweepFollower | None = None,
) -> SweepResult:
    """Sweep what this cycle did not see (unless a guard blocks it), save `record` as given and
    forget the parked events the cycle's walk made stale: the end of the burst that walked the
    cycle's last page, counted as a burst that ended well (`bursts_ok`). The events `follower`
    names for the index rows the sweep prunes are queued with it."""
    provider, cycle_id = record.name, record.cycle_id
    followed: list[JSON] = []
    with conn.transaction():
        stale = _count(conn, "provider = ? AND last_seen_cycle < ?", [provider, cycle_id])
        reason = _blocking_reason(conn, provider, cycle_id, stale, guards)
        removed = 0
        if reason is None:
            if stale >= LARGE_SWEEP:
                refresh_statistics(conn, REFS, "entities")
            removed = remove_refs_where(conn, provider, "last_seen_cycle < ?", [cycle_id], now)
            followed = followed_events(conn, provider, cycle_id, follower)
            prune_index(conn, provider, cycle_id)
            record.blocked_removals = 0
            blocked_cycle: int | None = None
        else:
            record.blocked_removals = stale
            blocked_cycle = cycle_id
        conn.execute(
            f"""UPDATE {STATE} SET blocked_cycle_id = ?, blocked_reason = ?, blocked_removals = ?
                WHERE provider = ?""",
            [blocked_cycle, reason, record.blocked_removals, provider],
        )
        outcome = "blocked" if reason else "completed"
        conn.execute(
            """UPDATE cycles SET completed_at = ?, removed = removed + ?, blocked = ?, outcome = ?
               WHERE provider = ? AND cycle_id = ?""",
            [now, removed, record.blocked_removals, outcome, provider, cycle_id],
        )
        bump_counters(conn, provider, {f"cycles_{outcome}": 1, "bursts_ok": 1})
        write_facts(conn, provider, {PURGED_FACT: None}, now)  # the catalog is whole again
        save_provider(conn, record, now)
        remaining = active_count(conn, provider)
        _forget_parked_events(conn, provider, cycle_id)
        # The inbox's turn is taken just above; one already pending about its object stays.
        insert_events(conn, provider, events_not_pending(conn, provider, followed), now)
    return SweepResult(removed, record.blocked_removals, reason, remaining, len(followed))


def _forget_parked_events(conn: AnyConnection, provider: str, cycle_id: int) -> None:
    """Delete the provider's parked events that arrived before cycle `cycle_id` began: its walk
    read each object after the change such an event reported, so the event has nothing left to
    say (so too when the sweep is blocked: an object the walk no longer found waits there).

    Inside the cycle's completion, so a kill leaves both or neither. Inbox writers (other hosts,
    without the run lock) take turns with this delete, which could otherwise meet their
    coalescing on the same rows in the opposite order (a deadlock on PostgreSQL); last in the
    transaction, it holds them up for one statement."""
    take_turn(conn, "inbox")
    conn.execute(
        """DELETE FROM event_inbox WHERE provider = ? AND parked = 1 AND received_at < (
               SELECT started_at FROM cycles WHERE provider = ? AND cycle_id = ?)""",
        [provider, provider, cycle_id],
    )


BURST_ENDS = ("ok", "interrupted")
"""How a burst that neither failed nor completed its cycle ended (`end_burst`): paused with work
left (its deadline, a 429), or stopped by SIGTERM. A failed burst is `record_failure`'s, a
completed cycle's `complete_cycle`'s; each counts `bursts_<how>` in the transaction that stores
the burst's end."""


def end_burst(conn: AnyConnection, record: ProviderRecord, ended: str, now: float) -> None:
    """Store `record` at the end of a burst that did not complete its cycle, counted as `ended`."""
    if ended not in BURST_ENDS:
        raise ValueError(f"a burst ends {' or '.join(BURST_ENDS)} here, not {ended!r}")
    with conn.transaction():
        bump_counters(conn, record.name, {f"bursts_{ended}": 1})
        save_provider(conn, record, now)


def count_crashed_burst(conn: AnyConnection, provider: str) -> None:
    """A burst that did not finish, counted as failed by the write that moves its record on
    (in that write's transaction): `reporting` adds it until then."""
    bump_counters(conn, provider, {"bursts_failed": 1})


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


def record_available(conn: AnyConnection, record: ProviderRecord, now: float) -> None:
    with conn.transaction():
        write_facts(conn, record.name, {UNAVAILABLE_FACT: None}, now)
        save_provider(conn, record, now)


def set_facts(conn: AnyConnection, provider: str, facts: dict[str, str | None], now: float) -> None:
    with conn.transaction():
        write_facts(conn, provider, facts, now)


def approve_removals(
    conn: AnyConnection, provider: str, now: float, *, cycle: int | None = None
) -> int | None:
    """Apply a blocked sweep: remove what the blocked cycle did not see. Returns the count;
    None, removing nothing, when `cycle` is given and the blocked sweep is not that cycle's (a
    later cycle blocked other removals since they were reviewed)."""
    with conn.transaction():
        blocked_cycle = conn.scalar(
            f"SELECT blocked_cycle_id FROM {STATE} WHERE provider = ?", [provider]
        )
        if cycle is not None and blocked_cycle != cycle:
            return None
        if blocked_cycle is None:
            return 0
        removed = remove_refs_where(conn, provider, "last_seen_cycle < ?", [blocked_cycle], now)
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
    upserted = {entity.ref for entity in delta.upserts}
    removed = remove_refs(conn, provider, delta.removals, delta.upserts, now)
    stats = upsert_entities(conn, provider, cycle_id, delta.upserts, now)
    write_index(conn, provider, cycle_id, delta.index)
    removed += remove_scopes(conn, provider, delta.removal_scopes, upserted, now)
    _recount_blocked(conn, provider)
    bump_counters(conn, provider, {"entities_upserted": stats.upserted})
    if delta.refresh:
        write_facts(conn, provider, {REFRESH_REQUESTED_FACT: rfc3339(now)}, now)
        write_fact_unless(conn, provider, (REFRESH_REASON_FACT, EVENT_ASKED), EVENTS_LOST, now)
    return stats, removed


def _blocked_cycle(conn: AnyConnection, provider: str) -> int:
    """The cycle whose sweep is blocked (0 if none): refs last seen before it are held back."""
    held = conn.scalar(f"SELECT blocked_cycle_id FROM {STATE} WHERE provider = ?", [provider])
    return int(held or 0)


def _recount_blocked(conn: AnyConnection, provider: str) -> None:
    """Keep a blocked sweep's count exact when a page or an event sees again (or an event
    removes) one of the refs it holds back: what `removals approve` would remove is what the
    count says. A provider with no blocked sweep matches no row: nothing is counted."""
    conn.execute(
        f"""UPDATE {STATE} SET blocked_removals = (
                SELECT count(*) FROM {REFS} r
                WHERE r.provider = {STATE}.provider AND r.last_seen_cycle < {STATE}.blocked_cycle_id
            ) WHERE provider = ? AND blocked_cycle_id IS NOT NULL""",
        [provider],
    )


def reset_provider(
    conn: AnyConnection, record: ProviderRecord, *, purge: bool, now: float, crashed_burst: bool
) -> int:
    """Back to idle with a fresh cycle next run; `purge` also removes its entities and refs, and
    renews the store id (consumers of the change log copy the catalog again). `crashed_burst`
    as for `Store.save_provider`."""
    with conn.transaction():
        if crashed_burst:
            count_crashed_burst(conn, record.name)
        removed = 0
        if purge:
            removed = remove_refs_where(conn, record.name, "1 = 1", [], now)
            delete_entities(conn, record.name, "provider = ?", [record.name])
            clear_index(conn, record.name)
            renew_store_id(conn, now)
            write_facts(conn, record.name, {PURGED_FACT: rfc3339(now)}, now)
        conn.execute("DELETE FROM queue_items WHERE provider = ?", [record.name])
        _abandon_open_cycles(conn, record.name)  # not shown as in progress while idle
        conn.execute(
            f"""UPDATE {STATE} SET blocked_cycle_id = NULL, blocked_reason = NULL,
                blocked_removals = 0 WHERE provider = ?""",
            [record.name],
        )
        save_provider(conn, record, now)
    return removed


def _abandon_open_cycles(conn: AnyConnection, provider: str, before: int | None = None) -> None:
    """Mark the provider's cycles (those before cycle `before`) that were neither completed nor
    given up `ABANDONED`: none of them will ever be swept."""
    below, bound = ("AND cycle_id < ?", [before]) if before is not None else ("", [])
    given_up = conn.execute(
        f"""UPDATE cycles SET outcome = ? WHERE provider = ? {below}
           AND completed_at IS NULL AND (outcome IS NULL OR outcome = ?)""",
        [ABANDONED, provider, *bound, WALKED],
    ).rowcount
    bump_counters(conn, provider, {f"cycles_{ABANDONED}": max(int(given_up), 0)})  # -1: unknown


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
        removed = delete_entities(conn, provider, "provider = ?", [provider])
        delete_refs(conn, provider, "1 = 1", [])
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
                f"its sweep would have removed {stale} of {before} active entities "
                f"({share:.1f}%), above rejectRemovalsAbovePercentage {threshold:g}"
            )
    return None


def _count(conn: AnyConnection, where: str, params: Iterable[object]) -> int:
    return int(conn.scalar(f"SELECT count(*) FROM {REFS} WHERE {where}", list(params)))
