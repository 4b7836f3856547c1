"""v1 API names freed without an event about their holder: the claimant waiting on the name
takes it at once, not a cycle later (`names_freed`, and the Project and Namespace events).

Projects `zq` (component `b-c`) and `zq-b` (component `c`), both with endpoint `e`, both want
`zq-b-c-e`: `zq`'s component sorts first and holds it, `zq-b`'s waits with a hashed name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_events_v1 import SCHEMA, Scenario, event
from test_walk_v1 import catalog, config_for, until_completed

from choreo_ingest.store import Store

from sim_support import expected_catalog

PLAIN = "zq-b-c-e"


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    """The world mirrored, then the two claimants added and mapped by their events."""
    scenario = Scenario(tmp_path)
    _claimants(scenario, ("zq", "b-c"), ("zq-b", "c"))
    assert catalog(scenario.state_path)[scenario.ref("Component", "b-c")] == {_plain(scenario)}
    return scenario


def _claimants(scenario: Scenario, *owners: tuple[str, str]) -> None:
    """Each (project, component) added with endpoint `e`, mapped by its events."""
    ns, world = scenario.namespace, scenario.world
    for project, component in owners:
        world.add_project(ns, project)
        world.add_component(ns, project, component, endpoints={"e": _http()})
    scenario.send(
        *(event("Project", project, ns, "created") for project, _ in owners),
        *(event("Component", component, ns, "created") for _, component in owners),
    )
    scenario.drain()


def _http() -> dict[str, Any]:
    return {"type": "HTTP", "port": 80, "schema": SCHEMA}


def _plain(scenario: Scenario) -> str:
    return scenario.ref("API", PLAIN)


def _waiting(scenario: Scenario) -> str:
    """The hashed API of `zq-b`'s `c`, which waits on the plain name."""
    [hashed] = catalog(scenario.state_path)[scenario.ref("Component", "c")]
    assert hashed != _plain(scenario)
    return hashed


def _changes_since(scenario: Scenario, seq: int) -> list[tuple[str, str]]:
    with Store.open(scenario.state_path, readonly=True) as store:
        return [(row.op, row.ref) for row in store.changes(seq)]


def _last_seq(scenario: Scenario) -> int:
    with Store.open(scenario.state_path, readonly=True) as store:
        return store.last_change_seq()


def test_a_holder_the_walk_finds_gone_hands_its_name_on_right_after_the_cycle(
    scenario: Scenario,
) -> None:
    """`zq`'s `b-c` is deleted and no event comes: the cycle that finds it gone maps `c` against
    its claim, which only the sweep prunes. The sweep queues an event about `c`, which the run
    applies after the cycle: `c` takes the plain name then, not a whole cycle later."""
    hashed = _waiting(scenario)
    scenario.world.delete_component(scenario.namespace, "zq", "b-c")
    seq = _last_seq(scenario)

    scenario.clock.advance(scenario.config.incremental.rest_length + 1)
    until_completed(scenario.config, scenario.api, scenario.clock)

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "c")] == {_plain(scenario)}
    assert hashed not in found
    assert found == expected_catalog(scenario.world)
    changes = _changes_since(scenario, seq)
    plain = _plain(scenario)
    assert [op for op, ref in changes if ref == plain][-1] == "upsert"
    assert [op for op, ref in changes if ref == hashed] == ["delete"]
    with Store.open(scenario.state_path, readonly=True) as store:
        assert store.pending_events("openchoreo") == []


def test_a_project_deleted_event_hands_the_names_of_its_components_on(
    scenario: Scenario,
) -> None:
    """The Project event removes `zq` with `b-c`: `c` takes `zq-b-c-e` in that event's drain."""
    hashed = _waiting(scenario)
    scenario.world.delete_project(scenario.namespace, "zq")

    scenario.send(event("Project", "zq", scenario.namespace, "deleted"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "c")] == {_plain(scenario)}
    assert hashed not in found
    assert found == expected_catalog(scenario.world)


def test_a_namespace_deleted_event_releases_its_claims_on_api_names(
    scenario: Scenario,
) -> None:
    """The namespace goes (and `b-c`'s claim with it), then is made again holding only `zq-b`'s
    `c`: the events that bring `c` back give it the plain name, not a hashed one that the
    claim of a component long gone would keep until the sweep."""
    ns, world = scenario.namespace, scenario.world
    world.delete_org(ns)
    scenario.send(event("Namespace", ns, "", "deleted"))
    scenario.drain()
    gone = (f"component:{ns}/", f"api:{ns}/")
    assert not any(ref.startswith(gone) for ref in catalog(scenario.state_path))

    world.add_org(ns)
    world.add_project(ns, "zq-b")
    world.add_component(ns, "zq-b", "c", endpoints={"e": _http()})
    scenario.send(
        event("Project", "zq-b", ns, "created"),
        event("Component", "c", ns, "created"),
    )
    scenario.drain()

    assert catalog(scenario.state_path)[scenario.ref("Component", "c")] == {_plain(scenario)}


def test_a_holder_the_walk_finds_without_the_endpoint_hands_its_name_on_right_after_the_cycle(
    scenario: Scenario,
) -> None:
    """Project `zr`'s `yy-d` and project `zr-yy`'s `d` (endpoint `e`) both want `zr-yy-d-e`;
    `yy-d` sorts first and holds it, and the walk lists `d` first, a page before it. `yy-d`'s
    workload drops `e` and no event comes: the cycle maps `d` against `yy-d`'s claim, which
    `yy-d`'s page leaves (it claims only the names it has) and the sweep prunes. `d` takes the
    name right after the cycle, not a whole cycle later."""
    ns, world = scenario.namespace, scenario.world
    _claimants(scenario, ("zr", "yy-d"), ("zr-yy", "d"))
    plain = scenario.ref("API", "zr-yy-d-e")
    assert catalog(scenario.state_path)[scenario.ref("Component", "yy-d")] == {plain}
    [hashed] = catalog(scenario.state_path)[scenario.ref("Component", "d")]
    world.update_workload(ns, "yy-d-workload", {"endpoints": {"f": _http()}})

    config = config_for(scenario.state_path, chunk_size=1)
    scenario.clock.advance(config.incremental.rest_length + 1)
    until_completed(config, scenario.api, scenario.clock)

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "d")] == {plain}
    assert hashed not in found
