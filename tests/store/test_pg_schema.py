"""The PostgreSQL DDL against a real server: it migrates, once, whole migrations at a time, into its
own schema, and gives the same tables, columns, keys and indexes as the SQLite migrations."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from pg_support import PgCluster, require_psycopg

require_psycopg()

from choreo_ingest.errors import NotAStateFile, SchemaTooNew, StateError  # noqa: E402
from choreo_ingest.models import EntityIteratorResult, ProviderState  # noqa: E402
from choreo_ingest.store import pg_schema, state_location  # noqa: E402
from choreo_ingest.store.connection import Connection  # noqa: E402
from choreo_ingest.store.meta import PRUNED_THROUGH, STORE_ID  # noqa: E402
from choreo_ingest.store.pg_connection import PgConnection  # noqa: E402
from choreo_ingest.store.pg_schema import (  # noqa: E402
    PG_MIGRATIONS_TABLE,
    pg_applied_migrations,
    pg_migrate,
    pg_pending_migrations,
)
from choreo_ingest.store.schema import MIGRATION_NAMES, MIGRATION_SET  # noqa: E402
from choreo_ingest.testing import make_entity  # noqa: E402

pytestmark = pytest.mark.slow

SQLITE_TYPES = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text"}
JSONB_COLUMNS = {("event_inbox", "body")}
"""The one column the store's SQL reads JSON fields of (inbox.py's json_extract)."""


@pytest.fixture
def conn(pg_url: str) -> Iterator[PgConnection]:
    with PgConnection(pg_url) as connection:
        yield connection


@pytest.fixture(scope="module")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the SQLite migrations make, read back with PRAGMAs."""
    path = tmp_path_factory.mktemp("sqlite") / "state.db"
    connection = Connection(path, readonly=False)
    try:
        connection.migrate()
    finally:
        connection.close()
    with closing(sqlite3.connect(path)) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT IN ('_sqlite_migrations', 'sqlite_sequence')"
            )
        ]
        columns, keys, indexes, uniques, identities = {}, {}, {}, {}, set()
        for table in tables:
            info = db.execute(f"PRAGMA table_info({table})").fetchall()
            columns[table] = {
                name: (SQLITE_TYPES[kind], bool(notnull or pk), default)
                for _, name, kind, notnull, default, pk in info
            }
            keys[table] = [row[1] for row in sorted(info, key=_pk) if row[5]]
            sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]
            if "AUTOINCREMENT" in sql:
                identities.add((table, keys[table][0]))
            for _, index, _, origin, _ in db.execute(f"PRAGMA index_list({table})"):
                names = [row[2] for row in db.execute(f"PRAGMA index_info({index})")]
                if origin == "c":
                    indexes[index] = (table, names)
                elif origin == "u":
                    uniques.setdefault(table, []).append(names)
    return {
        "columns": columns,
        "keys": keys,
        "indexes": indexes,
        "uniques": uniques,
        "identities": identities,
    }


def _pk(row: tuple[Any, ...]) -> int:
    return int(row[5])


def pg_schema_of(conn: PgConnection) -> dict[str, Any]:
    """The same, read from the catalog of the connection's schema (its tables only); an index's
    expression is a column named None, as SQLite's `index_info` gives it."""
    columns: dict[str, dict[str, Any]] = {}
    identities, collations = set(), set()
    for table, name, kind, nullable, default, identity, collation in conn.execute(
        """SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity,
                  collation_name
           FROM information_schema.columns WHERE table_schema = current_schema()
           ORDER BY table_name, ordinal_position"""
    ):
        if table == PG_MIGRATIONS_TABLE:
            continue
        if default is not None:
            default = default.removesuffix("::text")
        columns.setdefault(table, {})[name] = (kind, nullable == "NO", default)
        if identity == "YES":
            identities.add((table, name))
        if kind == "text":
            collations.add(collation)
    keys: dict[str, list[str]] = {}
    uniques: dict[str, list[list[str]]] = {}
    for table, kind, names in conn.execute(
        """SELECT t.relname, c.contype, array(
               SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
               ORDER BY k.n)
           FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
           WHERE t.relnamespace = to_regnamespace(current_schema()) AND c.contype IN ('p', 'u')
             AND t.relname <> ?""",
        [PG_MIGRATIONS_TABLE],
    ):
        if kind == "p":
            keys[table] = names
        else:
            uniques.setdefault(table, []).append(names)
    indexes = {
        index: (table, names)
        for index, table, names in conn.execute(
            """SELECT ic.relname, t.relname, array(
                   SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                   LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   ORDER BY k.n)
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_class t ON t.oid = i.indrelid
               WHERE t.relnamespace = to_regnamespace(current_schema())
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""
        )
    }
    return {
        "columns": columns,
        "keys": keys,
        "indexes": indexes,
        "uniques": uniques,
        "identities": identities,
        "collations": collations,
    }


def test_a_fresh_database_migrates(conn: PgConnection) -> None:
    assert pg_pending_migrations(conn) == list(MIGRATION_NAMES)
    assert pg_migrate(conn) == list(MIGRATION_NAMES)
    assert pg_applied_migrations(conn) == list(MIGRATION_NAMES)
    assert pg_pending_migrations(conn) == []
    rows = conn.execute(
        f"SELECT migration_set, name, applied_at IS NOT NULL FROM {PG_MIGRATIONS_TABLE}"
    ).fetchall()
    assert sorted(rows) == [(MIGRATION_SET, name, True) for name in MIGRATION_NAMES]
    meta = dict(conn.execute("SELECT name, value FROM store_meta"))
    assert meta.keys() == {STORE_ID, PRUNED_THROUGH}
    assert meta[PRUNED_THROUGH] == "0"
    assert len(meta[STORE_ID]) == 32
    int(meta[STORE_ID], 16)


def test_migrating_again_does_nothing(conn: PgConnection, pg_url: str) -> None:
    pg_migrate(conn)
    before = conn.execute("SELECT name, value FROM store_meta ORDER BY name").fetchall()
    assert pg_migrate(conn) == []
    with PgConnection(pg_url) as other:  # another session, too
        assert pg_migrate(other) == []
    assert conn.execute("SELECT name, value FROM store_meta ORDER BY name").fetchall() == before
    assert conn.scalar(f"SELECT count(*) FROM {PG_MIGRATIONS_TABLE}") == len(MIGRATION_NAMES)


def test_migrating_a_current_schema_reads_it_and_neither_locks_nor_writes(
    conn: PgConnection, pg_url: str
) -> None:
    pg_migrate(conn)
    statements: list[str] = []
    with PgConnection(pg_url, tracer=lambda statement, _: statements.append(statement)) as other:
        assert pg_migrate(other) == []
    assert statements
    assert all(statement.lstrip().startswith("SELECT") for statement in statements)
    assert not any("advisory" in statement for statement in statements)


def test_every_state_gets_its_own_store_id(pg_url: str) -> None:
    ids = []
    for schema in ("one", "two"):
        with PgConnection(pg_url, schema=schema) as conn:
            pg_migrate(conn)
            ids.append(conn.scalar("SELECT value FROM store_meta WHERE name = ?", [STORE_ID]))
    assert ids[0] != ids[1]


def test_the_names_are_the_sqlite_migrations_names() -> None:
    assert tuple(name for name, _ in pg_schema.MIGRATIONS) == MIGRATION_NAMES


def test_the_tables_match_the_sqlite_schema(
    conn: PgConnection, sqlite_schema: dict[str, Any]
) -> None:
    pg_migrate(conn)
    pg = pg_schema_of(conn)
    expected = sqlite_schema["columns"]
    assert sorted(pg["columns"]) == sorted(expected)
    for table, columns in expected.items():
        assert list(pg["columns"][table]) == list(columns), table  # same names, same order
        for name, (kind, not_null, default) in columns.items():
            found_kind, found_not_null, found_default = pg["columns"][table][name]
            wanted_kind = "jsonb" if (table, name) in JSONB_COLUMNS else kind
            assert found_kind == wanted_kind, (table, name)
            assert found_not_null == not_null, (table, name)
            assert found_default == default, (table, name)
    assert pg["keys"] == sqlite_schema["keys"]
    assert pg["indexes"] == sqlite_schema["indexes"]
    assert pg["uniques"] == sqlite_schema["uniques"]
    assert pg["identities"] == sqlite_schema["identities"]
    assert pg["collations"] == {"C"}  # every text column compares bytes, as SQLite's BINARY


def test_the_constraints_hold(conn: PgConnection) -> None:
    pg_migrate(conn)
    seqs = [
        conn.scalar(
            "INSERT INTO changes (at, op, ref, provider) VALUES (?, ?, ?, 'p') RETURNING seq",
            [1.5, op, ref],
        )
        for op, ref in (("upsert", "component:a"), ("delete", "component:a"))
    ]
    assert seqs == [1, 2]
    with pytest.raises(StateError, match="changes_op_check"):
        conn.execute("INSERT INTO changes (at, op, ref, provider) VALUES (1, 'bogus', 'r', 'p')")
    conn.execute(
        "INSERT INTO queue_items (provider, queue, position, key, value) VALUES ('p','q',1,'k','1')"
    )
    with pytest.raises(StateError, match="SQLSTATE 23505"):
        conn.execute(
            "INSERT INTO queue_items (provider, queue, position, key, value) "
            "VALUES ('p', 'q', 2, 'k', '2')"
        )
    at = 1_700_000_000.123456  # a REAL timestamp keeps its microseconds
    conn.execute(
        "INSERT INTO positions (name, value) VALUES ('big', ?)", [2**62]
    )  # 64-bit, as SQLite's
    conn.execute(
        "INSERT INTO provider_facts (provider, name, value, updated_at) VALUES ('p', 'f', 'v', ?)",
        [at],
    )
    assert conn.scalar("SELECT updated_at FROM provider_facts") == at
    assert conn.scalar("SELECT value FROM positions") == 2**62


def test_refs_sort_in_byte_order_whatever_the_database_collation(
    pg_cluster: PgCluster,
) -> None:
    url = pg_cluster.fresh_database(icu_locale="en-US")  # sorts `a_b` before `a-b`, `B` last
    try:
        with PgConnection(url) as conn:
            pg_migrate(conn)
            refs = ["component:a-b", "component:a_b", "component:B", "component:a", "API:x"]
            conn.executemany(
                "INSERT INTO entities (ref, kind, namespace, name, body, hash, provider, "
                "updated_at) VALUES (?, 'k', 'n', 'x', '{}', 'h', 'p', 0)",
                [(ref,) for ref in refs],
            )
            found = [ref for (ref,) in conn.execute("SELECT ref FROM entities ORDER BY ref")]
            assert found == sorted(refs)
            after = conn.execute("SELECT ref FROM entities WHERE ref > ?", ["component:a"])
            assert sorted(ref for (ref,) in after) == sorted(r for r in refs if r > "component:a")
    finally:
        pg_cluster.drop_database(url)


def test_a_kind_is_matched_as_on_sqlite_whatever_the_database_collation(
    pg_cluster: PgCluster,
) -> None:
    """`export --kind Ärger` found nothing where the database's collation folds `Ä`."""
    url = pg_cluster.fresh_database(icu_locale="en-US")
    try:
        with state_location(url).open() as store:
            store.migrate()
            record = store.load_provider("p")
            record.cycle_id, record.state = 1, ProviderState.BURSTING
            store.start_cycle(record, 0.0)
            kinds = {"a": "Ärger", "b": "ÄRGER", "c": "ärger"}
            entities = [make_entity(name, kind=kind) for name, kind in kinds.items()]
            page = EntityIteratorResult(done=False, entities=entities)
            store.commit_page("p", 1, page, None, 0.0)

            found = [body["kind"] for body in store.iter_entities("Ärger")]

        assert found == ["Ärger", "ÄRGER"]  # as on SQLite: ASCII letters fold, `Ä` does not
    finally:
        pg_cluster.drop_database(url)


def test_each_migration_is_whole_or_not_at_all(
    conn: PgConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(connection: PgConnection) -> None:
        connection.execute("CREATE TABLE positions (name TEXT PRIMARY KEY)")
        connection.execute("SELECT no_such_function()")

    first, *_ = pg_schema.MIGRATIONS
    monkeypatch.setattr(pg_schema, "MIGRATIONS", (first, ("0002_positions", broken)))
    with pytest.raises(StateError, match="no_such_function"):
        pg_migrate(conn)
    assert pg_applied_migrations(conn) == ["0001_initial"]
    assert conn.scalar("SELECT to_regclass('positions')") is None
    monkeypatch.undo()
    assert pg_migrate(conn) == list(MIGRATION_NAMES[1:])


def test_the_state_lives_in_its_schema_only(pg_url: str) -> None:
    with PgConnection(pg_url, schema="public") as public:
        public.execute("CREATE TABLE entities (backstage TEXT)")  # someone else's table
    with PgConnection(pg_url) as conn:
        pg_migrate(conn)
        schemas = conn.execute(
            "SELECT DISTINCT table_schema FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert sorted(schemas) == [("choreo_ingest",), ("public",)]
        assert conn.scalar("SELECT count(*) FROM entities") == 0  # ours, not public's
    with PgConnection(pg_url, schema="public") as public:
        columns = public.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'entities'"
        ).fetchall()
        assert columns == [("backstage",)]


def test_a_schema_holding_other_tables_is_refused(pg_url: str) -> None:
    with PgConnection(pg_url, schema="public") as public:
        public.execute("CREATE TABLE backstage_things (x INT)")
        with pytest.raises(NotAStateFile, match="not a choreo-ingest state; left untouched"):
            pg_migrate(public)
        assert public.scalar("SELECT to_regclass('_migrations')") is None


def test_a_schema_a_newer_version_migrated_is_refused(conn: PgConnection) -> None:
    pg_migrate(conn)
    conn.execute(
        f"INSERT INTO {PG_MIGRATIONS_TABLE} (migration_set, name) VALUES (?, '0005_future')",
        [MIGRATION_SET],
    )
    with pytest.raises(SchemaTooNew, match="upgrade choreo-ingest"):
        pg_migrate(conn)


def test_sessions_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def migrate() -> None:
        try:
            with PgConnection(pg_url) as conn:
                start.wait()
                results.append(pg_migrate(conn))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(name for applied in results for name in applied) == sorted(MIGRATION_NAMES)
    with PgConnection(pg_url) as conn:
        assert pg_applied_migrations(conn) == list(MIGRATION_NAMES)


def test_pending_migrations_on_a_readonly_connection(pg_url: str) -> None:
    with PgConnection(pg_url) as conn:
        pg_migrate(conn)
    with PgConnection(pg_url, readonly=True) as reader:
        assert pg_pending_migrations(reader) == []


def test_an_unmigrated_schema_has_everything_pending(pg_url: str) -> None:
    with PgConnection(pg_url, schema="empty") as conn:
        assert pg_applied_migrations(conn) == []
        assert pg_pending_migrations(conn) == list(MIGRATION_NAMES)
