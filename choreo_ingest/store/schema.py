"""What a choreo-ingest state file's schema is: the names a file is checked against on open.

Kept apart from `migrations` (the statements): a run on a current state file checks these names
with plain SQL and never loads the migrations.
"""

from __future__ import annotations

SCHEMA_VERSION = 6
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
)
MIGRATIONS_TABLE = "_sqlite_migrations"
"""sqlite-utils' record of applied migrations: one row per (migration_set, name)."""
