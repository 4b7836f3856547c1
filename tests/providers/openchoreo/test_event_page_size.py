"""The listings an event reads ask for the walk's page size: `openchoreo.incremental.chunkSize`,
capped at what the API serves (v1 100, the org era 1024), and follow `nextCursor` to the end.
Lowering chunkSize is what the client's error for an answer over its body cap says to do; the
events asked for the largest page whatever it said, so an event whose listing was too large
kept failing. Against a fake server behind `httpx.MockTransport` answering as
`openchoreo-v1-api.md` and `openchoreo-api.md` describe.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog
from test_event_reads import (
    CART,
    CART_SOMEWHERE,
    FakeV1,
    cart_and_its_project,
    cart_in_billing,
    named,
    org_page,
    page,
    workload,
)

from choreo_ingest.models import Delta, Event, IndexEntry
from choreo_ingest.providers.openchoreo import OpenChoreoProvider


def handle(
    fake_engine, config_for, clock, server: FakeV1, event: Event, *, api: str, chunk_size: int
) -> tuple[Delta, list[dict[str, Any]]]:
    """The event's delta under `chunkSize: chunk_size`, and what was logged meanwhile."""
    config = config_for(api=api, chunk_size=chunk_size)
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(server))
    engine = fake_engine(provider, clock, config)
    # This cycle's owner row of `shop`, with an owner since changed: a Project event maps the
    # project's components again, and a Component event reads no project.
    engine.index.apply([IndexEntry("project", "acme/shop", "", {"owner": "group:default/old"})])
    with structlog.testing.capture_logs() as logs, provider.around(engine.burst) as context:
        return provider.handle_event(context, event), logs


NEW_OWNER = named("shop")
NEW_OWNER["metadata"]["annotations"] = {"backstage.io/owner": "group:default/team-new"}
UNLABELLED = {"metadata": {"name": "acme"}}
"""Read without the control-plane label: the namespaces' listing decides."""
V1_LISTINGS = [
    # (event, its single reads, the listing it reads, the listing's two pages, what it finds)
    (
        CART,
        cart_and_its_project(),
        "/namespaces/acme/workloads?component=cart&",
        (workload("w1"), workload("w2")),
        "workload acme/w2",
    ),
    (
        Event("Project", "shop", "updated", "acme"),
        {"/namespaces/acme/projects/shop": httpx.Response(200, json=NEW_OWNER)},
        "/namespaces/acme/components?project=shop&",
        (named("cart", owner={"projectName": "shop"}), named("pay", owner={"projectName": "shop"})),
        "component:acme/pay",
    ),
    (
        Event("Namespace", "acme", "updated", ""),
        {
            "/namespaces/acme": httpx.Response(200, json=UNLABELLED),
            "/namespaces/acme/projects?limit={chunk}": page(),  # a namespace without projects
        },
        "/namespaces?",
        (named("other"), UNLABELLED),
        "domain:default/acme",
    ),
]


def found(delta: Delta) -> set[str]:
    rows = {f"{row.table} {row.key}" for row in delta.index if row.value}
    return rows | {entity.ref for entity in delta.upserts}


@pytest.mark.parametrize(
    ("event", "reads", "listing", "pages", "last"),
    V1_LISTINGS,
    ids=["component-workloads", "project-components", "namespaces"],
)
@pytest.mark.parametrize("chunk_size", [1, 7])
def test_a_v1_events_listing_asks_for_chunk_size_items_a_page_and_follows_the_cursor(
    fake_engine,
    config_for,
    clock,
    event: Event,
    reads: dict[str, httpx.Response],
    listing: str,
    pages: tuple[dict[str, Any], dict[str, Any]],
    last: str,
    chunk_size: int,
) -> None:
    first = f"{listing}limit={chunk_size}"
    reads = {route.format(chunk=chunk_size): answer for route, answer in reads.items()}
    server = FakeV1(
        {**reads, first: page(pages[0], cursor="p2"), f"{first}&cursor=p2": page(pages[1])}
    )

    delta, _ = handle(
        fake_engine, config_for, clock, server, event, api="v1", chunk_size=chunk_size
    )

    assert [route for route in server.asked if route.startswith(listing)] == [
        first,
        f"{first}&cursor=p2",
    ]
    assert last in found(delta)  # what the second page held


@pytest.mark.parametrize("chunk_size", [1, 2])
def test_an_org_era_projectless_component_events_project_listing_asks_for_chunk_size(
    fake_engine, config_for, clock, chunk_size: int
) -> None:
    """The org's projects are listed to find the component's: `billing`, on the second page."""
    first = f"/orgs/acme/projects?limit={chunk_size}&pagination=cursor"
    then = f"/orgs/acme/projects?limit={chunk_size}&cursor=p2&pagination=cursor"
    server = FakeV1(
        {**cart_in_billing(), first: org_page("shop", cursor="p2"), then: org_page("billing")}
    )

    delta, _ = handle(
        fake_engine, config_for, clock, server, CART_SOMEWHERE, api="orgs", chunk_size=chunk_size
    )

    assert [route for route in server.asked if route.startswith("/orgs/acme/projects?")] == [
        first,
        then,
    ]
    assert "component:acme/cart" in found(delta)
    assert delta.removal_scopes == ["acme/billing/cart"]


def test_a_chunk_size_above_v1s_largest_page_asks_an_event_for_100_without_a_warning_per_event(
    fake_engine, config_for, clock
) -> None:
    """chunkSize 1024 (the org era's largest page) on v1, which serves at most 100: the walk
    logs `chunk_size_capped` once; an event does not add one of its own."""
    listing = "/namespaces/acme/workloads?component=cart&limit=100"
    server = FakeV1({**cart_and_its_project(), listing: page(workload("w1"))})

    delta, logs = handle(fake_engine, config_for, clock, server, CART, api="v1", chunk_size=1024)

    assert listing in server.asked
    assert "workload acme/w1" in found(delta)
    assert [log for log in logs if log["event"] == "chunk_size_capped"] == []


def test_an_events_v1_listing_goes_past_an_empty_page_that_carries_a_cursor(
    fake_engine, config_for, clock
) -> None:
    """v1 refills its pages, so a short page normally means the end; still, only a page without
    `nextCursor` ends a listing (`openchoreo-v1-api.md`), an empty one with a cursor does not."""
    first = "/namespaces/acme/workloads?component=cart&limit=2"
    server = FakeV1(
        {
            **cart_and_its_project(),
            first: page(cursor="p2"),
            f"{first}&cursor=p2": page(workload("w1"), cursor="p3"),
            f"{first}&cursor=p3": page(),
        }
    )

    delta, _ = handle(fake_engine, config_for, clock, server, CART, api="v1", chunk_size=2)

    assert [route for route in server.asked if route.startswith(first)] == [
        first,
        f"{first}&cursor=p2",
        f"{first}&cursor=p3",
    ]
    assert "workload acme/w1" in found(delta)


def test_an_org_era_events_listing_goes_past_an_empty_page_until_next_cursor_is_empty(
    fake_engine, config_for, clock
) -> None:
    """In cursor mode `nextCursor` is always there; only `""` ends the listing, whatever the
    page held."""
    first = "/orgs/acme/projects?limit=2&pagination=cursor"
    then = "/orgs/acme/projects?limit=2&cursor=p2&pagination=cursor"
    server = FakeV1({**cart_in_billing(), first: org_page(cursor="p2"), then: org_page("billing")})

    delta, _ = handle(
        fake_engine, config_for, clock, server, CART_SOMEWHERE, api="orgs", chunk_size=2
    )

    assert [route for route in server.asked if route.startswith("/orgs/acme/projects?")] == [
        first,
        then,
    ]
    assert "component:acme/cart" in found(delta)
