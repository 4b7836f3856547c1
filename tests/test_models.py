from __future__ import annotations

from dataclasses import replace

from choreo_ingest.models import Delta, IndexEntry

from fakes import make_entity


def test_a_delta_then_another_keeps_the_later_entity_and_index_row() -> None:
    """Two components' deltas for one event (a workload that moved): where both write one
    entity or one index row, the later one's stands; everything else of both is kept."""
    shared, mine, theirs = make_entity("shared"), make_entity("mine"), make_entity("theirs")
    newer = replace(shared, body={**shared.body, "spec": {"type": "website"}})
    first = Delta(
        upserts=[shared, mine],
        removals=["api:default/old"],
        removal_scopes=["ns/p/mine"],
        index=[IndexEntry("workload", "ns/w", "ns/mine", {"at": 1})],
    )
    later = Delta(
        upserts=[newer, theirs],
        removal_scopes=["ns/p/theirs"],
        index=[IndexEntry("workload", "ns/w", "ns/theirs", {"at": 2})],
        refresh=True,
    )

    both = first.then(later)

    assert {entity.ref: entity.body for entity in both.upserts} == {
        shared.ref: newer.body,
        mine.ref: mine.body,
        theirs.ref: theirs.body,
    }
    assert list(both.removals) == ["api:default/old"]
    assert list(both.removal_scopes) == ["ns/p/mine", "ns/p/theirs"]
    assert [entry.group for entry in both.index] == ["ns/mine", "ns/theirs"]  # the last one wins
    assert both.refresh


def test_what_an_earlier_delta_upserts_and_a_later_removes_leaves() -> None:
    """By ref, or within a scope the later one removes; unless the later one upserts it too."""
    named, scoped, again = make_entity("named"), make_entity("in-scope"), make_entity("again")
    scoped = replace(scoped, scope="ns/p/x/api")
    again = replace(again, scope="ns/p/x")
    first = Delta(upserts=[named, scoped, again, make_entity("kept")])
    later = Delta(upserts=[again], removals=[named.ref], removal_scopes=["ns/p/x"])

    both = first.then(later)

    assert sorted(entity.name for entity in both.upserts) == ["again", "kept"]
    assert list(both.removals) == [named.ref]
