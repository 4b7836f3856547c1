"""The v1 wire format as `openchoreo-v1-api.md` states it, tested against the document's own
shapes (not against what the simulator happens to send): where a listing ends, pages left empty
by authorization filtering, error bodies, workloads named freely and joined by their owner."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from choreo_ingest.config import AuthConfig, OAuthConfig
from choreo_ingest.errors import AuthError, GrantRefused, NotFoundError, PermanentError
from choreo_ingest.models import Delta, Event, IndexEntry
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo.resources_v1 import parse_list

BASE = "https://openchoreo.test/api/v1"


@pytest.mark.parametrize(
    ("body", "next_cursor"),
    [
        ({"items": [], "pagination": {"nextCursor": "c2"}}, "c2"),
        ({"items": [{"metadata": {"name": "a"}}], "pagination": {}}, ""),
        ({"items": [], "pagination": {"nextCursor": ""}}, ""),
        ({"items": [], "pagination": {"nextCursor": None}}, ""),
        ({"items": []}, ""),
        ({"items": None, "pagination": {"nextCursor": "c2"}}, "c2"),
    ],
    ids=[
        "empty-page-goes-on",
        "pagination-empty-ends",
        "blank-ends",
        "null-ends",
        "absent-ends",
        "null-items-is-an-empty-page",
    ],
)
def test_only_a_missing_next_cursor_ends_a_listing(body: dict[str, Any], next_cursor: str) -> None:
    assert parse_list(body, "/namespaces").next_cursor == next_cursor


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"items": []}},
        {"items": "x"},
        {"items": [], "pagination": {"nextCursor": 7}},
        {"pagination": {}},
    ],
    ids=["org-era-envelope", "items-not-a-list", "cursor-not-text", "no-items"],
)
def test_a_body_that_is_not_a_v1_list_is_refused_naming_the_path(body: dict[str, Any]) -> None:
    with pytest.raises(PermanentError, match="GET /namespaces/acme/components"):
        parse_list(body, "/namespaces/acme/components")


def walk_pages(httpx_mock: HTTPXMock, pages: dict[str, list[dict[str, Any]]]) -> None:
    """Serve `path?query -> [response, ...]` in order."""
    for path, responses in pages.items():
        for response in responses:
            httpx_mock.add_response(url=f"{BASE}{path}", **response)


def items(*resources: dict[str, Any], cursor: str | None = None) -> dict[str, Any]:
    pagination = {"nextCursor": cursor} if cursor else {}
    return {"json": {"items": list(resources), "pagination": pagination}}


def named(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "acme"}, "spec": spec}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    """A namespace as `/namespaces/{ns}` answers it: Kubernetes labels every namespace with its
    name, and OpenChoreo's served ones with `openchoreo.dev/control-plane: "true"`."""
    labels = {"kubernetes.io/metadata.name": name, **labels}
    return {"metadata": {"name": name, "labels": labels}, "status": {"phase": "Active"}}


SERVED = {"openchoreo.dev/control-plane": "true"}


SCHEMA = {"type": "openapi", "content": "openapi: 3.0.0"}


def test_a_page_emptied_by_filtering_does_not_end_the_walk_and_free_named_workloads_join(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """A page may come back empty with a cursor (items the caller may not see); a workload is
    named freely and joined to its component by `spec.owner.componentName`, the first by name
    when there are two."""
    owner = {"projectName": "shop", "componentName": "cart"}
    later = named("zz-second", owner=owner, endpoints={"late": {"type": "HTTP", "schema": SCHEMA}})
    first = named("aa-first", owner=owner, endpoints={"rest": {"type": "HTTP", "schema": SCHEMA}})
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"))],
            "/namespaces/acme/projects?limit=2": [items(named("shop"))],
            "/namespaces/acme/workloads?limit=2": [items(later, cursor="w2")],
            "/namespaces/acme/workloads?limit=2&cursor=w2": [items(cursor="w3")],
            "/namespaces/acme/workloads?limit=2&cursor=w3": [items(first)],
            "/namespaces/acme/components?limit=2": [items(cursor="c2")],
            "/namespaces/acme/components?limit=2&cursor=c2": [
                items(named("cart", owner={"projectName": "shop"}))
            ],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    engine.run()

    component = engine.entities["component:acme/cart"].body
    assert component["spec"]["providesApis"] == ["api:acme/shop-cart-rest"]
    assert component["metadata"]["annotations"]["openchoreo.io/workload"] == "aa-first"
    assert "api:acme/shop-cart-late" not in engine.entities


def test_workload_dependencies_in_the_openapi_shape_become_consumed_apis(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """`spec.dependencies.endpoints[]` as openchoreo-api.yaml's WorkloadConnection has it
    (`project` optional, `visibility` and `envBindings` besides): the endpoint's API, when it
    has one, whatever the workloads are called and whichever page the target comes in."""

    def connection(component: str, name: str, **more: str) -> dict[str, Any]:
        return {
            "component": component,
            "name": name,
            "visibility": "project",
            "envBindings": {"address": "ORDERS_URL"},
            **more,
        }

    needs = {
        "endpoints": [
            connection("billing", "rest", project="pay"),
            connection("orders", "grpc"),  # no schema: no API to consume
            connection("billing", "rest"),  # billing is not in the consumer's project
        ]
    }
    workloads = [
        named(
            "w-7f3a",
            owner={"projectName": "shop", "componentName": "cart"},
            endpoints={},
            dependencies=needs,
        ),
        named(
            "billing-deploy",
            owner={"projectName": "pay", "componentName": "billing"},
            endpoints={"rest": {"type": "HTTP", "port": 80, "schema": SCHEMA}},
        ),
        named(
            "orders-main",
            owner={"projectName": "shop", "componentName": "orders"},
            endpoints={"grpc": {"type": "gRPC", "port": 9090}},
        ),
    ]
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=1": [items(named("acme"))],
            "/namespaces/acme/projects?limit=1": [items(named("pay"), cursor="p2")],
            "/namespaces/acme/projects?limit=1&cursor=p2": [items(named("shop"))],
            "/namespaces/acme/workloads?limit=1": [items(workloads[0], cursor="w2")],
            "/namespaces/acme/workloads?limit=1&cursor=w2": [items(workloads[1], cursor="w3")],
            "/namespaces/acme/workloads?limit=1&cursor=w3": [items(workloads[2])],
            "/namespaces/acme/components?limit=1": [
                items(named("cart", owner={"projectName": "shop"}), cursor="c2")
            ],
            "/namespaces/acme/components?limit=1&cursor=c2": [
                items(named("billing", owner={"projectName": "pay"}), cursor="c3")
            ],
            "/namespaces/acme/components?limit=1&cursor=c3": [
                items(named("orders", owner={"projectName": "shop"}))
            ],
        },
    )
    config = config_for(api="v1", chunk_size=1)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    engine.run()

    cart = engine.entities["component:acme/cart"].body
    assert cart["spec"]["consumesApis"] == ["api:acme/pay-billing-rest"]
    assert "api:acme/pay-billing-rest" in engine.entities
    assert "consumesApis" not in engine.entities["component:acme/billing"].body["spec"]


def test_a_single_read_404_is_the_documents_not_found_shape(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    httpx_mock.add_response(
        url=f"{BASE}/namespaces/acme",
        status_code=404,
        json={"error": "Namespace not found", "code": "NOT_FOUND"},
    )
    config = config_for(api="v1")
    provider = OpenChoreoProvider(config)

    burst = fake_engine(provider, clock, config).burst
    with provider.around(burst) as context, pytest.raises(NotFoundError) as caught:
        context.client.get_json("/namespaces/acme")

    assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")
    assert "Namespace not found" in str(caught.value)


def test_a_401_from_the_jwt_middleware_is_read_in_its_own_shape(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """401 bodies are `{error: CODE, message}`, unlike the handlers' `{error: message, code}`."""
    httpx_mock.add_response(  # a static token: not sent again
        url=f"{BASE}/namespaces?limit=50",
        status_code=401,
        json={"error": "INVALID_TOKEN", "message": "token is expired"},
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with pytest.raises(AuthError) as caught:
        engine.page()

    assert caught.value.code == "INVALID_TOKEN"
    assert "token is expired" in str(caught.value)


@pytest.mark.parametrize(
    "cursors",
    [["w2", "w2"], ["w2", "w3", "w2"]],
    ids=["the-request-cursor-echoed", "a-cursor-from-two-pages-back"],
)
def test_an_events_workload_listing_that_repeats_a_cursor_fails_instead_of_ending(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, cursors: list[str]
) -> None:
    """Taken for the end, the cut-short listing would drop the workloads it had not reached,
    and the component's APIs with them."""
    owner = {"projectName": "shop", "componentName": "cart"}
    workload = named("cart-w", owner=owner, endpoints={"rest": {"type": "HTTP", "schema": SCHEMA}})
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"))],
            "/namespaces/acme/projects?limit=2": [items(named("shop"))],
            "/namespaces/acme/workloads?limit=2": [items(workload)],
            "/namespaces/acme/components?limit=2": [
                items(named("cart", owner={"projectName": "shop"}))
            ],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.run()
    component = named("cart", owner={"projectName": "shop"})
    httpx_mock.add_response(url=f"{BASE}/namespaces/acme/components/cart", json=component)
    listing = "/namespaces/acme/workloads?component=cart&limit=2"
    httpx_mock.add_response(url=f"{BASE}{listing}", **items(cursor=cursors[0]))
    for sent, answered in pairwise(cursors):
        httpx_mock.add_response(url=f"{BASE}{listing}&cursor={sent}", **items(cursor=answered))

    with engine.provider.around(engine.burst) as context, pytest.raises(PermanentError) as caught:
        engine.provider.handle_event(context, Event("Component", "cart", "updated", "acme"))

    assert "returned a cursor it had returned before" in str(caught.value)
    assert caught.value.path == "/namespaces/acme/workloads"


def test_a_component_made_again_in_another_project_takes_its_old_apis_and_claims_away(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """`cart` is deleted from `shop` and made again in `web`: the coalesced event is its
    `created`. Its `shop-cart-e` API stayed until the next sweep, claiming that name."""
    endpoint = {"e": {"type": "HTTP", "schema": SCHEMA}}
    before = named(
        "w-cart", owner={"projectName": "shop", "componentName": "cart"}, endpoints=endpoint
    )
    after = named(
        "w-cart", owner={"projectName": "web", "componentName": "cart"}, endpoints=endpoint
    )
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=50": [items(named("acme"))],
            "/namespaces/acme/projects?limit=50": [items(named("shop"), named("web"))],
            "/namespaces/acme/workloads?limit=50": [items(before)],
            "/namespaces/acme/components?limit=50": [
                items(named("cart", owner={"projectName": "shop"}))
            ],
            "/namespaces/acme/workloads?component=cart&limit=50": [items(after)],
            "/namespaces/acme/components/cart": [
                {"json": named("cart", owner={"projectName": "web"})}
            ],
        },
    )
    for path, body in [
        ("/namespaces/acme", namespace("acme", **SERVED)),
        ("/namespaces/acme/projects/web", named("web")),
    ]:
        httpx_mock.add_response(url=f"{BASE}{path}", json=body, is_optional=True)
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.run()
    assert "api:acme/shop-cart-e" in engine.entities

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Component", "cart", "created", "acme"))

    assert "api:acme/web-cart-e" in {entity.ref for entity in delta.upserts}
    assert set(delta.removal_scopes) == {"acme/web/cart", "acme/shop/cart"}
    released = {row.key for row in delta.index if row.value is None}
    assert "acme/shop-cart-e|shop/cart/e" in released


FORBIDDEN = {
    "status_code": 403,
    "json": {"error": "You do not have permission to perform this operation", "code": "FORBIDDEN"},
}


@pytest.mark.parametrize(
    ("event", "read"),
    [
        (Event("Namespace", "hidden", "created", ""), "/namespaces/hidden"),
        (Event("Project", "p", "updated", "hidden"), "/namespaces/hidden/projects/p"),
        (Event("Component", "c", "updated", "hidden"), "/namespaces/hidden/components/c"),
        (Event("Workload", "w", "deleted", "hidden"), "/namespaces/hidden/workloads/w"),
    ],
    ids=["namespace", "project", "component", "workload"],
)
def test_an_event_for_an_object_the_client_may_not_read_changes_nothing(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, event: Event, read: str
) -> None:
    """The forwarder posts the events of every namespace OpenChoreo serves; a role may cover only
    some of them."""
    httpx_mock.add_response(url=f"{BASE}{read}", **FORBIDDEN)
    httpx_mock.add_response(
        url=f"{BASE}/namespaces/hidden/workloads?component=c&limit=50", **items(), is_optional=True
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, event)

    assert delta == Delta()


@pytest.mark.parametrize(
    ("event", "read", "scope"),
    [
        (Event("Namespace", "gone", "deleted", ""), "/namespaces/gone", "gone"),
        (Event("Project", "p", "deleted", "gone"), "/namespaces/gone/projects/p", "gone/p"),
    ],
    ids=["namespace", "project"],
)
def test_a_deleted_namespace_or_project_whose_read_answers_403_goes(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, event: Event, read: str, scope: str
) -> None:
    """OpenChoreo checks roles before it looks a namespace or project up: one deleted with the
    role binding that let this client see it answers 403, not 404."""
    httpx_mock.add_response(url=f"{BASE}{read}", **FORBIDDEN)
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.index.apply([IndexEntry("project", "gone/p", "", {"owner": "group:default/a"})])

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, event)

    assert list(delta.removal_scopes) == [scope]
    assert [(row.key, row.value) for row in delta.index if row.table == "project"] == [
        ("gone/p", None)
    ]
    assert not delta.upserts


def test_an_identity_provider_refusing_the_token_with_403_fails_the_event_not_hides_it(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """Auth0 answers a client without a grant for the audience 403 `access_denied`: the object
    was never asked for, so the event must not pass for one about an object out of reach."""
    token_url = "https://idp.openchoreo.test/oauth2/token"
    httpx_mock.add_response(
        url=token_url,
        status_code=403,
        json={"error": "access_denied", "error_description": "no grant for this audience"},
        is_reusable=True,
    )
    oauth = OAuthConfig(token_url=token_url, client_id="choreo-ingest", client_secret="s3")
    config = config_for(None, api="v1")
    config = replace(config, openchoreo=replace(config.openchoreo, auth=AuthConfig(oauth=oauth)))
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context, pytest.raises(GrantRefused):
        engine.provider.handle_event(context, Event("Component", "c", "updated", "acme"))


def test_a_401_on_an_events_read_still_fails_it(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    httpx_mock.add_response(
        url=f"{BASE}/namespaces/acme",
        status_code=401,
        json={"error": "INVALID_TOKEN", "message": "token is expired"},
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context, pytest.raises(AuthError):
        engine.provider.handle_event(context, Event("Namespace", "acme", "updated", ""))


def test_a_project_whose_components_listing_answers_404_maps_no_components(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """Its owner changed, so its components would be mapped again, but the `?project=` filter
    answers the document's 404 (the project went away between the two reads)."""
    project = named("shop")
    project["metadata"]["annotations"] = {"backstage.io/owner": "group:default/team-new"}
    httpx_mock.add_response(url=f"{BASE}/namespaces/acme/projects/shop", json=project)
    httpx_mock.add_response(
        url=f"{BASE}/namespaces/acme/components?project=shop&limit=50",
        status_code=404,
        json={"error": "Project not found", "code": "NOT_FOUND"},
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.index.apply([IndexEntry("project", "acme/shop", "", {"owner": "group:default/old"})])

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Project", "shop", "updated", "acme"))

    assert [entity.ref for entity in delta.upserts] == ["system:acme/shop"]
    assert [(row.key, row.value) for row in delta.index if row.table == "project"] == [
        ("acme/shop", {"owner": "group:default/team-new"})
    ]


def test_a_404_on_a_components_workload_listing_fails_the_event_and_removes_nothing(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """The document's server answers an unknown `?component=` with an empty list, so a 404 is
    something else (a proxy, a restart): taken for "no workloads", it would drop the APIs."""
    httpx_mock.add_response(
        url=f"{BASE}/namespaces/acme/components/cart",
        json=named("cart", owner={"projectName": "shop"}),
    )
    httpx_mock.add_response(
        url=f"{BASE}/namespaces/acme/workloads?component=cart&limit=50",
        status_code=404,
        text="404 page not found",
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context, pytest.raises(PermanentError) as caught:
        engine.provider.handle_event(context, Event("Component", "cart", "updated", "acme"))

    assert "not the API's own answer" in str(caught.value)
    assert not isinstance(caught.value, NotFoundError)


def test_an_item_without_a_name_is_quoted_with_the_token_masked(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, token: str
) -> None:
    """A server that echoes the bearer token into what it lists: the error quotes the item,
    which `status` shows, but never the token, even where the quote is cut short."""
    item = {"metadata": f"{token}", "spec": {"note": "x" * 150 + " " + token}}
    walk_pages(httpx_mock, {"/namespaces?limit=2": [items(item)]})
    config = config_for(api="v1", chunk_size=2, token=token)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with pytest.raises(PermanentError) as caught:
        engine.run()

    message = str(caught.value)
    assert message.startswith("GET /namespaces: an item has no name: {'metadata': '***'")
    assert token[:8] not in message


ROUTE_MISSING = {"status_code": 404, "text": "404 page not found"}


@pytest.mark.parametrize(
    ("parent", "failure"),
    [
        (
            {"json": namespace("acme", **SERVED)},
            "GET /namespaces/acme/projects: HTTP 404: 404 page not found; yet GET /namespaces/acme "
            "finds it, so the listing itself is missing (a proxy or ingress in front of the API "
            "without this route?); nothing it lists is removed meanwhile",
        ),
        (
            ROUTE_MISSING,
            "GET /namespaces/acme: HTTP 404: 404 page not found; not the API's own answer, which "
            "carries code NOT_FOUND (a proxy or ingress in front of the API without this route?): "
            "nothing is removed for it meanwhile",
        ),
    ],
    ids=["namespace-still-answers", "namespace-answers-a-proxys-404"],
)
def test_a_proxys_404_on_a_namespaces_listing_fails_the_burst_unless_the_namespace_is_gone(
    httpx_mock: HTTPXMock,
    fake_engine,
    config_for,
    clock,
    parent: dict[str, Any],
    failure: str,
) -> None:
    """The document lists an absent namespace's children with 200 and no items, so a 404 there
    is something in front of the API: skipping the namespace would sweep all it holds. Should
    the namespace answer a proxy's 404 too, only the API's own (`code: NOT_FOUND`) says it is
    gone."""
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"), named("zeta"))],
            "/namespaces/acme/projects?limit=2": [ROUTE_MISSING],
            "/namespaces/acme": [parent],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with pytest.raises(PermanentError) as caught:
        engine.run()

    assert str(caught.value) == failure


def test_a_404_on_a_namespaces_listing_whose_namespace_is_gone_too_goes_on_with_the_next(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    empty = items()
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"), named("zeta"))],
            "/namespaces/acme/projects?limit=2": [ROUTE_MISSING],
            "/namespaces/acme": [
                {"status_code": 404, "json": {"error": "Namespace not found", "code": "NOT_FOUND"}}
            ],
            "/namespaces/zeta/projects?limit=2": [
                items({"metadata": {"name": "shop", "namespace": "zeta"}})
            ],
            "/namespaces/acme/workloads?limit=2": [empty],
            "/namespaces/zeta/workloads?limit=2": [empty],
            "/namespaces/acme/components?limit=2": [empty],
            "/namespaces/zeta/components?limit=2": [empty],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    engine.run()

    assert sorted(engine.entities) == [
        "domain:default/acme",
        "domain:default/zeta",
        "system:zeta/shop",
    ]


@pytest.mark.parametrize("listing", ["workloads", "components"])
def test_a_namespace_gone_while_its_workloads_or_components_are_listed_leaves_the_next_whole(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, listing: str
) -> None:
    """The walk goes on with the next namespace's workloads, then its components (the gone
    one's components are not asked for): it does not carry on in the phase the gone namespace
    failed in, which would list the next one's components before its workloads, without APIs."""
    zeta = {"namespace": "zeta"}
    workload = {
        "metadata": {**zeta, "name": "cart-workload"},
        "spec": {
            "owner": {"projectName": "shop", "componentName": "cart"},
            "endpoints": {"rest": {"type": "HTTP", "schema": SCHEMA}},
        },
    }
    component = {"metadata": {**zeta, "name": "cart"}, "spec": {"owner": {"projectName": "shop"}}}
    gone = {"/namespaces/acme/workloads?limit=2": [ROUTE_MISSING]}
    if listing == "components":
        gone = {
            "/namespaces/acme/workloads?limit=2": [items()],
            "/namespaces/acme/components?limit=2": [ROUTE_MISSING],
        }
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"), named("zeta"))],
            "/namespaces/acme/projects?limit=2": [items()],
            "/namespaces/zeta/projects?limit=2": [items({"metadata": {**zeta, "name": "shop"}})],
            **gone,
            "/namespaces/acme": [NOT_FOUND],
            "/namespaces/zeta/workloads?limit=2": [items(workload)],
            "/namespaces/zeta/components?limit=2": [items(component)],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    engine.run()

    cart = engine.entities["component:zeta/cart"].body
    assert cart["spec"]["providesApis"] == ["api:zeta/shop-cart-rest"]
    assert "system:zeta/shop" in engine.entities


INTERNAL = {
    "status_code": 500,
    "json": {"error": "Internal server error", "code": "INTERNAL_ERROR"},
}


def test_a_stale_cursor_answers_500_and_restarts_only_its_listing(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """The document: no 410 in v1; a cursor the server no longer knows answers 500 (and keeps
    answering it), so a 500 on a request that carried a cursor restarts that listing from its
    first page, counted as a cursor reset."""
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"))],
            "/namespaces/acme/projects?limit=2": [
                items(named("shop"), named("web"), cursor="stale"),
                items(named("shop"), named("web")),
            ],
            "/namespaces/acme/projects?limit=2&cursor=stale": [INTERNAL, INTERNAL],
            "/namespaces/acme/workloads?limit=2": [items()],
            "/namespaces/acme/components?limit=2": [items()],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    engine.run()

    assert engine.counters["cursor_resets"] == 1
    assert {"system:acme/shop", "system:acme/web", "domain:default/acme"} <= set(engine.entities)


def test_a_listing_whose_cursors_come_round_again_fails_instead_of_looping(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """A -> B -> A: no page echoes its own cursor, yet followed the walk would never end."""
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"))],
            "/namespaces/acme/projects?limit=2": [items(named("shop"), named("web"), cursor="A")],
            "/namespaces/acme/projects?limit=2&cursor=A": [items(named("api"), cursor="B")],
            "/namespaces/acme/projects?limit=2&cursor=B": [items(named("db"), cursor="A")],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with pytest.raises(PermanentError, match="returned a cursor it had returned before"):
        engine.run()


def refs_of(entity: Any) -> list[str]:
    """The refs an entity's spec makes to other entities, as full refs."""
    spec = entity.body["spec"]
    namespace = entity.body["metadata"]["namespace"]
    refs = [f"api:{ref.removeprefix('api:')}" for ref in spec.get("providesApis", [])]
    if "system" in spec:
        refs.append(f"system:{namespace}/{spec['system']}")
    if "domain" in spec:
        refs.append(f"domain:{spec['domain']}")
    return refs


def dangling(entities: dict[str, Any]) -> list[str]:
    return [ref for e in entities.values() for ref in refs_of(e) if ref not in entities]


def test_a_component_of_a_project_the_listing_lacks_is_left_out_not_left_dangling(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """Kubernetes does not enforce `spec.owner.projectName`: a component may name a project
    that does not exist (yet). Its System would be missing, a ref Backstage reports."""
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=50": [items(named("acme"))],
            "/namespaces/acme/projects?limit=50": [items(named("shop"))],
            "/namespaces/acme/workloads?limit=50": [items()],
            "/namespaces/acme/components?limit=50": [
                items(
                    named("cart", owner={"projectName": "shop"}),
                    named("stray", owner={"projectName": "ghost"}),
                )
            ],
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    engine.run()

    assert "component:acme/cart" in engine.entities
    assert "component:acme/stray" not in engine.entities
    assert dangling(engine.entities) == []


def test_a_component_of_a_project_gone_since_the_last_cycle_is_left_out(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """The project's index row from the last cycle does not count: the sweep takes its System."""
    cart = named("cart", owner={"projectName": "shop"})
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=50": [items(named("acme"))] * 2,
            "/namespaces/acme/projects?limit=50": [items(named("shop")), items()],
            "/namespaces/acme/workloads?limit=50": [items()] * 2,
            "/namespaces/acme/components?limit=50": [items(cart)] * 2,
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.run()
    engine.cursor, engine.entities = None, {}

    engine.run()

    assert set(engine.entities) == {"domain:default/acme"}


NOT_FOUND = {"status_code": 404, "json": {"error": "Namespace not found", "code": "NOT_FOUND"}}
UNSERVED = {
    "/namespaces/other": [{"json": namespace("other")}],
    "/namespaces?limit=50": [items(namespace("acme", **SERVED))],
}
"""A server that reads a namespace it does not serve (`kube-system`) whole, without the
control-plane label, and leaves it out of `/namespaces` (OpenChoreo itself answers 404 for it:
the `gone` case)."""


@pytest.fixture(params=[{"/namespaces/other": [NOT_FOUND]}, UNSERVED], ids=["gone", "unlabelled"])
def other_not_served(request: pytest.FixtureRequest, httpx_mock: HTTPXMock) -> None:
    """Namespace `other` is gone, or is one OpenChoreo does not serve."""
    walk_pages(httpx_mock, request.param)


def test_a_component_event_in_a_namespace_openchoreo_does_not_serve_changes_nothing(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, other_not_served: None
) -> None:
    """An event may name a namespace OpenChoreo does not serve (its label taken off since, an
    event sent by hand); the walk never lists a namespace not labelled
    `openchoreo.dev/control-plane`."""
    walk_pages(
        httpx_mock,
        {
            "/namespaces/other/workloads?component=cart&limit=50": [items()],
            "/namespaces/other/components/cart": [
                {"json": named("cart", owner={"projectName": "p"})}
            ],
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(
            context, Event("Component", "cart", "updated", "other")
        )

    assert delta.upserts == []


def test_a_component_event_before_any_cycle_brings_its_system_and_domain(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    walk_pages(
        httpx_mock,
        {
            "/namespaces/acme/workloads?component=cart&limit=50": [items()],
            "/namespaces/acme/components/cart": [
                {"json": named("cart", owner={"projectName": "shop"})}
            ],
            "/namespaces/acme": [{"json": namespace("acme", **SERVED)}],
            "/namespaces/acme/projects/shop": [{"json": named("shop")}],
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Component", "cart", "created", "acme"))

    upserts = {entity.ref: entity for entity in delta.upserts}
    assert set(upserts) == {"domain:default/acme", "system:acme/shop", "component:acme/cart"}
    assert dangling(upserts) == []


def test_a_project_event_in_a_namespace_openchoreo_does_not_serve_changes_nothing(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, other_not_served: None
) -> None:
    walk_pages(httpx_mock, {"/namespaces/other/projects/p": [{"json": named("p")}]})
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Project", "p", "created", "other"))

    assert list(delta.upserts) == []
    assert list(delta.removal_scopes) == ["other/p"]  # anything an earlier event left there
    assert [(row.key, row.value) for row in delta.index if row.table == "project"] == [
        ("other/p", None)
    ]


def test_a_new_projects_event_brings_its_domain_and_the_components_the_walk_left_out(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    walk_pages(
        httpx_mock,
        {
            "/namespaces/acme/projects/shop": [{"json": named("shop")}],
            "/namespaces/acme": [{"json": namespace("acme", **SERVED)}],
            "/namespaces/acme/components?project=shop&limit=50": [
                items(named("cart", owner={"projectName": "shop"}))
            ],
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Project", "shop", "created", "acme"))

    upserts = {entity.ref: entity for entity in delta.upserts}
    assert set(upserts) == {"domain:default/acme", "system:acme/shop", "component:acme/cart"}
    assert dangling(upserts) == []


def test_a_displaced_component_of_a_project_gone_is_left_out_not_left_dangling(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """Project `a-b` is gone, its component `c` remains; the new `a`/`b-c` takes the API name
    `a-b-c-e`, and `c`, read again to be renamed, joined the project row of the last cycle."""
    endpoint = {"e": {"type": "HTTP", "schema": SCHEMA}}
    old = named("w-c", owner={"projectName": "a-b", "componentName": "c"}, endpoints=endpoint)
    new = named("w-bc", owner={"projectName": "a", "componentName": "b-c"}, endpoints=endpoint)
    c = named("c", owner={"projectName": "a-b"})
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=50": [items(named("acme"))] * 2,
            "/namespaces/acme/projects?limit=50": [items(named("a-b")), items(named("a"))],
            "/namespaces/acme/workloads?limit=50": [items(old), items(new, old)],
            "/namespaces/acme/components?limit=50": [
                items(c),
                items(named("b-c", owner={"projectName": "a"}), c),
            ],
        },
    )
    httpx_mock.add_response(url=f"{BASE}/namespaces/acme/components/c", json=c, is_optional=True)
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.run()
    assert "api:acme/a-b-c-e" in engine.entities
    engine.cursor, engine.entities = None, {}

    engine.run()

    assert "component:acme/c" not in engine.entities
    assert "api:acme/a-b-c-e" in engine.entities
    assert dangling(engine.entities) == []


FORBIDDEN = {
    "status_code": 403,
    "json": {"error": "You do not have permission to perform this operation", "code": "FORBIDDEN"},
}


def test_a_displaced_component_the_client_may_no_longer_read_is_as_good_as_gone(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """`c` (project `a-b`) held the API name `a-b-c-e`; a narrowed role then filters it from
    the lists and its read answers 403, while the new `a`/`b-c` takes the name. The 403 used to
    fail every burst at that page, so no cycle completed again."""
    endpoint = {"e": {"type": "HTTP", "schema": SCHEMA}}
    old = named("w-c", owner={"projectName": "a-b", "componentName": "c"}, endpoints=endpoint)
    new = named("w-bc", owner={"projectName": "a", "componentName": "b-c"}, endpoints=endpoint)
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=50": [items(named("acme"))] * 2,
            "/namespaces/acme/projects?limit=50": [items(named("a-b")), items(named("a"))],
            "/namespaces/acme/workloads?limit=50": [items(old), items(new)],
            "/namespaces/acme/components?limit=50": [
                items(named("c", owner={"projectName": "a-b"})),
                items(named("b-c", owner={"projectName": "a"})),
            ],
            "/namespaces/acme/components/c": [FORBIDDEN],
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.run()
    assert (
        engine.entities["api:acme/a-b-c-e"].body["metadata"]["annotations"][
            "openchoreo.io/component"
        ]
        == "c"
    )
    engine.cursor, engine.entities = None, {}

    engine.run()

    assert (
        engine.entities["api:acme/a-b-c-e"].body["metadata"]["annotations"][
            "openchoreo.io/component"
        ]
        == "b-c"
    )
    assert dangling(engine.entities) == []


PROJECT_GONE = {"status_code": 404, "json": {"error": "Project not found", "code": "NOT_FOUND"}}


@pytest.mark.parametrize(
    ("namespace_answer", "project_answer"),
    [({"json": namespace("acme", **SERVED)}, PROJECT_GONE), (NOT_FOUND, None)],
    ids=["project-deleted", "namespace-unlabelled"],
)
def test_a_component_event_does_not_trust_a_project_row_of_an_earlier_cycle(
    httpx_mock: HTTPXMock,
    fake_engine,
    config_for,
    clock,
    namespace_answer: dict[str, Any],
    project_answer: dict[str, Any] | None,
) -> None:
    """The row outlives its project (deleted mid-cycle: rows are pruned when the cycle
    completes) or its namespace (unlabelled: the Namespace event removed entities, not rows);
    trusted, it put the component in the catalog, seen this cycle, with its System swept."""
    pages = {
        "/namespaces/acme/workloads?component=cart&limit=50": [items()],
        "/namespaces/acme/components/cart": [
            {"json": named("cart", owner={"projectName": "shop"})}
        ],
        "/namespaces/acme": [namespace_answer],
    }
    if project_answer is not None:
        pages["/namespaces/acme/projects/shop"] = [project_answer]
    walk_pages(httpx_mock, pages)
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.index.apply([IndexEntry("project", "acme/shop", "", {"owner": None})])
    engine.index.complete_cycle()  # the row is last cycle's

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Component", "cart", "updated", "acme"))

    assert [entity.ref for entity in delta.upserts] == []
    assert ("acme/shop", None) in [(row.key, row.value) for row in delta.index]


@pytest.mark.parametrize("answers", [{"/namespaces/other": [NOT_FOUND]}, UNSERVED])
def test_a_namespace_that_leaves_openchoreo_takes_the_project_rows_that_vouched_for_it(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, answers: dict[str, Any]
) -> None:
    """This cycle's project rows vouch for their namespace: left behind when its label is taken
    off, the next event about one of its components (which still answer) brought the component
    back, its System and Domain gone."""
    for path, [answer] in answers.items():
        httpx_mock.add_response(url=f"{BASE}{path}", is_reusable=True, **answer)
    walk_pages(
        httpx_mock,
        {
            "/namespaces/other/workloads?component=cart&limit=50": [items()],
            "/namespaces/other/components/cart": [
                {"json": named("cart", owner={"projectName": "shop"})}
            ],
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    rows = [IndexEntry("project", key, "", {"owner": None}) for key in ("other/shop", "acme/a")]
    engine.index.apply(rows)  # written this cycle

    with engine.provider.around(engine.burst) as context:
        gone = engine.provider.handle_event(context, Event("Namespace", "other", "updated", ""))
        engine.index.apply(gone.index)
        later = engine.provider.handle_event(
            context, Event("Component", "cart", "updated", "other")
        )

    assert list(gone.removal_scopes) == ["other"]
    assert [(row.key, row.value) for row in gone.index if row.table == "project"] == [
        ("other/shop", None)
    ]
    assert list(later.upserts) == []


def test_a_namespace_event_for_one_openchoreo_does_not_serve_adds_no_domain(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, other_not_served: None
) -> None:
    """A Domain for a namespace OpenChoreo does not serve (`kube-system`, named by an event sent
    by hand, or one whose label was taken off) would stay until the next sweep. A namespace
    whose label was taken off loses what it had, as the walk's sweep would take it."""
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Namespace", "other", "created", ""))

    assert list(delta.upserts) == []
    assert list(delta.removal_scopes) == ["other"]


@pytest.mark.parametrize(
    ("read", "listed"),
    [
        (namespace("acme", **SERVED), None),
        (named("acme"), [namespace("other", **SERVED), namespace("acme", **SERVED)]),
        (namespace("acme"), [namespace("acme")]),
    ],
    ids=["labelled", "labels-left-out-but-listed", "listed-without-the-label"],
)
def test_a_namespace_event_brings_its_domain_when_the_label_or_the_listing_vouches(
    httpx_mock: HTTPXMock,
    fake_engine,
    config_for,
    clock,
    read: dict[str, Any],
    listed: list[dict[str, Any]] | None,
) -> None:
    """The label on the read is enough; without it, the namespaces' listing (what the walk
    takes) decides, read through to the end: a server may leave labels out."""
    pages = {"/namespaces/acme": [{"json": read}], "/namespaces/acme/projects?limit=20": [items()]}
    if listed is not None:
        *first, last = listed
        pages["/namespaces?limit=50"] = [items(*first, cursor="n2")]
        pages["/namespaces?limit=50&cursor=n2"] = [items(last)]
    walk_pages(httpx_mock, pages)
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Namespace", "acme", "updated", ""))

    assert [entity.ref for entity in delta.upserts] == ["domain:default/acme"]
    assert list(delta.removal_scopes) == []
    assert not delta.refresh  # a namespace without projects


LONG_AGO, JUST_NOW = "2026-01-01T00:00:00Z", "2027-01-15T07:58:00Z"
"""Creation times against the test clock (2027-01-15T08:00:00Z)."""


def project_made(name: str, created: str | None) -> dict[str, Any]:
    project = named(name)
    if created is not None:
        project["metadata"]["creationTimestamp"] = created
    return project


def served_again(httpx_mock: HTTPXMock, projects: list[dict[str, Any]], limit: int) -> None:
    """`acme`, served, and its projects `limit` a page."""
    pages = {"/namespaces/acme": [{"json": namespace("acme", **SERVED)}]}
    for start in range(0, len(projects), limit):
        query = f"limit={limit}" + (f"&cursor=p{start}" if start else "")
        more = start + limit < len(projects)
        page = items(*projects[start : start + limit], cursor=f"p{start + limit}" if more else None)
        pages[f"/namespaces/acme/projects?{query}"] = [page]
    walk_pages(httpx_mock, pages)


def namespace_event(fake_engine, config_for, clock, known: list[str], chunk_size: int) -> Delta:
    config = config_for(api="v1", chunk_size=chunk_size)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.index.apply([IndexEntry("project", key, "", {"owner": None}) for key in known])
    with engine.provider.around(engine.burst) as context:
        return engine.provider.handle_event(context, Event("Namespace", "acme", "updated", ""))


@pytest.mark.parametrize("chunk_size", [50, 1])
@pytest.mark.parametrize(
    ("known", "created", "refresh"),
    [
        ([], LONG_AGO, True),
        (["acme/shop"], LONG_AGO, False),
        (["acme/other"], LONG_AGO, False),
        (["acmeco/shop"], LONG_AGO, True),
        ([], JUST_NOW, False),
        ([], None, False),
    ],
    ids=[
        "none-known",
        "a-listed-project-known",
        "another-known",
        "another-namespaces",
        "made-with-its-projects",
        "no-creation-time",
    ],
)
def test_a_namespace_served_again_with_projects_the_catalog_lacks_asks_for_a_walk(
    httpx_mock: HTTPXMock,
    fake_engine,
    config_for,
    clock,
    known: list[str],
    created: str | None,
    refresh: bool,
    chunk_size: int,
) -> None:
    """Its label put back, a namespace is served again with all it held, and no event comes
    for any of that: the event asks for a fresh walk. One the catalog knows (the forwarder's
    `created` for every namespace at its start), or one made together with its projects (their
    own `created` events follow the namespace's), asks for none."""
    projects = [project_made("pay", created), project_made("shop", created)]
    served_again(httpx_mock, projects, min(20, chunk_size))

    delta = namespace_event(fake_engine, config_for, clock, known, chunk_size)

    assert [entity.ref for entity in delta.upserts] == ["domain:default/acme"]
    assert delta.refresh is refresh


@pytest.mark.httpx_mock(assert_all_responses_were_requested=False)
@pytest.mark.parametrize("chunk_size", [50, 1])
def test_a_namespace_event_reads_up_to_20_projects_in_the_pages_chunk_size_asks_for(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock, chunk_size: int
) -> None:
    """A new project listed first does not make the namespace a new one: the probe reads on,
    page by page (as chunkSize asks), until 20 projects or the listing's end, and no further
    (the 21st, which would say the same, is not asked for)."""
    projects = [project_made(f"new-{n:02}", JUST_NOW) for n in range(19)]
    projects += [project_made("shop", LONG_AGO), project_made("unread", LONG_AGO)]
    served_again(httpx_mock, projects, min(20, chunk_size))

    delta = namespace_event(fake_engine, config_for, clock, [], chunk_size)

    assert delta.refresh
    asked = [request.url.params.get("cursor") for request in httpx_mock.get_requests()]
    wanted = [f"p{n}" for n in range(1, 20)] if chunk_size == 1 else []
    assert [cursor for cursor in asked if cursor is not None] == wanted


def test_a_deleted_components_event_takes_a_404_on_its_workload_listing_for_none(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """A server may answer `?component=` naming a deleted component as the document's does
    `?project=` naming an unknown project: 404. The component leaves; before, the event failed
    and held up every event behind it until it was parked."""
    walk_pages(
        httpx_mock,
        {
            "/namespaces/acme/components/cart": [
                {"status_code": 404, "json": {"error": "Component not found", "code": "NOT_FOUND"}}
            ],
            "/namespaces/acme/workloads?component=cart&limit=50": [
                {"status_code": 404, "json": {"error": "Component not found", "code": "NOT_FOUND"}}
            ],
        },
    )
    config = config_for(api="v1")
    engine = fake_engine(OpenChoreoProvider(config), clock, config)

    with engine.provider.around(engine.burst) as context:
        delta = engine.provider.handle_event(context, Event("Component", "cart", "deleted", "acme"))

    assert list(delta.removals) == ["component:acme/cart"]


def test_a_listings_later_page_does_not_undo_the_events_applied_since_it_began(
    httpx_mock: HTTPXMock, fake_engine, config_for, clock
) -> None:
    """Kubernetes serves every page of a listing as the platform stood at its first page: after
    an event removed `c` and another changed `d`, the listing's next page still holds the old
    `c` and `d`. Upserted, `c` came back (seen this cycle: the sweep kept it) and `d` lost its
    change, until the next cycle."""
    old_d, new_d = named("d", owner={"projectName": "shop"}), named("d", owner=SHOP, x="new")
    walk_pages(
        httpx_mock,
        {
            "/namespaces?limit=2": [items(named("acme"))],
            "/namespaces/acme/projects?limit=2": [items(named("shop"))],
            "/namespaces/acme/workloads?limit=2": [items()],
            "/namespaces/acme/components?limit=2": [
                items(named("a", owner=SHOP), named("b", owner=SHOP), cursor="c2")
            ],
            "/namespaces/acme/components?limit=2&cursor=c2": [
                items(named("c", owner=SHOP), old_d, named("e", owner=SHOP))
            ],
            "/namespaces/acme/components/c": [{"status_code": 404, "json": {"code": "NOT_FOUND"}}],
            "/namespaces/acme/components/d": [{"json": new_d}],
            "/namespaces/acme/workloads?component=c&limit=2": [items()],
            "/namespaces/acme/workloads?component=d&limit=2": [items()],
        },
    )
    config = config_for(api="v1", chunk_size=2)
    engine = fake_engine(OpenChoreoProvider(config), clock, config)
    engine.pages(4)  # namespaces, projects, workloads, the first page of components
    clock.advance(1)
    with engine.provider.around(engine.burst) as context:
        for name, action in [("c", "deleted"), ("d", "updated")]:
            delta = engine.provider.handle_event(context, Event("Component", name, action, "acme"))
            engine.index.apply(delta.index)

    [last] = engine.pages(1)

    assert [entity.ref for entity in last.entities] == ["component:acme/e"]
    assert last.done


SHOP = {"projectName": "shop"}
