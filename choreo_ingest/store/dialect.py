"""The few SQL fragments that differ between SQLite and PostgreSQL, by connection.

The store's modules write one statement for both wherever one works for both (`ON CONFLICT`,
`RETURNING`, `CAST(… AS BIGINT)`, a derived table with an alias); what cannot be written once
comes from the helpers here, chosen by the connection's `dialect` ("sqlite" or "postgres").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from choreo_ingest.errors import StateError

if TYPE_CHECKING:  # psycopg is an optional extra: never imported for an SQLite store
    from choreo_ingest.store.connection import Connection
    from choreo_ingest.store.pg_connection import PgConnection

    AnyConnection: TypeAlias = Connection | PgConnection
    """What the store's modules run their SQL on."""
else:
    AnyConnection = object  # for annotations only: no psycopg import at run time

POSTGRES = "postgres"
LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's SQLSTATE for a statement that waited for a lock past `lock_timeout`."""


def pg_session_identity(pid: str) -> str:
    """A PostgreSQL session's identity as text, for the session whose pid `pid` (an SQL
    expression) gives: the server's start and the pid, unique across a server's restarts."""
    return f"CAST(pg_postmaster_start_time() AS TEXT) || ' ' || CAST({pid} AS TEXT)"


def is_postgres(conn: AnyConnection) -> bool:
    return conn.dialect == POSTGRES


def in_values(conn: AnyConnection, column: str, values: Sequence[Any]) -> tuple[str, Any]:
    """`column` is one of `values`, as one statement for any number of them: the condition and
    the one parameter it takes (SQLite: a JSON array read by `json_each`; PostgreSQL: an array).
    `IN (?, ?, ...)` would compile (and cache) one statement per distinct count."""
    if is_postgres(conn):
        texts = [None if value is None else str(value) for value in values]
        return f"{column} = ANY(CAST(? AS TEXT[]))", texts
    return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))


def json_field(conn: AnyConnection, column: str, field: str) -> str:
    """The text of `field` of the JSON object in `column` (PostgreSQL's is a JSONB column)."""
    if is_postgres(conn):
        return f"({column} ->> '{field}')"
    return f"json_extract({column}, '$.{field}')"


def no_limit(conn: AnyConnection) -> int | None:
    """The value of `LIMIT ?` that sets no limit."""
    return None if is_postgres(conn) else -1


def greatest(conn: AnyConnection) -> str:
    """The name of the scalar function that picks the largest of its arguments."""
    return "greatest" if is_postgres(conn) else "max"


def take_turn(conn: AnyConnection, purpose: str) -> None:
    """Inside a write transaction: wait until no other transaction doing `purpose` on this
    state is open (PostgreSQL: a transaction-level advisory lock of the schema's). Nothing to
    do on SQLite, whose write transactions (BEGIN IMMEDIATE) already take turns."""
    if not is_postgres(conn):
        return
    from choreo_ingest.store.pg_connection import PgConnection, advisory_key

    assert isinstance(conn, PgConnection)
    key = advisory_key(f"{purpose}:{conn.schema}")
    conn.execute("SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))", [key])


def row_key(conn: AnyConnection) -> str:
    """What names one row of `entities` fastest (SQLite: its rowid; PostgreSQL: the key)."""
    return "ref" if is_postgres(conn) else "rowid"


def refresh_statistics(conn: AnyConnection, *tables: str) -> None:
    """Before a statement over many rows written moments ago: PostgreSQL plans from statistics
    that autovacuum refreshes about once a minute, so a cycle's fresh rows look like none and a
    large sweep probes them one by one (3 s instead of under 2 for 200k). ANALYZE samples, so it
    costs little. SQLite plans from its indexes alone: nothing to do.

    A hint only, so it waits for its lock no longer than twice `deadlock_timeout` (at least
    2 s), after which an autovacuum in its way has been cancelled, nor than the session would:
    a VACUUM of an operator's, or one against wraparound, holds that lock for minutes, and the
    statement after plans without the hint then."""
    if not is_postgres(conn):
        return
    from choreo_ingest.store.pg_connection import PgConnection

    assert isinstance(conn, PgConnection)
    failed = conn.failed
    saved = conn.scalar("SELECT current_setting('lock_timeout')")
    conn.execute("SAVEPOINT refresh_statistics")
    try:
        conn.execute(
            """SELECT set_config('lock_timeout', CAST(LEAST(NULLIF(CAST(w.setting AS BIGINT), 0),
                   GREATEST(2 * CAST(d.setting AS BIGINT), 2000)) AS TEXT), true)
               FROM pg_settings w, pg_settings d
               WHERE w.name = 'lock_timeout' AND d.name = 'deadlock_timeout'"""
        )
        conn.execute(f"ANALYZE {', '.join(tables)}")
    except StateError as error:
        if getattr(error.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        conn.execute("ROLLBACK TO SAVEPOINT refresh_statistics")  # and its lock_timeout
        conn.execute("RELEASE SAVEPOINT refresh_statistics")
        conn.failed = failed  # expected, and undone: the session is as fit to keep as before
        return
    conn.execute("RELEASE SAVEPOINT refresh_statistics")
    conn.execute("SELECT set_config('lock_timeout', ?, true)", [saved])
