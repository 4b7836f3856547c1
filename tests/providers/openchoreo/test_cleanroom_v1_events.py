"""choreo-ingest end to end against a clean-room OpenChoreo v1 API (tests/cleanroom_v1.py), written
from `openchoreo-v1-api.md` and OpenChoreo v1.2.3's handlers, not from the project's simulator.

The forwarder's events between cycles: the real CLI in process (`event`, `run`, `export`)
and `serve` as its own process, against the API and its OAuth2 token endpoint, with objects
created, updated, moved and deleted behind the catalog's back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from cleanroom_v1 import running
from cleanroom_v1_cli import (
    annotations,
    assert_catalog_consistent,
    assert_every_request_authorized,
    by_ref,
    cli,
    export,
    full_ref,
    mirrored,
    run_cycle,
    serving,
    showcase_ingested,
    wait_for,
    write_config,
)
from cleanroom_v1_worlds import (
    OPENAPI,
    PROTO,
    bulk,
    component,
    project,
    put_service,
    showcase,
    workload,
)


def apply_events(
    config: Path, events: list[dict[str, Any]], *run_options: str, ndjson: bool = False
) -> dict[str, dict[str, Any]]:
    """`event -` with `events` (one JSON array, or with `ndjson` one object a line), then one
    `run` (with `run_options`) to apply them: the catalog that follows, by ref."""
    stdin = "\n".join(map(json.dumps, events)) if ndjson else json.dumps(events)
    queued = cli("--config", config, "event", "-", stdin=stdin)
    assert queued.exit_code == 0, queued.stdout + queued.stderr
    result = cli("--config", config, "run", *run_options)
    assert result.exit_code == 0, result.stdout + result.stderr
    return by_ref(export(config))


def test_events_create_and_delete_between_cycles(here: Path) -> None:
    with showcase_ingested(here, mirror=True) as (server, config):
        api = server.api
        put_service(
            api,
            "acme",
            "shop",
            "payments",
            "pay-0a1b",
            {"api": {"type": "HTTP", "port": 80, "schema": {"content": OPENAPI}}},
        )
        events = [
            {"kind": "Component", "name": "payments", "namespace": "acme", "action": "created"},
            {"kind": "Workload", "name": "pay-0a1b", "namespace": "acme", "action": "created"},
            {
                "kind": "ClusterComponentType",
                "name": "service",
                "namespace": "",
                "action": "updated",
            },
            {
                "kind": "ReleaseBinding",
                "name": "payments-dev",
                "namespace": "acme",
                "action": "created",
            },
        ]
        after_create = apply_events(config, events, ndjson=True)

        api.delete("components", "acme", "cart")
        api.delete("workloads", "acme", "cart-7d9f6b")
        events = [
            {"kind": "Component", "name": "cart", "namespace": "acme", "action": "deleted"},
            {"kind": "Workload", "name": "cart-7d9f6b", "namespace": "acme", "action": "deleted"},
        ]
        after_delete = apply_events(config, events)
        assert_every_request_authorized(server)

    assert set(mirrored(here / "catalog")) == set(after_delete)
    assert "component:acme/payments" in after_create
    payments = after_create["component:acme/payments"]
    assert [full_ref(r, "api", "acme") for r in payments["spec"]["providesApis"]] == [
        "api:acme/shop-payments-api"
    ]
    assert "api:acme/shop-payments-api" in after_create
    assert "component:acme/cart" not in after_delete
    assert not [ref for ref in after_delete if ref.startswith("api:acme/shop-cart-")]
    assert "component:acme/payments" in after_delete


def test_events_in_forwarder_order_and_updates(here: Path) -> None:
    """A workload's event before its component's; then `updated` events (applied once 2 s old):
    a workload that gains a schema, a project whose owner changed, a component the caller may
    not read (403: nothing changes); then a namespace deleted with all it held, and an event
    about a namespace that is not OpenChoreo's."""
    with showcase_ingested(here, chunk_size=2) as (server, config):
        api = server.api
        api.put(
            "workloads",
            "acme",
            workload(
                "zz-ledger",
                "shop",
                "ledger",
                {
                    "grpc": {
                        "type": "gRPC",
                        "port": 50051,
                        "schema": {"type": "proto", "content": PROTO},
                    },
                },
            ),
        )
        api.put(
            "components",
            "acme",
            component(
                "ledger",
                "shop",
                ctype={"kind": "ComponentType", "name": "deployment/grpc"},
                ready="True",
            ),
        )
        first = [
            {"kind": "Workload", "name": "zz-ledger", "namespace": "acme", "action": "created"},
            {"kind": "Component", "name": "ledger", "namespace": "acme", "action": "created"},
        ]
        after_create = apply_events(config, first)

        api.put(
            "workloads",
            "acme",
            workload(
                "reporter-batch",
                "internal",
                "reporter",
                {
                    "out": {
                        "type": "HTTP",
                        "port": 8080,
                        "schema": {"type": "OpenAPI", "content": OPENAPI},
                    },
                },
            ),
        )
        shop = project("shop", {"backstage.io/owner": "group:default/new-shop-team"})
        api.put("projects", "acme", shop)
        updated = [
            {
                "kind": "Workload",
                "name": "reporter-batch",
                "namespace": "acme",
                "action": "updated",
            },
            {"kind": "Project", "name": "shop", "namespace": "acme", "action": "updated"},
            {"kind": "Component", "name": "vault", "namespace": "acme", "action": "updated"},
        ]
        assert cli("--config", config, "event", "-", stdin=json.dumps(updated)).exit_code == 0

        time.sleep(2.1)
        result = cli("--config", config, "run", "--json")
        assert result.exit_code == 0, result.stdout
        after_update = by_ref(export(config))

        for kind in ("components", "workloads", "projects"):
            for (plural, ns), bucket in list(api.storage.current.items()):
                if plural == kind and ns == "globex":
                    for name in list(bucket):
                        api.delete(kind, "globex", name)
        del api.namespaces["globex"]
        gone = [
            {"kind": "Namespace", "name": "globex", "namespace": "", "action": "deleted"},
            {"kind": "Namespace", "name": "kube-system", "namespace": "", "action": "created"},
        ]
        after_delete = apply_events(config, gone)
        assert_every_request_authorized(server)

    ledger = after_create["component:acme/ledger"]
    assert annotations(ledger)["openchoreo.io/workload"] == "zz-ledger"
    assert [full_ref(r, "api", "acme") for r in ledger["spec"].get("providesApis", [])] == [
        "api:acme/shop-ledger-grpc"
    ]
    assert after_create["api:acme/shop-ledger-grpc"]["spec"]["type"] == "proto"

    reporter = after_update["component:acme/reporter"]
    assert [full_ref(r, "api", "acme") for r in reporter["spec"].get("providesApis", [])] == [
        "api:acme/internal-reporter-out"
    ]
    assert after_update["api:acme/internal-reporter-out"]["spec"]["type"] == "openapi"
    assert after_update["system:acme/shop"]["spec"]["owner"] == "group:default/new-shop-team"
    assert after_update["component:acme/checkout"]["spec"]["owner"] == "group:default/new-shop-team"
    assert after_update["component:acme/ledger"]["spec"]["owner"] == "group:default/new-shop-team"
    assert (
        after_update["api:acme/shop-ledger-grpc"]["spec"]["owner"] == "group:default/new-shop-team"
    )
    assert after_update["component:acme/cart"]["spec"]["owner"] == "group:default/cart-team"
    assert "component:acme/vault" not in after_update

    assert not [ref for ref in after_delete if "globex" in ref]
    assert "domain:default/kube-system" not in after_delete
    assert "component:acme/cart" in after_delete
    assert_catalog_consistent(list(after_delete.values()))


def test_a_forwarder_start_flood_is_dropped_for_a_walk(here: Path) -> None:
    """The forwarder sends `created` for every object when it starts: past maxPending the
    backlog is dropped and a walk made due; the catalog ends up whole all the same."""
    with running() as server:
        expected = bulk(server.api, {"bulk-a": 60})
        config = write_config(here, server)
        document = yaml.safe_load(config.read_text())
        document["openchoreo"]["events"] = {"maxPending": 50}
        config.write_text(yaml.safe_dump(document))
        run_cycle(config)
        flood = [
            {"kind": kind, "name": name, "namespace": "bulk-a", "action": "created"}
            for kind, plural in (("Component", "components"), ("Workload", "workloads"))
            for name in server.api.storage.current[(plural, "bulk-a")]
        ]
        queued = cli("--config", config, "event", "-", stdin="\n".join(map(json.dumps, flood)))
        before = len(server.api.api_requests())
        result = cli("--config", config, "run", "--json")
        document = json.loads(result.stdout)
        gets = [r for r in server.api.api_requests()[before:] if "limit" not in r.query]
        run_cycle(config)
        entities = export(config)
    assert queued.exit_code == 0
    assert result.exit_code == 0, document
    assert document["events"]["dropped"] > 0
    assert len(gets) < 20  # not one re-read per event
    assert set(by_ref(entities)) == expected


def test_serve_takes_the_forwarders_webhook(here: Path) -> None:
    """`serve` at the Helm default route: POST, application/json, no auth header, any 2xx."""

    with running() as server:
        showcase(server.api)
        config = write_config(here, server)
        with serving(config, here / "serve.log") as base:
            wait_for(
                lambda: httpx.get(base + "/status").json()["providers"][0]["lastCompletedAt"],
                "no cycle completed",
                here / "serve.log",
            )
            server.api.put("components", "acme", component("payments", "shop"))
            server.api.delete("components", "acme", "worker")
            for event in (
                {"kind": "Component", "name": "payments", "namespace": "acme", "action": "created"},
                {"kind": "Component", "name": "worker", "namespace": "acme", "action": "deleted"},
            ):
                answer = httpx.post(
                    base + "/api/events/http/openchoreo",
                    content=json.dumps(event),
                    headers={"Content-Type": "application/json"},
                )
                assert 200 <= answer.status_code < 300, answer.text

            def applied() -> bool:
                refs = by_ref(export(config))
                return "component:acme/payments" in refs and "component:acme/worker" not in refs

            wait_for(applied, "events not applied", here / "serve.log")


def test_events_for_a_new_namespace_in_any_order_and_a_deleted_event_for_a_live_object(
    here: Path,
) -> None:
    """The forwarder's informers are one per kind: a new namespace's objects may be announced
    children first. And `action` is no fact: a `deleted` event for an object that a re-read still
    finds (finalizers pending, deletionTimestamp set) must not remove it (document, Events:
    re-fetch, 404 = gone)."""
    with showcase_ingested(here) as (server, config):
        api = server.api
        api.add_namespace("hooli", annotations={"openchoreo.dev/display-name": "Hooli"})
        api.put("projects", "hooli", project("search", {"backstage.io/owner": "group:default/s"}))
        put_service(
            api,
            "hooli",
            "search",
            "indexer",
            "indexer-main",
            {
                "query": {
                    "type": "HTTP",
                    "port": 80,
                    "schema": {"type": "openapi", "content": OPENAPI},
                },
            },
        )
        cart = api.storage.get("components", "acme", "cart")
        assert cart is not None
        dying = json.loads(json.dumps(cart))
        dying["metadata"]["deletionTimestamp"] = "2026-02-02T02:02:02Z"
        api.storage.put("components", "acme", dying)
        events = [
            {"kind": "Workload", "name": "indexer-main", "namespace": "hooli", "action": "created"},
            {"kind": "Component", "name": "indexer", "namespace": "hooli", "action": "created"},
            {"kind": "Project", "name": "search", "namespace": "hooli", "action": "created"},
            {"kind": "Namespace", "name": "hooli", "namespace": "", "action": "created"},
            {"kind": "Component", "name": "cart", "namespace": "acme", "action": "deleted"},
        ]
        catalog = apply_events(config, events, "--json")
    assert catalog["domain:default/hooli"]["metadata"].get("title") == "Hooli"
    assert catalog["system:hooli/search"]["spec"]["owner"] == "group:default/s"
    assert "component:hooli/indexer" in catalog
    indexer = catalog["component:hooli/indexer"]
    assert indexer["spec"]["owner"] == "group:default/s"
    assert [full_ref(r, "api", "hooli") for r in indexer["spec"].get("providesApis", [])] == [
        "api:hooli/search-indexer-query"
    ]
    assert "api:hooli/search-indexer-query" in catalog
    assert "component:acme/cart" in catalog
    assert annotations(catalog["component:acme/cart"])["openchoreo.io/deletion-timestamp"] == (
        "2026-02-02T02:02:02Z"
    )
    assert "api:acme/shop-cart-rest" in catalog


def test_events_move_a_workload_and_delete_a_project(here: Path) -> None:
    """A component's workload replaced by one of another name (two Workload events), and a
    project deleted (its Project event alone: the entity leaves with everything below it)."""
    with showcase_ingested(here) as (server, config):
        api = server.api
        api.delete("workloads", "acme", "cart-7d9f6b")
        api.put(
            "workloads",
            "acme",
            workload(
                "cart-new",
                "shop",
                "cart",
                {
                    "v2": {
                        "type": "HTTP",
                        "port": 8080,
                        "schema": {"type": "openapi", "content": OPENAPI},
                    },
                },
            ),
        )
        for plural, name in (
            ("components", "worker"),
            ("components", "reporter"),
            ("workloads", "reporter-batch"),
            ("projects", "internal"),
        ):
            api.delete(plural, "acme", name)
        events = [
            {"kind": "Workload", "name": "cart-7d9f6b", "namespace": "acme", "action": "deleted"},
            {"kind": "Workload", "name": "cart-new", "namespace": "acme", "action": "created"},
            {"kind": "Project", "name": "internal", "namespace": "acme", "action": "deleted"},
        ]
        catalog = apply_events(config, events, "--json")
    cart = catalog["component:acme/cart"]
    assert annotations(cart)["openchoreo.io/workload"] == "cart-new"
    assert [full_ref(r, "api", "acme") for r in cart["spec"]["providesApis"]] == [
        "api:acme/shop-cart-v2"
    ]
    assert not [
        ref
        for ref in catalog
        if ref.startswith("api:acme/shop-cart-") and ref != "api:acme/shop-cart-v2"
    ]
    assert annotations(catalog["api:acme/shop-cart-v2"])["openchoreo.io/workload"] == "cart-new"
    assert "system:acme/internal" not in catalog
    assert "component:acme/worker" not in catalog
    assert "component:acme/reporter" not in catalog
    assert_catalog_consistent(list(catalog.values()))


def test_a_workload_made_again_for_a_component_of_another_project_moves_its_apis(
    here: Path,
) -> None:
    """A workload's owner cannot change (`spec.owner` is immutable), so a workload moves by
    being deleted and made again under its name: the free-form `cart-7d9f6b` goes from `cart`
    (project `shop`) to `worker` (project `internal`). Only its `created` event arrives (the
    forwarder's `deleted` lost): `cart` drops the APIs it served, `worker` serves its own."""
    with showcase_ingested(here) as (server, config):
        api = server.api
        api.delete("workloads", "acme", "cart-7d9f6b")
        served = {"rest": {"type": "HTTP", "port": 8080, "schema": {"content": OPENAPI}}}
        api.put("workloads", "acme", workload("cart-7d9f6b", "internal", "worker", served))
        events = [
            {"kind": "Workload", "name": "cart-7d9f6b", "namespace": "acme", "action": "created"}
        ]
        catalog = apply_events(config, events)
    cart, worker = catalog["component:acme/cart"], catalog["component:acme/worker"]
    assert not cart["spec"].get("providesApis")
    assert "openchoreo.io/workload" not in annotations(cart)
    assert not [ref for ref in catalog if ref.startswith("api:acme/shop-cart-")]
    assert [full_ref(r, "api", "acme") for r in worker["spec"]["providesApis"]] == [
        "api:acme/internal-worker-rest"
    ]
    assert annotations(worker)["openchoreo.io/workload"] == "cart-7d9f6b"
    assert_catalog_consistent(list(catalog.values()))


def test_a_component_deleted_after_its_workload_leaves_with_what_is_left_of_it(
    here: Path,
) -> None:
    """Its workload deleted first (its APIs leave, the component stays), then the component:
    no workload says which project it was in any more, and its stored entity says it."""
    with showcase_ingested(here) as (server, config):
        api = server.api
        endpoints = {"api": {"type": "HTTP", "port": 80, "schema": {"content": OPENAPI}}}
        put_service(api, "acme", "shop", "ledger", "ledger-5c6d", endpoints)
        created = [
            {"kind": "Component", "name": "ledger", "namespace": "acme", "action": "created"},
            {"kind": "Workload", "name": "ledger-5c6d", "namespace": "acme", "action": "created"},
        ]
        with_api = apply_events(config, created)
        api.delete("workloads", "acme", "ledger-5c6d")
        gone = {"kind": "Workload", "name": "ledger-5c6d", "namespace": "acme", "action": "deleted"}
        without_workload = apply_events(config, [gone])
        api.delete("components", "acme", "ledger")
        gone = {"kind": "Component", "name": "ledger", "namespace": "acme", "action": "deleted"}
        catalog = apply_events(config, [gone])

    assert "api:acme/shop-ledger-api" in with_api
    assert "component:acme/ledger" in without_workload
    assert "api:acme/shop-ledger-api" not in without_workload
    assert "component:acme/ledger" not in catalog
    assert not [ref for ref in catalog if "ledger" in ref]
    assert_catalog_consistent(list(catalog.values()))


def test_a_dependency_on_an_orphan_workload_stays_as_the_walk_gives_it_after_events(
    here: Path,
) -> None:
    """A workload left behind by its deleted component (an orphan) is indexed by the walk, and a
    consumer that depends on its endpoint names that API as the walk gives it. An event for the
    orphan, then one for the consumer, keep it so: they dropped it, and every cycle put it back
    (three upserts of an unchanged component, each to the change log and Backstage)."""
    with showcase_ingested(here) as (server, config):
        api = server.api
        served = {"o": {"type": "HTTP", "port": 80, "schema": {"content": OPENAPI}}}
        api.put("workloads", "acme", workload("orphan-wl", "shop", "gone", served))
        put_service(api, "acme", "shop", "consumer", "consumer-wl")
        needs = workload("consumer-wl", "shop", "consumer")
        needs["spec"]["dependencies"] = {"endpoints": [{"component": "gone", "name": "o"}]}
        api.put("workloads", "acme", needs)
        run_cycle(config)
        walked = by_ref(export(config))["component:acme/consumer"]
        events = [  # `created`: an `updated` event waits a moment before it is applied
            {"kind": "Workload", "name": "orphan-wl", "namespace": "acme", "action": "created"},
            {"kind": "Component", "name": "consumer", "namespace": "acme", "action": "created"},
        ]
        after_events = apply_events(config, events)["component:acme/consumer"]
        run_cycle(config)
        after_cycle = by_ref(export(config))["component:acme/consumer"]

    assert walked["spec"].get("consumesApis") == ["api:acme/shop-gone-o"]
    assert after_events["spec"] == walked["spec"]
    assert after_cycle["spec"] == walked["spec"]
