"""The rows of entities: written and removed with their refs, the change log and the counts.

`upsert_entities` writes a page's (or an event's) entities: canonical JSON and its hash, an
upsert and a change-log row for each entity that changed, and every entity's ref marked seen in
the cycle. `remove_refs_where` and `remove_scopes` take refs away with the entities they own,
logging each delete, and then an upsert of any live entity whose ref differs from a removed one
only in case. The callers in `writes` hold the transaction around them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from choreo_ingest.models import Entity, PageStats, in_scope
from choreo_ingest.store.connection import canonical_json
from choreo_ingest.store.dialect import AnyConnection, in_values, is_postgres, row_key

REFS = "openchoreo_incremental_entity_refs"
_IN_BATCH = 500  # SQLite's default limit on bound variables is generous; keep statements small


def bump_counters(conn: AnyConnection, provider: str, increments: dict[str, int]) -> None:
    rows = [(provider, name, value) for name, value in increments.items() if value]
    conn.executemany(
        """INSERT INTO counters (provider, name, value) VALUES (?, ?, ?)
           ON CONFLICT (provider, name) DO UPDATE SET value = counters.value + excluded.value""",
        rows,
    )


def upsert_entities(
    conn: AnyConnection, provider: str, cycle_id: int, entities: Sequence[Entity], now: float
) -> PageStats:
    by_ref = {entity.ref: entity for entity in entities}
    encoded = {ref: canonical_json(entity.body) for ref, entity in by_ref.items()}
    from hashlib import sha256  # OpenSSL's loading is not for the calls that only read

    hashes = {ref: sha256(text.encode()).hexdigest()[:32] for ref, text in encoded.items()}
    existing = _existing_hashes(conn, list(by_ref))
    # A ref another provider wrote first stays its own, as Backstage keeps an entity with the
    # location that first had it: else two providers would take it from each other every cycle,
    # and the one forgotten would take it away with its own.
    refused = tuple((ref, owner) for ref, (_, owner) in existing.items() if owner != provider)
    for ref, _ in refused:
        del by_ref[ref]
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
    return PageStats(len(changed), len(by_ref) - len(changed), refused)


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


def active_count(conn: AnyConnection, provider: str) -> int:
    """The provider's active refs: one row of the counts kept as refs are written and deleted
    (migrations 0005_counts, 0006_counted_deletes), never a scan of the active set."""
    return int(conn.scalar("SELECT count FROM ref_counts WHERE provider = ?", [provider]) or 0)


def remove_refs(
    conn: AnyConnection, provider: str, refs: Sequence[str], written: Sequence[Entity], now: float
) -> int:
    """Remove the provider's `refs`, except those of the `written` entities; returns how many
    entities went."""
    if not refs:  # as a rule: a page removes nothing
        return 0
    kept = {entity.ref for entity in written}
    removed = 0
    for ref in dict.fromkeys(refs):
        if ref not in kept:
            removed += remove_refs_where(conn, provider, "entity_ref = ?", [ref], now)
    return removed


def remove_scopes(
    conn: AnyConnection, provider: str, scopes: Sequence[str], kept: set[str], now: float
) -> int:
    """Remove the provider's entities in each scope or below it (`acme` takes `acme/x/y`),
    except the refs in `kept`; returns how many."""
    removed = 0
    for scope in scopes:
        # Collected first: _remove_refs_where deletes the entities before the refs, so a
        # condition that reads the entities table would match nothing by then.
        scoped = [ref for ref in refs_in_scope(conn, provider, scope) if ref not in kept]
        for start in range(0, len(scoped), _IN_BATCH):
            batch = scoped[start : start + _IN_BATCH]
            marks = ",".join("?" * len(batch))
            removed += remove_refs_where(
                conn, provider, f"entity_ref IN ({marks})", list(batch), now
            )
    return removed


def keep_scopes(
    conn: AnyConnection,
    provider: str,
    cycle_id: int,
    scopes: Sequence[str],
    now: float,
    *,
    since: int = 0,
) -> int:
    """Mark the provider's entities in each scope or below it seen in cycle `cycle_id`, so that
    its sweep keeps them as they are, but those last seen before cycle `since` (which a blocked
    sweep holds back: they stay held); returns how many were not seen in it yet."""
    kept = 0
    for scope in scopes:
        scoped = refs_in_scope(conn, provider, scope)
        for start in range(0, len(scoped), _IN_BATCH):
            batch = scoped[start : start + _IN_BATCH]
            marks = ",".join("?" * len(batch))
            cursor = conn.execute(
                f"""UPDATE {REFS} SET last_seen_cycle = ?, last_seen_at = ? WHERE provider = ?
                    AND last_seen_cycle < ? AND last_seen_cycle >= ? AND entity_ref IN ({marks})""",
                [cycle_id, now, provider, cycle_id, since, *batch],
            )
            kept += int(cursor.rowcount)
    return kept


def refs_in_scope(conn: AnyConnection, provider: str, scope: str) -> list[str]:
    """The refs of the provider's entities in `scope` or below it (`acme` holds `acme/x/y`)."""
    # A range of the (provider, scope) index, in byte order ('0' follows '/'), then the scope or
    # below it: the range also holds siblings such as `scope-2`, and a test per row scanned the
    # provider's whole index (12 ms an event at 100,000 entities).
    return [
        ref
        for ref, found in conn.execute(
            "SELECT ref, scope FROM entities WHERE provider = ? AND scope >= ? AND scope < ?",
            [provider, scope, scope + "0"],
        )
        if in_scope(found, scope)
    ]


def remove_refs_where(
    conn: AnyConnection, provider: str, where: str, params: list[object], now: float
) -> int:
    """Remove the provider's refs matching `where` and the entities it owns, logging deletes;
    the count of entities removed."""
    args = [provider, *params]
    # Driven by the matching refs, each entity found through its primary key: filtering on
    # `entities.provider` instead makes SQLite scan every entity of the provider.
    owned = f"""FROM {REFS} r JOIN entities e ON e.ref = r.entity_ref AND e.provider = r.provider
        WHERE r.provider = ? AND {where}"""
    # In ref order, as SQLite's plan yields them anyway; PostgreSQL's hash join would not.
    order = " ORDER BY e.ref" if is_postgres(conn) else ""
    twins = _case_twins(conn, where, args)
    if twins:
        _log_deletes_with_twins(conn, owned, args, twins, provider, now)
    else:
        conn.execute(
            "INSERT INTO changes (at, op, ref, provider) "
            f"SELECT ?, 'delete', e.ref, r.provider {owned}{order}",
            [now, *args],
        )
    key = row_key(conn)
    # Entities, not refs: a ref an earlier release let two providers hold has one entity.
    removed = delete_entities(conn, provider, f"{key} IN (SELECT e.{key} {owned})", args)
    delete_refs(conn, provider, where, params)
    bump_counters(conn, provider, {"entities_removed": removed})
    return removed


def _case_twins(conn: AnyConnection, where: str, args: list[object]) -> dict[str, list[str]]:
    """The provider's entities whose refs differ only in case from one about to be removed
    (`api:ns/web-cart-httpApi` renamed `...-httpapi`), by the ref removed. A twin shares its
    scope: API names are their component's names and the endpoint's, and only the endpoint's
    part has capitals."""
    twins: dict[str, list[str]] = {}
    for removed, twin in conn.execute(
        f"""SELECT DISTINCT e.ref, t.ref FROM {REFS} r
            JOIN entities e ON e.ref = r.entity_ref AND e.provider = r.provider
            JOIN entities t ON t.provider = e.provider AND t.scope = e.scope
                AND t.ref <> e.ref AND lower(t.ref) = lower(e.ref)
            WHERE r.provider = ? AND {where}""",
        args,
    ):
        twins.setdefault(removed, []).append(twin)
    return twins


def _log_deletes_with_twins(
    conn: AnyConnection,
    owned: str,
    args: list[object],
    twins: dict[str, list[str]],
    provider: str,
    now: float,
) -> None:
    """Log the deletes, each of a ref whose case twin lives on followed at once by an upsert of
    the twin. A reader of the change log that folds case (Backstage's refs do) takes the delete
    for the live entity's: the upsert right after it makes it end on the live one, and no page
    of `/changes` ends between the two (`feed.changes_page`). Rare: a rename in case only."""
    removed = [ref for (ref,) in conn.execute(f"SELECT e.ref {owned} ORDER BY e.ref", args)]
    gone = set(removed)
    rows: list[tuple[object, ...]] = []
    for ref in removed:
        rows.append((now, "delete", ref, provider))
        live = sorted(twin for twin in twins.get(ref, ()) if twin not in gone)
        rows.extend((now, "upsert", twin, provider) for twin in live)
    conn.executemany("INSERT INTO changes (at, op, ref, provider) VALUES (?, ?, ?, ?)", rows)


# Counts on delete. PostgreSQL's statement triggers (migration 0005) count every statement's
# deletes. SQLite's row triggers on delete are gone since 0006 (they cost a sweep about a second
# per 100,000 entities), so on SQLite every delete from `entities` or the refs goes through
# these two, which take the counts down in the same transaction.


def delete_entities(conn: AnyConnection, provider: str, where: str, params: list[object]) -> int:
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


def delete_refs(conn: AnyConnection, provider: str, where: str, params: list[object]) -> int:
    """Delete `provider`'s refs matching `where` and count them out."""
    delete = f"DELETE FROM {REFS} WHERE provider = ? AND {where}"
    removed = int(conn.execute(delete, [provider, *params]).rowcount)
    if removed and not is_postgres(conn):
        conn.execute(
            "UPDATE ref_counts SET count = count - ? WHERE provider = ?", [removed, provider]
        )
        conn.execute("DELETE FROM ref_counts WHERE provider = ? AND count <= 0", [provider])
    return removed
