"""The change feed on real state files: pages of the change log, entities by ref, a walk over the
catalog that a replay of the changes since its start makes current, and pruning the log behind
the YAML mirror."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from choreo_ingest.clock import rfc3339
from choreo_ingest.config import ChangesConfig, Config
from choreo_ingest.errors import ChangesGone, ConfigError
from choreo_ingest.feed import (
    MAX_CHANGES,
    MAX_ENTITIES,
    MAX_REFS,
    changes_page,
    entities_batch,
    entities_page,
)
from choreo_ingest.invocation import run_once
from choreo_ingest.mirror import position_name, sync_mirror
from choreo_ingest.models import Delta, Entity, ProviderRecord, ProviderState
from choreo_ingest.retention import prune_change_log
from choreo_ingest.store import StateLocation, Store, SweepGuards

from fakes import FakeClock, FakeProvider, make_config, make_entity
from mirror_support import exported, mirrored

T0 = 1_800_000_000.0
DAY = 86_400.0


@pytest.fixture
def writer(any_location: StateLocation) -> Iterator[Store]:
    """A migrated store on each backend in turn (SQLite, PostgreSQL)."""
    with any_location.open() as store:
        store.migrate()
        yield store


@pytest.fixture
def reader(writer: Store, any_location: StateLocation) -> Iterator[Store]:
    """What a consumer's server reads through: the same state, opened read-only."""
    with any_location.open(readonly=True) as store:
        yield store


def upsert(
    store: Store, entities: Sequence[Entity], now: float = T0, provider: str = "fake"
) -> None:
    store.apply_delta(provider, 1, Delta(upserts=entities), now)


def remove(store: Store, refs: Sequence[str], now: float = T0) -> None:
    store.apply_delta("fake", 1, Delta(removals=refs), now)


def entities(*names: str) -> list[Entity]:
    return [make_entity(name) for name in names]


def ref_of(body: dict[str, Any]) -> str:
    return f"{body['kind'].lower()}:{body['metadata']['namespace']}/{body['metadata']['name']}"


def changed(entity: Entity, version: int) -> Entity:
    metadata = {**entity.body["metadata"], "annotations": {"test/version": str(version)}}
    return replace(entity, body={**entity.body, "metadata": metadata})


def decoded(cursor: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def encoded(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


class TestChangesPage:
    def test_json_lists_the_changes_after_since_with_the_bounds(
        self, writer: Store, reader: Store
    ) -> None:
        upsert(writer, entities("a", "b"), T0)
        remove(writer, ["component:default/a"], T0 + 61.7)

        page = changes_page(reader, since=1, limit=10)

        assert page.to_json() == {
            "storeId": writer.store_id(),
            "oldestSeq": 1,
            "newestSeq": 3,
            "catalogComplete": False,  # no provider has completed a cycle
            "changes": [
                {
                    "seq": 2,
                    "at": "2027-01-15T08:00:00Z",
                    "op": "upsert",
                    "ref": "component:default/b",
                    "provider": "fake",
                },
                {
                    "seq": 3,
                    "at": "2027-01-15T08:01:01Z",
                    "op": "delete",
                    "ref": "component:default/a",
                    "provider": "fake",
                },
            ],
        }

    def test_limit_caps_the_page(self, writer: Store, reader: Store) -> None:
        upsert(writer, entities("a", "b", "c", "d"))
        assert [change.seq for change in changes_page(reader, 1, 2).changes] == [2, 3]

    def test_a_page_never_ends_between_a_delete_and_the_upsert_of_its_case_twin(
        self, writer: Store, reader: Store
    ) -> None:
        """Backstage folds case: a page ending on `delete httpApi` would remove the live
        `httpapi` there, and its upsert on the next page would bring it back as a new entity."""
        old, new = (
            replace(make_entity(name, kind="API"), scope="acme/web/cart")  # one component's
            for name in ("httpApi", "httpapi")
        )
        upsert(writer, [make_entity("a"), old])
        writer.apply_delta("fake", 1, Delta(upserts=[new]), T0)
        writer.apply_delta("fake", 1, Delta(removals=[old.ref, make_entity("a").ref]), T0)
        log = [(change.op, change.ref) for change in reader.changes(2)]
        assert log == [
            ("upsert", "api:default/httpapi"),
            ("delete", "api:default/httpApi"),
            ("upsert", "api:default/httpapi"),
            ("delete", "component:default/a"),
        ]

        first = changes_page(reader, since=2, limit=2)  # would end on the delete
        assert [change.op for change in first.changes] == ["upsert"]
        second = changes_page(reader, since=first.changes[-1].seq, limit=2)
        assert [(change.op, change.ref) for change in second.changes] == log[1:3]
        assert [change.seq for change in changes_page(reader, since=2, limit=3).changes] == [
            3,
            4,
            5,
        ]
        alone = changes_page(reader, since=3, limit=1)  # a page of one holds both
        assert [(change.op, change.ref) for change in alone.changes] == log[1:3]

    def test_an_empty_log_answers_since_0(self, reader: Store) -> None:
        page = changes_page(reader, since=0, limit=1)
        assert (page.oldest_seq, page.newest_seq, page.changes) == (1, 0, [])

    def test_since_at_the_pruned_mark_is_followable_one_below_is_gone(
        self, writer: Store, reader: Store
    ) -> None:
        upsert(writer, entities("a", "b", "c", "d", "e"))
        writer.prune_changes(T0 - DAY, max_rows=2)  # pruned through 3

        assert [change.seq for change in changes_page(reader, 3, 10).changes] == [4, 5]
        with pytest.raises(ChangesGone) as gone:
            changes_page(reader, 2, 10)

        assert (gone.value.store_id, gone.value.oldest_seq) == (writer.store_id(), 4)
        assert str(gone.value) == (
            "changes after seq 2 were pruned (oldest retained: 4); resync from GET /entities"
        )

    def test_newest_seq_counts_pruned_changes(self, writer: Store, reader: Store) -> None:
        upsert(writer, entities("a", "b", "c"))
        writer.prune_changes(T0 + 1, max_rows=10)

        page = changes_page(reader, 3, 10)

        assert (page.oldest_seq, page.newest_seq, page.changes) == (4, 3, [])

    def test_since_past_the_newest_change_is_gone(self, writer: Store, reader: Store) -> None:
        """The consumer followed a newer copy of this state file (it was restored from a
        backup): what it holds may not be in this one."""
        upsert(writer, entities("a", "b"))
        with pytest.raises(ChangesGone) as gone:
            changes_page(reader, 3, 10)
        assert str(gone.value) == (  # a state file's words, and a PostgreSQL schema's
            "seq 3 is past the newest change (2): the state is an older copy than the one "
            "followed; resync from GET /entities"
        )

    def test_a_state_put_back_from_an_older_copy_is_gone_once_it_has_made_as_many_changes(
        self, tmp_path: Path
    ) -> None:
        """A rollback to a copy made before: the copy goes on from its own newest seq, and once
        it has made as many changes as the consumer read, `since` no longer looks past the
        newest. The `at` the consumer read of its last change tells the two histories apart."""
        with (
            Store.open(tmp_path / "state.db") as original,
            Store.open(tmp_path / "copy.db") as copy,
        ):
            original.migrate()
            copy.migrate()
            upsert(original, entities("a"), T0)
            original.copy_to(copy)
            upsert(original, entities("b", "c"), T0 + 60)
            followed = changes_page(original, 0, 10).changes[-1]
        made_since = rfc3339(T0 + 3600)

        with Store.open(tmp_path / "copy.db") as restored:
            upsert(restored, entities("d", "e"), T0 + 3600)
            assert changes_page(restored, followed.seq, 10).changes == []  # what it said before
            with pytest.raises(ChangesGone) as gone:
                changes_page(restored, followed.seq, 10, since_at=rfc3339(followed.at))
            assert changes_page(restored, 3, 10, since_at=made_since).changes == []

        assert str(gone.value) == (
            f"change 3 was made at {made_since}, not at {rfc3339(T0 + 60)} as the one followed: "
            "the state was put back from an older copy; resync from GET /entities"
        )

    @pytest.mark.parametrize(
        "since_at",
        [
            "x" * 41,
            "2026-12-04T09:06:17Z\u00e9",
            "garbage",
            "2026-12-04",
            "2026-12-04T09:06:17",  # no zone
            "2026-13-04T09:06:17Z",
            "1733300777",
            "9999-12-31T23:59:59-01:00",  # past the years a time can have
            "0001-01-01T00:00:00+01:00",
        ],
    )
    def test_a_since_at_that_is_no_time_names_since_at(
        self, writer: Store, reader: Store, since_at: str
    ) -> None:
        """A consumer's mistake (400), not a state put back from an older copy (410: resync)."""
        upsert(writer, entities("a", "b"))
        with pytest.raises(ConfigError, match=r"^sinceAt: must be the `at` of a change"):
            changes_page(reader, 1, 10, since_at=since_at)

    @pytest.mark.parametrize(
        "spelling",
        ["{}Z", "{}.000Z", "{}+00:00", "{}.5Z", "{}z"],
        ids=["z", "ms", "+00", "half", "lower-case"],
    )
    def test_the_at_of_the_change_followed_in_another_spelling_is_that_time(
        self, writer: Store, reader: Store, spelling: str
    ) -> None:
        upsert(writer, entities("a", "b"))
        made = changes_page(reader, 0, 10).changes[0].at
        since_at = spelling.format(rfc3339(made).removesuffix("Z"))

        page = changes_page(reader, 1, 10, since_at=since_at)

        assert [change.seq for change in page.changes] == [2]

    @pytest.mark.parametrize("limit", [0, -1, MAX_CHANGES + 1, True, 2.0, "5", None])
    def test_limit_outside_1_to_10000_names_limit(self, reader: Store, limit: Any) -> None:
        with pytest.raises(ConfigError) as wrong:
            changes_page(reader, 0, limit)
        assert wrong.value.path == "limit"

    @pytest.mark.parametrize("since", [-1, 1.5, "0", None, False])
    def test_since_not_a_seq_names_since(self, reader: Store, since: Any) -> None:
        with pytest.raises(ConfigError) as wrong:
            changes_page(reader, since, 10)
        assert wrong.value.path == "since"

    def test_the_largest_limit_is_allowed(self, reader: Store) -> None:
        assert changes_page(reader, 0, MAX_CHANGES).changes == []


class TestEntitiesBatch:
    def test_bodies_in_the_order_asked_duplicates_once_and_the_missing(
        self, writer: Store, reader: Store
    ) -> None:
        a, b, c = entities("a", "b", "c")
        upsert(writer, [a, b, c])
        asked = [c.ref, "component:default/gone", a.ref, c.ref, "component:default/gone"]

        batch = entities_batch(reader, asked)

        assert batch.to_json() == {
            "storeId": writer.store_id(),
            "entities": [c.body, a.body],
            "missing": ["component:default/gone"],
        }

    def test_no_refs_no_entities(self, reader: Store) -> None:
        assert entities_batch(reader, []).to_json()["entities"] == []

    def test_up_to_1000_refs(self, writer: Store, reader: Store) -> None:
        many = entities(*(f"e{number:04}" for number in range(MAX_REFS)))
        upsert(writer, many)
        batch = entities_batch(reader, [entity.ref for entity in many])
        assert [ref_of(body) for body in batch.entities] == [entity.ref for entity in many]

    def test_more_than_1000_refs_names_refs(self, reader: Store) -> None:
        with pytest.raises(ConfigError) as wrong:
            entities_batch(reader, [f"component:default/e{n}" for n in range(MAX_REFS + 1)])
        assert wrong.value.path == "refs"

    def test_a_ref_that_is_not_a_string_is_named(self, reader: Store) -> None:
        with pytest.raises(ConfigError) as wrong:
            entities_batch(reader, ["component:default/a", 7])  # type: ignore[list-item]
        assert wrong.value.path == "refs[1]"

    def test_refs_not_a_list_names_refs(self, reader: Store) -> None:
        with pytest.raises(ConfigError) as wrong:
            entities_batch(reader, "component:default/a")  # type: ignore[arg-type]
        assert wrong.value.path == "refs"


def walk(store: Store, limit: int, between: Sequence[Any] = ()) -> list[Any]:
    """Every page of one walk from no cursor; `between[n]()` runs after page n."""
    pages = [entities_page(store, None, limit)]
    while pages[-1].next_cursor is not None:
        if len(pages) <= len(between):
            between[len(pages) - 1]()
        pages.append(entities_page(store, pages[-1].next_cursor, limit))
    return pages


class TestEntitiesPage:
    def test_pages_cover_the_catalog_once_in_ref_order(self, writer: Store, reader: Store) -> None:
        catalog = [*entities(*(f"e{n}" for n in range(10))), make_entity("s", kind="System")]
        upsert(writer, catalog)

        pages = walk(reader, 3)

        refs = [ref_of(body) for page in pages for body in page.entities]
        assert refs == sorted(entity.ref for entity in catalog)
        assert [len(page.entities) for page in pages] == [3, 3, 3, 2]
        assert {page.newest_seq for page in pages} == {11}
        assert pages[-1].next_cursor is None

    def test_json_and_the_cursor_it_hands_out(self, writer: Store, reader: Store) -> None:
        a, b = entities("a", "b")
        upsert(writer, [a, b])

        first = entities_page(reader, None, 1)

        assert first.to_json() == {
            "storeId": writer.store_id(),
            "newestSeq": 2,
            "newestAt": rfc3339(T0),
            "catalogComplete": False,
            "entities": [a.body],
            "nextCursor": first.next_cursor,
        }
        assert first.next_cursor is not None
        assert "=" not in first.next_cursor
        assert decoded(first.next_cursor) == {
            "after": a.ref,
            "seq": 2,
            "storeId": writer.store_id(),
        }
        last = entities_page(reader, first.next_cursor, 1).to_json()
        assert (last["entities"], last["nextCursor"]) == ([b.body], None)
        assert last["newestAt"] == rfc3339(T0)  # the walk's newestSeq's, on every page

    def test_a_catalog_without_changes_has_no_newest_at(self, reader: Store) -> None:
        assert entities_page(reader, None, 10).to_json()["newestAt"] is None

    def test_an_empty_catalog_is_one_empty_page(self, reader: Store) -> None:
        assert entities_page(reader, None, 10).to_json()["entities"] == []

    def test_a_walk_with_changes_under_it_then_a_replay_gives_the_current_catalog(
        self, writer: Store, reader: Store
    ) -> None:
        catalog = entities(*(f"e{n:02}" for n in range(0, 20, 2)))  # e00, e02, ... e18
        upsert(writer, catalog)
        by_name = {entity.name: entity for entity in catalog}

        def first_gap() -> None:  # the walk has read e00 e02 e04
            upsert(writer, [make_entity("e01"), make_entity("e19")], T0 + 1)  # behind, ahead
            upsert(writer, [changed(by_name["e02"], 2), changed(by_name["e08"], 2)], T0 + 1)
            remove(writer, [by_name["e00"].ref, by_name["e06"].ref], T0 + 1)

        def second_gap() -> None:  # ... and e08 e10 e12
            upsert(writer, [changed(by_name["e08"], 3), make_entity("e13")], T0 + 2)
            remove(writer, [by_name["e14"].ref, "component:default/e19"], T0 + 2)

        pages = walk(reader, 3, [first_gap, second_gap])

        refs = [ref_of(body) for page in pages for body in page.entities]
        assert refs == sorted(set(refs)), "each entity at most once, in ref order"
        assert {page.newest_seq for page in pages} == {10}
        copy = {ref_of(body): body for page in pages for body in page.entities}
        current = {ref_of(body): body for body in writer.iter_entities()}
        assert copy != current  # what the walk alone misses ...

        since = pages[0].newest_seq
        while (follow := changes_page(reader, since, 4)).changes:
            refs_changed = [change.ref for change in follow.changes]
            batch = entities_batch(reader, refs_changed)
            for body in batch.entities:
                copy[ref_of(body)] = body
            for ref in batch.missing:
                copy.pop(ref, None)
            since = follow.changes[-1].seq
        assert copy == current  # ... the changes since its newestSeq bring

    def test_a_cursor_from_another_store_id_is_gone(self, writer: Store, reader: Store) -> None:
        upsert(writer, entities("a", "b"))
        upsert(writer, entities("x"), provider="other")
        first = entities_page(reader, None, 1)
        assert first.next_cursor is not None
        writer.forget_provider("other", T0 + 1)

        with pytest.raises(ChangesGone, match="another state store") as gone:
            entities_page(reader, first.next_cursor, 1)

        assert gone.value.store_id == writer.store_id() != first.store_id

    def test_a_cursor_whose_seq_was_pruned_past_is_gone(self, writer: Store, reader: Store) -> None:
        upsert(writer, entities("a", "b", "c"))
        first = entities_page(reader, None, 1)  # newestSeq 3
        assert first.next_cursor is not None
        upsert(writer, entities("d"), T0 + 1)
        writer.prune_changes(T0 + 1, max_rows=10)  # pruned through 3: still followable

        second = entities_page(reader, first.next_cursor, 1)

        assert second.newest_seq == 3
        assert second.next_cursor is not None
        writer.prune_changes(T0 + 2, max_rows=10)  # through 4
        with pytest.raises(ChangesGone) as gone:
            entities_page(reader, second.next_cursor, 1)
        assert gone.value.oldest_seq == 5

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "not base64!",
            "é",
            encoded("a string"),
            encoded([1]),
            "bm90IGpzb24",  # "not json"
            encoded({"after": 1, "seq": 0, "storeId": "x"}),
            encoded({"after": "a", "seq": -1, "storeId": "x"}),
            encoded({"after": "a", "seq": True, "storeId": "x"}),
            encoded({"after": "a", "seq": 0}),
        ],
    )
    def test_a_cursor_not_handed_out_names_cursor(self, reader: Store, cursor: str) -> None:
        with pytest.raises(ConfigError) as wrong:
            entities_page(reader, cursor, 10)
        assert wrong.value.path == "cursor"

    @pytest.mark.parametrize("limit", [0, MAX_ENTITIES + 1, True])
    def test_limit_outside_1_to_1000_names_limit(self, reader: Store, limit: Any) -> None:
        with pytest.raises(ConfigError) as wrong:
            entities_page(reader, None, limit)
        assert wrong.value.path == "limit"


def feed_config(tmp_path: Path, *, retain_days: float = 7.0, max_rows: int = 1_000_000) -> Config:
    changes = ChangesConfig(retain_days=retain_days, max_rows=max_rows)
    return replace(make_config(tmp_path), changes=changes)


def run_cycle(config: Config, clock: FakeClock, catalog: Sequence[Entity]) -> None:
    assert config.state_path is not None
    provider = FakeProvider(list(catalog))
    result = run_once(config, config.state_path, clock, providers={"fake": provider}, force=True)
    assert result.providers[0].cycle_completed


def bounds(state_path: Path) -> tuple[int, int]:
    with Store.open(state_path, readonly=True) as store:
        return store.change_bounds()


GUARDS = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=None)


class TestCatalogComplete:
    """`catalogComplete`: whether an entity the catalog does not hold is gone (every provider
    completed a cycle) or maybe not read yet (a new state's first cycle, many bursts long)."""

    @staticmethod
    def completes(store: Store, provider: str) -> None:
        record = ProviderRecord(name=provider, state=ProviderState.RESTING, last_completed_at=T0)
        store.save_provider(record, T0)

    @staticmethod
    def said(store: Store) -> tuple[bool, bool]:
        changes = changes_page(store, since=0, limit=10).to_json()["catalogComplete"]
        walk = entities_page(store, None, 10).to_json()["catalogComplete"]
        return changes, walk

    def test_a_state_no_provider_ran_in_is_not_complete(self, reader: Store) -> None:
        assert self.said(reader) == (False, False)

    def test_complete_once_every_provider_completed_a_cycle(
        self, writer: Store, reader: Store
    ) -> None:
        upsert(writer, entities("a"), provider="first")
        self.completes(writer, "first")
        writer.save_provider(ProviderRecord(name="second", state=ProviderState.INTERSTITIAL), T0)
        assert self.said(reader) == (False, False), "the second is in its first cycle"

        self.completes(writer, "second")

        assert self.said(reader) == (True, True)

    def test_only_the_providers_named_count(self, writer: Store, reader: Store) -> None:
        """`serve` names its config's: one dropped from it before its first cycle completed
        never completes, and one named that has not begun yet has no record."""
        self.completes(writer, "first")
        writer.save_provider(ProviderRecord(name="dropped", state=ProviderState.INTERSTITIAL), T0)

        def said(*providers: str) -> tuple[bool, bool]:
            changes = changes_page(reader, 0, 10, None, providers).catalog_complete
            return changes, entities_page(reader, None, 10, providers).catalog_complete

        assert said("first") == (True, True)
        assert said("first", "not-begun") == (False, False)

    @pytest.mark.parametrize("purge", [False, True], ids=["reset", "purged"])
    def test_a_purged_provider_is_incomplete_until_its_next_cycle_completes(
        self, writer: Store, reader: Store, purge: bool
    ) -> None:
        """A reset keeps the catalog, which stays complete. A purge empties it and the next
        cycle walks it all again: what a consumer lacks then is not read yet, not gone (called
        complete, the empty catalog told a consumer that resynced, as its new store id makes
        it, to remove everything)."""
        upsert(writer, entities("a"))
        self.completes(writer, "fake")

        writer.reset_provider(writer.load_provider("fake"), purge=purge, now=T0 + 1)
        after_reset = self.said(reader)
        upsert(writer, entities("a"), T0 + 2)
        record = writer.load_provider("fake")
        writer.complete_cycle(replace(record, last_completed_at=T0 + 3), GUARDS, T0 + 3)

        assert after_reset == (not purge, not purge)
        assert self.said(reader) == (True, True)


class TestPruneChangeLog:
    def test_retain_days_is_days(self, writer: Store, tmp_path: Path) -> None:
        upsert(writer, entities("old"), T0)
        upsert(writer, entities("young"), T0 + 1.5 * DAY)

        assert prune_change_log(writer, feed_config(tmp_path, retain_days=1), T0 + 2 * DAY) == 1

        assert writer.change_bounds() == (1, 2)

    def test_max_rows_is_kept(self, writer: Store, tmp_path: Path) -> None:
        upsert(writer, entities("a", "b", "c"))
        assert prune_change_log(writer, feed_config(tmp_path, max_rows=1), T0) == 2

    def test_never_past_the_mirror_position(self, writer: Store, tmp_path: Path) -> None:
        upsert(writer, entities("a", "b", "c", "d", "e"))
        config = replace(feed_config(tmp_path, max_rows=1), catalog_directory=tmp_path / "cat")
        writer.set_position(position_name(tmp_path / "cat"), 3)
        writer.set_position(position_name(tmp_path / "elsewhere"), 1)  # not configured

        assert prune_change_log(writer, config, T0 + 30 * DAY) == 3

        assert writer.change_bounds() == (3, 5)

    def test_a_mirror_never_synced_keeps_every_change(self, writer: Store, tmp_path: Path) -> None:
        upsert(writer, entities("a", "b"))
        config = replace(feed_config(tmp_path, max_rows=1), catalog_directory=tmp_path / "cat")
        assert prune_change_log(writer, config, T0 + 30 * DAY) == 0


class TestRunPrunes:
    def test_a_run_prunes_what_retain_days_lets_go(self, tmp_path: Path) -> None:
        config, clock = feed_config(tmp_path, retain_days=1), FakeClock(start=T0)
        assert config.state_path is not None
        run_cycle(config, clock, entities("a", "b"))  # seq 1, 2
        clock.advance(2 * DAY)

        run_cycle(config, clock, entities("a", "c"))  # upsert c, delete b: seq 3, 4

        assert bounds(config.state_path) == (2, 4)

    def test_a_run_keeps_what_its_mirror_could_not_apply(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory\n")
        config = replace(feed_config(tmp_path, max_rows=1), catalog_directory=blocker / "catalog")
        clock = FakeClock(start=T0)
        assert config.state_path is not None
        provider = FakeProvider(entities("a", "b", "c"))

        providers = {"fake": provider}
        failed = run_once(config, config.state_path, clock, providers=providers, force=True)
        assert isinstance(failed.error, ConfigError)
        assert failed.error.path == "catalog.directory"
        assert bounds(config.state_path) == (0, 3)

        blocker.unlink()
        clock.advance(DAY)
        run_once(config, config.state_path, clock, providers={"fake": provider}, force=True)

        assert bounds(config.state_path) == (2, 3)
        assert mirrored(blocker / "catalog") == exported(config.state_path)


class TestMirrorAfterPruning:
    def test_a_mirror_set_up_after_the_log_was_pruned_gets_every_entity(
        self, tmp_path: Path
    ) -> None:
        config, clock = feed_config(tmp_path, max_rows=1), FakeClock(start=T0)
        assert config.state_path is not None
        run_cycle(config, clock, entities("a", "b", "c"))  # no mirror: pruned through 2
        assert bounds(config.state_path) == (2, 3)

        with_mirror = replace(config, catalog_directory=tmp_path / "catalog")
        run_cycle(with_mirror, clock, entities("a", "b", "c"))

        assert len(mirrored(tmp_path / "catalog")) == 3
        assert mirrored(tmp_path / "catalog") == exported(config.state_path)

    @pytest.mark.parametrize("bounded", [False, True])
    def test_a_mirror_behind_the_pruned_mark_is_rebuilt(
        self, writer: Store, tmp_path: Path, bounded: bool
    ) -> None:
        directory = tmp_path / "catalog"
        upsert(writer, entities("a"))
        sync_mirror(writer, directory)  # position 1
        upsert(writer, entities("b", "c", "d"), T0 + 1)
        writer.prune_changes(T0 + 2, max_rows=1)  # pruned through 3: the mirror missed b and c

        stats = sync_mirror(writer, directory, cancelled=(lambda: False) if bounded else None)

        assert stats.rebuilt
        assert len(mirrored(directory)) == 4
        assert writer.get_position(position_name(directory)) == 4

    def test_a_caught_up_mirror_stays_put_when_every_change_is_pruned(
        self, writer: Store, tmp_path: Path
    ) -> None:
        directory = tmp_path / "catalog"
        upsert(writer, entities("a", "b"))
        sync_mirror(writer, directory)
        writer.prune_changes(T0 + 1, max_rows=10)
        assert writer.change_bounds() == (2, 2)

        with structlog.testing.capture_logs() as logs:
            stats = sync_mirror(writer, directory, cancelled=lambda: False)

        assert (stats.rebuilt, stats.written, stats.position) == (False, 0, 2)
        assert [entry for entry in logs if entry["log_level"] == "warning"] == []
