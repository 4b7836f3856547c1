"""How an event's re-reads take what the server answers. v1 (`openchoreo-v1-api.md`): a 500 to
a request that carried a cursor restarts that listing from its first page (bounded), as the walk
does; only the API's own 404 (`code: NOT_FOUND`) says an object is gone, and a proxy's text
`404 page not found` fails the event and removes nothing. The org era (`openchoreo-api.md`): the
same, its own 404s carrying `ORGANIZATION_NOT_FOUND`, `PROJECT_NOT_FOUND`, `COMPONENT_NOT_FOUND`.
Against a fake server behind `httpx.MockTransport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from choreo_ingest.errors import NotFoundError, PermanentError, ProviderError, TransientError
from choreo_ingest.models import Delta, Event, IndexEntry
from choreo_ingest.providers.openchoreo import OpenChoreoProvider

API = "/api/v1"
PROXY_404 = httpx.Response(404, text="404 page not found\n", headers={"Content-Type": "text/plain"})
SHOP = {"projectName": "shop"}


def named(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "acme"}, "spec": spec}


def workload(name: str) -> dict[str, Any]:
    return named(name, owner={**SHOP, "componentName": "cart"})


SERVED = {"metadata": {"name": "acme", "labels": {"openchoreo.dev/control-plane": "true"}}}


def cart_and_its_project() -> dict[str, httpx.Response | Callable[[], httpx.Response]]:
    """The component `cart`, its project `shop` and its namespace, as single reads answer them."""
    return {
        "/namespaces/acme": httpx.Response(200, json=SERVED),
        "/namespaces/acme/projects/shop": httpx.Response(200, json=named("shop")),
        "/namespaces/acme/components/cart": httpx.Response(200, json=named("cart", owner=SHOP)),
    }


def api_404(kind: str) -> httpx.Response:
    return httpx.Response(404, json={"error": f"{kind} not found", "code": "NOT_FOUND"})


def page(*items: dict[str, Any], cursor: str | None = None) -> httpx.Response:
    pagination = {"nextCursor": cursor} if cursor else {}
    return httpx.Response(200, json={"items": list(items), "pagination": pagination})


class FakeV1:
    """Answers each route (path and query, below `/api/v1`) from `routes`: a response, or a
    callable of the request; records what was asked."""

    def __init__(self, routes: dict[str, httpx.Response | Callable[[], httpx.Response]]) -> None:
        self.routes = routes
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = request.url.raw_path.decode().removeprefix(API)
        self.asked.append(route)
        answer = self.routes.get(route, PROXY_404)
        return answer() if callable(answer) else answer


def handle(fake_engine, config_for, clock, server: FakeV1, event: Event, api: str = "v1") -> Delta:
    config = config_for(api=api)
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(server))
    engine = fake_engine(provider, clock, config)
    with provider.around(engine.burst) as context:
        return provider.handle_event(context, event)


CART = Event("Component", "cart", "updated", "acme")
WORKLOADS = "/namespaces/acme/workloads?component=cart&limit=50"  # chunkSize, its default


def expired() -> httpx.Response:
    return httpx.Response(500, json={"error": "Internal server error", "code": "INTERNAL_ERROR"})


def test_an_expired_cursor_restarts_the_events_listing_from_its_first_page(
    fake_engine, config_for, clock
) -> None:
    """Sent again and again, the expired cursor failed the event as a transient error, and the
    drain held every event behind it for the backoff."""
    first_pages = iter([page(workload("w1"), cursor="old"), page(workload("w1"), cursor="new")])
    server = FakeV1(
        {
            **cart_and_its_project(),
            WORKLOADS: lambda: next(first_pages),
            f"{WORKLOADS}&cursor=old": expired,
            f"{WORKLOADS}&cursor=new": page(workload("w2")),
        }
    )

    delta = handle(fake_engine, config_for, clock, server, CART)

    rows = sorted(row.key for row in delta.index if row.table == "workload" and row.value)
    assert rows == ["acme/w1", "acme/w2"]
    assert [route for route in server.asked if route.startswith(WORKLOADS)] == [
        WORKLOADS,
        f"{WORKLOADS}&cursor=old",
        f"{WORKLOADS}&cursor=old",  # once more: a passing fault answers the second time
        WORKLOADS,
        f"{WORKLOADS}&cursor=new",
    ]


def test_a_single_500_to_a_cursor_is_asked_once_more_without_restarting(
    fake_engine, config_for, clock
) -> None:
    answers = iter([expired(), page(workload("w2"))])
    server = FakeV1(
        {
            **cart_and_its_project(),
            WORKLOADS: page(workload("w1"), cursor="c2"),
            f"{WORKLOADS}&cursor=c2": lambda: next(answers),
        }
    )

    delta = handle(fake_engine, config_for, clock, server, CART)

    assert {row.key for row in delta.index if row.table == "workload" and row.value} == {
        "acme/w1",
        "acme/w2",
    }
    assert server.asked.count(WORKLOADS) == 1


def test_a_listing_whose_cursors_keep_failing_fails_the_event_after_three_restarts(
    fake_engine, config_for, clock
) -> None:
    """Not a transient error: the drain goes on with the events after it."""
    server = FakeV1(
        {
            **cart_and_its_project(),
            WORKLOADS: page(workload("w1"), cursor="c2"),
            f"{WORKLOADS}&cursor=c2": expired,
        }
    )

    with pytest.raises(ProviderError) as caught:
        handle(fake_engine, config_for, clock, server, CART)

    assert not isinstance(caught.value, TransientError)
    assert str(caught.value).startswith("GET /namespaces/acme/workloads: HTTP 500 INTERNAL_ERROR")
    assert "failed again after 3 restarts from its first page" in str(caught.value)
    assert [route for route in server.asked if route.startswith(WORKLOADS)] == 4 * [
        WORKLOADS,
        f"{WORKLOADS}&cursor=c2",
        f"{WORKLOADS}&cursor=c2",
    ]


READS = [
    (Event("Namespace", "acme", "deleted", ""), "/namespaces/acme", "Namespace"),
    (Event("Project", "shop", "deleted", "acme"), "/namespaces/acme/projects/shop", "Project"),
    (
        Event("Component", "cart", "deleted", "acme"),
        "/namespaces/acme/components/cart",
        "Component",
    ),
    (Event("Workload", "w1", "deleted", "acme"), "/namespaces/acme/workloads/w1", "Workload"),
]
IDS = ["namespace", "project", "component", "workload"]


@pytest.mark.parametrize(("event", "read", "kind"), READS, ids=IDS)
def test_the_apis_own_404_on_an_events_read_removes_what_it_names(
    fake_engine, config_for, clock, event: Event, read: str, kind: str
) -> None:
    server = FakeV1({read: api_404(kind), WORKLOADS: page()})

    delta = handle(fake_engine, config_for, clock, server, event)

    assert delta.removal_scopes or delta.removals or delta.index
    assert not delta.upserts
    if kind == "Component":
        assert list(delta.removals) == ["component:acme/cart"]
    if kind == "Workload":
        assert [row for row in delta.index if row.table == "workload"] == [
            IndexEntry("workload", "acme/w1")
        ]


@pytest.mark.parametrize(("event", "read", "kind"), READS, ids=IDS)
def test_a_404_that_is_not_the_apis_fails_the_event_and_removes_nothing(
    fake_engine, config_for, clock, event: Event, read: str, kind: str
) -> None:
    """A proxy or ingress in front of the API without the route answers Go's text 404: taken
    for "gone", it removed what the event named, and everything below it."""
    server = FakeV1({read: PROXY_404})

    with pytest.raises(PermanentError) as caught:
        handle(fake_engine, config_for, clock, server, event)

    assert not isinstance(caught.value, NotFoundError)
    assert str(caught.value).startswith(f"GET {read}: HTTP 404: 404 page not found; ")
    assert "not the API's own answer, which carries code NOT_FOUND" in str(caught.value)
    assert "nothing is removed" in str(caught.value)
    assert server.asked == [read]


def test_a_proxys_404_on_a_projects_component_listing_is_not_taken_for_no_components(
    fake_engine, config_for, clock
) -> None:
    """The document answers `?project=` naming an unknown project with its 404: nothing to
    list. A text 404 there says nothing of the project."""
    project = named("shop")
    project["metadata"]["annotations"] = {"backstage.io/owner": "group:default/team-new"}
    server = FakeV1(
        {
            "/namespaces/acme/projects/shop": httpx.Response(200, json=project),
            "/namespaces/acme": httpx.Response(
                200,
                json={
                    "metadata": {"name": "acme", "labels": {"openchoreo.dev/control-plane": "true"}}
                },
            ),
        }
    )

    with pytest.raises(PermanentError, match="not the API's own answer") as caught:
        handle(fake_engine, config_for, clock, server, Event("Project", "shop", "updated", "acme"))

    assert caught.value.path == "/namespaces/acme/components"


ORG_READS = [
    (Event("Organization", "acme", "updated", ""), "/orgs/acme", "ORGANIZATION_NOT_FOUND"),
    (Event("Project", "shop", "updated", "acme"), "/orgs/acme/projects/shop", "PROJECT_NOT_FOUND"),
    (
        Event("Component", "cart", "updated", "acme", project="shop"),
        "/orgs/acme/projects/shop/components/cart?include=type%2Cworkload",
        "COMPONENT_NOT_FOUND",
    ),
]
ORG_IDS = ["organization", "project", "component"]


def org_error(code: str) -> httpx.Response:
    return httpx.Response(404, json={"success": False, "error": "not found", "code": code})


@pytest.mark.parametrize(("event", "read", "code"), ORG_READS, ids=ORG_IDS)
def test_the_org_eras_own_404_on_an_events_read_removes_what_it_names(
    fake_engine, config_for, clock, event: Event, read: str, code: str
) -> None:
    server = FakeV1({read: org_error(code)})

    delta = handle(fake_engine, config_for, clock, server, event, api="orgs")

    assert delta.removal_scopes
    assert not delta.upserts


@pytest.mark.parametrize("answer", [PROXY_404, org_error("NOT_FOUND")], ids=["text", "no-route"])
@pytest.mark.parametrize(("event", "read", "code"), ORG_READS, ids=ORG_IDS)
def test_an_org_era_404_that_is_not_the_apis_fails_the_event_and_removes_nothing(
    fake_engine, config_for, clock, event: Event, read: str, code: str, answer: httpx.Response
) -> None:
    """The org-era server answers a route it lacks with `NOT_FOUND`, or something in front of it
    with a text 404: neither says the object is gone."""
    server = FakeV1({read: answer})

    with pytest.raises(PermanentError, match="not the API's own answer") as caught:
        handle(fake_engine, config_for, clock, server, event, api="orgs")

    assert not isinstance(caught.value, NotFoundError)
    assert server.asked == [read]


ORG_PROJECTS = "/orgs/acme/projects?limit=50&pagination=cursor"
CART_SOMEWHERE = Event("Component", "cart", "updated", "acme")
"""An org-era Component event without `project`: the org's projects are listed to find it."""


def org_projects_after(cursor: str) -> str:
    return f"/orgs/acme/projects?limit=50&cursor={cursor}&pagination=cursor"


def org_page(*names: str, cursor: str = "") -> httpx.Response:
    items = [{"uid": f"uid-{n}", "name": n, "orgName": "acme"} for n in names]
    return httpx.Response(
        200, json={"success": True, "data": {"items": items, "nextCursor": cursor}}
    )


def org_expired() -> httpx.Response:
    return httpx.Response(
        410,
        json={
            "success": False,
            "error": "the provided continue parameter is too old to display a consistent list "
            "result",
            "code": "CONTINUE_TOKEN_EXPIRED",
            "metadata": {"retryable": True, "code": "CONTINUE_TOKEN_EXPIRED"},
        },
    )


def cart_in_billing() -> dict[str, httpx.Response | Callable[[], httpx.Response]]:
    """`cart` lives in the project `billing`, not in `shop`, as single reads answer it."""
    detail = "components/cart?include=type%2Cworkload"
    cart = {"uid": "uid-cart", "name": "cart", "type": "Service", "projectName": "billing"}
    return {
        f"/orgs/acme/projects/shop/{detail}": org_error("COMPONENT_NOT_FOUND"),
        f"/orgs/acme/projects/billing/{detail}": httpx.Response(
            200, json={"success": True, "data": {**cart, "orgName": "acme"}}
        ),
        "/orgs/acme/projects/billing": httpx.Response(
            200, json={"success": True, "data": {"uid": "uid-billing", "name": "billing"}}
        ),
    }


@pytest.mark.parametrize("answer", [PROXY_404, org_error("NOT_FOUND")], ids=["text", "no-route"])
def test_a_404_that_is_not_the_org_eras_on_its_project_listing_fails_a_projectless_event(
    fake_engine, config_for, clock, answer: httpx.Response
) -> None:
    """Taken for "the org has no projects", a proxy's 404 let a `deleted` event pass as applied
    without removing the component, and an `updated` one without reading it."""
    server = FakeV1({ORG_PROJECTS: answer})

    with pytest.raises(PermanentError, match="not the API's own answer") as caught:
        handle(fake_engine, config_for, clock, server, CART_SOMEWHERE, api="orgs")

    assert not isinstance(caught.value, NotFoundError)
    assert caught.value.path == "/orgs/acme/projects"
    assert server.asked == [ORG_PROJECTS]


def test_an_expired_cursor_restarts_a_projectless_events_project_listing(
    fake_engine, config_for, clock
) -> None:
    """410 CONTINUE_TOKEN_EXPIRED on the org's project listing: read again from its first page,
    the listing finds the project that holds the component."""
    first_pages = iter([org_page("shop", cursor="old"), org_page("shop", cursor="new")])
    server = FakeV1(
        {
            **cart_in_billing(),
            ORG_PROJECTS: lambda: next(first_pages),
            org_projects_after("old"): org_expired(),
            org_projects_after("new"): org_page("billing"),
        }
    )

    delta = handle(fake_engine, config_for, clock, server, CART_SOMEWHERE, api="orgs")

    assert "component:acme/cart" in {entity.ref for entity in delta.upserts}
    assert delta.removal_scopes == ["acme/billing/cart"]
    assert [route for route in server.asked if route.startswith("/orgs/acme/projects?")] == [
        ORG_PROJECTS,
        org_projects_after("old"),
        ORG_PROJECTS,
        org_projects_after("new"),
    ]


def test_a_projectless_events_project_listing_whose_cursors_keep_expiring_fails_the_event(
    fake_engine, config_for, clock
) -> None:
    """After three restarts, and not as a transient error: the drain goes on with the events
    after it."""
    server = FakeV1(
        {ORG_PROJECTS: org_page("shop", cursor="c2"), org_projects_after("c2"): org_expired()}
    )

    with pytest.raises(ProviderError) as caught:
        handle(fake_engine, config_for, clock, server, CART_SOMEWHERE, api="orgs")

    assert not isinstance(caught.value, TransientError)
    assert str(caught.value).startswith("GET /orgs/acme/projects: HTTP 410 CONTINUE_TOKEN_EXPIRED")
    assert "failed again after 3 restarts from its first page" in str(caught.value)
    assert server.asked == 4 * [ORG_PROJECTS, org_projects_after("c2")]


def test_a_rejected_cursor_restarts_a_projectless_events_project_listing_once(
    fake_engine, config_for, clock
) -> None:
    """400 INVALID_CURSOR_FORMAT to a request that carried a cursor: restarted once, as the walk
    does; refused again, the event fails."""
    rejected = httpx.Response(
        400, json={"success": False, "error": "invalid cursor", "code": "INVALID_CURSOR_FORMAT"}
    )
    server = FakeV1(
        {ORG_PROJECTS: org_page("shop", cursor="c2"), org_projects_after("c2"): rejected}
    )

    with pytest.raises(PermanentError, match="refused again after the listing restarted once"):
        handle(fake_engine, config_for, clock, server, CART_SOMEWHERE, api="orgs")

    assert server.asked == 2 * [ORG_PROJECTS, org_projects_after("c2")]
