"""Cursor pagination as the contract describes it, driven through an httpx transport."""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from choreo_ingest.simulator.world import World

if TYPE_CHECKING:
    from conftest import FakeClock, SimulatorFactory

CURSOR_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")


def walk(client: httpx.Client, path: str, limit: int | None = None) -> tuple[list[Any], list[Any]]:
    """Every item of a cursor listing, and the pages it came in."""
    params: dict[str, Any] = {"pagination": "cursor"}
    if limit is not None:
        params["limit"] = limit
    items: list[Any] = []
    pages: list[Any] = []
    while True:
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        pages.append(data)
        items.extend(data["items"])
        cursor = data["nextCursor"]
        if cursor == "":
            return items, pages
        assert len(cursor) <= 512
        assert CURSOR_ALPHABET.match(cursor)
        params["cursor"] = cursor


def first_listing_paths(world: World) -> dict[str, tuple[str, list[str]]]:
    org = next(world.orgs())["name"]
    project = next(world.projects(org))["name"]
    return {
        "orgs": ("/orgs", [o["name"] for o in world.orgs()]),
        "projects": (f"/orgs/{org}/projects", [p["name"] for p in world.projects(org)]),
        "components": (
            f"/orgs/{org}/projects/{project}/components",
            [c["name"] for c in world.components(org, project)],
        ),
    }


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["error"], str)
    return response.status_code, body["code"]


@pytest.fixture
def world() -> World:
    return World.generate(orgs=5, projects=4, components=23, seed=4, hidden_fraction=0.3)


@pytest.mark.parametrize("listing", ["orgs", "projects", "components"])
@pytest.mark.parametrize("limit", [1, 2, 5, None, 1024], ids=lambda v: f"limit={v}")
def test_walk_returns_every_visible_item_once_in_order(
    simulate: SimulatorFactory, world: World, listing: str, limit: int | None
) -> None:
    _, client = simulate(world)
    path, expected = first_listing_paths(world)[listing]
    items, _ = walk(client, path, limit)
    assert [item["name"] for item in items] == expected


def test_hidden_items_make_short_and_empty_pages_with_a_cursor(
    simulate: SimulatorFactory,
) -> None:
    world = World.generate(1, 1, 60, seed=1, hidden_fraction=0.5)
    _, client = simulate(world)
    path, expected = first_listing_paths(world)["components"]
    items, pages = walk(client, path, limit=1)
    assert [item["name"] for item in items] == expected
    assert any(page["items"] == [] and page["nextCursor"] for page in pages)
    _, pages = walk(client, path, limit=4)
    assert any(0 < len(page["items"]) < 4 and page["nextCursor"] for page in pages)


def test_limit_defaults_to_16(simulate: SimulatorFactory) -> None:
    world = World.generate(1, 1, 40, hidden_fraction=0.0)
    _, client = simulate(world)
    path, _ = first_listing_paths(world)["components"]
    data = client.get(path, params={"pagination": "cursor"}).json()["data"]
    assert len(data["items"]) == 16
    assert data["nextCursor"]


def test_limit_above_1024_is_clamped(simulate: SimulatorFactory) -> None:
    world = World.generate(1, 1, 1100, hidden_fraction=0.0)
    _, client = simulate(world)
    path, _ = first_listing_paths(world)["components"]
    data = client.get(path, params={"pagination": "cursor", "limit": 5000}).json()["data"]
    assert len(data["items"]) == 1024
    assert data["nextCursor"]


@pytest.mark.parametrize(
    "limit", ["0", "-3", "abc", "1.5", ""], ids=["zero", "negative", "word", "float", "empty"]
)
def test_bad_limit_is_invalid_input(simulate: SimulatorFactory, world: World, limit: str) -> None:
    _, client = simulate(world)
    response = client.get("/orgs", params={"pagination": "cursor", "limit": limit})
    assert error_of(response) == (400, "INVALID_INPUT")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        _b64("plain text"),
        _b64('{"v": 2, "l": "x", "a": "y", "t": 1}'),
        _b64('["a", "list"]'),
        "A" * 600,
    ],
    ids=["garbage", "not-json", "unknown-version", "not-an-object", "too-long"],
)
def test_malformed_cursor_is_rejected(
    simulate: SimulatorFactory, world: World, cursor: str
) -> None:
    _, client = simulate(world)
    response = client.get("/orgs", params={"limit": 2, "cursor": cursor})
    assert error_of(response) == (400, "INVALID_CURSOR_FORMAT")


def test_cursor_of_another_listing_is_rejected(simulate: SimulatorFactory, world: World) -> None:
    _, client = simulate(world)
    cursor = client.get("/orgs", params={"pagination": "cursor", "limit": 1}).json()["data"][
        "nextCursor"
    ]
    org = next(world.orgs())["name"]
    response = client.get(f"/orgs/{org}/projects", params={"limit": 1, "cursor": cursor})
    assert error_of(response) == (400, "INVALID_CURSOR_FORMAT")


class TestExpiry:
    def first_cursor(self, client: httpx.Client) -> str:
        response = client.get("/orgs", params={"pagination": "cursor", "limit": 1})
        cursor: str = response.json()["data"]["nextCursor"]
        assert cursor
        return cursor

    def test_cursor_older_than_ttl_gives_410_with_retryable_metadata(
        self, simulate: SimulatorFactory, world: World, clock: FakeClock
    ) -> None:
        api, client = simulate(world, cursor_ttl=300.0)
        cursor = self.first_cursor(client)
        clock.advance(301)
        response = client.get("/orgs", params={"limit": 1, "cursor": cursor})
        assert error_of(response) == (410, "CONTINUE_TOKEN_EXPIRED")
        assert response.json()["metadata"] == {"retryable": True, "code": "CONTINUE_TOKEN_EXPIRED"}
        assert api.stats.expired_cursors == 1

    def test_cursor_within_ttl_still_works(
        self, simulate: SimulatorFactory, world: World, clock: FakeClock
    ) -> None:
        _, client = simulate(world, cursor_ttl=300.0)
        cursor = self.first_cursor(client)
        clock.advance(299)
        assert client.get("/orgs", params={"limit": 1, "cursor": cursor}).status_code == 200

    def test_no_ttl_means_cursors_never_expire(
        self, simulate: SimulatorFactory, world: World, clock: FakeClock
    ) -> None:
        _, client = simulate(world, cursor_ttl=None)
        cursor = self.first_cursor(client)
        clock.advance(10 * 86_400)
        assert client.get("/orgs", params={"limit": 1, "cursor": cursor}).status_code == 200

    @pytest.mark.parametrize(
        ("from_listing_start", "expected"),
        [(False, 200), (True, 410)],
        ids=["per-cursor", "from-listing-start"],
    )
    def test_expiry_counts_from_the_cursor_or_the_listing_start(
        self,
        simulate: SimulatorFactory,
        world: World,
        clock: FakeClock,
        from_listing_start: bool,
        expected: int,
    ) -> None:
        _, client = simulate(
            world, cursor_ttl=300.0, cursor_ttl_from_listing_start=from_listing_start
        )
        cursor = self.first_cursor(client)
        clock.advance(200)
        second = client.get("/orgs", params={"limit": 1, "cursor": cursor})
        clock.advance(200)
        third = client.get(
            "/orgs", params={"limit": 1, "cursor": second.json()["data"]["nextCursor"]}
        )
        assert third.status_code == expected


class TestLegacyAndQuirks:
    def test_first_page_without_pagination_param_is_unpaginated(
        self, simulate: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate(world)
        data = client.get("/orgs", params={"limit": 2}).json()["data"]
        assert "nextCursor" not in data
        assert [o["name"] for o in data["items"]] == [o["name"] for o in world.orgs()]
        assert data["totalCount"] == data["pageSize"] == 5
        assert data["page"] == 1

    def test_server_flag_serves_cursor_mode_without_the_param(
        self, simulate: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate(world, cursor_first_page_always=True)
        data = client.get("/orgs", params={"limit": 2}).json()["data"]
        assert data["nextCursor"]
        assert "totalCount" not in data

    def test_server_without_cursor_support_never_paginates(
        self, simulate: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate(world, no_cursor_support=True)
        response = client.get("/orgs", params={"pagination": "cursor", "limit": 1, "cursor": "x"})
        data = response.json()["data"]
        assert "nextCursor" not in data
        assert data["totalCount"] == len(data["items"]) == 5

    def test_repeat_cursor_bug_hands_back_the_same_cursor(
        self, simulate: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate(world, repeat_cursor_bug=True)
        first = client.get("/orgs", params={"pagination": "cursor", "limit": 1}).json()["data"]
        second = client.get("/orgs", params={"limit": 1, "cursor": first["nextCursor"]})
        assert second.json()["data"]["nextCursor"] == first["nextCursor"]

    def test_changes_between_pages_keep_order_and_never_repeat(
        self, simulate: SimulatorFactory
    ) -> None:
        world = World.generate(1, 1, 30, seed=8, hidden_fraction=0.0)
        _, client = simulate(world)
        path, names = first_listing_paths(world)["components"]
        org, project = path.split("/")[2], path.split("/")[4]
        page = client.get(path, params={"pagination": "cursor", "limit": 10}).json()["data"]
        seen = [item["name"] for item in page["items"]]
        world.delete_component(org, project, names[20])
        world.add_component(org, project, "aaa-too-early")
        world.add_component(org, project, "zzz-late")
        world.delete_component(org, project, names[3])  # already seen
        cursor = page["nextCursor"]
        while cursor:
            page = client.get(path, params={"limit": 10, "cursor": cursor}).json()["data"]
            seen += [item["name"] for item in page["items"]]
            cursor = page["nextCursor"]
        assert seen == sorted(set(seen))
        assert "zzz-late" in seen
        assert "aaa-too-early" not in seen
        assert names[20] not in seen

    def test_cursor_for_a_deleted_parent_is_not_found(
        self, simulate: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate(world)
        path, _ = first_listing_paths(world)["components"]
        cursor = client.get(path, params={"pagination": "cursor", "limit": 1}).json()["data"][
            "nextCursor"
        ]
        org, project = path.split("/")[2], path.split("/")[4]
        world.delete_project(org, project)
        response = client.get(path, params={"limit": 1, "cursor": cursor})
        assert error_of(response) == (404, "PROJECT_NOT_FOUND")
