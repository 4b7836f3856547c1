"""The walk: exact requests against pytest-httpx, cursor rules in isolation, the simulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import structlog
from pytest_httpx import HTTPXMock

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import Config
from choreo_ingest.errors import (
    AuthError,
    CursorExpired,
    PermanentError,
    ProviderError,
    TransientError,
)
from choreo_ingest.models import Entity, Event, QueueItem
from choreo_ingest.providers.base import IncrementalEntityProvider
from choreo_ingest.providers.openchoreo import OpenChoreoProvider, create_provider
from choreo_ingest.providers.openchoreo.api_names import CLAIMS
from choreo_ingest.providers.openchoreo.api_orgs import ORGS
from choreo_ingest.providers.openchoreo.api_v1 import V1
from choreo_ingest.providers.openchoreo.entities import (
    component_entities,
    organization_entity,
    project_entity,
)
from choreo_ingest.providers.openchoreo.naming import hashed_entity_name, is_valid_entity_name
from choreo_ingest.providers.openchoreo.overtaken import EVENT_MARKS
from choreo_ingest.providers.openchoreo.traversal_cursor import TraversalCursor
from choreo_ingest.simulator.api import SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.world import World
from choreo_ingest.testing import FakeClock

DETAIL = "include=type,workload"
USER_AGENT_PREFIX = "choreo-ingest/"
DELETION_TIMESTAMP = "openchoreo.io/deletion-timestamp"
DETECTED_AT = "https://openchoreo.test/api/v1"
"""The source where the walk finds the API (`conftest.BASE_URL`, as the provider names it)."""
FIRST_PAGE_FACTS = {"api": "orgs", "apiSource": DETECTED_AT, "problem": None}
EXPIRED = {"success": False, "error": "expired", "code": "CONTINUE_TOKEN_EXPIRED"}
"""The org era's answer to an expired cursor (410)."""


def listing(names: Sequence[str], next_cursor: str = "", **fields: Any) -> dict[str, Any]:
    items = [{"name": name, "displayName": name.title(), **fields} for name in names]
    return {"success": True, "data": {"items": items, "nextCursor": next_cursor}}


def detail(name: str, endpoints: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "type": "deployment/service", "uid": f"uid-{name}"}
    if endpoints is not None:
        data["workload"] = {"endpoints": endpoints}
    return {"success": True, "data": data | fields}


def gone(code: str) -> dict[str, Any]:
    return {"success": False, "error": "not found", "code": code}


def cursor(
    phase: str,
    *,
    api_cursor: str | None = None,
    position: int = -1,
    resets: int = 0,
    stale: int = 0,
    listed_at: float | None = FakeClock().now(),
    head: str | None = None,
    restarts: int = 0,
) -> dict[str, Any]:
    """An org-era traversal cursor as stored (position -1: before the phase's first item;
    `listed_at`: when its listing began, on the fake clock that does not move by itself;
    `head`: the name of the first item of the listing's last page, while it goes on;
    `restarts`: of the listing in progress since it last came to its end)."""
    return {
        "api": "orgs",
        "phase": phase,
        "apiCursor": api_cursor,
        "position": position,
        "cursorResetCount": resets,
        "staleStarts": stale,
        "listedAt": listed_at,
        "head": head,
        **({"listingRestarts": restarts} if restarts else {}),
    }


def sent(httpx_mock: HTTPXMock, base_url: str) -> list[str]:
    return [str(request.url).removeprefix(base_url) for request in httpx_mock.get_requests()]


@pytest.fixture
def walk(config_for, fake_engine, clock):
    """`walk(api="orgs", **incremental)`: a FakeEngine driving a fresh OpenChoreoProvider
    (chunk size 2, one request at a time)."""

    def build(*, api: str = "orgs", **incremental: Any):
        settings = {"chunk_size": 2, "max_concurrent_requests": 1} | incremental
        config = config_for(api=api, **settings)
        return fake_engine(OpenChoreoProvider(config), clock, config)

    return build


TINY_WALK = [
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
"""The requests of a walk of the tiny world below, in order."""


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

        assert sent(httpx_mock, base_url) == TINY_WALK
        assert all(
            request.headers["User-Agent"].startswith(USER_AGENT_PREFIX)
            for request in httpx_mock.get_requests()
        )

    def test_auto_detection_costs_one_request_per_cycle(
        self, tiny_world: None, walk, httpx_mock: HTTPXMock, base_url: str
    ) -> None:
        """Under `api: auto` the org listing's first page is the walk's first page: the only
        extra request is the v1 probe that answered 404."""
        httpx_mock.add_response(
            url=f"{base_url}/namespaces?limit=2", status_code=404, text="404 page not found"
        )
        engine = walk(api="auto")

        results = engine.run()

        assert sent(httpx_mock, base_url) == ["/namespaces?limit=2", *TINY_WALK]
        assert dict(results[0].counters) == {"requests": 2}
        assert results[0].facts == FIRST_PAGE_FACTS
        assert engine.facts == {"api": "orgs", "apiSource": DETECTED_AT}

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

    def test_a_cycle_resumed_without_the_api_fact_states_it_once_a_burst(
        self, tiny_world: None, walk
    ) -> None:
        engine = walk()
        engine.pages(1)
        engine.facts.clear()  # as a release from before the fact left its cycle

        resumed = engine.pages(2)

        assert [result.facts for result in resumed] == [{"api": "orgs"}, {}]
        assert engine.facts == {"api": "orgs"}
        rest = engine.pages(10)  # a later burst: the facts say it now
        assert [result.facts for result in rest] == [{}, {}]
        assert rest[-1].done

    def test_only_the_first_page_of_a_cycle_states_the_api(self, tiny_world: None, walk) -> None:
        results = walk().run()

        assert [result.facts for result in results] == [FIRST_PAGE_FACTS] + [{}] * 4

    def test_api_names_are_claimed_in_the_index(self, tiny_world: None, walk) -> None:
        engine = walk()

        results = engine.run()

        rows = [[row for row in result.index if row.table != EVENT_MARKS] for result in results]
        assert rows[0] == []  # the orgs page; its listing's start is marked
        assert {row.key for row in rows[1]} == {"acme/shop", "acme/web"}  # projects
        assert engine.index.values(CLAIMS) == {
            "acme/cart-rest|shop/cart/rest": {
                "owner": ["shop", "cart"],
                "endpoint": "rest",
                "holds": True,
            }
        }

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
            cursor("projects", position=1),  # the org queue is found empty on the next call
            cursor("components", api_cursor="c2", head="cart"),
            cursor("components", position=2),  # acme/shop: queue positions are engine-wide
        ]
        assert results[-1].cursor is None


class TestDetection:
    @pytest.mark.parametrize(
        ("status", "body"),
        [(404, "404 page not found"), (405, "Method Not Allowed"), (501, "Not Implemented")],
        ids=["404", "405", "501"],
    )
    def test_org_api_is_used_when_namespaces_is_not_served(
        self, httpx_mock: HTTPXMock, walk, base_url: str, status: int, body: str
    ) -> None:
        httpx_mock.add_response(url=f"{base_url}/namespaces?limit=2", status_code=status, text=body)
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["acme", "beta"], "o2")
        )

        page = walk(api="auto").page()

        assert sorted(entity.ref for entity in page.entities) == [
            "domain:default/acme",
            "domain:default/beta",
        ]
        assert page.cursor == cursor("orgs", api_cursor="o2", head="acme")
        assert page.facts == FIRST_PAGE_FACTS
        assert dict(page.counters) == {"requests": 2}

    def test_an_org_era_page_with_items_null_is_an_empty_page(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor",
            json={"success": True, "data": {"items": None, "nextCursor": "o2"}},
        )

        page = walk(api="orgs").page()

        assert (page.entities, page.cursor) == ([], cursor("orgs", api_cursor="o2"))

    def test_events_before_any_cycle_ask_the_server_which_api_it_speaks(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """No cycle has recorded the API yet (a new state file): read through v1's routes, an
        org-era server's project would answer 404 and leave the catalog."""
        httpx_mock.add_response(url=f"{base_url}/namespaces?limit=2", status_code=404)
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["acme"])
        )
        for _ in range(2):
            httpx_mock.add_response(
                url=f"{base_url}/orgs/acme/projects/shop",
                json={"success": True, "data": {"name": "shop", "orgName": "acme"}},
            )
        engine = walk(api="auto")
        shop = Event("Project", "shop", "updated", "acme")

        with engine.provider.around(engine.burst) as context:
            deltas = [engine.provider.handle_event(context, shop) for _ in range(2)]

        assert [[entity.ref for entity in delta.upserts] for delta in deltas] == [
            ["system:acme/shop"]
        ] * 2
        assert [delta.removal_scopes for delta in deltas] == [(), ()]
        assert len(httpx_mock.get_requests()) == 4  # the probe once, then the two reads

    def test_no_api_at_either_path_is_refused_naming_both(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        httpx_mock.add_response(url=f"{base_url}/namespaces?limit=2", status_code=404)
        httpx_mock.add_response(url=f"{base_url}/orgs?limit=2&pagination=cursor", status_code=404)

        with pytest.raises(PermanentError) as caught:
            walk(api="auto").page()

        assert str(caught.value) == (
            f"no OpenChoreo API at openchoreo.baseUrl {base_url.removesuffix('/api/v1')} (GET "
            f"{base_url}/namespaces and {base_url}/orgs found nothing): set it to the server's "
            "address (https://host) or its API root (https://host/api/v1)"
        )

    def test_other_failures_of_the_probe_are_not_taken_for_absence(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/namespaces?limit=2",
            status_code=401,
            json={"error": "UNAUTHORIZED", "message": "invalid token"},
        )

        with pytest.raises(AuthError, match=r"^GET /namespaces: HTTP 401"):
            walk(api="auto").page()

        assert sent(httpx_mock, base_url) == ["/namespaces?limit=2"]

    def test_configured_org_api_sends_no_probe(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        httpx_mock.add_response(json=listing([]))

        walk(api="orgs").page()

        assert sent(httpx_mock, base_url) == ["/orgs?limit=2&pagination=cursor"]


def expiring_every_burst(httpx_mock: HTTPXMock, base_url: str, times: int = 3) -> None:
    """The orgs listing's first page, then its stored cursor expired (410), `times` times over,
    then a first page that hands out the next cursor: with 3, seven bursts of a page each leave
    the stale-starts problem set and the cursor at `k4`."""
    first = f"{base_url}/orgs?limit=2&pagination=cursor"
    for n in range(1, times + 1):
        httpx_mock.add_response(url=first, json=listing(["a", "b"], f"k{n}"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k{n}&pagination=cursor",
            status_code=410,
            json=EXPIRED,
        )
    httpx_mock.add_response(url=first, json=listing(["a", "b"], f"k{times + 1}"))


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
        assert [page.cursor["apiCursor"] for page in pages] == ["a", "b", None]
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
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["acme"])
        )
        httpx_mock.add_response(url=first, json=listing(["a", "b"], "p2"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects?limit=2&cursor=p2&pagination=cursor",
            status_code=410,
            json=EXPIRED,
        )
        httpx_mock.add_response(url=first, json=listing(["a", "b"], "p2b"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects?limit=2&cursor=p2b&pagination=cursor",
            json=listing(["c"]),
        )
        engine = walk()

        pages = [engine.page() for _ in range(5)]  # one burst each

        assert pages[2].entities == []
        assert dict(pages[2].counters) == {"requests": 1, "cursor_resets": 1}
        # the burst began on a stored cursor that had expired: one stale start
        assert pages[2].cursor == cursor("projects", resets=1, stale=1, restarts=1)
        assert engine.queues.keys("projects") == ["acme/a", "acme/b", "acme/c"]
        assert engine.queues.keys("orgs") == ["acme"]
        assert engine.counters["cursor_resets"] == 1
        assert pages[4].cursor == cursor("projects", position=1, resets=1)

    def test_expired_cursor_on_a_first_page_is_not_restarted(
        self, httpx_mock: HTTPXMock, walk
    ) -> None:
        httpx_mock.add_response(status_code=410, json={"success": False, "error": "x", "code": "C"})

        with pytest.raises(CursorExpired):
            walk().page()

    def test_bad_request_on_a_first_page_is_not_an_expiry(
        self, httpx_mock: HTTPXMock, walk
    ) -> None:
        httpx_mock.add_response(
            status_code=400, json={"success": False, "error": "bad", "code": "INVALID_INPUT"}
        )

        with pytest.raises(PermanentError) as caught:
            walk().page()

        assert type(caught.value) is PermanentError
        assert str(caught.value) == "GET /orgs: HTTP 400 INVALID_INPUT: bad"

    def test_bad_cursor_restarts_the_listing(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        bad = {"success": False, "error": "bad cursor", "code": "INVALID_CURSOR_FORMAT"}
        first = f"{base_url}/orgs?limit=2&pagination=cursor"
        httpx_mock.add_response(url=first, json=listing(["a", "b"], "k1"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k1&pagination=cursor", status_code=400, json=bad
        )
        httpx_mock.add_response(url=first, json=listing(["a", "b"]))
        engine = walk()

        results = engine.pages(3)

        assert [dict(result.counters) for result in results] == [
            {"requests": 1},
            {"requests": 1, "cursor_resets": 1},
            {"requests": 1},
        ]
        assert results[1].cursor == cursor("orgs", resets=1)
        assert results[2].cursor == cursor("projects", resets=1)

    def test_a_cursor_rejected_again_after_one_restart_fails_the_burst(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """The document: a 400 for a cursor restarts the listing once, then backs off (an
        expired cursor restarts it up to three times)."""
        bad = {"success": False, "error": "bad cursor", "code": "INVALID_CURSOR_FORMAT"}
        first = f"{base_url}/orgs?limit=2&pagination=cursor"
        for n in (1, 2):
            httpx_mock.add_response(url=first, json=listing(["a", "b"], f"k{n}"))
            httpx_mock.add_response(
                url=f"{base_url}/orgs?limit=2&cursor=k{n}&pagination=cursor",
                status_code=400,
                json=bad,
            )
        engine = walk()

        with pytest.raises(PermanentError) as caught:
            engine.pages(5)

        assert str(caught.value) == (
            "GET /orgs: HTTP 400 INVALID_CURSOR_FORMAT: bad cursor; refused again after the "
            "listing restarted once in this burst"
        )
        assert (caught.value.status, caught.value.code) == (400, "INVALID_CURSOR_FORMAT")
        assert engine.counters["cursor_resets"] == 1
        assert len(engine.results) == 3

    def test_fourth_expiry_of_a_listing_in_one_burst_fails_the_burst(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """A 410 says the cursor expired: failing at the same page every time does not make it
        a server fault (as a 500 might be)."""
        first = f"{base_url}/orgs?limit=2&pagination=cursor"
        for n in range(1, 5):
            httpx_mock.add_response(url=first, json=listing(["a", "b"], f"k{n}"))
            httpx_mock.add_response(
                url=f"{base_url}/orgs?limit=2&cursor=k{n}&pagination=cursor",
                status_code=410,
                json=EXPIRED,
            )
        engine = walk()

        with pytest.raises(ProviderError) as caught:
            engine.pages(8)

        assert not isinstance(caught.value, TransientError), "a failure, even after pages"
        assert str(caught.value) == (
            "GET /orgs: the listing's cursor expired 4 times in one burst (last: HTTP 410 "
            "CONTINUE_TOKEN_EXPIRED); the API may not keep cursors long enough for a page (lower "
            "openchoreo.incremental.chunkSize)"
        )
        assert (caught.value.status, caught.value.code) == (410, "CONTINUE_TOKEN_EXPIRED")
        assert len(engine.results) == 7
        assert engine.cursor == cursor("orgs", api_cursor="k4", resets=3, head="a")

    def test_restart_limit_is_per_burst(self, httpx_mock: HTTPXMock, walk, base_url: str) -> None:
        """After a burst failed on its fourth expiry, the next burst may restart again."""
        first = f"{base_url}/orgs?limit=2&pagination=cursor"
        for n in range(1, 5):
            httpx_mock.add_response(url=first, json=listing(["a", "b"], f"k{n}"))
            httpx_mock.add_response(
                url=f"{base_url}/orgs?limit=2&cursor=k{n}&pagination=cursor", status_code=410
            )
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k4&pagination=cursor", status_code=410
        )
        engine = walk()
        with pytest.raises(ProviderError):
            engine.pages(8)

        restarted = engine.page()

        assert dict(restarted.counters) == {"requests": 1, "cursor_resets": 1}
        assert restarted.cursor == cursor("orgs", resets=4, stale=1, restarts=1)

    def test_listing_that_expires_every_burst_is_reported_then_cleared(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """Three bursts in a row that begin on an expired stored cursor set the `problem` fact;
        the first stored cursor that works again clears it."""
        expiring_every_burst(httpx_mock, base_url)
        engine = walk()
        problems = []

        with structlog.testing.capture_logs() as logs:
            for _ in range(7):
                engine.page()  # a burst each: first page, expired, first page, expired, ...
                problems.append(engine.facts.get("problem"))

        assert problems[:5] == [None] * 5
        # Said once as a warning (cron mails it), when it became a problem.
        warned = [line for line in logs if line["log_level"] == "warning"]
        assert [(line["event"], line["problem"]) for line in warned] == [
            ("listing_stuck", problems[5])
        ]
        assert (
            problems[5]
            == problems[6]
            == (
                "the orgs listing's cursor (GET /orgs) expired between the last 3 bursts, so "
                "the listing "
                "restarts every burst and may never complete: burst more often than a cursor "
                "lives (openchoreo.incremental.burstInterval, and a timer below cron's minute, "
                "or serve) or lengthen openchoreo.incremental.burstLength"
            )
        )
        assert engine.cursor == cursor(
            "orgs", api_cursor="k4", resets=3, stale=3, head="a", restarts=3
        )

        httpx_mock.reset()
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k4&pagination=cursor", json=listing(["c"])
        )
        recovered = engine.page()

        assert recovered.facts == {"problem": None}
        assert "problem" not in engine.facts
        assert recovered.cursor == cursor("projects", resets=3)

    def test_a_stuck_listing_is_warned_of_once_a_streak(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        expiring_every_burst(httpx_mock, base_url, times=5)
        engine = walk()

        with structlog.testing.capture_logs() as logs:
            for _ in range(11):  # five stale starts in a row
                engine.page()

        assert engine.cursor == cursor(
            "orgs", api_cursor="k6", resets=5, stale=5, head="a", restarts=5
        )
        warned = [line["event"] for line in logs if line["log_level"] == "warning"]
        assert warned == ["listing_stuck"]

    def test_a_listing_that_restarts_and_then_completes_clears_the_problem(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """The burst after the problem was set restarts the listing again (its stored cursor
        expired once more) and reads it to its end: the listing completed, so the problem goes
        (it said the listing might never complete; the cycle may rest for half an hour)."""
        expiring_every_burst(httpx_mock, base_url)
        engine = walk()
        for _ in range(7):
            engine.page()
        assert "problem" in engine.facts
        assert engine.cursor == cursor(
            "orgs", api_cursor="k4", resets=3, stale=3, head="a", restarts=3
        )

        httpx_mock.reset()
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k4&pagination=cursor", status_code=410
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["a", "b", "c"])
        )
        engine.pages(2)

        assert "problem" not in engine.facts
        assert engine.cursor == cursor("projects", resets=4)

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
            url=f"{base_url}/orgs/gone", status_code=404, json=gone("ORGANIZATION_NOT_FOUND")
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
            url=f"{base_url}/orgs/live/projects/p", status_code=404, json=gone("PROJECT_NOT_FOUND")
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

    @pytest.mark.parametrize(
        ("parent", "failure"),
        [
            (
                {"json": {"success": True, "data": {"name": "p"}}},
                r"yet GET /orgs/o/projects/p finds it",
            ),
            (
                {"status_code": 404, "text": "404 page not found"},
                r"GET /orgs/o/projects/p: .*not the API's own",
            ),
        ],
        ids=["parent-still-answers", "parent-answers-a-proxys-404"],
    )
    def test_a_proxys_404_on_a_listing_fails_the_burst_unless_the_parent_is_gone(
        self,
        httpx_mock: HTTPXMock,
        walk,
        base_url: str,
        parent: dict[str, Any],
        failure: str,
    ) -> None:
        """Not the document's `PROJECT_NOT_FOUND` of a project deleted while walked, but
        something in front of the API without the route: skipping the project would have the
        sweep remove its components. The parent still answering, or answering a proxy's 404
        too: only `PROJECT_NOT_FOUND` says the project is gone."""
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["o"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects?limit=2&pagination=cursor", json=listing(["p"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects/p/components?limit=2&pagination=cursor",
            status_code=404,
            text="404 page not found",
        )
        httpx_mock.add_response(url=f"{base_url}/orgs/o/projects/p", **parent)
        engine = walk()

        with pytest.raises(PermanentError, match=failure):
            engine.run()

    def test_a_detail_404_without_the_apis_code_fails_the_burst(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """Not the document's `COMPONENT_NOT_FOUND` of a component deleted while walked, but a
        proxy's `404 page not found`: leaving the component out would have the sweep remove it."""
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["o"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects?limit=2&pagination=cursor", json=listing(["p"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects/p/components?limit=2&pagination=cursor",
            json=listing(["c", "d"]),
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects/p/components/c?{DETAIL}",
            status_code=404,
            text="404 page not found",
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects/p/components/d?{DETAIL}", json=detail("d")
        )
        engine = walk()

        with pytest.raises(PermanentError, match=r"not the API's own answer") as failed:
            engine.run()

        assert failed.value.path == "/orgs/o/projects/p/components/c"
        assert "component:o/d" not in engine.entities

    def test_resources_being_deleted_stay_with_an_annotation(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        when = "2026-01-02T03:04:05Z"
        components = f"{base_url}/orgs/o/projects/p/components"
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor",
            json=listing(["o"], deletionTimestamp=when),
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects?limit=2&pagination=cursor",
            json=listing(["p"], deletionTimestamp=when),
        )
        httpx_mock.add_response(
            url=f"{components}?limit=2&pagination=cursor", json=listing(["c", "d"])
        )
        httpx_mock.add_response(
            url=f"{components}/c?{DETAIL}",
            json=detail("c", {"rest": {"type": "REST"}}, deletionTimestamp=when),
        )
        httpx_mock.add_response(url=f"{components}/d?{DETAIL}", json=detail("d"))
        engine = walk()

        engine.run()

        stamps = {
            ref: entity.body["metadata"]["annotations"].get(DELETION_TIMESTAMP)
            for ref, entity in engine.entities.items()
        }
        assert stamps == {
            "domain:default/o": when,
            "system:o/p": when,
            "component:o/c": when,
            "api:o/c-rest": None,
            "component:o/d": None,
        }

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

    def test_unauthorized_fails_with_a_hint_without_sending_the_same_token_again(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """The document: 401 -> fail, "check openchoreo.token"; no retries inside the burst."""
        httpx_mock.add_response(status_code=401, json={"error": "INVALID_TOKEN", "message": "no"})

        with pytest.raises(AuthError, match=r"; check openchoreo\.token$"):
            walk().page()

        assert sent(httpx_mock, base_url) == ["/orgs?limit=2&pagination=cursor"]

    def test_items_named_at_the_top_are_read_whatever_else_they_carry(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """The org era's items carry their `name`; a `metadata` object beside it (labels, say)
        is one more field the document does not name, not where the name is."""
        labels = {"metadata": {"labels": {"team": "payments"}}}
        components = "/orgs/acme/projects/shop/components"
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["acme"], **labels)
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects?limit=2&pagination=cursor",
            json=listing(["shop"], **labels),
        )
        httpx_mock.add_response(
            url=f"{base_url}{components}?limit=2&pagination=cursor",
            json=listing(["cart"], **labels),
        )
        httpx_mock.add_response(
            url=f"{base_url}{components}/cart?{DETAIL}", json=detail("cart", **labels)
        )

        engine = walk()
        engine.run()

        assert {"domain:default/acme", "system:acme/shop", "component:acme/cart"} <= set(
            engine.entities
        )

    def test_empty_platform_is_done_after_the_org_listing(
        self, httpx_mock: HTTPXMock, walk
    ) -> None:
        httpx_mock.add_response(json=listing([]))

        results = walk().run()

        assert [result.done for result in results] == [False, True]
        assert dict(results[1].counters) == {"requests": 0}


class TestApiNames:
    """Component `a` with endpoint `b-c` and component `a-b` with endpoint `c` both map to
    `a-b-c`: the one whose (project, component, endpoint) sorts first keeps it."""

    A_FIRST = ("p", "a", "b-c")
    A_B_SECOND = ("p", "a-b", "c")
    HASHED = hashed_entity_name("a-b-c", "p/a-b/c")

    @pytest.fixture
    def org_and_project(self, httpx_mock: HTTPXMock, base_url: str) -> str:
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["o"])
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/o/projects?limit=2&pagination=cursor", json=listing(["p"])
        )
        return f"{base_url}/orgs/o/projects/p/components"

    def details(self, httpx_mock: HTTPXMock, components: str, *names: str) -> None:
        endpoints = {"a": {"b-c": {"type": "REST"}}, "a-b": {"c": {"type": "REST"}}}
        for name in names:
            httpx_mock.add_response(
                url=f"{components}/{name}?{DETAIL}", json=detail(name, endpoints[name])
            )

    def assert_a_holds_the_plain_name(self, engine) -> None:
        apis = {
            ref: entity.body["metadata"]["annotations"]["openchoreo.io/component"]
            for ref, entity in engine.entities.items()
            if entity.kind == "API"
        }
        assert apis == {"api:o/a-b-c": "a", f"api:o/{self.HASHED}": "a-b"}
        provides = {
            ref: entity.body["spec"]["providesApis"]
            for ref, entity in engine.entities.items()
            if entity.kind == "Component"
        }
        assert provides == {
            "component:o/a": ["api:o/a-b-c"],
            "component:o/a-b": [f"api:o/{self.HASHED}"],
        }
        holds = {
            key.partition("|")[2]: value["holds"]
            for key, value in engine.index.values(CLAIMS).items()
        }
        assert holds == {"p/a/b-c": True, "p/a-b/c": False}

    def test_an_endpoint_whose_name_holds_a_nul_is_neither_claimed_nor_mapped(
        self, org_and_project: str, httpx_mock: HTTPXMock, walk
    ) -> None:
        components = org_and_project
        httpx_mock.add_response(url=f"{components}?limit=2&pagination=cursor", json=listing(["a"]))
        endpoints = {"b-c": {"type": "REST"}, "b\x00c": {"type": "REST"}}
        httpx_mock.add_response(url=f"{components}/a?{DETAIL}", json=detail("a", endpoints))
        engine = walk()

        engine.run()

        assert [ref for ref in engine.entities if ref.startswith("api:")] == ["api:o/a-b-c"]
        assert list(engine.index.values(CLAIMS)) == ["o/a-b-c|p/a/b-c"]

    def test_hashed_name_is_a_valid_name_that_differs(self) -> None:
        assert self.HASHED != "a-b-c"
        assert self.HASHED.startswith("a-b-c")
        assert is_valid_entity_name(self.HASHED)

    @pytest.mark.parametrize(
        "order", [("a-b", "a"), ("a", "a-b")], ids=["holder-last", "holder-first"]
    )
    def test_collision_in_one_page(
        self, org_and_project: str, httpx_mock: HTTPXMock, walk, order: tuple[str, str]
    ) -> None:
        components = org_and_project
        httpx_mock.add_response(
            url=f"{components}?limit=2&pagination=cursor", json=listing(list(order))
        )
        self.details(httpx_mock, components, *order)
        engine = walk()

        results = engine.run()

        assert dict(results[-1].counters) == {"requests": 3}  # nobody is read again
        self.assert_a_holds_the_plain_name(engine)

    def test_later_page_that_sorts_first_takes_the_name_from_the_holder(
        self, org_and_project: str, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """The holder from the earlier page is read again and moves to its hashed name in the
        same page, at the cost of one detail request."""
        components = org_and_project
        httpx_mock.add_response(
            url=f"{components}?limit=2&pagination=cursor", json=listing(["a-b"], "n")
        )
        httpx_mock.add_response(
            url=f"{components}?limit=2&cursor=n&pagination=cursor", json=listing(["a"])
        )
        self.details(httpx_mock, components, "a-b", "a", "a-b")
        engine = walk()

        results = engine.run()

        first, second = results[-2:]
        assert sorted(entity.ref for entity in first.entities) == [
            "api:o/a-b-c",
            "component:o/a-b",
        ]
        assert sorted(entity.ref for entity in second.entities) == sorted(
            ["component:o/a", "api:o/a-b-c", "component:o/a-b", f"api:o/{self.HASHED}"]
        )
        assert dict(second.counters) == {"requests": 3}
        assert sent(httpx_mock, base_url)[-3:] == [
            "/orgs/o/projects/p/components?limit=2&cursor=n&pagination=cursor",
            "/orgs/o/projects/p/components/a?include=type%2Cworkload",
            "/orgs/o/projects/p/components/a-b?include=type%2Cworkload",
        ]
        self.assert_a_holds_the_plain_name(engine)

    def test_later_page_that_sorts_later_gets_the_hashed_name(
        self, org_and_project: str, httpx_mock: HTTPXMock, walk
    ) -> None:
        components = org_and_project
        httpx_mock.add_response(
            url=f"{components}?limit=2&pagination=cursor", json=listing(["a"], "n")
        )
        httpx_mock.add_response(
            url=f"{components}?limit=2&cursor=n&pagination=cursor", json=listing(["a-b"])
        )
        self.details(httpx_mock, components, "a", "a-b")
        engine = walk()

        results = engine.run()

        assert dict(results[-1].counters) == {"requests": 2}  # nobody is read again
        self.assert_a_holds_the_plain_name(engine)


class TestCursor:
    @pytest.mark.parametrize(
        ("generation", "state", "phase"),
        [
            (
                ORGS,
                {"phase": 2, "api_cursor": "abc", "position": 7, "cursor_reset_count": 2},
                "components",
            ),
            (ORGS, {"phase": 0, "stale_starts": 3}, "orgs"),
            (V1, {"phase": 0, "api_cursor": "n"}, "namespaces"),
            (V1, {"phase": 1, "position": 2}, "projects"),
            (
                V1,
                {"phase": 3, "api_cursor": "xyz", "position": 4, "stale_starts": 1},
                "namespaces/components",
            ),
            (V1, {"phase": 2, "position": 4, "by_item": False}, "workloads"),
        ],
        ids=[
            "orgs-components",
            "orgs-stale",
            "v1-namespaces",
            "v1-projects",
            "v1-components",
            "v1-older",
        ],
    )
    def test_round_trips_through_json(
        self, generation: Any, state: dict[str, Any], phase: str
    ) -> None:
        cursor_state = TraversalCursor(api=generation.name, **state)

        raw = cursor_state.to_json(generation)

        assert raw["api"] == generation.name
        assert raw["phase"] == phase
        assert TraversalCursor.from_json(raw) == cursor_state

    def test_a_release_that_walked_phase_by_phase_refuses_a_cursor_walked_by_namespace(
        self,
    ) -> None:
        """Such a release knew only the plain phase names: it fails the burst naming `reset`
        rather than read `position` as every namespace's workloads and skip components."""
        older_names = {phase.name for phase in V1.phases}
        walked_by_namespace = TraversalCursor(api="v1", phase=2, position=0)

        assert walked_by_namespace.to_json(V1)["phase"] not in older_names

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (
                {"phase": "orgs", "orgApiCursor": "o1", "cursorResetCount": 1},
                TraversalCursor(api="orgs", phase=0, api_cursor="o1", cursor_reset_count=1),
            ),
            (
                {"phase": "projects", "projectApiCursor": "p1", "orgPosition": 3},
                TraversalCursor(api="orgs", phase=1, api_cursor="p1", position=3),
            ),
            (
                {
                    "phase": "components",
                    "componentApiCursor": "abc",
                    "orgPosition": 3,
                    "projectPosition": 7,
                    "cursorResetCount": 2,
                },
                TraversalCursor(
                    api="orgs", phase=2, api_cursor="abc", position=7, cursor_reset_count=2
                ),
            ),
        ],
        ids=["orgs", "projects", "components"],
    )
    def test_reads_a_cursor_stored_before_generations(
        self, raw: dict[str, Any], expected: TraversalCursor
    ) -> None:
        assert TraversalCursor.from_json(raw) == expected

    @pytest.mark.parametrize(
        "raw",
        [
            "orgs",
            {"phase": "everything"},
            {"api": "orgs", "phase": "namespaces"},
            {"api": "orgs"},
            {"api": "orgs", "phase": "orgs", "position": "3"},
            {"api": "orgs", "phase": "orgs", "apiCursor": 5},
            {"api": "orgs", "phase": "orgs", "position": True},
            {"phase": "projects", "orgPosition": "3"},
            {"phase": "orgs", "orgApiCursor": 5},
            {"api": "v1", "phase": ["workloads"]},
            {"api": "orgs", "phase": "orgs/projects"},
        ],
        ids=[
            "not-an-object",
            "unknown-phase-no-api",
            "phase-of-another-api",
            "no-phase",
            "position-text",
            "cursor-number",
            "position-bool",
            "legacy-position-text",
            "legacy-cursor-number",
            "phase-not-text",
            "org-era-phase-by-item",
        ],
    )
    def test_damaged_cursor_is_refused(self, raw: Any) -> None:
        with pytest.raises(PermanentError, match="cursor"):
            TraversalCursor.from_json(raw)

    def test_cursor_of_an_unknown_api_is_refused(self) -> None:
        with pytest.raises(PermanentError, match="unknown OpenChoreo API generation 'v2'"):
            TraversalCursor.from_json({"api": "v2", "phase": "orgs"})


@pytest.mark.parametrize("generation", [ORGS, V1], ids=["orgs", "v1"])
def test_a_phase_walked_with_the_one_before_lists_the_same_queue(generation: Any) -> None:
    """Walked item by item, the two listings of one item come one after the other: only phases
    over one queue can be (v1: each namespace's workloads, then its components)."""
    phases = generation.phases
    following = [index for index, phase in enumerate(phases) if phase.follows_previous]

    assert all(index > 0 and phases[index - 1].queue == phases[index].queue
               for index in following)  # fmt: skip
    assert [phases[i].name for i in following] == (["components"] if generation is V1 else [])


def test_a_cursor_another_version_wrote_fails_the_burst_naming_reset(
    fake_engine, config_for, clock
) -> None:
    """A newer choreo-ingest's cursor, left by a rollback, fails every burst until the cycle
    starts again: the error says how."""
    config = config_for()
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.cursor = {"api": "v1", "phase": "environments"}

    with pytest.raises(PermanentError) as caught:
        engine.page()

    assert str(caught.value).endswith(
        "; written by another choreo-ingest version? `choreo-ingest reset openchoreo` starts "
        "the cycle again"
    )


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
    """`simulated(world, incremental={...}, clock=..., config_api="orgs", **simulator_options)
    -> (engine, api)`; the simulator serves the org-era API unless `api="v1"` is given."""

    def build(
        world: World,
        *,
        incremental: dict[str, Any] | None = None,
        clock: Any = clock,
        config_api: str = "orgs",
        **options: Any,
    ):
        options = {"api": "orgs", "token": token} | options
        api = SimulatorApi(world, SimulatorOptions(**options), clock=clock)
        settings = {"chunk_size": 2, "max_concurrent_requests": 2} | (incremental or {})
        config = config_for(api=config_api, **settings)
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

    def test_auto_detects_the_org_api(self, simulated) -> None:
        world = World.generate(2, 2, 2, seed=4, hidden_fraction=0.0)
        engine, api = simulated(world, config_api="auto")

        results = engine.run()

        assert results[0].facts == FIRST_PAGE_FACTS
        assert engine.entities == visible_world(world, engine.config)
        assert api.stats.responses_by_status == {200: api.stats.total_requests - 1, 404: 1}

    def test_auto_detects_a_v1_server_from_its_first_page(self, simulated) -> None:
        engine, api = simulated(World.generate(1, 1, 1), config_api="auto", api="v1")

        first = engine.page()

        assert first.facts == {"api": "v1", "apiSource": DETECTED_AT, "problem": None}
        assert dict(first.counters) == {"requests": 1}
        assert api.stats.total_requests == 1
        assert first.cursor["api"] == "v1"
        assert [entity.kind for entity in first.entities] == ["Domain"]

    def test_filtered_empty_pages_are_walked_through(self, simulated) -> None:
        world = World.empty()
        for name in ("a-hidden", "b-hidden", "c-hidden", "d-hidden"):
            world.add_org(name, hidden=True)
        world.add_org("e-visible")
        engine, _ = simulated(world)

        results = engine.run()

        assert [len(result.entities) for result in results[:3]] == [0, 0, 1]
        assert [result.cursor["apiCursor"] is None for result in results[:3]] == [
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
            if engine.cursor["phase"] == "projects" and engine.cursor["apiCursor"] and not expired:
                clock.advance(301)  # a long interstitial: the cursor is past its TTL
                expired.append(engine.cursor["apiCursor"])

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

    def test_wrong_token_fails_with_a_hint_and_is_not_sent_again(self, simulated) -> None:
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

    def test_resources_being_deleted_stay_in_the_catalog(self, simulated) -> None:
        world = World.generate(1, 2, 2, seed=13, hidden_fraction=0.0)
        org = next(world.orgs())["name"]
        project = next(world.projects(org))["name"]
        component = next(world.components(org, project))["name"]
        when = "2026-01-02T03:04:05Z"
        world.update_project(org, project, {"deletionTimestamp": when})
        world.update_component(org, project, component, {"deletionTimestamp": when})
        engine, _ = simulated(world)

        engine.run()

        assert engine.entities == visible_world(world, engine.config)
        for ref in (f"system:{org}/{project}", f"component:{org}/{component}"):
            assert engine.entities[ref].body["metadata"]["annotations"][DELETION_TIMESTAMP] == when

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


def v1_items(*items: dict[str, Any]) -> dict[str, Any]:
    return {"items": list(items), "pagination": {}}


def test_a_component_naming_no_project_is_a_warning_once_while_it_lasts(
    httpx_mock: HTTPXMock, walk, base_url: str
) -> None:
    """cron mails every warning line: the same one at every cycle is said again at INFO, until
    a cycle no longer meets it (its row is pruned), after which it is a warning again."""
    orphan = {"metadata": {"name": "orphan", "namespace": "acme"}, "spec": {}}
    placed = {"metadata": {"name": "orphan", "namespace": "acme"},
              "spec": {"owner": {"projectName": "shop"}}}  # fmt: skip

    def serve(component: dict[str, Any]) -> None:
        httpx_mock.reset()
        pages = {
            "/namespaces": v1_items({"metadata": {"name": "acme"}}),
            "/namespaces/acme/projects": v1_items({"metadata": {"name": "shop"}}),
            "/namespaces/acme/workloads": v1_items(),
            "/namespaces/acme/components": v1_items(component),
        }
        for path, body in pages.items():
            httpx_mock.add_response(url=f"{base_url}{path}?limit=2", json=body)

    engine = walk(api="v1")
    levels = []
    for component in (orphan, orphan, orphan, placed, placed, orphan):
        serve(component)
        with structlog.testing.capture_logs() as logs:
            engine.run()
        said = [log for log in logs if log["event"] == "component_without_project"]
        levels.append(said[0]["log_level"] if said else None)

    assert levels == ["warning", "info", "info", None, None, "warning"]
    assert sorted(engine.entities) == [
        "component:acme/orphan", "domain:default/acme", "system:acme/shop",
    ]  # fmt: skip


def test_a_v1_component_naming_no_project_is_left_out_not_fatal(
    httpx_mock: HTTPXMock, walk, base_url: str
) -> None:
    """A real server's data can lack `spec.owner.projectName`: that component cannot be placed,
    and the rest of its page must still land."""
    component = {"metadata": {"name": "good", "namespace": "acme"},
                 "spec": {"owner": {"projectName": "shop"}}}  # fmt: skip
    orphan = {"metadata": {"name": "orphan", "namespace": "acme"}, "spec": {}}
    pages = {
        "/namespaces": v1_items({"metadata": {"name": "acme"}}),
        "/namespaces/acme/projects": v1_items({"metadata": {"name": "shop"}}),
        "/namespaces/acme/workloads": v1_items(),
        "/namespaces/acme/components": v1_items(component, orphan),
    }
    for path, body in pages.items():
        httpx_mock.add_response(url=f"{base_url}{path}?limit=2", json=body)

    with structlog.testing.capture_logs() as logs:
        engine = walk(api="v1")
        engine.run()

    assert sorted(engine.entities) == [
        "component:acme/good", "domain:default/acme", "system:acme/shop",
    ]  # fmt: skip
    assert [log["component"] for log in logs if log["event"] == "component_without_project"] == [
        "orphan"
    ]


class TestStuckListings:
    """A listing restarted again and again on cursors that may have expired, across bursts."""

    def test_a_stored_cursor_that_works_keeps_a_still_restarting_listings_problem(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """Stale starts and restarts both reach 3; the next stored cursor works, but the
        listing hands out another cursor: it has not come to its end, so it stays a problem."""
        expiring_every_burst(httpx_mock, base_url)
        engine = walk()
        for _ in range(7):
            engine.page()  # a burst each
        assert engine.cursor == cursor(
            "orgs", api_cursor="k4", resets=3, stale=3, head="a", restarts=3
        )
        httpx_mock.reset()
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=k4&pagination=cursor",
            json=listing(["c", "d"], "k5"),
        )

        engine.page()

        assert engine.cursor["listingRestarts"] == 3
        assert engine.cursor["staleStarts"] == 0
        assert "expired between the last 3 bursts" in engine.facts["problem"]

    def test_the_restart_problem_takes_over_without_a_second_warning(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        expiring_every_burst(httpx_mock, base_url)
        engine = walk()
        with structlog.testing.capture_logs() as logs:
            for _ in range(7):
                engine.page()  # a burst each
            httpx_mock.reset()
            httpx_mock.add_response(
                url=f"{base_url}/orgs?limit=2&cursor=k4&pagination=cursor",
                json=listing(["c", "d"], "k5"),
            )
            engine.page()
            httpx_mock.add_response(
                url=f"{base_url}/orgs?limit=2&cursor=k5&pagination=cursor",
                status_code=410,
                json=EXPIRED,
            )
            engine.page()

        assert engine.facts["problem"].startswith("the orgs listing restarted 4 times without")
        warned = [line["event"] for line in logs if line["log_level"] == "warning"]
        assert warned == ["listing_stuck"]  # one streak, one mail

    def test_a_listing_that_restarted_before_is_warned_of_once(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """Its restarts reach 3 at the second stale start, its stale starts at the third:
        one listing that never came to its end in between, one warning."""
        expiring_every_burst(httpx_mock, base_url)
        engine = walk()
        engine.cursor = cursor("orgs", restarts=1)
        with structlog.testing.capture_logs() as logs:
            for _ in range(7):
                engine.page()  # a burst each

        warned = [line["event"] for line in logs if line["log_level"] == "warning"]
        assert warned == ["listing_stuck"]
        assert "expired between the last 3 bursts" in engine.facts["problem"]

    def test_the_warning_waits_for_the_page_that_says_it(
        self, httpx_mock: HTTPXMock, walk, base_url: str, clock: FakeClock
    ) -> None:
        """Each first page after the first comes 400 s after the listing began (the wall clock
        alone: a slow server, a clock stepped), so each expiry after the first is counted: the
        third counted is also the burst's fourth restart, which fails it. Nothing of that
        restart is committed, so it is not warned of either (the next expiry makes it three
        again, and warns then)."""
        first = f"{base_url}/orgs?limit=2&pagination=cursor"
        wall = clock.now
        skew = [0.0]
        clock.now = lambda: wall() + skew[0]  # type: ignore[method-assign]

        def first_page(n: int) -> Any:
            def answer(request: httpx.Request) -> httpx.Response:
                skew[0] += 0.0 if n == 1 else 400.0  # after the listing's start was taken
                return httpx.Response(200, json=listing(["a", "b"], f"k{n}"))

            return answer

        for n in range(1, 5):
            httpx_mock.add_callback(first_page(n), url=first)
            httpx_mock.add_response(
                url=f"{base_url}/orgs?limit=2&cursor=k{n}&pagination=cursor",
                status_code=410,
                json=EXPIRED,
            )
        engine = walk()
        with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError):
            engine.pages(12)

        assert [line["event"] for line in logs if line["log_level"] == "warning"] == []
        assert engine.cursor["listingRestarts"] == 2
        assert "problem" not in engine.facts

    def test_a_listing_whose_parent_is_gone_ends_its_restarts(
        self, httpx_mock: HTTPXMock, walk, base_url: str
    ) -> None:
        """The org whose projects kept restarting is deleted: its listing is over, and the next
        org's starts from no restarts."""
        projects = f"{base_url}/orgs/gone/projects?limit=2&pagination=cursor"
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor", json=listing(["gone", "live"])
        )
        httpx_mock.add_response(url=projects, json=listing(["a", "b"], "p1"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs/gone/projects?limit=2&cursor=p1&pagination=cursor",
            status_code=410,
            json=EXPIRED,
        )
        httpx_mock.add_response(url=projects, json=listing(["a", "b"], "p2"))
        httpx_mock.add_response(
            url=f"{base_url}/orgs/gone/projects?limit=2&cursor=p2&pagination=cursor",
            status_code=404,
            json=gone("ORGANIZATION_NOT_FOUND"),
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/gone", status_code=404, json=gone("ORGANIZATION_NOT_FOUND")
        )
        engine = walk()
        for _ in range(4):
            engine.page()  # a burst each: orgs, gone's first page, its stale start, its page
        assert engine.cursor["listingRestarts"] == 1

        engine.page()  # its stored cursor: the org is gone

        assert "listingRestarts" not in engine.cursor
        assert engine.cursor["position"] == 1  # the first org's listing is done
