"""v1 pagination: `{items, pagination}`, refilled pages, clamped limits, 500 for bad cursors."""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from choreo_ingest.simulator.world import World

from sim_support import walk_v1

if TYPE_CHECKING:
    from conftest import FakeClock, SimulatorFactory

CURSOR_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")
INTERNAL_ERROR = {"error": "Internal server error", "code": "INTERNAL_ERROR"}


@pytest.fixture
def world() -> World:
    return World.generate(orgs=5, projects=4, components=12, seed=4, hidden_fraction=0.3)


def listings(world: World) -> dict[str, tuple[str, list[str]]]:
    ns = next(world.v1_namespaces())["metadata"]["name"]

    def names(resources: Any) -> list[str]:
        return [resource["metadata"]["name"] for resource in resources]

    return {
        "namespaces": ("/namespaces", names(world.v1_namespaces())),
        "projects": (f"/namespaces/{ns}/projects", names(world.v1_projects(ns))),
        "components": (f"/namespaces/{ns}/components", names(world.v1_components(ns))),
        "workloads": (f"/namespaces/{ns}/workloads", names(world.v1_workloads(ns))),
    }


def first_page(client: httpx.Client, path: str, limit: int = 1) -> dict[str, Any]:
    response = client.get(path, params={"limit": limit})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


@pytest.mark.parametrize("listing", ["namespaces", "projects", "components", "workloads"])
@pytest.mark.parametrize("limit", [1, 3, None, 100], ids=lambda v: f"limit={v}")
def test_walk_returns_every_visible_item_once_in_order(
    simulate_v1: SimulatorFactory, world: World, listing: str, limit: int | None
) -> None:
    _, client = simulate_v1(world)
    path, expected = listings(world)[listing]
    params = {} if limit is None else {"limit": limit}
    items, pages = walk_v1(client, path, **params)
    assert [item["metadata"]["name"] for item in items] == expected
    assert pages[-1]["pagination"] == {}
    for page in pages[:-1]:
        assert CURSOR_ALPHABET.match(page["pagination"]["nextCursor"])


def test_pages_are_refilled_past_hidden_items(simulate_v1: SimulatorFactory) -> None:
    world = World.generate(1, 3, 30, seed=1, hidden_fraction=0.6)
    _, client = simulate_v1(world)
    path, expected = listings(world)["components"]
    items, pages = walk_v1(client, path, limit=7)
    assert [item["metadata"]["name"] for item in items] == expected
    assert len(pages) > 2
    assert all(len(page["items"]) == 7 for page in pages[:-1])


def test_full_page_may_be_followed_by_an_empty_last_page(simulate_v1: SimulatorFactory) -> None:
    """Only the missing nextCursor ends a listing: hidden items after a full page mean one more."""
    world = World.empty()
    world.add_org("acme")
    world.add_project("acme", "shop")
    for name in ("a", "b", "zz-secret"):
        world.add_component("acme", "shop", name, hidden=name.startswith("zz"))
    _, client = simulate_v1(world)
    _, pages = walk_v1(client, "/namespaces/acme/components", limit=2)
    assert [len(page["items"]) for page in pages] == [2, 0]
    assert pages[0]["pagination"]["nextCursor"]
    assert pages[1]["pagination"] == {}


class TestLimit:
    @pytest.fixture
    def big(self) -> World:
        return World.generate(1, 1, 130, hidden_fraction=0.0)

    @pytest.mark.parametrize(
        ("limit", "size"),
        [(None, 20), ("5", 5), ("100", 100), ("5000", 100), ("0", 20), ("-3", 20)],
        ids=["default", "five", "max", "above-max", "zero", "negative"],
    )
    def test_limit_is_clamped_not_rejected(
        self, simulate_v1: SimulatorFactory, big: World, limit: str | None, size: int
    ) -> None:
        _, client = simulate_v1(big)
        path, _ = listings(big)["components"]
        params = {} if limit is None else {"limit": limit}
        page = client.get(path, params=params).json()
        assert len(page["items"]) == size
        assert page["pagination"]["nextCursor"]

    @pytest.mark.parametrize("limit", ["abc", "1.5", ""], ids=["word", "float", "empty"])
    def test_non_integer_limit_is_a_text_400_before_auth(
        self, simulate_v1: SimulatorFactory, big: World, limit: str
    ) -> None:
        api, client = simulate_v1(big, token="t")
        response = client.get("/namespaces", params={"limit": limit})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.startswith("Invalid format for parameter limit:")
        assert api.stats.responses_by_status == {400: 1}


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class TestCursors:
    @pytest.mark.parametrize(
        "cursor",
        [
            "not a cursor!",
            _b64("plain text"),
            _b64('{"v": 2, "l": "x", "a": "y", "t": 1}'),
            "A" * 600,
        ],
        ids=["garbage", "not-json", "unknown-version", "too-long"],
    )
    def test_bad_cursor_is_an_internal_error(
        self, simulate_v1: SimulatorFactory, world: World, cursor: str
    ) -> None:
        _, client = simulate_v1(world)
        response = client.get("/namespaces", params={"cursor": cursor})
        assert (response.status_code, response.json()) == (500, INTERNAL_ERROR)

    def test_cursor_of_another_listing_is_an_internal_error(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world)
        path, _ = listings(world)["components"]
        cursor = first_page(client, path)["pagination"]["nextCursor"]
        project = next(world.v1_components(path.split("/")[2]))["spec"]["owner"]["projectName"]
        filtered = client.get(path, params={"cursor": cursor, "project": project})
        assert filtered.status_code == 500
        other = client.get(path.replace("components", "workloads"), params={"cursor": cursor})
        assert other.status_code == 500

    def test_expired_cursor_is_an_internal_error_and_counted(
        self, simulate_v1: SimulatorFactory, world: World, clock: FakeClock
    ) -> None:
        api, client = simulate_v1(world, cursor_ttl=300.0)
        cursor = first_page(client, "/namespaces")["pagination"]["nextCursor"]
        clock.advance(299)
        assert client.get("/namespaces", params={"cursor": cursor}).status_code == 200
        clock.advance(2)
        response = client.get("/namespaces", params={"cursor": cursor})
        assert (response.status_code, response.json()) == (500, INTERNAL_ERROR)
        assert api.stats.expired_cursors == 1
        assert api.stats.responses_by_status == {200: 2, 500: 1}

    @pytest.mark.parametrize(
        ("from_listing_start", "expected"),
        [(False, 200), (True, 500)],
        ids=["per-cursor", "from-listing-start"],
    )
    def test_expiry_counts_from_the_cursor_or_the_listing_start(
        self,
        simulate_v1: SimulatorFactory,
        world: World,
        clock: FakeClock,
        from_listing_start: bool,
        expected: int,
    ) -> None:
        _, client = simulate_v1(
            world, cursor_ttl=300.0, cursor_ttl_from_listing_start=from_listing_start
        )
        cursor = first_page(client, "/namespaces")["pagination"]["nextCursor"]
        clock.advance(200)
        second = client.get("/namespaces", params={"limit": 1, "cursor": cursor}).json()
        clock.advance(200)
        third = client.get(
            "/namespaces", params={"limit": 1, "cursor": second["pagination"]["nextCursor"]}
        )
        assert third.status_code == expected

    def test_repeat_cursor_bug_hands_back_the_same_cursor(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world, repeat_cursor_bug=True)
        cursor = first_page(client, "/namespaces")["pagination"]["nextCursor"]
        again = client.get("/namespaces", params={"limit": 1, "cursor": cursor}).json()
        assert again["pagination"] == {"nextCursor": cursor}

    def test_changes_between_pages_keep_order_and_never_repeat(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        world = World.generate(1, 2, 15, seed=8, hidden_fraction=0.0)
        _, client = simulate_v1(world)
        path, names = listings(world)["components"]
        ns = path.split("/")[2]
        project = next(world.v1_projects(ns))["metadata"]["name"]
        page = first_page(client, path, limit=10)
        seen = [item["metadata"]["name"] for item in page["items"]]
        victim = world.v1.component(ns, names[20])["spec"]["owner"]["projectName"]
        world.delete_component(ns, victim, names[20])
        world.add_component(ns, project, "aaa-too-early")
        world.add_component(ns, project, "zzz-late")
        cursor = page["pagination"].get("nextCursor")
        while cursor:
            page = client.get(path, params={"limit": 10, "cursor": cursor}).json()
            seen += [item["metadata"]["name"] for item in page["items"]]
            cursor = page["pagination"].get("nextCursor")
        assert seen == sorted(set(seen))
        assert "zzz-late" in seen
        assert "aaa-too-early" not in seen
        assert names[20] not in seen

    def test_cursor_into_a_deleted_namespace_ends_the_listing(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world)
        path, _ = listings(world)["workloads"]
        cursor = first_page(client, path)["pagination"]["nextCursor"]
        world.delete_org(path.split("/")[2])
        response = client.get(path, params={"cursor": cursor})
        assert response.json() == {"items": [], "pagination": {}}
