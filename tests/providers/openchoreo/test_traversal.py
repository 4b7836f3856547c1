"""The three-phase walk: exact requests against pytest-httpx, cursor rules in isolation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import Config
from choreo_ingest.errors import AuthError, CursorExpired, PermanentError, TransientError
from choreo_ingest.models import Entity, QueueItem
from choreo_ingest.providers.base import IncrementalEntityProvider
from choreo_ingest.providers.openchoreo import OpenChoreoProvider, create_provider
from choreo_ingest.providers.openchoreo.entities import (
    component_entities,
    organization_entity,
    project_entity,
)
from choreo_ingest.providers.openchoreo.traversal import TraversalCursor
from choreo_ingest.simulator.api import SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.world import World

DETAIL = "include=type,workload"
USER_AGENT_PREFIX = "choreo-ingest/"


def listing(names: Sequence[str], next_cursor: str = "") -> dict[str, Any]:
    items = [{"name": name, "displayName": name.title()} for name in names]
    return {"success": True, "data": {"items": items, "nextCursor": next_cursor}}


def detail(name: str, endpoints: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "type": "deployment/service", "uid": f"uid-{name}"}
    if endpoints is not None:
        data["workload"] = {"endpoints": endpoints}
    return {"success": True, "data": data}


def gone(code: str) -> dict[str, Any]:
    return {"success": False, "error": "not found", "code": code}


@pytest.fixture
def walk(config_for, fake_engine, clock):
    """`walk(**incremental)`: a FakeEngine driving a fresh OpenChoreoProvider (chunk size 2)."""

    def build(**incremental: Any):
        settings = {"chunk_size": 2, "max_concurrent_requests": 1} | incremental
        config = config_for(**settings)
        return fake_engine(OpenChoreoProvider(config), clock, config)

    return build


class TestTinyWorld:
    """1 org, 2 projects; project `shop` has 3 components over two pages, `web` has one."""

    @pytest.fixture
    def tiny_world(self, httpx_mock: HTTPXMock, base_url: str, token: str) -> None:
        def expect(path_and_query: str, body: dict[str, Any], status: int = 200) -> None:
            httpx_mock.add_response(
                url=f"{base_url}{path_and_query}",
                method="GET",
                status_code=status,
                json=body,
                match_headers={"Authorization": f"Bearer {token}"},
            )

        components = "/orgs/acme/projects/shop/components"
        expect("/orgs?limit=2&pagination=cursor", listing(["acme"]))
        expect("/orgs/acme/projects?limit=2&pagination=cursor", listing(["shop", "web"]))
        expect(f"{components}?limit=2&pagination=cursor", listing(["cart", "checkout"], "c2"))
        expect(
            f"{components}/cart?{DETAIL}", detail("cart", {"rest": {"type": "REST", "port": 80}})
        )
        expect(f"{components}/checkout?{DETAIL}", detail("checkout"))
        expect(f"{components}?limit=2&cursor=c2&pagination=cursor", listing(["pay"]))
        expect(f"{components}/pay?{DETAIL}", detail("pay"))
        expect("/orgs/acme/projects/web/components?limit=2&pagination=cursor", listing(["site"]))
        expect(f"/orgs/acme/projects/web/components/site?{DETAIL}", detail("site"))

    def test_sends_exactly_the_expected_requests_in_order(
        self, tiny_world: None, walk, httpx_mock: HTTPXMock, base_url: str
    ) -> None:
        walk().run()

        sent = [str(request.url).removeprefix(base_url) for request in httpx_mock.get_requests()]
        assert sent == [
            "/orgs?limit=2&pagination=cursor",
            "/orgs/acme/projects?limit=2&pagination=cursor",
            "/orgs/acme/projects/shop/components?limit=2&pagination=cursor",
            "/orgs/acme/projects/shop/components/cart?include=type%2Cworkload",
            "/orgs/acme/projects/shop/components/checkout?include=type%2Cworkload",
            "/orgs/acme/projects/shop/components?limit=2&cursor=c2&pagination=cursor",
            "/orgs/acme/projects/shop/components/pay?include=type%2Cworkload",
            "/orgs/acme/projects/web/components?limit=2&pagination=cursor",
            "/orgs/acme/projects/web/components/site?include=type%2Cworkload",
        ]
        assert all(
            request.headers["User-Agent"].startswith(USER_AGENT_PREFIX)
            for request in httpx_mock.get_requests()
        )

    def test_one_listing_page_per_call_with_entities_by_phase(self, tiny_world: None, walk) -> None:
        engine = walk()

        results = engine.run()

        kinds = [sorted({entity.kind for entity in result.entities}) for result in results]
        assert kinds == [["Domain"], ["System"], ["API", "Component"], ["Component"], ["Component"]]
        assert [result.done for result in results] == [False] * 4 + [True]
        assert [dict(result.counters) for result in results] == [
            {"requests": 1},
            {"requests": 1},
            {"requests": 3},
            {"requests": 2},
            {"requests": 2},
        ]
        assert sorted(engine.entities) == [
            "api:acme/cart-rest",
            "component:acme/cart",
            "component:acme/checkout",
            "component:acme/pay",
            "component:acme/site",
            "domain:default/acme",
            "system:acme/shop",
            "system:acme/web",
        ]

    def test_queues_and_cursors_between_pages(self, tiny_world: None, walk) -> None:
        engine = walk()

        results = engine.run()

        assert [list(result.queue_items) for result in results[:2]] == [
            [QueueItem("orgs", "acme", {"name": "acme"})],
            [
                QueueItem("projects", "acme/shop", {"org": "acme", "project": "shop"}),
                QueueItem("projects", "acme/web", {"org": "acme", "project": "web"}),
            ],
        ]
        assert all(not result.queue_items for result in results[2:])
        assert [result.cursor for result in results[:4]] == [
            cursor("projects"),
            cursor("projects", org_position=1),  # the org queue is found empty on the next call
            cursor("components", org_position=1, component_api_cursor="c2"),
            cursor("components", org_position=1, project_position=2),
        ]
        assert results[-1].cursor is None


def cursor(phase: str, **fields: Any) -> dict[str, Any]:
    return TraversalCursor(phase=phase, **fields).to_json()  # type: ignore[arg-type]


class TestListingRules:
    def test_empty_and_short_pages_with_a_cursor_continue(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing([], "a")
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=a&pagination=cursor", json=listing(["x"], "b")
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=b&pagination=cursor", json=listing([])
        )
        engine = walk()

        pages = [engine.page() for _ in range(3)]

        assert [len(page.entities) for page in pages] == [0, 1, 0]
        assert [page.cursor["orgApiCursor"] for page in pages] == ["a", "b", None]
        assert pages[-1].cursor["phase"] == "projects"

    def test_same_cursor_again_is_refused(self, httpx_mock: HTTPXMock, walk, base_url: str) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["a"], "k")
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k&pagination=cursor", json=listing(["b"], "k")
        )
        engine = walk()
        engine.page()

        with pytest.raises(
            PermanentError, match="GET /orgs returned the same cursor again; refusing to loop"
        ):
            engine.page()

    def test_legacy_server_is_refused_at_the_start_of_a_cycle(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        httpx_mock.add_response(
            json={"success": True, "data": {"items": [], "totalCount": 0, "page": 1, "pageSize": 0}}
        )

        with pytest.raises(PermanentError, match="does not support cursor pagination"):
            walk().page()

    def test_expired_cursor_restarts_only_that_listing(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        first = f"{base_url}/orgs/acme/projects?limit=2&pagination=cursor"
        expired = {"success": False, "error": "expired", "code": "CONTINUE_TOKEN_EXPIRED"}
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["acme"])
        )
        httpx_mock.add_response(url=first, json=listing(["a", "b"], "p2"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects?limit=2&cursor=p2&pagination=cursor",
            status_code=410,
            json=expired,
        )
        httpx_mock.add_response(url=first, json=listing(["a", "b"], "p2b"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects?limit=2&cursor=p2b&pagination=cursor",
            json=listing(["c"]),
        )
        engine = walk()

        pages = [engine.page() for _ in range(5)]

        assert pages[2].entities == []
        assert dict(pages[2].counters) == {"requests": 1, "cursor_resets": 1}
        assert pages[2].cursor == cursor("projects", cursor_reset_count=1)
        assert engine.queues.keys("projects") == ["acme/a", "acme/b", "acme/c"]
        assert engine.queues.keys("orgs") == ["acme"]
        assert engine.counters["cursor_resets"] == 1
        assert pages[4].cursor == cursor("projects", org_position=1, cursor_reset_count=1)

    def test_expired_cursor_on_a_first_page_is_not_restarted(
        self, httpx_mock: HTTPXMock, walk
    ) -> None:
        httpx_mock.add_response(status_code=410, json={"success": False, "error": "x", "code": "C"})

        with pytest.raises(CursorExpired):
            walk().page()

    def test_bad_cursor_restarts_once_then_fails(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        bad = {"success": False, "error": "bad cursor", "code": "INVALID_CURSOR_FORMAT"}
        first = f"{base_url}/orgs?limit=2&pagination=cursor"
        httpx_mock.add_response(url=first, json=listing(["a", "b"], "k1"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k1&pagination=cursor", status_code=400, json=bad
        )
        httpx_mock.add_response(url=first, json=listing(["a", "b"], "k2"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k2&pagination=cursor", status_code=400, json=bad
        )
        engine = walk()

        engine.page()
        restarted = engine.page()
        engine.page()
        with pytest.raises(PermanentError, match="HTTP 400 INVALID_CURSOR_FORMAT"):
            engine.page()

        assert dict(restarted.counters) == {"requests": 1, "cursor_resets": 1}
        assert restarted.cursor["orgApiCursor"] is None

    def test_deleted_org_and_project_are_skipped(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["gone", "live"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/gone/projects?limit=2&pagination=cursor",
            status_code=404,
            json=gone("ORGANIZATION_NOT_FOUND"),
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/live/projects?limit=2&pagination=cursor", json=listing(["p", "q"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/live/projects/p/components?limit=2&pagination=cursor",
            status_code=404,
            json=gone("PROJECT_NOT_FOUND"),
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/live/projects/q/components?limit=2&pagination=cursor",
            json=listing(["c", "d"]),
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/live/projects/q/components/c?{DETAIL}",
            status_code=404,
            json=gone("COMPONENT_NOT_FOUND"),
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/live/projects/q/components/d?{DETAIL}", json=detail("d")
        )
        engine = walk()

        results = engine.run()

        assert len(results) == 5
        assert sorted(engine.entities) == [
            "component:live/d",
            "domain:default/gone",
            "domain:default/live",
            "system:live/p",
            "system:live/q",
        ]

    def test_detail_failure_fails_the_page(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        components = f"{base_url}/orgs/o/projects/p/components"
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["o"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects?limit=2&pagination=cursor", json=listing(["p"])
        )
        httpx_mock.add_response(url=f"{components}?limit=2&pagination=cursor", json=listing(["c"]))
        for _ in range(4):
            httpx_mock.add_response(url=f"{components}/c?{DETAIL}", status_code=503)
        engine = walk()
        engine.page()
        engine.page()
        cursor_before = engine.cursor

        with pytest.raises(TransientError, match="GET /orgs/o/projects/p/components/c: HTTP 503"):
            engine.page()

        assert engine.cursor == cursor_before

    def test_unauthorized_fails_with_a_hint(self, httpx_mock: HTTPXMock, walk) -> None:
        httpx_mock.add_response(status_code=401, json={"error": "MISSING_TOKEN", "message": "no"})

        with pytest.raises(AuthError, match=r"; check openchoreo\.token$"):
            walk().page()

    def test_empty_platform_is_done_after_the_org_listing(
        self, httpx_mock: HTTPXMock, walk
    ) -> None:
        httpx_mock.add_response(json=listing([]))

        results = walk().run()

        assert [result.done for result in results] == [False, True]
        assert dict(results[1].counters) == {"requests": 0}


class TestCursor:
    def test_round_trips_through_json(self) -> None:
        state = TraversalCursor(
            phase="components",
            component_api_cursor="abc",
            org_position=3,
            project_position=7,
            cursor_reset_count=2,
        )

        assert TraversalCursor.from_json(state.to_json()) == state

    @pytest.mark.parametrize(
        "raw",
        [
            "orgs",
            {"phase": "everything"},
            {"phase": "orgs", "orgPosition": "3"},
            {"phase": "orgs", "orgApiCursor": 5},
            {"phase": "orgs", "orgPosition": True},
        ],
        ids=["not-an-object", "unknown-phase", "position-text", "cursor-number", "position-bool"],
    )
    def test_damaged_cursor_is_refused(self, raw: Any) -> None:
        with pytest.raises(PermanentError, match="cursor"):
            TraversalCursor.from_json(raw)


def test_factory_builds_a_provider_named_openchoreo(config_for) -> None:
    provider = create_provider(config_for())

    assert provider.name == "openchoreo"
    assert isinstance(provider, IncrementalEntityProvider)


def visible_world(world: World, config: Config) -> dict[str, Entity]:
    """The entities a complete walk of `world` as it stands now must produce."""
    mapping, provider = config.mapping, "openchoreo"
    expected: list[Entity] = []
    for org in world.orgs():
        org_name = org["name"]
        expected.append(organization_entity(org, mapping, provider))
        for project in world.projects(org_name):
            expected.append(project_entity(project, org_name, mapping, provider))
            for item in world.components(org_name, project["name"]):
                component = world.component(org_name, project["name"], item["name"])
                expected.extend(
                    component_entities(component, org_name, project["name"], mapping, provider)
                )
    return {entity.ref: entity for entity in expected}


@pytest.fixture
def simulated(config_for, fake_engine, transport_for, clock, token):
    """`simulated(world, incremental={...}, clock=..., **simulator_options) -> (engine, api)`."""

    def build(
        world: World,
        *,
        incremental: dict[str, Any] | None = None,
        clock: Any = clock,
        **options: Any,
    ):
        api = SimulatorApi(world, SimulatorOptions(token=token, **options), clock=clock)
        settings = {"chunk_size": 2, "max_concurrent_requests": 2} | (incremental or {})
        config = config_for(**settings)
        provider = OpenChoreoProvider(config, transport=transport_for(api))
        return fake_engine(provider, clock, config), api

    return build


class TestAgainstSimulator:
    def test_full_walk_matches_the_visible_world(self, simulated) -> None:
        world = World.generate(3, 2, 3, seed=7, hidden_fraction=0.3)
        engine, api = simulated(world)

        engine.run()

        assert engine.entities == visible_world(world, engine.config)
        assert engine.counters["requests"] == api.stats.total_requests
        assert api.stats.responses_by_status == {200: api.stats.total_requests}

    def test_filtered_empty_pages_are_walked_through(self, simulated) -> None:
        world = World.empty()
        for name in ("a-hidden", "b-hidden", "c-hidden", "d-hidden"):
            world.add_org(name, hidden=True)
        world.add_org("e-visible")
        engine, _ = simulated(world)

        results = engine.run()

        assert [len(result.entities) for result in results[:3]] == [0, 0, 1]
        assert [result.cursor["orgApiCursor"] is None for result in results[:3]] == [
            False,
            False,
            True,
        ]
        assert sorted(engine.entities) == ["domain:default/e-visible"]

    def test_expired_cursor_mid_listing_restarts_only_that_listing(self, simulated, clock) -> None:
        world = World.generate(1, 5, 1, seed=3, hidden_fraction=0.0)
        engine, api = simulated(world, cursor_ttl=300.0)
        expired = []

        def pause_mid_listing(_: int) -> None:
            if engine.cursor["projectApiCursor"] and not expired:
                clock.advance(301)  # a long interstitial: the cursor is past its TTL
                expired.append(engine.cursor["projectApiCursor"])

        engine.run(between_pages=pause_mid_listing)

        assert expired
        assert api.stats.expired_cursors == 1
        assert engine.counters["cursor_resets"] == 1
        assert engine.cursor is None
        org = next(world.orgs())["name"]
        assert engine.queues.keys("projects") == [
            f"{org}/{project['name']}" for project in world.projects(org)
        ]
        assert engine.entities == visible_world(world, engine.config)

    def test_repeated_cursor_is_refused(self, simulated) -> None:
        engine, _ = simulated(World.generate(5, 0, 0), repeat_cursor_bug=True)
        engine.page()

        with pytest.raises(PermanentError, match="returned the same cursor again"):
            engine.page()

    def test_legacy_server_is_refused_with_the_reason(self, simulated, base_url: str) -> None:
        engine, _ = simulated(World.generate(2, 1, 1), no_cursor_support=True)

        with pytest.raises(PermanentError) as caught:
            engine.page()

        assert str(caught.value) == (
            f"the OpenChoreo API at {base_url} does not support cursor pagination "
            "(no nextCursor in GET /orgs)"
        )

    def test_wrong_token_fails_at_once_with_a_hint(self, simulated, token: str) -> None:
        engine, api = simulated(World.generate(1, 1, 1))
        api.update_options(token="some-other-token")

        with pytest.raises(AuthError) as caught:
            engine.page()

        assert str(caught.value) == (
            "GET /orgs: HTTP 401 INVALID_TOKEN: the bearer token is not valid; "
            "check openchoreo.token"
        )
        assert api.stats.total_requests == 1

    def test_org_and_project_deleted_mid_walk_are_skipped(self, simulated) -> None:
        world = World.generate(3, 3, 2, seed=11, hidden_fraction=0.0)
        orgs = [org["name"] for org in world.orgs()]
        first_projects = [project["name"] for project in world.projects(orgs[0])]
        engine, _ = simulated(world)
        deleted: list[str] = []

        def delete_ahead(_: int) -> None:
            phase = engine.cursor["phase"]
            if phase == "projects" and not deleted:
                world.delete_org(orgs[1])  # queued, its projects not listed yet
                deleted.append(f"domain:default/{orgs[1]}")
            elif phase == "components" and len(deleted) == 1:
                world.delete_project(orgs[0], first_projects[-1])  # queued, not walked yet
                deleted.append(f"system:{orgs[0]}/{first_projects[-1]}")

        engine.run(between_pages=delete_ahead)

        assert len(deleted) == 2
        assert sorted(engine.entities) == sorted([*visible_world(world, engine.config), *deleted])

    def test_concurrent_details_never_exceed_max_concurrent_requests(self, simulated) -> None:
        world = World.generate(1, 1, 12, seed=5, hidden_fraction=0.0)
        engine, api = simulated(
            world,
            incremental={"chunk_size": 12, "max_concurrent_requests": 3},
            clock=SystemClock(),
            latency=0.02,
        )

        engine.run()

        assert api.stats.max_in_flight == 3
        assert engine.entities == visible_world(world, engine.config)

    def test_request_rate_never_exceeds_max_requests_per_second(self, simulated, clock) -> None:
        world = World.generate(2, 2, 3, seed=9, hidden_fraction=0.0)
        engine, api = simulated(
            world, incremental={"max_requests_per_second": 4.0, "max_concurrent_requests": 1}
        )
        started = clock.monotonic()

        engine.run()

        stats = api.stats
        assert stats.max_requests_per_second == 4
        assert clock.monotonic() - started == pytest.approx((stats.total_requests - 1) // 4)

    def test_rate_limited_server_is_waited_out(self, simulated) -> None:
        world = World.generate(2, 2, 2, seed=2, hidden_fraction=0.0)
        engine, api = simulated(
            world, incremental={"max_concurrent_requests": 1}, rate_limit_rps=3.0
        )

        engine.run()

        assert api.stats.rate_limited > 0
        assert engine.entities == visible_world(world, engine.config)
