"""Helpers for the store tests (and their SIGKILL child): versioned entities, raw table reads.

Kept out of conftest.py: several conftest modules exist, so `from conftest import` is ambiguous.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils.migrations import Migrations

from choreo_ingest.models import Entity, EntityIteratorResult, ProviderState
from choreo_ingest.store import PostgresLocation, SqliteLocation, StateLocation, Store, SweepGuards
from choreo_ingest.store.migrations import MIGRATIONS
from choreo_ingest.store.schema import MIGRATION_SET

from fakes import make_entity

Tables = dict[str, list[tuple[Any, ...]]]
STORE_ID = "<store id>"
WRITE_MARK = "<write mark>"
STANDING_IN = {"store_id": STORE_ID, "write_mark": WRITE_MARK}
"""Values random in every state file (the write mark: in every write transaction), read as
these, so that two files that went through the same operations compare equal."""


def earlier_release_migrations() -> Migrations:
    """Our migrations registered with sqlite-utils' runner, which releases before schema 5's own
    runner applied them with: the state files those releases left behind."""
    migrations = Migrations(MIGRATION_SET)
    for name, step in MIGRATIONS:
        migrations(name=name)(step)
    return migrations


def versioned_entity(name: str, version: int = 1) -> Entity:
    """`make_entity(name)` whose body (so content hash) changes with `version`."""
    entity = make_entity(name)
    metadata = {**entity.body["metadata"], "annotations": {"test/version": str(version)}}
    return replace(entity, body={**entity.body, "metadata": metadata})


def read_tables(path: Path) -> Tables:
    """Every row of every table in the state DB (migration bookkeeping aside), sorted.

    Read through a separate read-only connection, so it shows what another process would see.
    The store id and the write mark, random in every state file, read as `STANDING_IN` says, so
    that two files that went through the same operations compare equal.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT IN ('_sqlite_migrations') ORDER BY name"
            )
        ]
        tables = {
            name: sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
            for name in names
        }
    if "store_meta" in tables:
        tables["store_meta"] = [
            (name, STANDING_IN.get(name, value)) for name, value in tables["store_meta"]
        ]
    return tables


def store_sql(store: Store, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Run one statement through a separate connection to the store's state (as another program
    would), committed: a plain sqlite3 connection to the file, or a PostgreSQL session."""
    if store.path is not None:
        with closing(sqlite3.connect(store.path)) as conn:
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows
    from choreo_ingest.store.pg_connection import PgConnection

    own = store._conn
    assert isinstance(own, PgConnection)
    with PgConnection(own.url, schema=own.schema) as other:
        return [tuple(row) for row in other.execute(statement, list(params)).fetchall()]


def read_pg_tables(url: str, schema: str = "choreo_ingest") -> Tables:
    """`read_tables` for a PostgreSQL state: every row of every table of `schema` (migration
    bookkeeping aside), sorted, through a session of its own; the store id as `STORE_ID`."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s "
                "AND tablename <> '_migrations' ORDER BY tablename",
                [schema],
            )
        ]
        tables = {
            name: sorted(
                conn.execute(
                    sql.SQL("SELECT * FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(name)
                    )
                ).fetchall(),
                key=repr,
            )
            for name in names
        }
    if "store_meta" in tables:
        tables["store_meta"] = [
            (name, STANDING_IN.get(name, value)) for name, value in tables["store_meta"]
        ]
    return tables


def assert_counts_match(tables: Tables) -> None:
    """The counts the triggers keep (migration 0005_counts) are those of the rows: entities per
    provider and kind, active refs per provider, and no count left at 0."""
    entities = Counter((row[7], row[1]) for row in tables["entities"])  # provider, kind
    refs = Counter(row[0] for row in tables["openchoreo_incremental_entity_refs"])
    assert {(provider, kind): n for provider, kind, n in tables["entity_counts"]} == entities
    assert len(tables["entity_counts"]) == len(entities)
    assert dict(tables["ref_counts"]) == refs
    assert len(tables["ref_counts"]) == len(refs)


def one_page_cycle(
    store: Store, entities: list[Entity], guards: SweepGuards, *, now: float, provider: str = "fake"
) -> int:
    """One cycle of `provider` whose walk is one page of `entities`, then its sweep under
    `guards`; returns how many removals the sweep held back."""
    record = store.load_provider(provider)
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, now)
    store.commit_page(provider, record.cycle_id, EntityIteratorResult(True, entities), None, now)
    record.state = ProviderState.RESTING
    return store.complete_cycle(record, guards, now).blocked


T = TypeVar("T")


def sqlite_steps(store: Store, read: Callable[[], T]) -> tuple[T, int]:
    """What `read` returns, and how many steps SQLite's virtual machine took for it on `store`'s
    connection: a count that grows with the rows a statement walks, with no timing in it."""
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    store._conn.raw.set_progress_handler(step, 1)
    try:
        return read(), steps
    finally:
        store._conn.raw.set_progress_handler(None, 1)


def query_plan(location: StateLocation, sql: str, params: Sequence[object]) -> str:
    """How the backend of `location` would run `sql` (as the store ran it, traced): SQLite's
    `EXPLAIN QUERY PLAN` lines, or PostgreSQL's plan where a scan is the last resort (a table of
    a few rows would be scanned whatever its indexes)."""
    if isinstance(location, PostgresLocation):
        import psycopg

        from choreo_ingest.store.pg_placeholders import translate_placeholders

        with psycopg.connect(location.url, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {location.schema}")
            conn.execute("SET enable_seqscan = off")
            rows = conn.execute(f"EXPLAIN {translate_placeholders(sql)}", list(params)).fetchall()
        return "\n".join(str(row[0]) for row in rows)
    assert isinstance(location, SqliteLocation)
    with closing(sqlite3.connect(location.path)) as conn:
        return "\n".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
