"""What a choreo-ingest state file's schema is: the names a file is checked against on open.

Kept apart from `migrations` (the statements): a run on a current state file checks these names
with plain SQL and never loads the migrations.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

SCHEMA_VERSION = 7
MAX_INTEGER = 2**63 - 1
"""The largest whole number a column holds (SQLite INTEGER, PostgreSQL BIGINT): the bound of
any count or sequence number a command or a request passes to the store."""
MIGRATION_SET = "choreo_ingest"
MIGRATION_NAMES = (
    "0001_initial",
    "0002_positions",
    "0003_provider_index",
    "0004_feed",
    "0005_counts",
    "0006_counted_deletes",
    "0007_inbox_by_name",
)
MIGRATION_TABLES: dict[str, tuple[str, ...]] = {
    "0001_initial": (
        "openchoreo_incremental_ingestion_state",
        "openchoreo_incremental_entity_refs",
        "entities",
        "changes",
        "cycles",
        "queue_items",
        "event_inbox",
        "counters",
    ),
    "0002_positions": ("positions",),
    "0003_provider_index": ("provider_index", "provider_facts"),
    "0004_feed": ("store_meta",),
    "0005_counts": ("entity_counts", "ref_counts"),
    "0006_counted_deletes": (),
    "0007_inbox_by_name": (),
}
"""The tables each migration makes (on either backend; migrations only ever add): a state
missing one of those its applied migrations made is not a usable state (a table dropped by
hand)."""
STATE_TABLES = frozenset(table for tables in MIGRATION_TABLES.values() for table in tables)
MIGRATIONS_TABLE = "_sqlite_migrations"
"""sqlite-utils' record of applied migrations: one row per (migration_set, name)."""


def missing_tables(applied: Iterable[str], tables: Collection[str]) -> str | None:
    """What a state whose `applied` migrations made tables it no longer holds (`tables`) lacks,
    as SQLite would say it (`no such table: entities`), or None."""
    missing = sorted(
        {table for name in applied for table in MIGRATION_TABLES.get(name, ())} - set(tables)
    )
    if not missing:
        return None
    return f"no such table{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"


UNUSABLE_FILE_ADVICE = (
    "restore it from a backup, or move it aside with its -wal and -shm files and the next run "
    "builds a new state (a fresh walk of the platform)"
)
"""What to do about a state file missing a table of its own, or damaged (SQLite finds its
pages malformed), said after the refusal."""
UNUSABLE_SCHEMA_ADVICE = (
    "restore it from a backup, or move it aside (rename the schema) and the next run builds a "
    "new state (a fresh walk of the platform)"
)
"""The same for a PostgreSQL schema: the next run makes the schema again, and a new state in it."""
