"""Org-era events applied while a cycle is under way, after the walk's page listed their change:
the event must still leave the catalog a fresh walk gives (`test_events_v1_mid_cycle` for v1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_events_openchoreo import REST, Platform

from choreo_ingest.models import ProviderState

from sim_support import expected_refs


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    """`a` (project `shop`, endpoints `b-c` and `d`) holds the API name `a-b-c` that the
    endpoint `c` of `a-b` (project `web`) gives too, mirrored by a cycle: `a-b`'s API has a
    hashed name. A cycle walks `a` first of the components, then `cart`, ..., then `a-b`."""
    platform = Platform(tmp_path)
    platform.world.add_component("acme", "shop", "a", endpoints={"b-c": REST, "d": REST})
    platform.world.add_component("acme", "web", "a-b", endpoints={"c": REST})
    platform.complete_cycle()
    assert platform.provided("a") == ["api:acme/a-b-c", "api:acme/a-d"]
    assert platform.provided("a-b") != ["api:acme/a-b-c"]
    return platform


def without_b_c(platform: Platform) -> str:
    platform.world.set_endpoints("acme", "shop", "a", {"d": REST})
    return "shop"


def renamed(platform: Platform) -> str:
    platform.world.set_endpoints("acme", "shop", "a", {"b-e": REST})
    return "shop"


def renamed_in_case(platform: Platform) -> str:
    """`a-B-c` is no plain name: its API has a hashed one, and the plain `a-b-c` is free."""
    platform.world.set_endpoints("acme", "shop", "a", {"B-c": REST})
    return "shop"


def moved_without_b_c(platform: Platform) -> str:
    """Made again in project `api`, listed before `shop`, without `b-c`."""
    platform.world.delete_component("acme", "shop", "a")
    platform.world.add_project("acme", "api")
    platform.world.add_component("acme", "api", "a", endpoints={"d": REST})
    return "api"


CHANGES: dict[str, Callable[[Platform], str]] = {
    "endpoint-gone": without_b_c,
    "endpoint-renamed": renamed,
    "endpoint-renamed-in-case": renamed_in_case,
    "moved-without-the-endpoint": moved_without_b_c,
}


@pytest.mark.parametrize("action", ["updated", "deleted"])
@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_holder_the_walk_listed_without_the_endpoint_hands_the_name_on_in_its_event(
    platform: Platform, change: str, action: str
) -> None:
    """`a` gives the name up (its endpoint `b-c` gone, renamed, renamed in case, or left behind
    in a move), and the walk's page lists it so before its event is applied (`deleted`: and `a`
    is deleted after that page). The page maps `a` without `b-c`, whose claim holds the name
    until the cycle's sweep: the event must release that claim too and hand the name on to
    `a-b`, not leave `a-b` hashed until the next cycle."""
    hashed = platform.provided("a-b")
    project = CHANGES[change](platform)
    platform.end_rest()
    platform.provider.traversed.clear()
    platform.run(pause_after="component:acme/a")
    assert platform.state() is ProviderState.INTERSTITIAL
    assert "component:acme/a-b" not in platform.provider.traversed
    if action == "deleted":
        platform.world.delete_component("acme", project, "a")
    platform.feed_component("a", action, project=project)

    platform.run(pages=1)  # the event (an `updated` waits 2 s), then the next component's page

    assert "component:acme/a-b" not in platform.provider.traversed
    assert platform.provided("a-b") == ["api:acme/a-b-c"]
    assert set(hashed).isdisjoint(platform.refs())
    body = platform.body("api:acme/a-b-c")
    assert body is not None
    assert body["metadata"]["annotations"]["openchoreo.io/component"] == "a-b"
    platform.complete_cycle()
    assert platform.refs() == expected_refs(platform.world)
    assert platform.provided("a-b") == ["api:acme/a-b-c"]


@pytest.mark.parametrize("with_project", [True, False], ids=["created", "created-without-project"])
def test_a_component_the_walk_listed_moved_takes_its_apis_along_in_its_event(
    tmp_path: Path, with_project: bool
) -> None:
    """`m` (project `web`, endpoint `old`) is made again in project `api` (listed first) with
    endpoint `new`, and the `deleted` about `web` is lost (or one without `project` stands for
    both). The walk's page maps `m` in `api` before the `created` is applied, writing its
    Component over: the event must still find the project it left (its claims there) and take
    `m-old` along, not leave it until the sweep."""
    platform = Platform(tmp_path)
    platform.world.add_project("acme", "api")
    platform.world.add_component("acme", "web", "m", endpoints={"old": REST})
    platform.complete_cycle()
    platform.world.delete_component("acme", "web", "m")
    platform.world.add_component("acme", "api", "m", endpoints={"new": REST})
    platform.end_rest()
    platform.provider.traversed.clear()
    platform.run(pause_after="component:acme/m")
    assert "api:acme/m-old" in platform.refs()
    if with_project:
        platform.feed_component("m", "created", project="api")
    else:
        platform.feed("Component", "m", "created", namespace="acme")

    platform.run(pages=1)

    assert "component:acme/frontend" not in platform.provider.traversed  # web's, still to come
    assert platform.refs() == expected_refs(platform.world)
