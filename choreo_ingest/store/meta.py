"""What the state file says about itself (table `store_meta`): its id, how far the change log
was pruned and, on PostgreSQL, which run holds the store (`pg_fence`).

The store id names one unbroken history of the change log. A consumer that copied the catalog
keeps it; when it changes (a new state file, or entities removed without a consumer being able
to follow, as `reset --purge` and `reset --forget` do), the copy must be made again.
"""

from __future__ import annotations

from choreo_ingest.store.dialect import AnyConnection, greatest

STORE_ID = "store_id"
STORE_ID_RENEWED_AT = "store_id_renewed_at"
PRUNED_THROUGH = "changes_pruned_through"
"""Every change with a seq at or below this has been pruned."""
RUN_HOLDER = "run_holder"
"""PostgreSQL only: the token of the run that claimed the store under the run lock
(`pg_fence`). Absent while no run holds it (the last one released it, or none has claimed it
yet: a state an older release migrated), or stale (a `serve` keeps its token for all its ticks;
a crashed run leaves its own); the store's own, never copied (`copy.STATE_ROWS`)."""


def store_id(conn: AnyConnection) -> str:
    return str(conn.scalar("SELECT value FROM store_meta WHERE name = ?", [STORE_ID]))


def renew_store_id(conn: AnyConnection, now: float) -> str:
    """A new store id (and when it was made), inside a transaction the caller holds."""
    import secrets  # with hmac and OpenSSL: not for the reads of an idle call

    new_id = secrets.token_hex(16)
    _set(conn, STORE_ID, new_id)
    _set(conn, STORE_ID_RENEWED_AT, repr(now))
    return new_id


def pruned_through(conn: AnyConnection) -> int:
    return int(conn.scalar("SELECT value FROM store_meta WHERE name = ?", [PRUNED_THROUGH]))


def raise_pruned_through(conn: AnyConnection, seq: int) -> None:
    """Move the pruned mark up to `seq`, never down."""
    conn.execute(
        f"""UPDATE store_meta SET value = CAST({greatest(conn)}(CAST(value AS BIGINT), ?) AS TEXT)
            WHERE name = ?""",
        [seq, PRUNED_THROUGH],
    )


def _set(conn: AnyConnection, name: str, value: str) -> None:
    conn.execute(
        """INSERT INTO store_meta (name, value) VALUES (?, ?)
           ON CONFLICT (name) DO UPDATE SET value = excluded.value""",
        [name, value],
    )
