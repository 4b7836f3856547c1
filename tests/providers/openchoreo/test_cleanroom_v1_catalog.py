"""choreo-ingest end to end against a clean-room OpenChoreo v1 API (tests/cleanroom_v1.py), written
from `openchoreo-v1-api.md` and OpenChoreo v1.2.3's handlers, not from the project's simulator.

Every test runs the real CLI in process (`run --force`, `export`, `status --json`) against
two real loopback HTTP servers (the API and an OAuth2 token endpoint), and checks the catalog
against the document's mapping section and the README: the showcase's mapping, Backstage's
own validation, the base URL with and without `/api/v1`, listings of many pages in every
shape the server may serve them, and what a second cycle removes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cleanroom_v1 import running
from cleanroom_v1_cli import (
    DEFAULT_OWNER,
    annotations,
    assert_catalog_consistent,
    assert_every_request_authorized,
    by_ref,
    export,
    full_ref,
    mirrored,
    run_cycle,
    showcase_ingested,
    status,
    write_config,
)
from cleanroom_v1_worlds import (
    ASYNC,
    BIG,
    LONG_COMPONENT,
    LONG_ENDPOINT,
    OPENAPI,
    PROTO,
    RAW,
    SDL,
    bulk,
    odd_names,
    project,
    put_service,
    showcase,
)

from choreo_ingest.providers.openchoreo.naming import short_hash

from backstage_validator import (
    entity_lines,
    run_backstage_validator,
    skip_unless_backstage_validator,
)


def test_the_showcase_namespace_maps_as_the_document_says(here: Path) -> None:
    with showcase_ingested(here, mirror=True) as (server, config):
        entities = export(config)
        assert_every_request_authorized(server)
    catalog = by_ref(entities)
    assert_catalog_consistent(entities)
    assert mirrored(here / "catalog") == catalog  # the YAML mirror holds the same

    # Domains: one per control-plane namespace, titled by display name, else name.
    domains = {ref for ref in catalog if ref.startswith("domain:")}
    assert domains == {"domain:default/acme", "domain:default/globex", "domain:default/initech"}
    assert catalog["domain:default/acme"]["metadata"].get("title") == "ACME Corp ☕"
    assert catalog["domain:default/acme"]["metadata"].get("description") == (
        "Everything ACME runs,\nin two lines"
    )
    assert catalog["domain:default/globex"]["metadata"].get("title") in ("globex", None)
    # Being deleted: stays, annotated (README, "What lands in the catalog").
    terminating = annotations(catalog["domain:default/initech"])
    assert terminating.get("openchoreo.io/deletion-timestamp") == "2026-01-05T00:00:00Z"

    # Systems: per project, domain default/<ns>, owner annotation else default.
    shop = catalog["system:acme/shop"]
    assert full_ref(shop["spec"]["domain"], "domain", "acme") == "domain:default/acme"
    assert shop["spec"]["owner"] == "group:default/shop-team"
    assert shop["metadata"].get("title") == "Web Shop"
    assert shop["metadata"].get("description") == "Sells things"
    assert catalog["system:acme/internal"]["spec"]["owner"] == DEFAULT_OWNER
    assert catalog["system:globex/web"]["spec"]["owner"] == "user:default/jdoe"

    # The component with everything.
    cart = catalog["component:acme/cart"]
    assert cart["metadata"].get("title") == "Shopping Cart"
    assert cart["metadata"].get("description") == "Holds what you buy"
    assert cart["spec"]["type"] == "deployment/service"
    assert cart["spec"]["lifecycle"] == "ready"
    assert cart["spec"]["owner"] == "group:default/cart-team"
    assert full_ref(cart["spec"]["system"], "system", "acme") == "system:acme/shop"
    cart_apis = {full_ref(r, "api", "acme") for r in cart["spec"]["providesApis"]}
    assert cart_apis == {
        "api:acme/shop-cart-rest",
        "api:acme/shop-cart-rpc",
        "api:acme/shop-cart-graph",
        "api:acme/shop-cart-live",
        "api:acme/shop-cart-tcp-proto",
    }
    a = annotations(cart)
    assert a["openchoreo.io/component"] == "cart"
    assert a["openchoreo.io/component-uid"]
    assert a["openchoreo.io/component-type"] == "deployment/service"
    assert a["openchoreo.io/project"] == "shop"
    assert a["openchoreo.io/namespace"] == "acme"
    assert a["openchoreo.io/created-at"] == "2025-03-02T11:00:00Z"
    assert a["openchoreo.io/status"] == "Ready"
    assert a["openchoreo.io/workload"] == "cart-7d9f6b"
    assert a["backstage.io/source-location"] == "url:https://github.com/acme/cart"
    assert "openchoreo.io/deletion-timestamp" not in a

    # APIs: only endpoints with non-blank content; type lower-cased; definition = content.
    apis = {ref: e for ref, e in catalog.items() if ref.startswith("api:acme/shop-cart")}
    assert set(apis) == cart_apis
    expected_types = {
        "rest": ("openapi", OPENAPI, "HTTP", "8080", "project,external"),
        "rpc": ("grpc", PROTO, "gRPC", "9090", "namespace"),
        "graph": ("graphql", SDL, "GraphQL", "8081", None),
        "live": ("asyncapi", ASYNC, "Websocket", "8082", None),
        "tcp-proto": ("openapi", RAW, "TCP", "7000", None),
    }
    for endpoint, (spec_type, content, ep_type, port, visibility) in expected_types.items():
        api = catalog[f"api:acme/shop-cart-{endpoint}"]
        assert api["spec"]["type"] == spec_type, endpoint
        assert api["spec"]["definition"] == content, endpoint
        assert api["spec"]["lifecycle"] == "production"
        assert api["spec"]["owner"] == "group:default/cart-team"
        assert full_ref(api["spec"]["system"], "system", "acme") == "system:acme/shop"
        b = annotations(api)
        assert b["openchoreo.io/component"] == "cart"
        assert b["openchoreo.io/endpoint-name"] == endpoint
        assert b["openchoreo.io/endpoint-type"] == ep_type
        assert str(b["openchoreo.io/endpoint-port"]) == port
        assert (b.get("openchoreo.io/endpoint-visibility") or None) == visibility
        assert b["openchoreo.io/project"] == "shop"
        assert b["openchoreo.io/namespace"] == "acme"
        assert b["openchoreo.io/workload"] == "cart-7d9f6b"

    # Ready False, owner from the project, deletion timestamp kept, no schema -> no API.
    checkout = catalog["component:acme/checkout"]
    assert checkout["spec"]["lifecycle"] == "not ready"
    assert checkout["spec"]["owner"] == "group:default/shop-team"
    assert not checkout["spec"].get("providesApis")
    assert annotations(checkout)["openchoreo.io/deletion-timestamp"] == "2026-01-02T03:04:05Z"
    assert annotations(checkout)["openchoreo.io/workload"] == "checkout-workload"
    assert annotations(checkout)["backstage.io/source-location"] == (
        "url:https://gitlab.example.com/acme/checkout"
    )
    assert not [ref for ref in catalog if ref.startswith("api:acme/shop-checkout")]

    # Nothing optional: type unknown, default owner, no source; no Ready condition (not
    # reconciled yet) is not ready, as OpenChoreo's provider writes it.
    worker = catalog["component:acme/worker"]
    assert worker["spec"]["type"] == "unknown"
    assert worker["spec"]["lifecycle"] == "not ready"
    assert annotations(worker)["openchoreo.io/status"] == "Not Ready"
    assert worker["spec"]["owner"] == DEFAULT_OWNER
    assert "backstage.io/source-location" not in annotations(worker)
    assert not worker["spec"].get("providesApis")

    reporter = catalog["component:acme/reporter"]
    assert reporter["spec"]["type"] == "cronjob/report"
    assert reporter["spec"]["lifecycle"] == "not ready"
    assert annotations(reporter)["openchoreo.io/workload"] == "reporter-batch"
    assert not reporter["spec"].get("providesApis")

    # The caller may not view it: the list left it out, so must the catalog.
    assert "component:acme/vault" not in catalog

    # A name past 63 characters is made valid, and still provided.
    long = catalog[f"component:acme/{LONG_COMPONENT}"]
    (long_api,) = long["spec"]["providesApis"]
    api = catalog[full_ref(long_api, "api", "acme")]
    assert len(api["metadata"]["name"]) <= 63
    assert annotations(api)["openchoreo.io/endpoint-name"] == LONG_ENDPOINT

    # globex: component owner from its project.
    assert catalog["component:globex/site"]["spec"]["owner"] == "user:default/jdoe"
    assert len(entities) == 3 + 4 + 6 + 5 + 1


def test_the_showcase_passes_backstage_validation(here: Path) -> None:

    skip_unless_backstage_validator()
    with running() as server:
        showcase(server.api)
        odd_names(server.api)
        config = write_config(here, server)
        run_cycle(config)
        entities = export(config)
    assert_catalog_consistent(entities)
    catalog = by_ref(entities)
    # Kubernetes names may be 253 characters and hold dots: still one entity each, resolved.
    assert len([ref for ref in catalog if ref.startswith("component:odd/")]) == 2
    assert len([ref for ref in catalog if ref.startswith("system:odd/")]) == 2
    assert len([ref for ref in catalog if ref.startswith("api:odd/")]) == 3
    big = [e for ref, e in catalog.items() if ref.startswith("api:odd/team.alpha-api.v2-big")]
    assert big
    assert big[0]["spec"]["definition"] == BIG
    assert run_backstage_validator(entity_lines(entities)) == []


@pytest.mark.parametrize("suffix", ["", "/", "/api/v1", "/api/v1/"])
def test_the_base_url_with_and_without_api_v1(here: Path, suffix: str) -> None:
    with showcase_ingested(here, base_suffix=suffix) as (server, config):
        entities = export(config)
        paths = {r.path for r in server.api.requests}
    assert "component:acme/cart" in by_ref(entities)
    assert all(p.startswith("/api/v1/") for p in paths if p.startswith("/api/")), paths
    assert not [p for p in paths if p.startswith("/api/v1/api/")]


@pytest.mark.parametrize(
    ("chunk_size", "end_style", "cursor_style", "refill", "order"),
    [
        (500, "empty", "base64url", True, "name"),
        (7, "blank", "base64url", True, "name"),
        (33, "null", "awkward", True, "name"),
        (10, "empty", "base64url", False, "reverse"),
    ],
    ids=[
        "limit-500-clamped",
        "small-pages-blank-cursor",
        "null-end-awkward-cursor",
        "short-and-empty-pages-other-order",
    ],
)
def test_a_multi_page_world_is_ingested_whole(
    here: Path, chunk_size: int, end_style: str, cursor_style: str, refill: bool, order: str
) -> None:
    with running() as server:
        expected = bulk(server.api)
        server.api.end_style = end_style
        server.api.cursor_style = cursor_style
        server.api.refill = refill
        server.api.order = order
        if not refill:  # a whole page's worth the caller may not view: an empty page
            for i in range(40, 62):
                server.api.hidden.add(("Component", "bulk-b", f"svc-{i:03d}"))
                expected.discard(f"component:bulk-b/svc-{i:03d}")
                expected.discard(f"api:bulk-b/p{i % 4}-svc-{i:03d}-http")
        config = write_config(here, server, chunk_size=chunk_size)
        run_cycle(config)
        entities = export(config)
        listings = [r for r in server.api.api_requests() if "limit" in r.query]
        assert_every_request_authorized(server)
    assert_catalog_consistent(entities)
    assert set(by_ref(entities)) == expected
    assert len(entities) == len(expected)
    assert all(int(r.param("limit") or 0) <= 100 for r in listings)
    # Pages were followed by their cursors: some listing went past its first page.
    assert any(r.param("cursor") for r in listings)
    # No listing of a namespace's components ever asked `?project=` or per-component workloads.
    assert not [r for r in listings if r.param("component")]


def test_a_second_cycle_removes_what_was_deleted(here: Path) -> None:
    with running() as server:
        expected = bulk(server.api)
        config = write_config(
            here, server, chunk_size=50, rejectRemovalsAbovePercentage=10, mirror=True
        )
        run_cycle(config)
        assert set(by_ref(export(config))) == expected
        gone = ["svc-000", "svc-002", "svc-003", "svc-010", "svc-100"]
        for name in gone:
            i = int(name[4:])
            server.api.delete("components", "bulk-a", name)
            server.api.delete("workloads", "bulk-a", f"wl-{999 - i}")
            expected.discard(f"component:bulk-a/{name}")
            expected.discard(f"api:bulk-a/p{i % 4}-{name}-http")
        run_cycle(config)
        entities = export(config)
        state = status(config)
    assert set(by_ref(entities)) == expected
    assert set(mirrored(here / "catalog")) == expected  # the removed files are gone too
    (provider,) = state["providers"]
    assert provider["api"] == "v1"
    assert provider["removals"]["blocked"] is False
    assert provider["activeEntities"] == len(expected)


def test_a_project_named_as_another_ones_cut_name_keeps_its_own_system(here: Path) -> None:
    """Kubernetes names may be 253 characters, Backstage's 63: a longer one is cut and given a
    hash. Cut as `<first 54>-<hash>` it was a valid Kubernetes name itself, and a project so
    named took the long project's System, owner and all (every cycle wrote both in turn)."""
    long = "platform-" + "k" * 70
    cut_as_before = long[:54] + "-" + short_hash(long)
    with running() as server:
        server.api.add_namespace("cut")
        for name, team in ((long, "team-long"), (cut_as_before, "team-twin")):
            owner = {"backstage.io/owner": f"group:default/{team}"}
            server.api.put("projects", "cut", project(name, annotations=owner))
            put_service(server.api, "cut", name, f"in-{team}", f"in-{team}-wl")
        config = write_config(here, server)
        run_cycle(config)
        entities = export(config)

    assert_catalog_consistent(entities)
    catalog = by_ref(entities)
    systems = {ref: e["spec"]["owner"] for ref, e in catalog.items() if ref.startswith("system:")}
    assert len(systems) == 2
    assert systems[f"system:cut/{cut_as_before}"] == "group:default/team-twin"
    [cut_long] = [ref for ref in systems if ref != f"system:cut/{cut_as_before}"]
    assert systems[cut_long] == "group:default/team-long"
    assert catalog["component:cut/in-team-long"]["spec"]["system"] == cut_long.split("/", 1)[1]


def test_an_api_name_taken_by_a_newcomer_leaves_no_twin_in_case(here: Path) -> None:
    """Component `c`'s endpoint `x-Api` is `p-c-x-Api`; component `c-x` comes with `api`,
    `p-c-x-api`: one name to Backstage, and the one without capitals takes it. `c`'s API moves
    to a hashed name, and its old spelling leaves in the same cycle: it had been seen earlier in
    it (`c` lists before `c-x`), and stayed beside the newcomer's until the cycle after."""
    http = {"type": "HTTP", "port": 80, "schema": {"content": OPENAPI}}
    with running() as server:
        server.api.add_namespace("twin")
        server.api.put("projects", "twin", project("p"))
        put_service(server.api, "twin", "p", "c", "c-wl", {"x-Api": http})
        config = write_config(here, server, chunk_size=1)
        run_cycle(config)
        put_service(server.api, "twin", "p", "c-x", "c-x-wl", {"api": http})
        run_cycle(config)
        entities = export(config)

    refs = list(by_ref(entities))
    assert len({ref.lower() for ref in refs}) == len(refs)
    apis = {
        e["metadata"]["name"]: annotations(e)["openchoreo.io/component"]
        for e in entities
        if e["kind"] == "API"
    }
    assert apis["p-c-x-api"] == "c-x"
    assert "p-c-x-Api" not in apis
    assert sorted(apis.values()) == ["c", "c-x"]
