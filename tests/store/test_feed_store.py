"""What the store gives the change feed: the store id, pruning the change log and its bounds,
entities by ref and in ref order, consistent reads (what takes the `store` fixture: on SQLite and
on PostgreSQL), and prune's all-or-nothing transaction (SQLite files)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from store_support import earlier_release_migrations, read_tables, sqlite_steps, store_sql

from choreo_ingest.errors import StateError
from choreo_ingest.models import Delta, Entity, ProviderRecord, ProviderState
from choreo_ingest.store import MIGRATION_NAMES, SCHEMA_VERSION, StateLocation, Store

from fakes import make_entity

REFS = "openchoreo_incremental_entity_refs"
T0 = 1_800_000_000.0
DAY = 86_400.0
LATER = list(MIGRATION_NAMES[MIGRATION_NAMES.index("0004_feed") :])
"""What a schema-3 state file has still to apply."""


def upsert(store: Store, entities: Sequence[Entity], now: float = T0) -> None:
    store.apply_delta("fake", 1, Delta(upserts=entities), now)


def remove(store: Store, refs: Sequence[str], now: float = T0) -> None:
    store.apply_delta("fake", 1, Delta(removals=refs), now)


def described(name: str) -> Entity:
    """An entity with a description of 1,000 characters: each as large as the others."""
    entity = make_entity(name)
    entity.body["metadata"]["description"] = "x" * 1000
    return entity


def stored_chars(store: Store, ref: str) -> int:
    """The characters of `ref`'s body as the state holds it."""
    [(size,)] = store_sql(store, "SELECT length(body) FROM entities WHERE ref = ?", [ref])
    return int(size)


def log_changes(store: Store, times: Sequence[float]) -> None:
    """One change per time, in order (a new entity each)."""
    for number, now in enumerate(times):
        upsert(store, [make_entity(f"c{number:03}")], now)


def seqs(store: Store) -> list[int]:
    return [change.seq for change in store.changes()]


def idle(store: Store, name: str = "fake") -> ProviderRecord:
    record = store.load_provider(name)
    record.state = ProviderState.IDLE
    return record


class TestStoreId:
    def test_is_32_hex_digits_and_stable_across_opens(self, state_path: Path) -> None:
        with Store.open(state_path) as store:
            store.migrate()
            made = store.store_id()
        with Store.open(state_path) as again, Store.open(state_path, readonly=True) as reader:
            assert again.store_id() == reader.store_id() == made
        assert re.fullmatch("[0-9a-f]{32}", made)

    def test_every_new_or_replaced_state_file_gets_its_own(self, tmp_path: Path) -> None:
        ids = []
        for path in (tmp_path / "a.db", tmp_path / "b.db", tmp_path / "a.db"):
            for stale in tmp_path.glob(f"{path.name}*"):
                stale.unlink()
            with Store.open(path) as store:
                store.migrate()
                ids.append(store.store_id())
        assert len(set(ids)) == 3

    def test_purge_and_forget_renew_it(self, store: Store) -> None:
        upsert(store, [make_entity("a")])
        first = store.store_id()
        store.reset_provider(idle(store), purge=True, now=T0 + 1)
        purged = store.store_id()
        upsert(store, [make_entity("b")])
        store.forget_provider("fake", T0 + 2)
        forgotten = store.store_id()
        assert len({first, purged, forgotten}) == 3

    def test_plain_reset_keeps_it(self, store: Store) -> None:
        upsert(store, [make_entity("a")])
        before = store.store_id()
        store.reset_provider(idle(store), purge=False, now=T0 + 1)
        assert store.store_id() == before

    def test_renew_returns_the_new_id(self, store: Store) -> None:
        before = store.store_id()
        renewed = store.renew_store_id(T0)
        assert renewed != before
        assert store.store_id() == renewed


class TestMigration:
    def test_a_schema_3_state_file_keeps_its_data_and_gets_a_store_id(
        self, state_path: Path
    ) -> None:
        with Store.open(state_path) as store:
            database = sqlite_utils.Database(store.path)
            earlier_release_migrations().apply(database, stop_before="0004_feed")
            database.close()
            assert (store.schema_version(), store.pending_migrations()) == (3, LATER)
            upsert(store, [make_entity("a"), make_entity("b")])
            # The removal as a schema-3 release wrote it (today's counts its deletes).
            gone = make_entity("a").ref
            store_sql(store, "DELETE FROM entities WHERE ref = ?", [gone])
            store_sql(store, f"DELETE FROM {REFS} WHERE entity_ref = ?", [gone])
            store_sql(
                store,
                "INSERT INTO changes (at, op, ref, provider) VALUES (?, 'delete', ?, 'fake')",
                [T0 + 1, gone],
            )
            before = read_tables(state_path)

            assert store.migrate() == LATER

            after = read_tables(state_path)
            assert store.schema_version() == SCHEMA_VERSION
            assert re.fullmatch("[0-9a-f]{32}", store.store_id())
            assert store.change_bounds() == (0, 3)
        added = ("store_meta", "entity_counts", "ref_counts")
        assert {name: rows for name, rows in after.items() if name not in added} == before
        assert after["store_meta"] == [("changes_pruned_through", "0"), ("store_id", "<store id>")]
        assert after["entity_counts"] == [("fake", "Component", 1)]  # 0005_counts: b only
        assert after["ref_counts"] == [("fake", 1)]


class TestPrune:
    def test_by_age_deletes_the_changes_made_before(self, store: Store) -> None:
        log_changes(store, [T0, T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY])

        assert store.prune_changes(T0 + 2 * DAY, max_rows=100) == 2

        assert seqs(store) == [3, 4]
        assert store.change_bounds() == (2, 4)

    def test_by_rows_keeps_the_newest(self, store: Store) -> None:
        log_changes(store, [T0] * 10)

        assert store.prune_changes(T0 - DAY, max_rows=3) == 7

        assert seqs(store) == [8, 9, 10]
        assert store.change_bounds() == (7, 10)

    def test_age_and_rows_together_take_whichever_goes_further(self, store: Store) -> None:
        log_changes(store, [T0, T0, T0 + DAY, T0 + DAY, T0 + DAY])
        assert store.prune_changes(T0 + 1, max_rows=4) == 2  # age goes further
        assert store.prune_changes(T0 + 1, max_rows=1) == 2  # rows go further
        assert seqs(store) == [5]

    def test_never_past_keep_after(self, store: Store) -> None:
        log_changes(store, [T0] * 6)

        assert store.prune_changes(T0 + DAY, max_rows=1, keep_after=2) == 2

        assert seqs(store) == [3, 4, 5, 6]
        assert store.prune_changes(T0 + DAY, max_rows=1, keep_after=0) == 0

    def test_an_old_change_after_a_younger_one_waits(self, store: Store) -> None:
        """After the wall clock stepped back, the log stays one run of seqs: only the oldest
        changes that are all old go."""
        log_changes(store, [T0, T0 + 5 * DAY, T0 + 1, T0 + 6 * DAY])

        assert store.prune_changes(T0 + 2 * DAY, max_rows=100) == 1

        assert seqs(store) == [2, 3, 4]
        assert store.change_bounds() == (1, 4)

    def test_pruned_through_only_rises(self, store: Store) -> None:
        log_changes(store, [T0] * 5)
        store.prune_changes(T0 - DAY, max_rows=2)
        assert store.change_bounds() == (3, 5)

        assert store.prune_changes(T0 - DAY, max_rows=4) == 0
        assert store.prune_changes(T0 - DAY, max_rows=2, keep_after=1) == 0
        assert store.change_bounds() == (3, 5)
        upsert(store, [make_entity("later")], T0 + 1)
        assert store.prune_changes(T0 + 1, max_rows=100) == 2
        assert store.change_bounds() == (5, 6)

    def test_newest_seq_counts_pruned_changes(self, store: Store) -> None:
        log_changes(store, [T0] * 4)

        assert store.prune_changes(T0 + 1, max_rows=100) == 4

        assert store.changes() == []
        assert store.change_bounds() == (4, 4)
        assert store.last_change_seq() == 4
        upsert(store, [make_entity("next")], T0 + 2)
        assert seqs(store) == [5]

    def test_asking_whether_to_prune_costs_the_same_in_a_long_log(self, tmp_path: Path) -> None:
        """Every idle call and `serve` tick asks. With the log within `maxRows` the answer takes
        SQLite the same steps at 20 changes as at 2,000: it walked `maxRows` entries of the
        index (25-56 ms at 585,000 changes, on either store)."""
        steps = []
        for size in (20, 2_000):
            with Store.open(tmp_path / f"{size}.db") as sqlite:
                sqlite.migrate()
                upsert(sqlite, [make_entity(f"c{number}") for number in range(size)])
                ask = partial(sqlite.prunable_changes, T0 - DAY, max_rows=1_000_000)
                prunable, taken = sqlite_steps(sqlite, ask)
                assert not prunable
                steps.append(taken)

        assert steps[1] < 2 * steps[0], steps

    def test_an_empty_log_has_nothing_to_prune(self, store: Store) -> None:
        assert store.prune_changes(T0, max_rows=1) == 0
        assert store.change_bounds() == (0, 0)


class TestEntityReads:
    def test_bodies_by_ref_one_query_per_500_refs(self, state_path: Path) -> None:
        with Store.open(state_path) as writer:
            writer.migrate()
            upsert(writer, [make_entity(f"e{number:04}") for number in range(600)])
        statements: list[str] = []
        wanted = [f"component:default/e{number:04}" for number in range(0, 1200, 2)]
        wanted += ["component:default/absent"] * 400

        with Store.open(state_path, readonly=True, tracer=lambda s, _: statements.append(s)) as st:
            statements.clear()  # what opening it ran
            bodies = st.entity_bodies(wanted)

        assert bodies is not None
        assert sorted(bodies) == wanted[:300]
        assert bodies["component:default/e0042"] == make_entity("e0042").body
        assert len(statements) == 2  # 1000 refs asked: two statements of at most 500

    def test_entities_after_go_in_ref_order(self, store: Store) -> None:
        entities = [
            make_entity("b"),
            make_entity("a", kind="System"),
            make_entity("a"),
            make_entity("z", namespace="acme"),
        ]
        upsert(store, entities)
        order = sorted(entity.ref for entity in entities)

        first, more = store.entities_after(None, 3)
        rest, after_rest = store.entities_after(first[-1][0], 3)

        assert [ref for ref, _ in first] == order[:3]
        assert more
        assert [ref for ref, _ in rest] == order[3:]
        assert not after_rest
        assert rest[0][1] == next(e.body for e in entities if e.ref == order[3])
        assert store.entities_after(order[-1], 3) == ([], False)

    def test_a_page_ends_once_it_holds_max_chars_of_text(self, store: Store) -> None:
        """Entities of a 1 MB schema each: a page of `limit` of them would be that many MB."""
        upsert(store, [described(name) for name in "abcdef"])
        size = stored_chars(store, "component:default/a")

        page, more = store.entities_after(None, 5, max_chars=2 * size)
        one, more_after_one = store.entities_after(None, 5, max_chars=1)
        last, after_last = store.entities_after("component:default/d", 5, max_chars=2 * size)

        assert [ref for ref, _ in page] == ["component:default/a", "component:default/b"]
        assert more
        assert [ref for ref, _ in one] == ["component:default/a"]  # one is taken whatever its size
        assert more_after_one
        assert [ref for ref, _ in last] == ["component:default/e", "component:default/f"]
        assert not after_last

    @pytest.mark.parametrize("damaged", ['{"kind": "Comp', "null", "[1]", '"text"'])
    def test_a_body_damaged_on_disk_is_a_state_error_naming_its_ref_for_every_read(
        self, store: Store, damaged: str
    ) -> None:
        """Not JSON, or JSON but no object: the feed (`/entities/batch`, `/entities`) failed as a
        bug, and `dict()` of a `null` body with a TypeError."""
        upsert(store, [make_entity("a"), make_entity("b")])
        store_sql(
            store, "UPDATE entities SET body = ? WHERE ref = ?", [damaged, "component:default/b"]
        )
        reads = [
            lambda: store.entity_bodies(["component:default/b"]),
            lambda: store.entities_after(None, 10),
            lambda: list(store.iter_entities()),
            lambda: store.entity_body("component:default/b"),
        ]
        for read in reads:
            with pytest.raises(StateError, match="the stored body of component:default/b is "):
                read()

    def test_bodies_past_max_chars_are_none_unless_one_was_asked_for(self, store: Store) -> None:
        upsert(store, [described(name) for name in "abc"])
        refs = [f"component:default/{name}" for name in "abc"]
        size = stored_chars(store, refs[0])

        assert store.entity_bodies(refs, max_chars=3 * size) is not None
        assert store.entity_bodies(refs, max_chars=3 * size - 1) is None
        assert store.entity_bodies(refs[:1], max_chars=1) == {refs[0]: store.entity_body(refs[0])}


class TestSnapshot:
    def test_reads_inside_see_one_state_whatever_another_writer_commits(
        self, store: Store, any_location: StateLocation
    ) -> None:
        log_changes(store, [T0] * 4)
        with any_location.open(readonly=True) as reader:
            with reader.snapshot():
                before = reader.change_bounds()
                store.prune_changes(T0 + 1, max_rows=1)
                upsert(store, [make_entity("new")], T0 + 2)
                assert reader.change_bounds() == before == (0, 4)
                assert [change.seq for change in reader.changes()] == [1, 2, 3, 4]
            assert reader.change_bounds() == (4, 5)


class Crash(BaseException):
    """The process dies here: not an Exception, so nothing on the way handles it."""


@dataclass
class CrashingTracer:
    """Records every statement; raises Crash before statement `crash_at`, after copying the DB
    files as they are at that instant (what SIGKILL or a power cut leaves)."""

    state_path: Path
    snapshot_dir: Path
    crash_at: int | None = None
    statements: list[str] = field(default_factory=list)
    counting: bool = False
    """Off while the store opens: only the operation under test counts."""

    def __call__(self, sql: str, params: Any) -> None:
        if not self.counting:
            return
        self.statements.append(sql.split()[0].upper())
        if len(self.statements) == self.crash_at:
            copy_db_files(self.state_path, self.snapshot_dir)
            raise Crash(f"simulated crash before statement {self.crash_at}")


def copy_db_files(state_path: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        source = state_path.with_name(state_path.name + suffix)
        if source.exists():
            shutil.copyfile(source, directory / source.name)
    return directory / state_path.name


class TestPruneCrash:
    def test_a_crash_anywhere_in_a_prune_leaves_all_of_it_or_none(self, tmp_path: Path) -> None:
        prepared = tmp_path / "prepared" / "state.db"
        prepared.parent.mkdir()
        with Store.open(prepared) as store:
            store.migrate()
            log_changes(store, [T0 + number for number in range(8)])
        before = read_tables(prepared)

        reference = tmp_path / "reference"
        reference_path = copy_db_files(prepared, reference)
        tracer = CrashingTracer(reference_path, tmp_path / "unused")
        with Store.open(reference_path, tracer=tracer) as store:
            tracer.counting = True
            assert store.prune_changes(T0 + 3.5, max_rows=2) == 6
        after = read_tables(reference_path)
        statements = tracer.statements
        begin = statements.index("BEGIN")  # after the reads that find something to prune
        assert all(statement.startswith("SELECT") for statement in statements[:begin])
        assert statements[-1] == "COMMIT"
        assert after["store_meta"][0] == ("changes_pruned_through", "6")
        assert before != after

        for crash_at in range(1, len(statements) + 1):
            run = tmp_path / f"crash-{crash_at:02}"
            state_path = copy_db_files(prepared, run)
            killed = run / "killed"
            crashing = CrashingTracer(state_path, killed, crash_at=crash_at)
            with Store.open(state_path, tracer=crashing) as store:
                crashing.counting = True
                with pytest.raises(Crash):
                    store.prune_changes(T0 + 3.5, max_rows=2)

            assert read_tables(state_path) == before, f"rolled back, statement {crash_at}"
            assert read_tables(killed / "state.db") == before, f"killed, statement {crash_at}"
            with Store.open(state_path) as store:  # the next run prunes it all
                assert store.prune_changes(T0 + 3.5, max_rows=2) == 6
            assert read_tables(state_path) == after
