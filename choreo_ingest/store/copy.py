"""`migrate --copy-to`: a whole state, copied to another store (SQLite <-> PostgreSQL).

Everything a running installation has goes across in one transaction of the target: entities,
the active set, cursors and cycles, queues, the lookup index and facts, counters, the inbox,
the change log with its seqs, the consumers' positions and the store id, so that a consumer of
the feed carries on where it was and no new full cycle is needed. The counts of entities and
active refs are not copied: the target's are emptied with its tables, and its triggers count
the rows as they are written. The caller holds both run locks; the source is read in one
snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from choreo_ingest.errors import ConfigError
from choreo_ingest.store.dialect import AnyConnection, is_postgres
from choreo_ingest.store.meta import RUN_HOLDER
from choreo_ingest.store.write_mark import WRITE_MARK

BATCH_ROWS = 1000
BATCH_CHARS = 16 * 1024 * 1024
"""A batch also ends once its text holds this much: PostgreSQL takes a batch as one statement,
and 1,000 entities of 200 KB made one of 200 MB (653 MB peak for a copy of 5,000 of them)."""

# Every table of the schema that holds state (not the migrations' own records, nor the counts
# the triggers keep), with the columns copied, in the order rows are read (their keys).
STATE_TABLES: dict[str, tuple[Sequence[str], Sequence[str]]] = {
    "openchoreo_incremental_ingestion_state": (
        (
            "provider",
            "state",
            "cycle_id",
            "cursor",
            "next_action_at",
            "attempts",
            "last_error",
            "last_burst_at",
            "last_burst_duration",
            "cycle_started_at",
            "last_completed_at",
            "last_cycle_duration",
            "blocked_removals",
            "blocked_cycle_id",
            "blocked_reason",
            "updated_at",
        ),
        ("provider",),
    ),
    "openchoreo_incremental_entity_refs": (
        (
            "provider",
            "entity_ref",
            "first_seen_cycle",
            "last_seen_cycle",
            "first_seen_at",
            "last_seen_at",
        ),
        ("provider", "entity_ref"),
    ),
    "entities": (
        ("ref", "kind", "namespace", "name", "scope", "body", "hash", "provider", "updated_at"),
        ("ref",),
    ),
    "changes": (("seq", "at", "op", "ref", "provider"), ("seq",)),
    "cycles": (
        (
            "provider",
            "cycle_id",
            "started_at",
            "completed_at",
            "pages",
            "upserted",
            "unchanged",
            "removed",
            "blocked",
            "errors",
            "outcome",
        ),
        ("provider", "cycle_id"),
    ),
    "queue_items": (
        ("provider", "queue", "position", "key", "value"),
        ("provider", "queue", "position"),
    ),
    "event_inbox": (
        ("seq", "provider", "received_at", "body", "attempts", "parked", "last_error"),
        ("seq",),
    ),
    "counters": (("provider", "name", "value"), ("provider", "name")),
    "positions": (("name", "value"), ("name",)),
    "provider_index": (
        ("provider", "tbl", "key", "grp", "value", "cycle_id"),
        ("provider", "tbl", "key"),
    ),
    "provider_facts": (("provider", "name", "value", "updated_at"), ("provider", "name")),
    "store_meta": (("name", "value"), ("name",)),
}
STATE_ROWS = {"store_meta": f"name NOT IN ('{RUN_HOLDER}', '{WRITE_MARK}')"}
"""Which rows are the state's, in a table where some are the store's own: which run holds a
PostgreSQL store (`pg_fence`) is neither copied nor replaced (the target's is the copying
run's claim, which the copy's transaction checks), nor is a state file's write mark (the
target's is the one the copy's transaction gave it)."""
SEQUENCED = {"changes": "seq", "event_inbox": "seq"}
"""Tables whose key a counter hands out: the target's counter must go on after the source's."""
JSONB_COLUMNS = {("event_inbox", "body")}
"""Columns PostgreSQL keeps as JSONB (pg_schema): copied as text, as SQLite keeps them."""
COUNTS = ("entity_counts", "ref_counts")
"""The counts of entities and refs (migration 0005_counts): emptied with the tables they count,
then kept by the triggers as the rows are written."""
HOLDS_STATE = ("openchoreo_incremental_ingestion_state", "entities", "changes", "event_inbox")


@dataclass(frozen=True)
class CopyReport:
    rows: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"copied": dict(self.rows)}


def holds_state(conn: AnyConnection) -> bool:
    return any(conn.scalar(f"SELECT count(*) FROM {table}") for table in HOLDS_STATE)


def copy_state(
    source: AnyConnection, target: AnyConnection, *, newest_seqs: dict[str, int], force: bool
) -> CopyReport:
    """Copy every state table from `source` to `target` (both migrated to the same schema);
    `newest_seqs` are the source's counters (the last seq handed out, pruned rows included).
    A target that already holds state is refused unless `force`, which replaces it."""
    if holds_state(target) and not force:
        raise ConfigError("the target already holds a state; --force replaces it", path="--copy-to")
    rows: dict[str, int] = {}
    with source.snapshot(), target.transaction():
        for table in (*STATE_TABLES, *COUNTS):  # SQLite has no triggers counting deletes
            target.execute(f"DELETE FROM {table}{_where(table)}")
        for table, (columns, key) in STATE_TABLES.items():
            rows[table] = _copy_table(source, target, table, columns, key)
        for table, column in SEQUENCED.items():
            _continue_counter(target, table, column, newest_seqs.get(table, 0))
    return CopyReport(rows)


def _copy_table(
    source: AnyConnection,
    target: AnyConnection,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
) -> int:
    read = ", ".join(_as_text(source, table, column) for column in columns)
    copied, batch, chars = 0, [], 0
    selected = f"SELECT {read} FROM {table}{_where(table)} ORDER BY {', '.join(key)}"
    # Streamed: PostgreSQL's client held a whole table's answer (1 GB for 476,000 entities).
    for row in source.stream(selected):
        batch.append(tuple(row))
        chars += sum(len(value) for value in row if isinstance(value, str))
        if len(batch) == BATCH_ROWS or chars >= BATCH_CHARS:
            _insert(target, table, columns, batch)
            copied, batch, chars = copied + len(batch), [], 0
    if batch:
        _insert(target, table, columns, batch)
        copied += len(batch)
    return copied


def _where(table: str) -> str:
    return f" WHERE {STATE_ROWS[table]}" if table in STATE_ROWS else ""


def _insert(
    target: AnyConnection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """The rows written; the count triggers (migration 0005_counts) count them. PostgreSQL
    takes a batch as one statement: its triggers count once a statement, and one a row would
    update the same count rows thousands of times in the copy's one transaction."""
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    if is_postgres(target):
        target.execute(insert + ", ".join(marks for _ in rows), [v for row in rows for v in row])
    else:
        target.executemany(insert + marks, rows)


def _as_text(source: AnyConnection, table: str, column: str) -> str:
    """A column as the other store takes it: PostgreSQL's one JSONB column read as its text."""
    if is_postgres(source) and (table, column) in JSONB_COLUMNS:
        return f"CAST({column} AS TEXT)"
    return column


def _continue_counter(target: AnyConnection, table: str, column: str, newest: int) -> None:
    highest = max(newest, int(target.scalar(f"SELECT coalesce(max({column}), 0) FROM {table}")))
    if is_postgres(target):
        if highest:
            target.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), ?)", [highest]
            )
        return
    target.execute("DELETE FROM sqlite_sequence WHERE name = ?", [table])
    if highest:
        target.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", [table, highest])
