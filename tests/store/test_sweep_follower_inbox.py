"""The OpenChoreo sweep follower (`names_freed`) in a real cycle completion, on both backends:
what it queues, and what it leaves of the events already waiting in the inbox."""

from __future__ import annotations

from typing import Any

from store_support import query_plan

from choreo_ingest.models import EntityIteratorResult, IndexEntry, ProviderState
from choreo_ingest.providers.openchoreo.api_names import CLAIMS
from choreo_ingest.providers.openchoreo.names_freed import NAMES_FREED
from choreo_ingest.store import PostgresLocation, StateLocation, Store, SweepGuards

from fakes import make_entity

T0 = 1_800_000_000.0
GUARDS = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=None)
GROUP = "acme/a-b-c"


def _claim(project: str, component: str, endpoint: str, holds: bool) -> IndexEntry:
    value = {"owner": [project, component], "endpoint": endpoint, "holds": holds}
    return IndexEntry(CLAIMS, f"{GROUP}|{project}/{component}/{endpoint}", GROUP, value)


def _cycles(store: Store, before_sweep: list[dict[str, str]]) -> int:
    """Cycle 1 maps holder `a` (shop) and `a-b` (web) waiting; cycle 2 lists only `a-b`; the
    inbox holds `before_sweep` when cycle 2 completes."""
    record = store.load_provider("openchoreo")
    for cycle, rows in (
        (1, [_claim("shop", "a", "b-c", True), _claim("web", "a-b", "c", False)]),
        (2, [_claim("web", "a-b", "c", False)]),
    ):
        record.cycle_id, record.state = cycle, ProviderState.BURSTING
        store.start_cycle(record, T0 + cycle)
        page = EntityIteratorResult(True, [make_entity("e")], index=rows)
        store.commit_page("openchoreo", cycle, page, None, T0 + cycle)
        record.state = ProviderState.RESTING
        if cycle == 2 and before_sweep:
            store.add_events("openchoreo", before_sweep, T0 + 2.5)
        queued = store.complete_cycle(record, GUARDS, T0 + cycle + 0.9, NAMES_FREED).queued
    return queued


def test_the_sweep_queues_the_waiting_component_on_either_backend(store: Store) -> None:
    assert _cycles(store, []) == 1
    [event] = store.pending_events("openchoreo")
    assert event.body == {
        "kind": "Component",
        "namespace": "acme",
        "project": "web",
        "name": "a-b",
        "action": "created",
    }
    rows = store.index_by_group_prefix("openchoreo", CLAIMS, "acme/")
    assert [row.key for row in rows] == [f"{GROUP}|web/a-b/c"]


def test_a_deleted_event_waiting_about_the_component_is_not_replaced_by_the_sweeps(
    store: Store,
) -> None:
    """`a-b` went after its page was written, and the forwarder's org-era `deleted` about it
    waits in the inbox (it arrived during the burst that completes the cycle). The sweep's
    `created` about `a-b` has the same inbox key (kind, namespace, name, project), so it
    replaced the `deleted`: the org era's `deleted` removes the component without a read, a
    `created` re-reads it and keeps one the API still serves (deletion under way). The event
    waiting re-reads (or removes) `a-b` anyway: it stays, and the sweep queues none."""
    deleted = {
        "kind": "Component",
        "namespace": "acme",
        "project": "web",
        "name": "a-b",
        "action": "deleted",
    }

    queued = _cycles(store, [deleted])

    assert queued == 1  # named all the same: the run drains right after the cycle
    actions = [event.body["action"] for event in store.pending_events("openchoreo")]
    assert actions == ["deleted"]


def test_a_group_prefix_read_finds_its_rows_through_the_groups_index(
    any_location: StateLocation,
) -> None:
    """A Project or Namespace (Organization) gone reads its claims by group prefix: both
    backends find them through `provider_index_by_group`, a range on the group, not by a scan
    of every claim (0.4 s at 300,000 claims, for each project gone)."""
    seen: list[tuple[str, Any]] = []
    with any_location.open(tracer=lambda sql, params: seen.append((sql, params))) as store:
        store.migrate()
        record = store.load_provider("openchoreo")
        record.cycle_id, record.state = 1, ProviderState.BURSTING
        store.start_cycle(record, T0)
        rows = [_claim("shop", "a", "b-c", True), IndexEntry(CLAIMS, "k", "acme-2/x", {})]
        store.commit_page("openchoreo", 1, EntityIteratorResult(True, [], index=rows), None, T0)
        seen.clear()
        found = store.index_by_group_prefix("openchoreo", CLAIMS, "acme/")
    assert [row.group for row in found] == [GROUP]
    [(sql, params)] = [(sql, params) for sql, params in seen if "provider_index" in sql]
    plan = query_plan(any_location, sql, params)
    assert "provider_index_by_group" in plan, plan
    if isinstance(any_location, PostgresLocation):
        [condition] = [line for line in plan.splitlines() if "Index Cond" in line]
        assert "grp >=" in condition, plan
    else:
        assert "grp>?" in plan.replace(" ", "")


def test_a_forwarder_event_without_project_about_the_component_stands_for_the_sweeps(
    store: Store,
) -> None:
    """v1's forwarder never sends `project`, so its event about `a-b` and the sweep's (which
    names the claim's project) were two objects to the inbox: `a-b` was re-read twice. The
    waiting one stands for the sweep's, which is still counted (the run drains after it)."""
    forwarded = {"kind": "Component", "namespace": "acme", "name": "a-b", "action": "updated"}

    assert _cycles(store, [forwarded]) == 1

    assert [event.body for event in store.pending_events("openchoreo")] == [forwarded]
