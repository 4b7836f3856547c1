"""Numbered schema migrations for the state DB, and the runner that applies them.

Each migration is registered in order and sets `PRAGMA user_version` to its number, so a DB
written by a newer choreo-ingest (a higher version than `SCHEMA_VERSION`) is recognised and refused.
Migrations only ever add (0006 drops two triggers, which it replaces): no data is dropped.

Applied migrations are recorded as sqlite-utils' `Migrations` records them (the table
`_sqlite_migrations`: `id` primary key, `migration_set`, `name`, `applied_at`, unique on
`(migration_set, name)`), which is what earlier releases used to apply them. The runner here is
our own because importing sqlite-utils (and numpy, which it loads when installed) costs the
first run on a new state file about 0.15 s; the files stay readable by sqlite-utils both ways.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable

from choreo_ingest.store.meta import PRUNED_THROUGH, STORE_ID
from choreo_ingest.store.schema import MIGRATION_SET, MIGRATIONS_TABLE

Step = Callable[[sqlite3.Connection], None]
"""One migration: statements run on the connection inside the runner's transaction."""

MIGRATIONS: list[tuple[str, Step]] = []
"""(name, step) in the order they apply; `schema.MIGRATION_NAMES` lists the same names."""


def migration(name: str) -> Callable[[Step], Step]:
    def register(step: Step) -> Step:
        MIGRATIONS.append((name, step))
        return step

    return register


def apply_migrations(raw: sqlite3.Connection, *, stop_before: str | None = None) -> list[str]:
    """Apply the pending migrations in order, each with its record in one transaction (so a
    crash leaves it applied and recorded, or neither); returns the names applied. `raw` is in
    autocommit mode (`isolation_level=None`). `stop_before` (for tests that build an older
    state file) stops at that migration."""
    applied: list[str] = []
    for name, step in MIGRATIONS:
        if name == stop_before:
            break
        raw.execute("BEGIN IMMEDIATE")
        try:
            raw.execute(_MIGRATIONS_TABLE)
            raw.execute(_MIGRATIONS_INDEX)
            done = raw.execute(
                f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE migration_set = ? AND name = ?",
                [MIGRATION_SET, name],
            ).fetchone()
            if done is None:
                step(raw)
                raw.execute(
                    f"""INSERT INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at) VALUES
                        (?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00:00')""",
                    [MIGRATION_SET, name],
                )
                applied.append(name)
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
    return applied


# sqlite-utils' own statements (stored without `IF NOT EXISTS`, as SQLite keeps schema text).
_MIGRATIONS_TABLE = f"""CREATE TABLE IF NOT EXISTS "{MIGRATIONS_TABLE}" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
)"""
_MIGRATIONS_INDEX = f"""CREATE UNIQUE INDEX IF NOT EXISTS
    "idx_{MIGRATIONS_TABLE}_migration_set_name" ON "{MIGRATIONS_TABLE}" ("migration_set", "name")"""


@migration("0001_initial")
def _initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE openchoreo_incremental_ingestion_state (
            provider TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            cycle_id INTEGER NOT NULL DEFAULT 0,
            cursor TEXT,
            next_action_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            last_burst_at REAL,
            last_burst_duration REAL,
            cycle_started_at REAL,
            last_completed_at REAL,
            last_cycle_duration REAL,
            blocked_removals INTEGER NOT NULL DEFAULT 0,
            blocked_cycle_id INTEGER,
            blocked_reason TEXT,
            updated_at REAL
        );
        CREATE TABLE openchoreo_incremental_entity_refs (
            provider TEXT NOT NULL,
            entity_ref TEXT NOT NULL,
            first_seen_cycle INTEGER NOT NULL,
            last_seen_cycle INTEGER NOT NULL,
            first_seen_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,
            PRIMARY KEY (provider, entity_ref)
        ) WITHOUT ROWID;
        CREATE INDEX entity_refs_by_cycle
            ON openchoreo_incremental_entity_refs (provider, last_seen_cycle);
        CREATE TABLE entities (
            ref TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            scope TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL,
            hash TEXT NOT NULL,
            provider TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX entities_by_provider_kind ON entities (provider, kind);
        CREATE INDEX entities_by_scope ON entities (provider, scope);
        CREATE TABLE changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
            ref TEXT NOT NULL,
            provider TEXT NOT NULL
        );
        CREATE TABLE cycles (
            provider TEXT NOT NULL,
            cycle_id INTEGER NOT NULL,
            started_at REAL NOT NULL,
            completed_at REAL,
            pages INTEGER NOT NULL DEFAULT 0,
            upserted INTEGER NOT NULL DEFAULT 0,
            unchanged INTEGER NOT NULL DEFAULT 0,
            removed INTEGER NOT NULL DEFAULT 0,
            blocked INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            outcome TEXT,
            PRIMARY KEY (provider, cycle_id)
        );
        CREATE TABLE queue_items (
            provider TEXT NOT NULL,
            queue TEXT NOT NULL,
            position INTEGER NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (provider, queue, position),
            UNIQUE (provider, queue, key)
        );
        CREATE TABLE event_inbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            provider TEXT NOT NULL,
            received_at REAL NOT NULL,
            body TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            parked INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        );
        CREATE TABLE counters (
            provider TEXT NOT NULL,
            name TEXT NOT NULL,
            value INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (provider, name)
        );
        """,
    )
    db.execute("PRAGMA user_version = 1")


@migration("0002_positions")
def _positions(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE positions (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID"
    )
    db.execute("PRAGMA user_version = 2")


@migration("0003_provider_index")
def _provider_index(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE provider_index (
            provider TEXT NOT NULL,
            tbl TEXT NOT NULL,
            key TEXT NOT NULL,
            grp TEXT NOT NULL DEFAULT '',
            value TEXT NOT NULL,
            cycle_id INTEGER NOT NULL,
            PRIMARY KEY (provider, tbl, key)
        ) WITHOUT ROWID;
        CREATE INDEX provider_index_by_group ON provider_index (provider, tbl, grp);
        CREATE TABLE provider_facts (
            provider TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (provider, name)
        ) WITHOUT ROWID;
        """,
    )
    db.execute("PRAGMA user_version = 3")


@migration("0004_feed")
def _feed(db: sqlite3.Connection) -> None:
    # The store id is made here, so every new (or replaced) state file has its own.
    db.execute("CREATE TABLE store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    db.execute(
        "INSERT INTO store_meta (name, value) VALUES (?, ?), (?, '0')",
        [STORE_ID, secrets.token_hex(16), PRUNED_THROUGH],
    )
    db.execute("PRAGMA user_version = 4")


@migration("0005_counts")
def _counts(db: sqlite3.Connection) -> None:
    # Counts kept as rows change, by triggers: in the same transaction as the change, so exact
    # after any crash, and `status` and the metrics read one row instead of scanning the
    # catalog. A count that reaches 0 loses its row: the tables hold what a
    # `GROUP BY ... count(*)` would give, nothing more.
    _run_script(
        db,
        """
        CREATE TABLE entity_counts (
            provider TEXT NOT NULL,
            kind TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (provider, kind)
        ) WITHOUT ROWID;
        CREATE TABLE ref_counts (
            provider TEXT PRIMARY KEY,
            count INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO entity_counts (provider, kind, count)
            SELECT provider, kind, count(*) FROM entities GROUP BY provider, kind;
        INSERT INTO ref_counts (provider, count)
            SELECT provider, count(*) FROM openchoreo_incremental_entity_refs GROUP BY provider
        """,
    )
    # One statement each (their bodies hold semicolons). UPDATE OF with WHEN: the busy path's
    # upserts set every column, and only a changed provider or kind moves a count.
    for statement in COUNT_TRIGGERS:
        db.execute(statement)
    db.execute("PRAGMA user_version = 5")


@migration("0006_counted_deletes")
def _counted_deletes(db: sqlite3.Connection) -> None:
    # A row trigger costs a sweep several microseconds a deleted row (about a second for 100,000
    # entities with their refs); the statements that delete count what they took instead
    # (entity_rows.py, `delete_entities` and `delete_refs`), in the same transaction.
    db.execute("DROP TRIGGER entities_counted_delete")
    db.execute("DROP TRIGGER entity_refs_counted_delete")
    db.execute("PRAGMA user_version = 6")


@migration("0007_inbox_by_name")
def _inbox_by_name(db: sqlite3.Connection) -> None:
    # Storing an event finds the older ones about its object by name (`inbox_rows.coalesce`) and
    # counts the pending ones: without these, by reading every event waiting, about 10 ms an
    # event at 10,000 waiting and 0.1 s at 100,000 (the inbox grows while the API is down).
    # The expression is `dialect.json_field`'s: SQLite uses an index on an expression written
    # alike.
    db.execute(
        "CREATE INDEX event_inbox_by_name ON event_inbox (provider, json_extract(body, '$.name'))"
    )
    db.execute("CREATE INDEX event_inbox_waiting ON event_inbox (provider, parked)")
    db.execute("PRAGMA user_version = 7")


_ENTITY_ADD = """
    INSERT INTO entity_counts (provider, kind, count) VALUES (new.provider, new.kind, 1)
        ON CONFLICT (provider, kind) DO UPDATE SET count = count + 1;"""
_ENTITY_TAKE = """
    UPDATE entity_counts SET count = count - 1 WHERE provider = old.provider AND kind = old.kind;
    DELETE FROM entity_counts WHERE provider = old.provider AND kind = old.kind AND count = 0;"""
_REF_ADD = """
    INSERT INTO ref_counts (provider, count) VALUES (new.provider, 1)
        ON CONFLICT (provider) DO UPDATE SET count = count + 1;"""
_REF_TAKE = """
    UPDATE ref_counts SET count = count - 1 WHERE provider = old.provider;
    DELETE FROM ref_counts WHERE provider = old.provider AND count = 0;"""
_REFS = "openchoreo_incremental_entity_refs"
COUNT_TRIGGERS = (
    f"CREATE TRIGGER entities_counted_insert AFTER INSERT ON entities BEGIN {_ENTITY_ADD} END",
    f"CREATE TRIGGER entities_counted_delete AFTER DELETE ON entities BEGIN {_ENTITY_TAKE} END",
    f"""CREATE TRIGGER entities_counted_update AFTER UPDATE OF provider, kind ON entities
        WHEN old.provider IS NOT new.provider OR old.kind IS NOT new.kind
        BEGIN {_ENTITY_TAKE} {_ENTITY_ADD} END""",
    f"CREATE TRIGGER entity_refs_counted_insert AFTER INSERT ON {_REFS} BEGIN {_REF_ADD} END",
    f"CREATE TRIGGER entity_refs_counted_delete AFTER DELETE ON {_REFS} BEGIN {_REF_TAKE} END",
    f"""CREATE TRIGGER entity_refs_counted_update AFTER UPDATE OF provider ON {_REFS}
        WHEN old.provider IS NOT new.provider
        BEGIN {_REF_TAKE} {_REF_ADD} END""",
)
"""The triggers that keep `entity_counts` and `ref_counts` as migration 0005 made them (0006 drops
the two delete triggers). No statement of the store replaces a row (`INSERT OR REPLACE`), whose
implicit delete would go uncounted."""


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the migration's transaction first; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
