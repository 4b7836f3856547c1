"""The counts `status` and the metrics read (entities per kind, active refs) are kept as rows
change: by triggers on insert and update (migration 0005_counts), and on delete by the deleting
statements on SQLite (0006) and by statement triggers on PostgreSQL. After every write path
they equal what a `count(*)` of the rows gives, on both backends, and a state migrated from
schema 4 starts with the counts of the rows it already holds."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database
from store_support import earlier_release_migrations, store_sql

from choreo_ingest.models import Delta, Entity, EntityIteratorResult, ProviderState
from choreo_ingest.store import (
    MIGRATION_NAMES,
    SCHEMA_VERSION,
    Store,
    SweepGuards,
    writes,
)
from choreo_ingest.store.dialect import AnyConnection

from fakes import make_entity

T0 = 1_800_000_000.0
OPEN = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=None)
GUARDED = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=10)
REFS = "openchoreo_incremental_entity_refs"


def counted(conn: AnyConnection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The count tables as they are, and as `count(*)` of the rows says they must be."""
    kept = [
        *conn.execute("SELECT 'e', provider, kind, count FROM entity_counts"),
        *conn.execute("SELECT 'r', provider, '', count FROM ref_counts"),
    ]
    real = [
        *conn.execute("SELECT 'e', provider, kind, count(*) FROM entities GROUP BY provider, kind"),
        *conn.execute(f"SELECT 'r', provider, '', count(*) FROM {REFS} GROUP BY provider"),
    ]
    return sorted(tuple(row) for row in kept), sorted(tuple(row) for row in real)


def assert_counts_exact(store: Store) -> None:
    """The count tables hold exactly the rows' counts (no row left at 0), and the queries
    answer what the scans they replace answered."""
    conn = store._conn
    kept, real = counted(conn)
    assert kept == real
    for provider in {row[1] for row in real} | {"fake", "other", "gone"}:
        scanned = conn.execute(
            "SELECT kind, count(*) FROM entities WHERE provider = ? GROUP BY kind ORDER BY kind",
            [provider],
        )
        by_kind = store.entity_counts(provider)
        assert list(by_kind.items()) == [tuple(row) for row in scanned]
        active = conn.scalar(f"SELECT count(*) FROM {REFS} WHERE provider = ?", [provider])
        assert store.active_count(provider) == active


def scoped(name: str, scope: str, kind: str = "Component") -> Entity:
    return replace(make_entity(name, kind=kind), scope=scope)


def cycle(
    store: Store, entities: list[Entity], provider: str = "fake", guards: SweepGuards = OPEN
) -> int:
    """One cycle in one page; returns how many removals its sweep held back."""
    record = store.load_provider(provider)
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, T0)
    store.commit_page(provider, record.cycle_id, EntityIteratorResult(True, entities), None, T0)
    assert_counts_exact(store)
    record.state = ProviderState.RESTING
    return store.complete_cycle(record, guards, T0).blocked


def test_counts_follow_every_write_path(store: Store) -> None:
    assert store.entity_counts("fake") == {}
    assert store.active_count("fake") == 0
    systems = [scoped(f"s{i}", f"org/s{i}", "System") for i in range(3)]
    components = [scoped(f"c{i}", f"org/s{i % 3}/c{i}") for i in range(6)]
    cycle(store, systems + components)
    assert_counts_exact(store)
    assert store.entity_counts("fake") == {"Component": 6, "System": 3}
    assert list(store.entity_counts("fake")) == ["Component", "System"]  # ordered by kind
    assert store.active_count("fake") == 9

    # Bodies change, nothing moves; one entity's kind changes spelling (same ref).
    changed = [replace(e, body={**e.body, "spec": {"changed": True}}) for e in components]
    respelled = replace(systems[0], kind="system", body={**systems[0].body, "kind": "system"})
    cycle(store, [respelled, *systems[1:], *changed])
    assert_counts_exact(store)
    assert store.entity_counts("fake") == {"Component": 6, "System": 2, "system": 1}

    # Another provider emits one of these refs: it stays the first writer's, nothing moves.
    cycle(store, [components[0]], provider="other")
    assert_counts_exact(store)
    assert store.entity_counts("other") == {}
    assert store.entity_counts("fake")["Component"] == 6
    assert (store.active_count("fake"), store.active_count("other")) == (9, 0)

    # The sweep (the cycle does not see c5), a page removing a scope, an event's removals.
    cycle(store, [respelled, *systems[1:], *changed[:5]])
    assert_counts_exact(store)
    record = store.load_provider("fake")
    page = EntityIteratorResult(False, [], removal_scopes=["org/s1"])
    store.commit_page("fake", record.cycle_id, page, None, T0)
    assert_counts_exact(store)
    store.apply_delta("fake", record.cycle_id, Delta(removals=[components[2].ref]), T0)
    assert_counts_exact(store)
    (seq,) = store.add_events("fake", [{"kind": "x"}], T0)
    removal = Delta(upserts=[scoped("late", "org/late")], removal_scopes=["org/s0"])
    store.apply_event("fake", record.cycle_id, seq, removal, T0)
    assert_counts_exact(store)
    assert store.entity_counts("fake") == {"Component": 1, "System": 1}

    # A blocked sweep changes nothing until approved.
    assert cycle(store, [], guards=GUARDED) == store.active_count("fake")
    assert_counts_exact(store)
    assert store.approve_removals("fake", T0) > 0
    assert_counts_exact(store)
    assert store.entity_counts("fake") == {}
    assert store.active_count("fake") == 0


def test_reset_purge_and_forget_leave_no_counts_behind(store: Store) -> None:
    cycle(store, [scoped(f"c{i}", f"a/c{i}") for i in range(4)])
    cycle(store, [scoped(f"o{i}", f"b/o{i}", "API") for i in range(3)], provider="gone")
    record = store.load_provider("fake")

    store.reset_provider(record, purge=False, now=T0)
    assert_counts_exact(store)
    assert store.active_count("fake") == 4
    store.reset_provider(record, purge=True, now=T0)
    assert_counts_exact(store)
    assert (store.entity_counts("fake"), store.active_count("fake")) == ({}, 0)

    assert store.forget_provider("gone", T0) == 3
    assert_counts_exact(store)
    assert store_sql(store, "SELECT count(*) FROM entity_counts") == [(0,)]
    assert store_sql(store, "SELECT count(*) FROM ref_counts") == [(0,)]


def test_a_rolled_back_write_leaves_the_counts_as_they_were(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cycle(store, [scoped("a", "a"), scoped("b", "b")])
    before = counted(store._conn)
    seen: list[tuple[Any, ...]] = []

    def fail_at_the_last_step(conn: AnyConnection, now: float) -> None:
        seen.extend(counted(conn)[0])  # everything deleted (and counted out) by now
        raise RuntimeError("rolled back")

    monkeypatch.setattr(writes, "renew_store_id", fail_at_the_last_step)
    record = store.load_provider("fake")
    with pytest.raises(RuntimeError, match="rolled back"):
        store.reset_provider(record, purge=True, now=T0)

    assert seen == []
    assert counted(store._conn) == before


def test_rows_written_by_another_program_are_counted_too(store: Store) -> None:
    cycle(store, [scoped("a", "a")])

    store_sql(
        store,
        "INSERT INTO entities (ref, kind, namespace, name, body, hash, provider, updated_at) "
        "VALUES ('api:default/x', 'API', 'default', 'x', '{}', 'h', 'fake', 0)",
    )
    store_sql(store, "UPDATE entities SET provider = 'other' WHERE ref = 'api:default/x'")
    store_sql(store, f"UPDATE {REFS} SET provider = 'other'")

    assert_counts_exact(store)
    assert store.entity_counts("other") == {"API": 1}
    assert store.active_count("other") == 1


# -- a state of schema 4 with rows, migrated ------------------------------------------------

SCHEMA_4_ROWS = [
    "INSERT INTO entities (ref, kind, namespace, name, body, hash, provider, updated_at) VALUES "
    "('component:d/a', 'Component', 'd', 'a', '{}', 'h', 'p', 0), "
    "('component:d/b', 'Component', 'd', 'b', '{}', 'h', 'p', 0), "
    "('system:d/s', 'System', 'd', 's', '{}', 'h', 'p', 0), "
    "('api:d/x', 'API', 'd', 'x', '{}', 'h', 'q', 0)",
    f"INSERT INTO {REFS} (provider, entity_ref, first_seen_cycle, last_seen_cycle, "
    "first_seen_at, last_seen_at) VALUES ('p', 'component:d/a', 1, 1, 0, 0), "
    "('p', 'component:d/b', 1, 1, 0, 0), ('p', 'system:d/s', 1, 1, 0, 0), "
    "('p', 'gone:d/g', 1, 1, 0, 0), ('q', 'api:d/x', 1, 1, 0, 0)",
]


def assert_backfilled(store: Store) -> None:
    assert store.applied_migrations() == list(MIGRATION_NAMES)
    assert_counts_exact(store)
    assert store.entity_counts("p") == {"Component": 2, "System": 1}
    assert store.entity_counts("q") == {"API": 1}
    assert (store.active_count("p"), store.active_count("q")) == (4, 1)


def test_migrating_a_schema_4_file_counts_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as raw:
        earlier_release_migrations().apply(Database(raw), stop_before="0005_counts")
        assert raw.execute("PRAGMA user_version").fetchone() == (4,)
        for statement in SCHEMA_4_ROWS:
            raw.execute(statement)

    with Store.open(path) as store:
        assert store.pending_migrations() == list(MIGRATION_NAMES[4:])
        assert store.migrate() == list(MIGRATION_NAMES[4:])
        assert store.schema_version() == SCHEMA_VERSION
        assert_backfilled(store)


@pytest.mark.slow
def test_migrating_a_schema_4_postgresql_state_counts_its_rows(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg")
    from choreo_ingest.store import PostgresLocation, pg_schema

    location = PostgresLocation(pg_url)
    with location.open() as store:
        monkeypatch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:4])
        assert store.migrate()[-1] == "0004_feed"
        monkeypatch.undo()
        for statement in SCHEMA_4_ROWS:
            store._conn.execute(statement)
        assert store.pending_migrations() == list(MIGRATION_NAMES[4:])
        assert store.migrate() == list(MIGRATION_NAMES[4:])
        assert_backfilled(store)


# -- copies between backends ----------------------------------------------------------------


@pytest.mark.slow
def test_copies_to_postgresql_and_back_count_exactly(tmp_path: Path, pg_url: str) -> None:
    from choreo_ingest.store import PostgresLocation, SqliteLocation

    with SqliteLocation(tmp_path / "source.db").open() as source:
        source.migrate()
        cycle(source, [scoped(f"c{i}", f"a/c{i}") for i in range(5)])
        cycle(source, [scoped(f"x{i}", f"b/x{i}", "API") for i in range(2)], provider="other")
        cycle(source, [scoped(f"c{i}", f"a/c{i}") for i in range(3)])  # sweeps two
        expected = counted(source._conn)
        with PostgresLocation(pg_url).open() as postgres:
            postgres.migrate()
            cycle(postgres, [scoped("stale", "z", "Group")], provider="stale")  # replaced
            source.copy_to(postgres, force=True)
            assert counted(postgres._conn) == expected
            assert_counts_exact(postgres)
            with SqliteLocation(tmp_path / "back.db").open() as back:
                back.migrate()
                postgres.copy_to(back)
                assert counted(back._conn) == expected
                assert_counts_exact(back)
                back.copy_to(source, force=True)  # onto a state holding the same rows
                assert counted(source._conn) == expected
    assert expected[0] == expected[1] != ([], [])
