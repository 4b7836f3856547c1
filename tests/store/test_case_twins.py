"""Refs that differ only in case (an API renamed `httpApi` -> `httpapi`) are two rows here but one
entity to a reader that folds case, as Backstage does. Whichever path removes one of them while
the other lives on, the change log ends on an upsert of the live one, on both backends."""

from __future__ import annotations

from dataclasses import replace

from store_support import one_page_cycle

from choreo_ingest.models import Delta, Entity, EntityIteratorResult
from choreo_ingest.store import Store, SweepGuards

from fakes import make_entity

T0 = 1_800_000_000.0
OPEN = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=None)
GUARDED = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=10)
SCOPE = "acme/web/cart"


def api(name: str, scope: str = SCOPE) -> Entity:
    return replace(make_entity(name, kind="API"), scope=scope)


def component() -> Entity:
    return replace(make_entity("cart"), scope=SCOPE)


def cycle(store: Store, entities: list[Entity], guards: SweepGuards = OPEN) -> int:
    return one_page_cycle(store, entities, guards, now=T0)


def folded_log(store: Store, since: int) -> list[tuple[str, str]]:
    return [(change.op, change.ref) for change in store.changes(since)]


def test_a_sweep_of_the_old_spelling_is_followed_by_an_upsert_of_the_new(store: Store) -> None:
    cycle(store, [component(), api("web-cart-httpApi")])
    since = store.last_change_seq()

    cycle(store, [component(), api("web-cart-httpapi")])

    assert folded_log(store, since) == [
        ("upsert", "api:default/web-cart-httpapi"),
        ("delete", "api:default/web-cart-httpApi"),
        ("upsert", "api:default/web-cart-httpapi"),
    ]
    apis = [body["metadata"]["name"] for body in store.iter_entities(kind="API")]
    assert apis == ["web-cart-httpapi"]


def test_a_rename_towards_capitals_ends_on_the_upsert_too(store: Store) -> None:
    cycle(store, [component(), api("web-cart-httpapi")])
    since = store.last_change_seq()

    cycle(store, [component(), api("web-cart-httpApi")])

    assert folded_log(store, since)[-2:] == [
        ("delete", "api:default/web-cart-httpapi"),
        ("upsert", "api:default/web-cart-httpApi"),
    ]


def test_both_spellings_removed_together_log_only_their_deletes(store: Store) -> None:
    cycle(store, [component(), api("web-cart-httpApi")])
    record = store.load_provider("fake")
    store.commit_page(
        "fake", record.cycle_id, EntityIteratorResult(False, [api("web-cart-httpapi")]), None, T0
    )
    since = store.last_change_seq()

    store.apply_delta("fake", record.cycle_id, Delta(removal_scopes=[SCOPE]), T0)

    assert sorted(folded_log(store, since)) == [
        ("delete", "api:default/web-cart-httpApi"),
        ("delete", "api:default/web-cart-httpapi"),
        ("delete", "component:default/cart"),
    ]


def test_an_event_that_renames_in_case_ends_on_the_upsert(store: Store) -> None:
    cycle(store, [component(), api("web-cart-httpApi")])
    record = store.load_provider("fake")
    since = store.last_change_seq()

    delta = Delta(upserts=[component(), api("web-cart-httpapi")], removal_scopes=[SCOPE])
    store.apply_delta("fake", record.cycle_id, delta, T0)

    assert folded_log(store, since)[-2:] == [
        ("delete", "api:default/web-cart-httpApi"),
        ("upsert", "api:default/web-cart-httpapi"),
    ]


def test_approving_a_held_back_removal_ends_on_the_live_twin(store: Store) -> None:
    others = [api(f"other-{n}", scope=f"acme/web/x{n}") for n in range(3)]
    cycle(store, [component(), api("web-cart-httpApi"), *others], GUARDED)
    assert cycle(store, [component(), api("web-cart-httpapi")], GUARDED) == 4
    since = store.last_change_seq()

    assert store.approve_removals("fake", T0) == 4

    log = folded_log(store, since)
    assert log.index(("delete", "api:default/web-cart-httpApi")) < len(log) - 1
    assert log[-1] == ("upsert", "api:default/web-cart-httpapi")


def test_removals_without_a_twin_log_no_upserts(store: Store) -> None:
    cycle(store, [component(), api("web-cart-httpApi"), api("web-cart-grpc")])
    since = store.last_change_seq()

    cycle(store, [component()])

    assert sorted(folded_log(store, since)) == [
        ("delete", "api:default/web-cart-grpc"),
        ("delete", "api:default/web-cart-httpApi"),
    ]


def test_the_upsert_of_the_live_twin_comes_right_after_the_delete_of_its_spelling(
    store: Store,
) -> None:
    cycle(store, [component(), api("web-cart-a"), api("web-cart-httpApi"), api("web-cart-z")])
    since = store.last_change_seq()

    cycle(store, [component(), api("web-cart-httpapi")])

    assert folded_log(store, since)[1:] == [
        ("delete", "api:default/web-cart-a"),
        ("delete", "api:default/web-cart-httpApi"),
        ("upsert", "api:default/web-cart-httpapi"),  # not after every delete: next to its own
        ("delete", "api:default/web-cart-z"),
    ]


def test_a_pages_removal_of_a_name_given_up_is_logged_before_the_newcomers_upsert(
    store: Store,
) -> None:
    """Component `c`'s `x-Api` gave up its name to component `c-x`'s `api` (another scope):
    the page removes the old entity before it writes the newcomer's."""
    cycle(store, [component(), api("p-c-x-Api")])
    record = store.load_provider("fake")
    since = store.last_change_seq()
    newcomer = api("p-c-x-api", scope="acme/p/c-x")

    page = EntityIteratorResult(False, [newcomer], removals=["api:default/p-c-x-Api"])
    store.commit_page("fake", record.cycle_id, page, None, T0)

    assert folded_log(store, since) == [
        ("delete", "api:default/p-c-x-Api"),
        ("upsert", "api:default/p-c-x-api"),
    ]
    assert store.entity_body("api:default/p-c-x-Api") is None


def test_a_removal_of_a_ref_the_page_or_delta_writes_keeps_it(store: Store) -> None:
    """Org-era names meet without case (`a` + `b-c`, `a-b` + `c`): the newcomer's entity takes
    the ref the displaced one gives up."""
    cycle(store, [component(), api("a-b-c")])
    record = store.load_provider("fake")
    taken = api("a-b-c", scope="acme/p/a-b")

    page = EntityIteratorResult(False, [taken], removals=[taken.ref])
    store.commit_page("fake", record.cycle_id, page, None, T0)
    store.apply_delta("fake", record.cycle_id, Delta(upserts=[taken], removals=[taken.ref]), T0)

    assert store.entity_body(taken.ref) is not None
    assert [op for op, _ in folded_log(store, 0)].count("delete") == 0


def test_a_deltas_removals_are_logged_before_its_upserts(store: Store) -> None:
    cycle(store, [component(), api("p-c-x-Api")])
    record = store.load_provider("fake")
    since = store.last_change_seq()
    newcomer = api("p-c-x-api", scope="acme/p/c-x")

    delta = Delta(upserts=[newcomer], removals=["api:default/p-c-x-Api"])
    store.apply_delta("fake", record.cycle_id, delta, T0)

    assert folded_log(store, since) == [
        ("delete", "api:default/p-c-x-Api"),
        ("upsert", "api:default/p-c-x-api"),
    ]
