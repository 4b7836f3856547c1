"""choreo-ingest end to end against the clean-room OpenChoreo v1 API (tests/cleanroom_v1.py): the
two mapping features the catalog tests leave out, checked against README ("What lands in the
catalog") and `openchoreo-v1-api.md`.

- `spec.consumesApis`: a workload's `spec.dependencies.endpoints` (OpenChoreo's
  WorkloadConnection `{project?, component, name, visibility, envBindings}`; no or an empty
  `project` is the consumer's own) name the APIs its component consumes, a ref only where the
  endpoint has an API in the catalog, named as that API is named (made unique, at most 63
  characters).
- `mapping.apisWithoutSchema: stub`: endpoints without schema content get an API too, with a
  generated definition of the endpoint type's kind.

One world (cleanroom_v1_worlds.dependencies) is ingested once for the module, by two states
against the same servers: one with the default `skip`, one with `stub`. The `skip` state then
meets the world changed (a target added, another deleted): through the forwarder's events,
then through the next cycle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
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
    run_cycle,
    write_config,
)
from cleanroom_v1_worlds import (
    DEPS,
    LONG_PROJECT,
    OPENAPI,
    STUB_TYPES,
    TELEMETRY,
    dependencies,
    put_service,
)
from cli_support import isolate

from backstage_validator import (
    entity_lines,
    run_backstage_validator,
    skip_unless_backstage_validator,
)

Catalog = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Ingested:
    skipped: list[dict[str, Any]]
    """The first cycle with `apisWithoutSchema: skip` (the default)."""
    stubbed: list[dict[str, Any]]
    """The first cycle of a second state, with `apisWithoutSchema: stub`."""
    evented: Catalog
    """The `skip` state after the events of `shop/late` (created) and `pay/billing` (deleted)."""
    announced: Catalog
    """Then after an event that names `web`'s workload."""
    later: list[dict[str, Any]]
    """The `skip` state after the next cycle."""


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    structlog.reset_defaults()
    with pytest.MonkeyPatch.context() as monkeypatch, running() as server:
        skip_dir, stub_dir = (tmp_path_factory.mktemp(name) for name in ("skip", "stub"))
        isolate(skip_dir, monkeypatch)
        dependencies(server.api)
        skip_config = write_config(skip_dir, server, chunk_size=2)
        stub_config = write_config(
            stub_dir, server, chunk_size=2, mapping={"apisWithoutSchema": "stub"}
        )
        run_cycle(skip_config)
        run_cycle(stub_config)
        skipped, stubbed = export(skip_config), export(stub_config)

        http = {"type": "HTTP", "port": 80, "schema": {"content": OPENAPI}}
        put_service(server.api, DEPS, "shop", "late", "late-wl", {"api": http})
        server.api.delete("components", DEPS, "billing")
        server.api.delete("workloads", DEPS, "billing-wl")
        events = [
            {"kind": kind, "name": name, "namespace": DEPS, "action": action}
            for kind, name, action in (
                ("Component", "late", "created"),
                ("Workload", "late-wl", "created"),
                ("Component", "billing", "deleted"),
                ("Workload", "billing-wl", "deleted"),
            )
        ]
        evented = apply_events(skip_config, events)
        # The forwarder, restarted, announces every object as created: `web` is re-mapped.
        again = [{"kind": "Workload", "name": "web-wl", "namespace": DEPS, "action": "created"}]
        announced = apply_events(skip_config, again)
        run_cycle(skip_config)
        later = export(skip_config)
        assert_every_request_authorized(server)
    return Ingested(skipped, stubbed, evented, announced, later)


def apply_events(config: Path, events: list[dict[str, Any]]) -> Catalog:
    """`event -` with `events`, then one `run` (the cycle is resting: it applies them only)."""
    queued = cli("--config", config, "event", "-", stdin=json.dumps(events))
    assert queued.exit_code == 0, queued.stdout + queued.stderr
    applied = cli("--config", config, "run")
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    return by_ref(export(config))


def consumed(catalog: Catalog, component: str) -> list[str] | None:
    """The component's `spec.consumesApis` as full refs, in the order written (None: absent)."""
    refs = catalog[f"component:{DEPS}/{component}"]["spec"].get("consumesApis")
    return None if refs is None else [full_ref(ref, "api", DEPS) for ref in refs]


def api_of(catalog: Catalog, project: str, component: str, endpoint: str) -> str:
    """The ref of the one API entity the catalog holds for this endpoint (by its annotations)."""
    [ref] = [
        ref
        for ref, entity in catalog.items()
        if entity["kind"] == "API"
        and (
            annotations(entity).get("openchoreo.io/project"),
            annotations(entity).get("openchoreo.io/component"),
            annotations(entity).get("openchoreo.io/endpoint-name"),
        )
        == (project, component, endpoint)
    ]
    return ref


def test_dependencies_on_endpoints_with_an_api_become_consumes_apis(ingested: Ingested) -> None:
    """A ref per dependency on an endpoint with an API, in the consumer's project unless the
    dependency names another (no or an empty `project`: its own), sorted and once each; none for
    an endpoint without a schema, a component in another project than the one named, a project
    or component that does not exist. Every ref names an API the catalog holds."""
    catalog = by_ref(ingested.skipped)
    assert_catalog_consistent(ingested.skipped)
    collided = api_of(catalog, "a-b", "c", "e")
    long = api_of(catalog, LONG_PROJECT, TELEMETRY, "otlp")
    web = [
        f"api:{DEPS}/shop-orders-api",
        f"api:{DEPS}/pay-billing-rest",
        f"api:{DEPS}/a-b-c-e",
        collided,
        long,
    ]
    assert consumed(catalog, "web") == sorted(web)
    assert consumed(catalog, "ledger") == [
        f"api:{DEPS}/pay-billing-rest",
        f"api:{DEPS}/shop-orders-api",
    ]
    assert consumed(catalog, "aaa") == sorted([f"api:{DEPS}/a-b-c-e", collided])
    providers = ("orders", "inventory", "billing", "b-c", "c", TELEMETRY)
    assert {name: consumed(catalog, name) for name in providers} == dict.fromkeys(providers)
    # What gives no ref has no API entity either.
    assert not [ref for ref in catalog if ref.startswith(f"api:{DEPS}/shop-inventory-")]
    assert f"api:{DEPS}/shop-orders-admin" not in catalog


def test_consumes_apis_name_an_api_as_it_was_made_unique_and_short(ingested: Ingested) -> None:
    """The two endpoints that would share `a-b-c-e`: (a, b-c, e) sorts first and keeps it, the
    other gets a hash suffix; a name past 63 characters is shortened. A consumer's ref is the
    name the API got, whatever page the consumer came on (`aaa` before its targets, `web`
    after them)."""
    catalog = by_ref(ingested.skipped)
    assert api_of(catalog, "a", "b-c", "e") == f"api:{DEPS}/a-b-c-e"
    collided = api_of(catalog, "a-b", "c", "e")
    assert collided != f"api:{DEPS}/a-b-c-e"
    assert collided.startswith(f"api:{DEPS}/a-b-c-e")
    long = catalog[api_of(catalog, LONG_PROJECT, TELEMETRY, "otlp")]
    assert len(long["metadata"]["name"]) <= 63
    assert long["metadata"]["name"] != f"{LONG_PROJECT}-{TELEMETRY}-otlp"
    for consumer in ("aaa", "web"):
        assert collided in (consumed(catalog, consumer) or [])
    provided = catalog[f"component:{DEPS}/c"]["spec"]["providesApis"]
    assert [full_ref(ref, "api", DEPS) for ref in provided] == [collided]


STUB_SPEC_TYPES = {
    "http": "openapi",
    "grpc": "grpc",
    "graphql": "graphql",
    "ws": "asyncapi",
    "tcp": "tcp",
    "udp": "udp",
}


def test_stub_setting_gives_endpoints_without_schema_an_api_and_consumers_a_ref(
    ingested: Ingested,
) -> None:
    """With `stub`, every endpoint of a component's workload gets an API (blank content counts as
    none), its `spec.type` from the endpoint type; a dependency on such an endpoint becomes a
    ref."""
    catalog = by_ref(ingested.stubbed)
    assert_catalog_consistent(ingested.stubbed)
    inventory = {f"api:{DEPS}/shop-inventory-{name}" for name in STUB_TYPES}
    provided = catalog[f"component:{DEPS}/inventory"]["spec"]["providesApis"]
    assert {full_ref(ref, "api", DEPS) for ref in provided} == inventory
    for name, endpoint_type in STUB_TYPES.items():
        api = catalog[f"api:{DEPS}/shop-inventory-{name}"]
        assert api["spec"]["type"] == STUB_SPEC_TYPES[name], name
        assert api["spec"]["lifecycle"] == "production"
        assert full_ref(api["spec"]["system"], "system", DEPS) == f"system:{DEPS}/shop"
        assert annotations(api)["openchoreo.io/endpoint-type"] == endpoint_type
    orders = catalog[f"component:{DEPS}/orders"]["spec"]["providesApis"]
    assert {full_ref(ref, "api", DEPS) for ref in orders} == {
        f"api:{DEPS}/shop-orders-api",
        f"api:{DEPS}/shop-orders-admin",
    }
    assert catalog[f"api:{DEPS}/shop-orders-admin"]["spec"]["type"] == "openapi"
    assert catalog[f"api:{DEPS}/shop-orders-api"]["spec"]["definition"] == OPENAPI
    skipped = consumed(by_ref(ingested.skipped), "web") or []
    stubs = [f"api:{DEPS}/shop-orders-admin", f"api:{DEPS}/shop-inventory-grpc"]
    assert consumed(catalog, "web") == sorted([*skipped, *stubs])


def test_stub_definitions_are_empty_documents_of_the_endpoint_types_kind(
    ingested: Ingested,
) -> None:
    """README: an OpenAPI 3 document without paths, an AsyncAPI 2 one without channels, a proto3
    file, a GraphQL schema with a query field, a line of text for TCP and UDP; each says no
    schema was published."""
    catalog = by_ref(ingested.stubbed)
    definitions = {
        name: catalog[f"api:{DEPS}/shop-inventory-{name}"]["spec"]["definition"]
        for name in STUB_TYPES
    }
    for name, definition in definitions.items():
        assert "no schema" in definition.lower(), name
    openapi = yaml.safe_load(definitions["http"])
    assert str(openapi["openapi"]).startswith("3.")
    assert openapi["paths"] == {}
    assert openapi["info"]["title"]
    assert openapi["info"]["version"]
    asyncapi = yaml.safe_load(definitions["ws"])
    assert str(asyncapi["asyncapi"]).startswith("2.")
    assert asyncapi["channels"] == {}
    assert asyncapi["info"]["title"]
    assert asyncapi["info"]["version"]
    assert 'syntax = "proto3";' in definitions["grpc"].splitlines()
    assert "type Query {" in definitions["graphql"]
    for name in ("tcp", "udp"):
        assert len(definitions[name].strip().splitlines()) == 1, name
    admin = yaml.safe_load(catalog[f"api:{DEPS}/shop-orders-admin"]["spec"]["definition"])
    assert admin["paths"] == {}


@pytest.mark.parametrize("state", ["skipped", "stubbed", "later"])
def test_consumers_and_stubs_pass_backstage_validation(ingested: Ingested, state: str) -> None:
    """Backstage's own validators, which also resolve every providesApis and consumesApis ref
    inside the export."""
    skip_unless_backstage_validator()
    assert run_backstage_validator(entity_lines(getattr(ingested, state))) == []


def test_an_event_remaps_the_component_it_names_but_not_its_consumers(ingested: Ingested) -> None:
    """README: an event re-maps the component it names, not the components that consume its
    APIs: `shop/late` arrives with its API and `pay/billing` leaves with its own, while `web`
    and `ledger` keep the refs the last cycle gave them."""
    catalog, skipped = ingested.evented, by_ref(ingested.skipped)
    late = catalog[f"component:{DEPS}/late"]["spec"]["providesApis"]
    assert [full_ref(ref, "api", DEPS) for ref in late] == [f"api:{DEPS}/shop-late-api"]
    assert f"api:{DEPS}/shop-late-api" in catalog
    assert f"component:{DEPS}/billing" not in catalog
    assert f"api:{DEPS}/pay-billing-rest" not in catalog
    for name in ("web", "ledger", "aaa"):
        assert consumed(catalog, name) == consumed(skipped, name), name


def test_an_event_that_names_the_consumer_remaps_its_refs_to_what_events_brought(
    ingested: Ingested,
) -> None:
    """`web` re-mapped by an event of its own: its refs follow `shop/late`, which an event
    brought, and `pay/billing`, which an event took away; `ledger` waits for the next cycle."""
    catalog, skipped = ingested.announced, by_ref(ingested.skipped)
    web = set(consumed(skipped, "web") or [])
    web = web - {f"api:{DEPS}/pay-billing-rest"} | {f"api:{DEPS}/shop-late-api"}
    assert consumed(catalog, "web") == sorted(web)
    assert consumed(catalog, "ledger") == consumed(skipped, "ledger")


def test_the_next_cycle_adds_a_ref_to_a_new_target_and_drops_one_to_a_deleted_target(
    ingested: Ingested,
) -> None:
    catalog, skipped = by_ref(ingested.later), by_ref(ingested.skipped)
    assert_catalog_consistent(ingested.later)
    web = set(consumed(skipped, "web") or [])
    web = web - {f"api:{DEPS}/pay-billing-rest"} | {f"api:{DEPS}/shop-late-api"}
    assert consumed(catalog, "web") == sorted(web)
    assert consumed(catalog, "ledger") == [f"api:{DEPS}/shop-orders-api"]
    assert consumed(catalog, "aaa") == consumed(skipped, "aaa")
    assert f"api:{DEPS}/shop-late-api" in catalog
    assert f"component:{DEPS}/billing" not in catalog
