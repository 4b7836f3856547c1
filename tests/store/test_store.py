"""The state store: schema, foreign files, the write path, sweeps. What takes the `store` fixture
runs on both backends (a real SQLite file, a real PostgreSQL database); the rest is SQLite's own."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
import sqlite_utils
from store_support import earlier_release_migrations, store_sql, versioned_entity

from choreo_ingest.errors import NotAStateFile, SchemaTooNew, StateError
from choreo_ingest.models import (
    Delta,
    Entity,
    EntityIteratorResult,
    IndexEntry,
    ProviderRecord,
    ProviderState,
    QueueItem,
    SweepResult,
)
from choreo_ingest.reporting import provider_metrics, provider_status
from choreo_ingest.store import (
    MIGRATION_NAMES,
    SCHEMA_VERSION,
    StateLocation,
    Store,
    StoreQueueReader,
    SweepGuards,
)
from choreo_ingest.store.migrations import MIGRATIONS, apply_migrations
from choreo_ingest.store.schema import MIGRATION_SET, MIGRATIONS_TABLE

from fakes import make_config, make_entity

T0 = 1_800_000_000.0
NO_GUARDS = SweepGuards(
    reject_empty_source_collections=False, reject_removals_above_percentage=None
)


def sql(path: Path, statement: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Run one statement through a separate plain connection (as another program would)."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows


def begin_cycle(store: Store, now: float = T0, name: str = "fake") -> ProviderRecord:
    record = store.load_provider(name)
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    record.cycle_started_at = now
    store.start_cycle(record, now)
    return record


def page(
    entities: Sequence[Entity] = (),
    *,
    cursor: object = None,
    queue_items: Sequence[QueueItem] = (),
    done: bool = False,
) -> EntityIteratorResult:
    return EntityIteratorResult(
        done=done, entities=entities, cursor=cursor, queue_items=queue_items
    )


def run_cycle(
    store: Store,
    entities: Sequence[Entity],
    guards: SweepGuards = NO_GUARDS,
    now: float = T0,
) -> SweepResult:
    """One whole cycle in one page, as the engine would run it."""
    record = begin_cycle(store, now)
    store.commit_page("fake", record.cycle_id, page(entities, done=True), None, now)
    record.state = ProviderState.RESTING
    return store.complete_cycle(record, guards, now)


def entity_refs(store: Store) -> set[str]:
    return {
        f"{e['kind'].lower()}:{e['metadata']['namespace']}/{e['metadata']['name']}"
        for e in store.iter_entities()
    }


def refs_of(entities: Sequence[Entity]) -> set[str]:
    return {entity.ref for entity in entities}


TEN = [make_entity(f"e{i}") for i in range(10)]


class TestSchema:
    def test_migrations_apply_once(self, any_location: StateLocation) -> None:
        with any_location.open() as store:
            assert store.schema_version() == 0
            assert store.pending_migrations() == list(MIGRATION_NAMES)
            assert store.migrate() == list(MIGRATION_NAMES)
            assert store.migrate() == []
            assert store.applied_migrations() == list(MIGRATION_NAMES)
            assert store.schema_version() == SCHEMA_VERSION
        with any_location.open() as reopened:
            assert reopened.migrate() == []
        with any_location.open(readonly=True) as reader:
            reader.require_current_schema()

    def test_schema_names_match_the_registered_migrations(self) -> None:
        assert [name for name, _ in MIGRATIONS] == list(MIGRATION_NAMES)
        with closing(sqlite3.connect(":memory:", isolation_level=None)) as raw:
            assert apply_migrations(raw) == list(MIGRATION_NAMES)
            assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert apply_migrations(raw) == []

    def test_sqlite_utils_reads_our_migration_records_as_its_own(self, state_path: Path) -> None:
        with Store.open(state_path) as store:
            store.migrate()
        database = sqlite_utils.Database(state_path)
        migrations = earlier_release_migrations()
        assert migrations.migrations_table == MIGRATIONS_TABLE
        assert [m.name for m in migrations.applied(database)] == list(MIGRATION_NAMES)
        assert migrations.pending(database) == []
        records = database[MIGRATIONS_TABLE]
        made_by_sqlite_utils = sqlite_utils.Database(memory=True)
        migrations.ensure_migrations_table(made_by_sqlite_utils)
        assert records.schema == made_by_sqlite_utils[MIGRATIONS_TABLE].schema
        assert [(i.columns, i.unique) for i in records.indexes] == [
            (i.columns, i.unique) for i in made_by_sqlite_utils[MIGRATIONS_TABLE].indexes
        ]
        assert records.pks == ["id"]
        made_by_sqlite_utils.close()
        database.close()

    @pytest.mark.parametrize("stop_before", MIGRATION_NAMES[1:])
    def test_a_file_earlier_releases_migrated_with_sqlite_utils_is_completed(
        self, state_path: Path, stop_before: str
    ) -> None:
        database = sqlite_utils.Database(state_path)
        earlier_release_migrations().apply(database, stop_before=stop_before)
        database.close()
        applied = list(MIGRATION_NAMES[: MIGRATION_NAMES.index(stop_before)])
        with Store.open(state_path) as store:
            assert store.applied_migrations() == applied
            assert store.migrate() == list(MIGRATION_NAMES[len(applied) :])
            assert store.schema_version() == SCHEMA_VERSION
            store.require_current_schema()
        with closing(sqlite3.connect(state_path)) as raw:
            rows = raw.execute(f"SELECT id, migration_set, name FROM {MIGRATIONS_TABLE}").fetchall()
        assert rows == [(n, MIGRATION_SET, name) for n, name in enumerate(MIGRATION_NAMES, 1)]

    def test_a_failing_migration_leaves_neither_its_changes_nor_its_record(
        self, state_path: Path
    ) -> None:
        def broken(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE half_done (x)")
            raise sqlite3.OperationalError("disk I/O error")

        third = MIGRATIONS[2]
        with Store.open(state_path) as store:
            MIGRATIONS[2] = (third[0], broken)
            try:
                with pytest.raises(StateError, match="migration failed"):
                    store.migrate()
            finally:
                MIGRATIONS[2] = third
            assert store.applied_migrations() == list(MIGRATION_NAMES[:2])
            assert store.migrate() == list(MIGRATION_NAMES[2:])
        with closing(sqlite3.connect(state_path)) as raw:
            tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in tables

    @pytest.mark.parametrize("new", [False, True], ids=["current", "new"])
    def test_a_state_file_opens_and_migrates_without_loading_sqlite_utils(
        self, state_path: Path, new: bool
    ) -> None:
        if not new:
            with Store.open(state_path) as store:
                store.migrate()
        expected = [] if not new else list(MIGRATION_NAMES)
        script = (
            "import sys; from pathlib import Path; from choreo_ingest.store import Store\n"
            f"with Store.open(Path({str(state_path)!r})) as store:\n"
            f"    assert store.migrate() == {expected!r}\n"
            "    store.require_current_schema()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('sqlite_utils', 'numpy'))))\n"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        assert loaded.stdout.strip() == "[]"

    def test_unmigrated_store_is_not_current(self, any_location: StateLocation) -> None:
        with any_location.open() as store:
            with pytest.raises(StateError, match="choreo-ingest migrate"):
                store.require_current_schema()
            store.migrate()
            store.require_current_schema()

    @pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
    def test_newer_schema_is_refused_naming_the_version(
        self, state_path: Path, readonly: bool
    ) -> None:
        with Store.open(state_path) as store:
            store.migrate()
        newer = SCHEMA_VERSION + 1
        sql(state_path, f"PRAGMA user_version = {newer}")
        original = state_path.read_bytes()

        with pytest.raises(SchemaTooNew, match=f"version {newer} is newer") as caught:
            Store.open(state_path, readonly=readonly)

        assert (caught.value.found, caught.value.supported) == (newer, SCHEMA_VERSION)
        assert state_path.read_bytes() == original

    def test_unknown_applied_migration_is_refused(self, state_path: Path) -> None:
        with Store.open(state_path) as store:
            store.migrate()
        sql(
            state_path,
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
            ["choreo_ingest", "9999_from_the_future", "2030-01-01"],
        )
        with pytest.raises(SchemaTooNew):
            Store.open(state_path)

    def test_readonly_open_of_missing_file_creates_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(StateError, match="no state file yet"):
            Store.open(tmp_path / "absent.db", readonly=True)
        assert list(tmp_path.iterdir()) == []

    def test_open_in_missing_directory_is_a_state_error(self, tmp_path: Path) -> None:
        with pytest.raises(StateError, match="does not exist"):
            Store.open(tmp_path / "nowhere" / "state.db")


def write_text_file(path: Path) -> None:
    path.write_text("state: not really\n")


def write_binary_junk(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


def write_short_file(path: Path) -> None:
    path.write_bytes(b"hi")


def write_other_app_db(path: Path, user_version: int = 0) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE bookmarks (url TEXT)")
        conn.execute("INSERT INTO bookmarks VALUES ('https://example.org')")
        conn.execute(f"PRAGMA user_version = {user_version}")
        conn.commit()


def write_versioned_other_app_db(path: Path) -> None:
    write_other_app_db(path, user_version=70)  # many apps version their schema this way


def write_other_sqlite_utils_app_db(path: Path) -> None:
    write_other_app_db(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE _sqlite_migrations (migration_set, name, applied_at)")
        conn.execute("INSERT INTO _sqlite_migrations VALUES ('bookmarks', '001', '2025-01-01')")
        conn.commit()


def write_newer_state_file(path: Path) -> None:
    with Store.open(path) as store:
        store.migrate()
    sql(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def open_handles(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if _link(fd) == str(path.resolve()))


def _link(fd: Path) -> str | None:
    try:
        return str(fd.readlink())
    except OSError:  # closed between listing and reading
        return None


FOREIGN_FILES: dict[str, Callable[[Path], None]] = {
    "text-file": write_text_file,
    "binary-junk": write_binary_junk,
    "two-byte-file": write_short_file,
    "other-app-sqlite": write_other_app_db,
    "other-app-sqlite-with-user-version": write_versioned_other_app_db,
    "other-sqlite-utils-app": write_other_sqlite_utils_app_db,
}


class TestSqliteVersion:
    @pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
    def test_an_sqlite_without_returning_is_refused_by_name_before_anything_is_written(
        self, state_path: Path, monkeypatch: pytest.MonkeyPatch, readonly: bool
    ) -> None:
        if readonly:
            with Store.open(state_path) as store:
                store.migrate()
        before = state_path.read_bytes() if readonly else None
        monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
        monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")

        with pytest.raises(StateError) as refused:
            Store.open(state_path, readonly=readonly)

        assert str(refused.value) == (
            f"{state_path}: choreo-ingest needs SQLite 3.35.0 or later; "
            "this Python's sqlite3 module uses SQLite 3.34.1"
        )
        if readonly:
            assert state_path.read_bytes() == before
        else:
            assert not state_path.exists()


class TestForeignFiles:
    @pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
    @pytest.mark.parametrize("write", FOREIGN_FILES.values(), ids=FOREIGN_FILES.keys())
    def test_foreign_file_is_refused_and_left_untouched(
        self, tmp_path: Path, write: Callable[[Path], None], readonly: bool
    ) -> None:
        path = tmp_path / "state.db"
        write(path)
        original = path.read_bytes()

        with pytest.raises(NotAStateFile, match="left untouched") as refused:
            Store.open(path, readonly=readonly)

        assert path.read_bytes() == original
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
        assert "restore it from a backup" not in str(refused.value)  # not ours to advise on

    @pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
    def test_a_damaged_state_file_is_refused_with_what_to_do(
        self, state_path: Path, readonly: bool
    ) -> None:
        """As one missing a table of its own: SQLite opens it (its header is intact), then
        finds its pages malformed."""
        with Store.open(state_path) as store:
            store.migrate()
        with state_path.open("r+b") as raw:
            raw.seek(100)  # SQLite's header is the first 100 bytes
            raw.write(b"\xa5" * (state_path.stat().st_size - 100))
        before = state_path.read_bytes()

        with pytest.raises(NotAStateFile) as refused:
            Store.open(state_path, readonly=readonly)

        assert str(refused.value) == (
            f"{state_path}: not a usable choreo-ingest state file (database disk image is "
            "malformed); left untouched: restore it from a backup, or move it aside with its "
            "-wal and -shm files and the next run builds a new state (a fresh walk of the platform)"
        )
        assert state_path.read_bytes() == before

    @pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
    @pytest.mark.parametrize(
        "write",
        [write_other_app_db, write_versioned_other_app_db, write_newer_state_file],
        ids=["other-app", "other-app-with-user-version", "newer-state-file"],
    )
    def test_refused_file_is_closed(self, tmp_path: Path, write: Callable[[Path], None]) -> None:
        path = tmp_path / "state.db"
        write(path)

        with pytest.raises(StateError) as caught:
            Store.open(path)

        # checked while the exception (and its traceback's frames) are still alive
        assert caught.value is not None
        assert open_handles(path) == 0


class TestWritePath:
    def test_unchanged_entity_is_not_rewritten(self, store: Store) -> None:
        record = begin_cycle(store)
        entity = versioned_entity("checkout", 1)

        first = store.commit_page("fake", record.cycle_id, page([entity]), None, T0)
        again = store.commit_page("fake", record.cycle_id, page([entity]), None, T0 + 5)

        assert (first.upserted, first.unchanged) == (1, 0)
        assert (again.upserted, again.unchanged) == (0, 1)
        assert [change.op for change in store.changes()] == ["upsert"]
        assert store_sql(store, "SELECT updated_at FROM entities") == [(T0,)]
        # still marked as seen, at the later time
        seen = store_sql(store, "SELECT last_seen_at FROM openchoreo_incremental_entity_refs")
        assert seen == [(T0 + 5,)]

    def test_changed_entity_is_rewritten_and_logged(self, store: Store) -> None:
        record = begin_cycle(store)
        store.commit_page("fake", record.cycle_id, page([versioned_entity("a", 1)]), None, T0)

        stats = store.commit_page(
            "fake", record.cycle_id, page([versioned_entity("a", 2)]), None, T0 + 5
        )

        assert stats.upserted == 1
        assert [change.op for change in store.changes()] == ["upsert", "upsert"]
        assert store_sql(store, "SELECT updated_at FROM entities") == [(T0 + 5,)]
        body = store.entity_body(versioned_entity("a").ref)
        assert body is not None
        assert body["metadata"]["annotations"] == {"test/version": "2"}

    def test_a_lone_surrogate_is_stored_as_the_replacement_character(self, store: Store) -> None:
        """`"\\ud800"` in a JSON answer decodes to a string no database can take; the page still
        commits (a burst that failed on it would fail at the same page every time)."""
        record = begin_cycle(store)
        entity = make_entity("odd")
        entity.body["metadata"]["description"] = "half \ud83d of a pair, and \udc00 too"

        stats = store.commit_page("fake", record.cycle_id, page([entity]), None, T0)
        again = store.commit_page("fake", record.cycle_id, page([entity]), None, T0 + 5)

        assert (stats.upserted, again.unchanged) == (1, 1)
        body = store.entity_body(entity.ref)
        assert body is not None
        assert body["metadata"]["description"] == "half \ufffd of a pair, and \ufffd too"

    def test_an_error_and_a_fact_holding_nul_are_kept_with_the_replacement_character(
        self, store: Store
    ) -> None:
        """PostgreSQL's text refuses U+0000: a burst whose error quoted it could not be recorded
        (the provider stayed `bursting`, retried at once, with the wrong reason)."""
        record = begin_cycle(store)
        record.last_error = "csv row 1: unexpected byte 'a\x00b' or \udc00"
        store.save_provider(record, T0)
        store.set_facts("fake", {"note": "x\x00y"}, T0)

        assert store.load_provider("fake").last_error == (
            "csv row 1: unexpected byte 'a\ufffdb' or \ufffd"
        )
        assert store.facts("fake") == {"note": "x\ufffdy"}

    def test_page_stores_cursor_and_bumps_counters(self, store: Store) -> None:
        record = begin_cycle(store)
        store.commit_page("fake", record.cycle_id, page(TEN[:3]), '{"offset":3}', T0)
        counted = EntityIteratorResult(done=False, entities=TEN[3:4], counters={"requests": 7})
        store.commit_page("fake", record.cycle_id, counted, '{"offset":4}', T0)

        assert store.load_provider("fake").cursor == {"offset": 4}
        counters = store.counters("fake")
        assert counters["pages"] == 2
        assert counters["entities_upserted"] == 4
        assert counters["requests"] == 7
        cycle = store.last_cycle("fake")
        assert cycle is not None
        assert (cycle.pages, cycle.upserted) == (2, 4)

    def test_queue_push_dedups_by_key_and_reads_in_order(self, store: Store) -> None:
        record = begin_cycle(store)
        first = [QueueItem("orgs", "acme", {"v": 1}), QueueItem("orgs", "globex", {"v": 1})]
        second = [QueueItem("orgs", "globex", {"v": 2}), QueueItem("orgs", "initech", {"v": 1})]
        store.commit_page("fake", record.cycle_id, page(queue_items=first), None, T0)
        store.commit_page("fake", record.cycle_id, page(queue_items=second), None, T0)
        store.commit_page(
            "fake", record.cycle_id, page(queue_items=[QueueItem("projects", "x", 1)]), None, T0
        )

        items = store.read_queue("fake", "orgs", 0, 100)

        assert [(item.key, item.value) for item in items] == [
            ("acme", {"v": 1}),
            ("globex", {"v": 1}),  # the first push of a key wins
            ("initech", {"v": 1}),
        ]
        positions = [item.position for item in items]
        assert positions == sorted(set(positions))
        after_first = store.read_queue("fake", "orgs", positions[0], 100)
        assert [item.key for item in after_first] == ["globex", "initech"]
        assert [item.key for item in store.read_queue("fake", "orgs", 0, 1)] == ["acme"]
        assert store.read_queue("fake", "orgs", positions[-1], 100) == []
        assert [item.key for item in store.read_queue("fake", "projects", 0, 9)] == ["x"]

    def test_change_log_sequence_is_monotonic(self, store: Store) -> None:
        run_cycle(store, TEN[:4])
        run_cycle(store, [versioned_entity("e0", 2), *TEN[1:3]], now=T0 + 10)
        run_cycle(store, TEN[:2], now=T0 + 20)

        changes = store.changes()
        seqs = [change.seq for change in changes]

        assert seqs == sorted(set(seqs))
        assert len(changes) == 4 + 1 + 1 + 1 + 1  # 4 new, e0 changed, e3 gone, e0 back, e2 gone
        assert [c.seq for c in store.changes(since=seqs[3])] == seqs[4:]
        assert [c.seq for c in store.changes(since=seqs[0], limit=2)] == seqs[1:3]


class TestSweep:
    def test_deletes_clear_freed_content_only_on_pages_written_anyway(
        self, state_path: Path
    ) -> None:
        # secure_delete FAST (2), not a build's default ON (Debian's): zeroing every freed page
        # made a sweep of 100,000 entities write six times the WAL.
        with Store.open(state_path) as store:
            assert store._conn.raw.execute("PRAGMA secure_delete").fetchone() == (2,)

    def test_sweep_removes_stale_refs_and_their_entities_and_logs_deletes(
        self, store: Store
    ) -> None:
        run_cycle(store, TEN)

        result = run_cycle(store, TEN[:8], now=T0 + 10)

        assert (result.removed, result.blocked, result.reason) == (2, 0, None)
        assert entity_refs(store) == refs_of(TEN[:8])
        assert store.active_count("fake") == 8
        deletes = [c for c in store.changes() if c.op == "delete"]
        assert {c.ref for c in deletes} == refs_of(TEN[8:])
        assert {c.at for c in deletes} == {T0 + 10}
        assert store.counters("fake")["entities_removed"] == 2

    def test_a_sweep_logs_its_deletes_in_ref_order_on_either_store(self, store: Store) -> None:
        """PostgreSQL hands a large sweep's rows to the change log in hash-join order."""
        many = [make_entity(f"n{(number * 7919) % 3000:04d}") for number in range(3000)]
        run_cycle(store, many)

        run_cycle(store, many[:1], now=T0 + 10)

        deletes = [change.ref for change in store.changes() if change.op == "delete"]
        assert len(deletes) == 2999
        assert deletes == sorted(deletes)

    def test_empty_cycle_is_blocked_by_reject_empty_source_collections(self, store: Store) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=True, reject_removals_above_percentage=None
        )
        run_cycle(store, TEN, guards)

        result = run_cycle(store, [], guards, now=T0 + 10)

        assert (result.removed, result.blocked) == (0, 10)
        assert result.reason is not None
        assert "rejectEmptySourceCollections" in result.reason
        assert entity_refs(store) == refs_of(TEN)

    def test_a_blocked_count_follows_the_pages_of_the_next_cycle(self, store: Store) -> None:
        """What `removals approve` removes is what status, health and the metric say."""
        guards = SweepGuards(
            reject_empty_source_collections=True, reject_removals_above_percentage=None
        )
        run_cycle(store, TEN, guards)
        assert run_cycle(store, [], guards, now=T0 + 10).blocked == 10

        record = begin_cycle(store, T0 + 20)
        store.commit_page("fake", record.cycle_id, page(TEN[:3], cursor={"p": 1}), None, T0 + 20)

        assert store.blocked_removals("fake").count == 7
        assert len(store.pending_removal_refs("fake")) == 7
        rest = page(TEN[3:], cursor={"p": 2})
        store.commit_page("fake", record.cycle_id, rest, None, T0 + 21)
        blocked = store.blocked_removals("fake")
        assert (blocked.count, blocked.reason) == (0, None)  # no reason left without any

    def test_empty_cycle_sweeps_everything_when_the_guard_is_off(self, store: Store) -> None:
        run_cycle(store, TEN)
        assert run_cycle(store, [], now=T0 + 10).removed == 10
        assert entity_refs(store) == set()

    def test_first_empty_cycle_is_not_blocked(self, store: Store) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=True, reject_removals_above_percentage=0.0
        )
        assert run_cycle(store, [], guards) == SweepResult(0, 0, reason=None, remaining=0)

    @pytest.mark.parametrize(
        ("missing", "blocked"),
        [(1, False), (2, False), (3, True), (10, True)],
        ids=["10pct-below", "20pct-at-threshold", "30pct-above", "100pct-above"],
    )
    def test_reject_removals_above_percentage(
        self, store: Store, missing: int, blocked: bool
    ) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=False, reject_removals_above_percentage=20.0
        )
        run_cycle(store, TEN, guards)

        result = run_cycle(store, TEN[missing:], guards, now=T0 + 10)

        if blocked:
            assert (result.removed, result.blocked) == (0, missing)
            assert result.reason is not None
            assert "rejectRemovalsAbovePercentage" in result.reason
            assert entity_refs(store) == refs_of(TEN)
        else:
            assert (result.removed, result.blocked, result.reason) == (missing, 0, None)
            assert entity_refs(store) == refs_of(TEN[missing:])

    def test_new_entities_do_not_count_as_previously_active(self, store: Store) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=False, reject_removals_above_percentage=20.0
        )
        run_cycle(store, TEN, guards)
        newcomers = [make_entity(f"n{i}") for i in range(10)]

        # 3 of the 10 previously active go: 30 %, even though 17 are active now
        result = run_cycle(store, [*TEN[3:], *newcomers], guards, now=T0 + 10)

        assert result.blocked == 3

    def test_blocked_sweep_is_visible(self, store: Store, tmp_path: Path) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=False, reject_removals_above_percentage=20.0
        )
        run_cycle(store, TEN, guards)
        run_cycle(store, TEN[3:], guards, now=T0 + 10)

        blocked = store.blocked_removals("fake")
        assert (blocked.count, blocked.cycle_id) == (3, 2)
        assert blocked.reason is not None
        assert "30.0%" in blocked.reason
        assert store.pending_removal_refs("fake") == sorted(refs_of(TEN[:3]))
        assert store.pending_removal_refs("fake", limit=1) == sorted(refs_of(TEN[:3]))[:1]
        status = provider_status(store, make_config(tmp_path), "fake", T0 + 10)
        assert any("3 removals blocked" in problem for problem in status.health_problems)
        assert status.to_json()["removals"] == {
            "blocked": True,
            "count": 3,
            "reason": blocked.reason,
        }
        metrics = provider_metrics(
            store, "fake", run_at=None, config=make_config(tmp_path).incremental, now=T0 + 10
        )
        assert metrics.removals_blocked == 3
        cycle = store.last_cycle("fake")
        assert cycle is not None
        assert cycle.outcome == "blocked"

    def test_blocked_sweep_survives_next_cycle(self, store: Store) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=False, reject_removals_above_percentage=20.0
        )
        run_cycle(store, TEN, guards)
        run_cycle(store, TEN[3:], guards, now=T0 + 10)

        # the blocked state stays while the next cycle runs ...
        record = begin_cycle(store, T0 + 20)
        assert store.blocked_removals("fake").count == 3
        store.commit_page("fake", record.cycle_id, page(TEN[3:], done=True), None, T0 + 20)
        record.state = ProviderState.RESTING
        # ... and is recomputed from the active set when it completes
        result = store.complete_cycle(record, guards, T0 + 20)

        assert result.blocked == 3
        blocked = store.blocked_removals("fake")
        assert (blocked.count, blocked.cycle_id) == (3, 3)
        assert store.pending_removal_refs("fake") == sorted(refs_of(TEN[:3]))
        assert entity_refs(store) == refs_of(TEN)

    def test_blocked_sweep_clears_when_the_source_comes_back(self, store: Store) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=False, reject_removals_above_percentage=20.0
        )
        run_cycle(store, TEN, guards)
        run_cycle(store, TEN[3:], guards, now=T0 + 10)

        result = run_cycle(store, TEN, guards, now=T0 + 20)

        assert result == SweepResult(removed=0, blocked=0, reason=None, remaining=10)
        assert store.blocked_removals("fake").count == 0
        assert store.pending_removal_refs("fake") == []

    def test_approve_removals_applies_the_blocked_sweep(self, store: Store, tmp_path: Path) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=False, reject_removals_above_percentage=20.0
        )
        run_cycle(store, TEN, guards)
        run_cycle(store, TEN[3:], guards, now=T0 + 10)

        assert store.approve_removals("fake", T0 + 30) == 3

        assert entity_refs(store) == refs_of(TEN[3:])
        assert store.active_count("fake") == 7
        assert {c.ref for c in store.changes() if c.op == "delete"} == refs_of(TEN[:3])
        assert store.blocked_removals("fake").count == 0
        assert store.pending_removal_refs("fake") == []
        assert store.load_provider("fake").blocked_removals == 0
        status = provider_status(store, make_config(tmp_path), "fake", T0 + 30)
        assert status.health_problems == []
        assert store.approve_removals("fake", T0 + 40) == 0

    def test_approve_spares_what_the_running_cycle_saw_again(self, store: Store) -> None:
        guards = SweepGuards(
            reject_empty_source_collections=False, reject_removals_above_percentage=20.0
        )
        run_cycle(store, TEN, guards)
        run_cycle(store, TEN[3:], guards, now=T0 + 10)
        record = begin_cycle(store, T0 + 20)
        store.commit_page("fake", record.cycle_id, page(TEN[:1]), None, T0 + 20)

        assert store.approve_removals("fake", T0 + 30) == 2

        assert entity_refs(store) == {TEN[0].ref, *refs_of(TEN[3:])}


def scoped(name: str, scope: str) -> Entity:
    body = {"kind": "System", "metadata": {"name": name, "namespace": "default"}}
    return Entity(kind="System", namespace="default", name=name, body=body, scope=scope)


class TestDelta:
    def test_upserts_count_as_seen_in_the_cycle(self, store: Store) -> None:
        run_cycle(store, TEN[:2])
        stats, removed = store.apply_delta("fake", 1, Delta(upserts=[make_entity("late")]), T0)

        assert (stats.upserted, removed) == (1, 0)
        assert store.active_count("fake") == 3
        assert make_entity("late").ref in entity_refs(store)

    def test_removal_by_ref_removes_at_once_and_logs_it(self, store: Store) -> None:
        run_cycle(store, TEN[:3])

        _, removed = store.apply_delta(
            "fake", 1, Delta(removals=[TEN[1].ref, "component:default/unknown"]), T0 + 5
        )

        assert removed == 1
        assert entity_refs(store) == {TEN[0].ref, TEN[2].ref}
        assert store.active_count("fake") == 2
        assert [(c.op, c.ref) for c in store.changes() if c.op == "delete"] == [
            ("delete", TEN[1].ref)
        ]

    def test_scope_removal_takes_the_scope_and_everything_below_it(self, store: Store) -> None:
        entities = [
            scoped("acme", "acme"),
            scoped("acme-shop", "acme/shop"),
            scoped("acme-shop-cart", "acme/shop/cart"),
            scoped("acmecorp", "acmecorp"),
            scoped("globex-acme", "globex/acme"),
        ]
        run_cycle(store, entities)

        _, removed = store.apply_delta("fake", 1, Delta(removal_scopes=["acme"]), T0 + 5)

        assert removed == 3
        assert entity_refs(store) == {"system:default/acmecorp", "system:default/globex-acme"}
        assert store.active_count("fake") == 2

    def test_delta_removals_are_not_resurrected_by_the_sweep(self, store: Store) -> None:
        run_cycle(store, TEN[:3])
        store.apply_delta("fake", 1, Delta(removals=[TEN[0].ref]), T0 + 5)

        result = run_cycle(store, TEN[1:3], now=T0 + 10)

        assert result.removed == 0
        deletes = Counter(c.ref for c in store.changes() if c.op == "delete")
        assert deletes == {TEN[0].ref: 1}


class TestReset:
    def test_purge_removes_entities_refs_and_queues(self, store: Store) -> None:
        run_cycle(store, TEN[:4])
        record = store.load_provider("fake")
        record.state = ProviderState.IDLE

        removed = store.reset_provider(record, purge=True, now=T0 + 5)

        assert removed == 4
        assert entity_refs(store) == set()
        assert store.active_count("fake") == 0
        assert store_sql(store, "SELECT * FROM queue_items") == []
        assert sum(1 for c in store.changes() if c.op == "delete") == 4

    def test_reset_without_purge_keeps_the_catalog(self, store: Store) -> None:
        run_cycle(store, TEN[:4])
        record = store.load_provider("fake")
        record.state = ProviderState.IDLE

        assert store.reset_provider(record, purge=False, now=T0 + 5) == 0
        assert entity_refs(store) == refs_of(TEN[:4])
        assert store.load_provider("fake").state is ProviderState.IDLE


class TestQueueReader:
    def test_settled_reads_come_from_memory_and_others_wait_first(self, state_path: Path) -> None:
        waits: list[int] = []
        with Store.open(state_path) as store:
            store.migrate()
            record = store.load_provider("fake")
            record.cycle_id = 1
            store.start_cycle(record, 1.0)
            store.commit_page("fake", 1, page_pushing("a", "b"), None, 1.0)
            reader = StoreQueueReader(store, "fake", before_read=lambda: waits.append(1))

            assert [i.key for i in reader.read("seen", after=0, limit=2)] == ["a", "b"]
            assert [i.key for i in reader.read("seen", after=2, limit=1)] == []
            store.commit_page("fake", 1, page_pushing("c"), None, 2.0)
            assert [i.key for i in reader.read("seen", after=0, limit=2)] == ["a", "b"]
            assert [i.key for i in reader.read("seen", after=2, limit=1)] == ["c"]

        assert len(waits) == 3  # not 4: the settled read, asked again, was not


def page_pushing(*keys: str) -> EntityIteratorResult:
    return EntityIteratorResult(
        done=False,
        entities=[],
        cursor=None,
        queue_items=[QueueItem("seen", key, {"name": key}) for key in keys],
    )


def indexed(table: str, key: str, group: str = "", value: object = True) -> IndexEntry:
    return IndexEntry(table, key, group, value)


class TestLookupIndex:
    def test_page_rows_are_found_by_key_and_by_group_in_key_order(self, store: Store) -> None:
        record = begin_cycle(store)
        rows = [indexed("w", "ns/b", "ns/c1", 2), indexed("w", "ns/a", "ns/c1", 1),
                indexed("w", "ns/z", "ns/c2", 3), indexed("other", "ns/a", "ns/c1", 9)]  # fmt: skip
        store.commit_page("fake", record.cycle_id, replace(page(), index=rows), None, T0)

        by_key = store.index_by_key("fake", "w", ["ns/a", "ns/missing"])
        by_group = store.index_by_group("fake", "w", ["ns/c1", "ns/c2", "ns/none"])

        assert {key: row.value for key, row in by_key.items()} == {"ns/a": 1}
        assert {g: [row.value for row in found] for g, found in by_group.items()} == {
            "ns/c1": [1, 2],
            "ns/c2": [3],
            "ns/none": [],
        }

    def test_a_later_row_replaces_and_a_none_value_deletes(self, store: Store) -> None:
        record = begin_cycle(store)
        store.commit_page(
            "fake", record.cycle_id, replace(page(), index=[indexed("w", "k", "g1", 1)]), None, T0
        )
        store.commit_page(
            "fake", record.cycle_id, replace(page(), index=[indexed("w", "k", "g2", 2)]), None, T0
        )
        assert [row.value for row in store.index_by_group("fake", "w", ["g2"])["g2"]] == [2]
        assert store.index_by_group("fake", "w", ["g1"])["g1"] == []

        delta = Delta(index=[IndexEntry("w", "k")])
        store.apply_delta("fake", record.cycle_id, delta, T0)

        assert store.index_by_key("fake", "w", ["k"]) == {}

    def test_min_cycle_hides_rows_an_earlier_cycle_wrote(self, store: Store) -> None:
        first = begin_cycle(store)
        store.commit_page(
            "fake", first.cycle_id, replace(page(), index=[indexed("w", "old", "g")]), None, T0
        )
        second = begin_cycle(store)
        store.commit_page(
            "fake", second.cycle_id, replace(page(), index=[indexed("w", "new", "g")]), None, T0
        )

        current = store.index_by_group("fake", "w", ["g"], min_cycle=second.cycle_id)["g"]
        every = store.index_by_group("fake", "w", ["g"])["g"]

        assert [row.key for row in current] == ["new"]
        assert [row.key for row in every] == ["new", "old"]

    def test_completed_cycle_prunes_rows_it_did_not_write(self, store: Store) -> None:
        first = begin_cycle(store)
        rows = [indexed("w", "kept", "g"), indexed("w", "gone", "g")]
        store.commit_page(
            "fake", first.cycle_id, replace(page([make_entity("a")]), index=rows), None, T0
        )
        store.complete_cycle(first, NO_GUARDS, T0)
        second = begin_cycle(store)
        kept = replace(page([make_entity("a")]), index=[indexed("w", "kept", "g")])
        store.commit_page("fake", second.cycle_id, kept, None, T0)

        store.complete_cycle(second, NO_GUARDS, T0)

        assert [row.key for row in store.index_by_group("fake", "w", ["g"])["g"]] == ["kept"]

    def test_rows_belong_to_their_provider(self, store: Store) -> None:
        record = begin_cycle(store)
        store.commit_page(
            "fake", record.cycle_id, replace(page(), index=[indexed("w", "k", "g")]), None, T0
        )

        assert store.index_by_key("other", "w", ["k"]) == {}

    def test_facts_are_set_replaced_and_removed_with_pages(self, store: Store) -> None:
        record = begin_cycle(store)
        store.commit_page(
            "fake", record.cycle_id, replace(page(), facts={"api": "orgs", "x": "1"}), None, T0
        )
        store.commit_page(
            "fake", record.cycle_id, replace(page(), facts={"api": "v1", "x": None}), None, T0
        )

        assert store.facts("fake") == {"api": "v1"}
        assert store.facts("other") == {}

    def test_a_fact_named_like_a_status_field_does_not_hide_it(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Facts are a provider's own (a custom provider's too): `status --json` shows them,
        but never in place of what the state says."""
        record = begin_cycle(store)
        facts = {"state": "fine", "attempts": "0", "lastError": "none", "region": "eu"}
        store.commit_page("fake", record.cycle_id, replace(page(), facts=facts), None, T0)

        status = provider_status(store, make_config(tmp_path), "fake", T0, running=True).to_json()

        assert (status["state"], status["attempts"], status["lastError"]) == ("bursting", 0, None)
        assert status["region"] == "eu"

    def test_status_shows_facts_and_reports_the_problem_fact(
        self, store: Store, tmp_path: Path
    ) -> None:
        record = begin_cycle(store)
        facts = {"api": "v1", "problem": "the listing never completes"}
        store.commit_page("fake", record.cycle_id, replace(page(), facts=facts), None, T0)

        status = provider_status(store, make_config(tmp_path), "fake", T0).to_json()
        metrics = provider_metrics(
            store, "fake", run_at=T0, config=make_config(tmp_path).incremental, now=T0
        )

        assert status["api"] == "v1"
        assert "problem" not in status
        assert "the listing never completes" in status["problems"]
        assert status["healthy"] is False
        assert metrics.api == "v1"
