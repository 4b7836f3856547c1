"""Org-era API names freed without an event about their holder: the claimant waiting on the
name takes it at once, not a cycle later (`names_freed`, and the Project and Organization
events).

Component `a`'s endpoint `b-c` (project `shop`) and component `a-b`'s endpoint `c` (project
`web`) both give `a-b-c`: `(shop, a, b-c)` sorts first and holds it, `a-b`'s API is hashed."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_events_openchoreo import REST, Platform

PLAIN = "api:acme/a-b-c"


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    """The platform mirrored, with the two claimants mapped by a cycle."""
    platform = Platform(tmp_path)
    platform.world.add_component("acme", "shop", "a", endpoints={"b-c": REST})
    platform.world.add_component("acme", "web", "a-b", endpoints={"c": REST})
    platform.complete_cycle()
    assert platform.provided("a") == [PLAIN]
    return platform


def _waiting(platform: Platform) -> str:
    [hashed] = platform.provided("a-b")
    assert hashed != PLAIN
    return hashed


def _assert_handed_on(platform: Platform, hashed: str) -> None:
    assert platform.provided("a-b") == [PLAIN]
    assert hashed not in platform.refs()
    body = platform.body(PLAIN)
    assert body is not None
    assert body["metadata"]["annotations"]["openchoreo.io/component"] == "a-b"


def test_a_holder_the_walk_finds_gone_hands_its_name_on_right_after_the_cycle(
    platform: Platform,
) -> None:
    """`a` is deleted and no event comes: the cycle that finds it gone maps `a-b` against its
    claim, which only the sweep prunes; the sweep queues an event about `a-b`, applied by the
    same run, so `a-b` takes the name then, not a whole cycle later."""
    hashed = _waiting(platform)
    platform.world.delete_component("acme", "shop", "a")
    seq = platform.last_change()

    platform.end_rest()
    platform.complete_cycle()

    _assert_handed_on(platform, hashed)
    changes = platform.changes_since(seq)
    assert [op for op, ref in changes if ref == PLAIN][-1] == "upsert"
    assert [op for op, ref in changes if ref == hashed] == ["delete"]
    assert platform.inbox() == []


def test_a_project_deleted_event_hands_the_names_of_its_components_on(
    platform: Platform,
) -> None:
    """The Project event removes `shop` with `a`: `a-b` takes `a-b-c` in that event's run."""
    hashed = _waiting(platform)
    platform.world.delete_project("acme", "shop")
    platform.feed("Project", "shop", "deleted", namespace="acme")

    platform.run()

    assert "component:acme/a" not in platform.refs()
    _assert_handed_on(platform, hashed)


def test_an_organization_deleted_event_releases_its_claims_on_api_names(
    platform: Platform,
) -> None:
    """The organization goes (and `a`'s claim with it), then is made again holding only `a-b`:
    the events that bring `a-b` back give it the plain name, not a hashed one that the claim
    of a component long gone would keep until the sweep."""
    platform.world.delete_org("acme")
    platform.feed("Organization", "acme", "deleted")
    platform.run()
    assert not any(ref.startswith(("component:acme/", "api:acme/")) for ref in platform.refs())

    platform.world.add_org("acme")
    platform.world.add_project("acme", "web")
    platform.world.add_component("acme", "web", "a-b", endpoints={"c": REST})
    platform.feed("Organization", "acme", "created")
    platform.feed("Project", "web", "created", namespace="acme")
    platform.feed_component("a-b", "created", project="web")
    platform.run()

    assert platform.provided("a-b") == [PLAIN]
