"""A state missing one of its tables (dropped by hand, `sqlite3 state.db 'DROP TABLE entities'`)
is not a usable state: opening it is refused naming the table, as a foreign file is, before
anything reads or writes it; and a table dropped while the state is open is a state error where
it is met, never a bug."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from choreo_ingest.errors import NotAStateFile
from choreo_ingest.models import EntityIteratorResult, ProviderState
from choreo_ingest.store import (
    MIGRATION_NAMES,
    PostgresLocation,
    SqliteLocation,
    StateLocation,
    Store,
)
from choreo_ingest.store.migrations import apply_migrations
from choreo_ingest.store.schema import MIGRATION_TABLES, MIGRATIONS_TABLE

from fakes import make_entity

T0 = 1_800_000_000.0
ONE_ENTITY = EntityIteratorResult(done=False, entities=[make_entity("a")], cursor=None)
DROPPED = ("entities", "changes", "provider_index", "store_meta", "positions", "entity_counts")
"""Tables of each kind: the catalog, the change log, a provider's index, the store's own meta
and positions, the counts the triggers keep."""


def drop_table(location: StateLocation, table: str) -> None:
    """Drop `table` from the state, as an operator's own client would."""
    if isinstance(location, SqliteLocation):
        with closing(sqlite3.connect(location.path, isolation_level=None)) as conn:
            conn.execute(f"DROP TABLE {table}")
        return
    from choreo_ingest.store.pg_connection import PgConnection

    with PgConnection(location.url, schema=location.schema) as conn:
        conn.execute(f"DROP TABLE {table}")


def sqlite_tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows} - {MIGRATIONS_TABLE, "sqlite_sequence"}


def test_the_tables_each_migration_makes_are_listed(tmp_path: Path) -> None:
    """`MIGRATION_TABLES` is what a file is checked against: after each migration, the file
    holds the tables of the migrations applied so far, no more and no fewer."""
    assert list(MIGRATION_TABLES) == list(MIGRATION_NAMES)
    for count, name in enumerate([*MIGRATION_NAMES[1:], None], start=1):
        path = tmp_path / f"after-{count}.db"
        with closing(sqlite3.connect(path, isolation_level=None)) as raw:
            apply_migrations(raw, stop_before=name)
        expected = {table for done in MIGRATION_NAMES[:count] for table in MIGRATION_TABLES[done]}
        assert sqlite_tables(path) == expected, MIGRATION_NAMES[count - 1]


@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
@pytest.mark.parametrize("table", DROPPED)
def test_a_state_missing_a_table_is_refused_naming_it(
    any_location: StateLocation, table: str, readonly: bool
) -> None:
    with any_location.open() as store:
        store.migrate()
    drop_table(any_location, table)
    before = any_location.path.read_bytes() if isinstance(any_location, SqliteLocation) else None

    with pytest.raises(NotAStateFile) as refused, any_location.open(readonly=readonly):
        pass

    message = str(refused.value)
    assert message.startswith(str(any_location)), message
    assert "not a usable choreo-ingest state" in message
    aside = (
        "with its -wal and -shm files"
        if isinstance(any_location, SqliteLocation)
        else "(rename the schema)"
    )
    assert message.endswith(
        f" (no such table: {table}); left untouched: restore it from a backup, or move it aside "
        f"{aside} and the next run builds a new state (a fresh walk of the platform)"
    ), message
    assert "\n" not in message
    if isinstance(any_location, SqliteLocation):
        assert any_location.path.read_bytes() == before


def test_every_missing_table_is_named(state_path: Path) -> None:
    with Store.open(state_path) as store:
        store.migrate()
    for table in ("positions", "changes"):
        drop_table(SqliteLocation(state_path), table)

    with (
        pytest.raises(NotAStateFile, match=r"\(no such tables: changes, positions\)"),
        Store.open(state_path, readonly=True),
    ):
        pass


def test_a_state_still_being_migrated_is_checked_for_the_tables_applied_so_far(
    state_path: Path,
) -> None:
    """A file an earlier release left at migration 3 lacks the later tables, rightly."""
    with closing(sqlite3.connect(state_path, isolation_level=None)) as raw:
        apply_migrations(raw, stop_before=MIGRATION_NAMES[3])

    with Store.open(state_path) as store:
        assert store.migrate() == list(MIGRATION_NAMES[3:])


def test_a_migration_committed_while_the_file_is_checked_is_not_a_missing_table(
    state_path: Path,
) -> None:
    """A run migrating the file between the check's read of the tables and its read of the
    applied migrations: the tables of the migration just applied are there, only read late."""
    with closing(sqlite3.connect(state_path, isolation_level=None)) as raw:
        apply_migrations(raw, stop_before=MIGRATION_NAMES[3])

    def migrate_meanwhile(sql: str, params: object) -> None:
        if f"FROM {MIGRATIONS_TABLE}" in sql and "count" not in sql:
            with closing(sqlite3.connect(state_path, isolation_level=None)) as other:
                apply_migrations(other)

    with Store.open(state_path, readonly=True, tracer=migrate_meanwhile) as store:
        assert store.pending_migrations() == []


@pytest.mark.parametrize("table", ["entities", "entity_counts"])
def test_a_table_dropped_while_the_state_is_open_is_a_state_error_where_met(
    state_path: Path, table: str
) -> None:
    """`serve` keeps its store open for days: what another client drops meanwhile is a state
    error on the next statement that needs it (a trigger's table too), not a bug."""
    with Store.open(state_path) as store:
        store.migrate()
        record = store.load_provider("fake")
        record.cycle_id, record.state = 1, ProviderState.BURSTING
        store.start_cycle(record, T0)
        drop_table(SqliteLocation(state_path), table)

        with pytest.raises(NotAStateFile) as refused:
            store.commit_page("fake", 1, ONE_ENTITY, None, T0)

    assert str(refused.value) == (
        f"state store {state_path}: not a usable choreo-ingest state file (no such table: "
        f"{table}): restore it from a backup, or move it aside with its -wal and -shm files and "
        "the next run builds a new state (a fresh walk of the platform)"
    )


def test_a_postgres_state_is_checked_in_its_own_schema(pg_url: str) -> None:
    """The tables of another state in the same database never stand in for the missing one."""
    location = PostgresLocation(pg_url)
    other = PostgresLocation(pg_url, schema="other_state")
    with location.open() as store, other.open() as second:
        store.migrate()
        second.migrate()
    drop_table(other, "entities")

    with location.open(readonly=True):
        pass
    with pytest.raises(NotAStateFile, match=r"no such table: entities"), other.open(readonly=True):
        pass
