"""An event's delta that asks for a fresh walk (`Delta.refresh`: a namespace OpenChoreo serves
again, with what it held all along) stores the request in the transaction that applies the
delta and takes the event out of the inbox: a kill leaves both or neither."""

from __future__ import annotations

from pathlib import Path

from choreo_ingest.models import (
    EVENT_ASKED,
    EVENTS_LOST,
    REFRESH_REASON_FACT,
    REFRESH_REQUESTED_FACT,
    Delta,
)
from choreo_ingest.store import Store

from fakes import make_entity

T0 = 1_800_000_000.0


def test_the_request_for_a_walk_is_stored_with_the_delta_and_the_events_removal(
    tmp_path: Path,
) -> None:
    statements: list[str] = []
    with Store.open(
        tmp_path / "state.db", tracer=lambda sql, _: statements.append(" ".join(sql.split()))
    ) as store:
        store.migrate()
        (seq,) = store.add_events("fake", [{"kind": "Namespace", "name": "acme"}], T0)
        statements.clear()

        store.apply_event("fake", 1, seq, Delta(upserts=[make_entity("acme")], refresh=True), T0)

        assert store.facts("fake")[REFRESH_REQUESTED_FACT] == "2027-01-15T08:00:00Z"
        assert store.facts("fake")[REFRESH_REASON_FACT] == EVENT_ASKED
        assert store.pending_event_count("fake") == 0
    begins = [i for i, sql in enumerate(statements) if sql.upper().startswith("BEGIN")]
    commits = [i for i, sql in enumerate(statements) if sql.upper().startswith("COMMIT")]
    assert len(begins) == len(commits) == 1
    writes = [
        i
        for i, sql in enumerate(statements)
        if sql.startswith(("INSERT INTO provider_facts", "DELETE FROM event_inbox"))
    ]
    assert len(writes) == 3  # the request, its reason, the event's removal
    assert all(begins[0] < i < commits[0] for i in writes)


def test_a_delta_that_asks_for_no_walk_stores_no_request(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        store.migrate()
        (seq,) = store.add_events("fake", [{"kind": "Namespace", "name": "acme"}], T0)
        store.apply_event("fake", 1, seq, Delta(upserts=[make_entity("acme")]), T0)
        assert REFRESH_REQUESTED_FACT not in store.facts("fake")


def test_a_walk_asked_for_by_an_event_does_not_hide_that_events_were_lost(store: Store) -> None:
    """Events refused by a full inbox, then a delta asking for a walk before the run applies the
    request: the request stays the lost events' (a warning), not the event's (info)."""
    (seq,) = store.add_events("fake", [{"kind": "Namespace", "name": "acme"}], T0)
    store.set_facts("fake", {REFRESH_REQUESTED_FACT: "x", REFRESH_REASON_FACT: EVENTS_LOST}, T0)

    store.apply_event("fake", 1, seq, Delta(upserts=[make_entity("acme")], refresh=True), T0)

    assert store.facts("fake")[REFRESH_REASON_FACT] == EVENTS_LOST
