"""What a choreo-ingest state file's schema is: the names a file is checked against on open.

Kept apart from `migrations`, which needs sqlite-utils (and sqlite-utils imports numpy when it is
installed): a run on a current state file checks these with plain SQL and never loads either.
"""

from __future__ import annotations

SCHEMA_VERSION = 5
MIGRATION_SET = "choreo_ingest"
MIGRATION_NAMES = (
    "0001_initial",
    "0002_positions",
    "0003_provider_index",
    "0004_feed",
    "0005_counts",
)
MIGRATIONS_TABLE = "_sqlite_migrations"
"""sqlite-utils' record of applied migrations: one row per (migration_set, name)."""
