"""The OpenChoreo -> Backstage mapping: Domain, System, Component and API bodies."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from choreo_ingest.config import MappingConfig
from choreo_ingest.errors import PermanentError
from choreo_ingest.models import Entity
from choreo_ingest.providers.openchoreo.entities import (
    api_entity_name,
    component_entities,
    endpoint_names,
    organization_entity,
    project_entity,
    validate_entity,
)

MAPPING = MappingConfig()
PROVIDER = "openchoreo"
LOCATIONS = {
    "backstage.io/managed-by-location": "provider:openchoreo",
    "backstage.io/managed-by-origin-location": "provider:openchoreo",
}

COMPONENT_TYPES: list[tuple[str, str, list[str] | None]] = [
    ("deployment/web-app", "web-app", ["deployment", "web-app"]),
    ("statefulset/db", "db", ["statefulset", "db"]),
    ("cronjob/nightly-report", "nightly-report", ["cronjob", "nightly-report"]),
    ("job/migrate", "migrate", ["job", "migrate"]),
    ("proxy/gateway", "gateway", ["proxy", "gateway"]),
    ("Service", "service", ["service"]),
    ("WebApplication", "website", ["web-application"]),
    ("ScheduledTask", "scheduled-task", ["scheduled-task"]),
    ("ManualTask", "manual-task", ["manual-task"]),
    ("Webhook", "webhook", ["webhook"]),
    ("APIProxy", "api-proxy", ["api-proxy"]),
    ("TestRunner", "test-runner", ["test-runner"]),
    ("EventHandler", "event-handler", ["event-handler"]),
    ("", "unknown", None),
]
API_TYPES = [
    ("HTTP", "openapi"),
    ("REST", "openapi"),
    ("GraphQL", "graphql"),
    ("gRPC", "grpc"),
    ("Websocket", "asyncapi"),
    ("TCP", "tcp"),
    ("UDP", "udp"),
    ("rest", "openapi"),
    ("MQTT", "mqtt"),
    ("SomeNewThing", "some-new-thing"),
    ("", "unknown"),
]


def component(**fields: Any) -> dict[str, Any]:
    return {"uid": "c-uid", "name": "orders", "type": "deployment/web-app", **fields}


def endpoints(**by_name: Any) -> dict[str, Any]:
    return {"workload": {"endpoints": by_name}}


def map_component(data: dict[str, Any], mapping: MappingConfig = MAPPING) -> list[Entity]:
    return component_entities(data, "acme", "shop", mapping, PROVIDER)


def values(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for value in node.values():
            yield from values(value)
    elif isinstance(node, list):
        for value in node:
            yield from values(value)
    else:
        yield node


class TestOrganization:
    def test_becomes_a_domain_in_the_default_namespace(self) -> None:
        org = {
            "name": "acme",
            "displayName": " Acme Corp ",
            "description": "Our org",
            "createdAt": "2025-01-01T00:00:00Z",
            "status": "Ready",
        }
        entity = organization_entity(
            org, MappingConfig(default_owner="group:default/platform"), "oc"
        )
        assert (entity.kind, entity.namespace, entity.name, entity.scope) == (
            "Domain",
            "default",
            "acme",
            "acme",
        )
        assert entity.ref == "domain:default/acme"
        assert entity.body == {
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Domain",
            "metadata": {
                "name": "acme",
                "namespace": "default",
                "title": "Acme Corp",
                "description": "Our org",
                "annotations": {
                    "openchoreo.io/organization": "acme",
                    "openchoreo.io/created-at": "2025-01-01T00:00:00Z",
                    "openchoreo.io/status": "Ready",
                    "backstage.io/managed-by-location": "provider:oc",
                    "backstage.io/managed-by-origin-location": "provider:oc",
                },
                "labels": {"openchoreo.io/managed": "true"},
            },
            "spec": {"owner": "group:default/platform"},
        }

    @pytest.mark.parametrize(
        "blank", ["", "   ", None, 7], ids=["empty", "spaces", "null", "number"]
    )
    def test_blank_title_and_description_are_left_out(self, blank: Any) -> None:
        body = organization_entity(
            {"name": "acme", "displayName": blank, "description": blank}, MAPPING, PROVIDER
        ).body
        assert "title" not in body["metadata"]
        assert "description" not in body["metadata"]

    def test_nameless_resource_is_refused(self) -> None:
        with pytest.raises(PermanentError, match="organization without a name"):
            organization_entity({"displayName": "x"}, MAPPING, PROVIDER)


class TestProject:
    def test_becomes_a_system_in_the_org_namespace_under_its_domain(self) -> None:
        project = {
            "uid": "p-1",
            "name": "shop",
            "orgName": "acme",
            "displayName": "Shöp",
            "createdAt": "2025-01-02T00:00:00Z",
        }
        entity = project_entity(project, "acme", MAPPING, PROVIDER)
        assert (entity.kind, entity.namespace, entity.name, entity.scope) == (
            "System",
            "acme",
            "shop",
            "acme/shop",
        )
        assert entity.body["spec"] == {"owner": "group:default/guests", "domain": "default/acme"}
        assert entity.body["metadata"]["title"] == "Shöp"
        assert entity.body["metadata"]["annotations"] == {
            "openchoreo.io/organization": "acme",
            "openchoreo.io/project": "shop",
            "openchoreo.io/uid": "p-1",
            "openchoreo.io/created-at": "2025-01-02T00:00:00Z",
            **LOCATIONS,
        }


class TestComponent:
    def test_component_comes_first_then_apis_sorted_by_endpoint(self) -> None:
        data = component(
            **endpoints(zeta={"type": "REST", "port": 1}, alpha={"type": "gRPC", "port": 2})
        )
        entities = map_component(data)
        assert [entity.ref for entity in entities] == [
            "component:acme/orders",
            "api:acme/orders-alpha",
            "api:acme/orders-zeta",
        ]
        assert entities[0].body["spec"]["providesApis"] == [
            "api:acme/orders-alpha",
            "api:acme/orders-zeta",
        ]
        assert {entity.scope for entity in entities} == {"acme/shop/orders"}
        assert {entity.namespace for entity in entities} == {"acme"}

    def test_component_spec_and_annotations(self) -> None:
        data = component(
            displayName="Orders",
            description="Takes orders",
            createdAt="2025-01-03T00:00:00Z",
            status="Ready",
            autoDeploy=True,
            projectName="shop",
            orgName="acme",
        )
        mapping = MappingConfig(default_owner="user:default/jane", lifecycle="experimental")
        [entity] = map_component(data, mapping)
        assert entity.body["spec"] == {
            "type": "web-app",
            "lifecycle": "experimental",
            "owner": "user:default/jane",
            "system": "shop",
        }
        metadata = entity.body["metadata"]
        assert (metadata["title"], metadata["description"]) == ("Orders", "Takes orders")
        assert metadata["tags"] == ["deployment", "web-app"]
        assert metadata["labels"] == {"openchoreo.io/managed": "true"}
        assert metadata["annotations"] == {
            "openchoreo.io/organization": "acme",
            "openchoreo.io/project": "shop",
            "openchoreo.io/component": "orders",
            "openchoreo.io/component-type": "deployment/web-app",
            "openchoreo.io/uid": "c-uid",
            "openchoreo.io/created-at": "2025-01-03T00:00:00Z",
            "openchoreo.io/status": "Ready",
            **LOCATIONS,
        }

    @pytest.mark.parametrize(
        ("openchoreo_type", "spec_type", "expected_tags"),
        COMPONENT_TYPES,
        ids=[row[0] or "missing" for row in COMPONENT_TYPES],
    )
    def test_component_type(
        self, openchoreo_type: str, spec_type: str, expected_tags: list[str] | None
    ) -> None:
        [entity] = map_component(component(type=openchoreo_type))
        assert entity.body["spec"]["type"] == spec_type
        assert entity.body["metadata"].get("tags") == expected_tags

    @pytest.mark.parametrize(
        "workload",
        [{}, {"workload": None}, {"workload": {}}, endpoints(), {"workload": {"endpoints": None}}],
        ids=["no-workload", "null-workload", "empty-workload", "empty-endpoints", "null-endpoints"],
    )
    def test_component_without_endpoints_provides_no_apis(self, workload: dict[str, Any]) -> None:
        [entity] = map_component(component(**workload))
        assert "providesApis" not in entity.body["spec"]

    @pytest.mark.parametrize(
        ("repository", "expected"),
        [
            (
                {"url": "https://github.com/acme/orders.git", "revision": {"branch": "main"}},
                "url:https://github.com/acme/orders/tree/main/",
            ),
            (
                {"url": "https://github.com/acme/orders", "revision": {"branch": "feat/a b"}},
                "url:https://github.com/acme/orders/tree/feat/a%20b/",
            ),
            (
                {"url": "https://gitlab.com/acme/orders", "revision": {"branch": "dev"}},
                "url:https://gitlab.com/acme/orders/-/tree/dev/",
            ),
            ({"url": "https://github.com/acme/orders"}, "url:https://github.com/acme/orders"),
            (
                {"url": "https://git.example.com/acme/orders", "revision": {"branch": "main"}},
                "url:https://git.example.com/acme/orders",
            ),
            ({"url": "git@github.com:acme/orders.git"}, "url:https://github.com/acme/orders"),
            (
                {"url": "ssh://git@gitlab.com/g/sub/r.git", "revision": {"branch": "dev"}},
                "url:https://gitlab.com/g/sub/r/-/tree/dev/",
            ),
            ({"url": "git@git.example.com:acme/orders.git"}, None),
            (
                {"url": "https://github.com/acme/orders?x=1#readme", "revision": {"branch": "m"}},
                "url:https://github.com/acme/orders/tree/m/",
            ),
            (
                {"url": "https://u:tok3n@github.com/acme/orders.git", "revision": {"branch": "m"}},
                "url:https://github.com/acme/orders/tree/m/",
            ),
            (
                {"url": "https://user:tok3n@git.example.com/acme/orders"},
                "url:https://git.example.com/acme/orders",
            ),
            (
                {
                    "url": "https://gitlab.example.com/g/r.git?private_token=glpat-SECRET#top",
                    "revision": {"branch": "main"},
                },
                "url:https://gitlab.example.com/g/r.git",
            ),
            (
                {"url": "https://github.com/acme/orders?token=SECRET"},
                "url:https://github.com/acme/orders",
            ),
            ({"url": "https://exa mple.com/r"}, None),
            (
                {"url": "https://git.example.com/acme/my orders", "revision": {"branch": "m"}},
                "url:https://git.example.com/acme/my%20orders",
            ),
            (
                {"url": "https://github.com/acme/my orders", "revision": {"branch": "m"}},
                "url:https://github.com/acme/my%20orders/tree/m/",
            ),
            (
                {"url": "https://git.example.com/acme/%C3%A9t%C3%A9/100%"},
                "url:https://git.example.com/acme/%C3%A9t%C3%A9/100%25",
            ),
            (
                {"url": 'https://github.com/acme/100%"x', "revision": {"branch": "m"}},
                "url:https://github.com/acme/100%25%22x/tree/m/",
            ),
            (
                {"url": "https://git.example.com/acme/été"},
                "url:https://git.example.com/acme/%C3%A9t%C3%A9",
            ),
            (
                {"url": "https://github.com", "revision": {"branch": "main"}},
                "url:https://github.com",
            ),
            ({"url": "https://github.com/a\nb"}, "url:https://github.com/ab"),
            ({"url": "https://host:port/r"}, None),
            ({"url": " "}, None),
            ({"url": "http://[::1"}, None),
            ({}, None),
        ],
        ids=[
            "github-branch",
            "github-branch-quoted",
            "gitlab-branch",
            "github-no-branch",
            "other-host",
            "github-ssh",
            "gitlab-ssh-url",
            "other-ssh",
            "query-and-fragment-left-out-of-the-tree",
            "credentials-left-out",
            "credentials-left-out-other-host",
            "query-and-fragment-left-out-other-host",
            "query-left-out-without-a-branch",
            "space-in-host",
            "space-in-path-escaped",
            "space-in-path-escaped-forge-tree",
            "escapes-kept-lone-percent-escaped",
            "forge-lone-percent-and-quote-escaped",
            "non-ascii-path-escaped",
            "forge-without-a-repository-has-no-tree",
            "line-break-dropped-as-browsers-do",
            "port-not-a-number",
            "blank",
            "malformed",
            "none",
        ],
    )
    def test_source_location(self, repository: dict[str, Any], expected: str | None) -> None:
        data = component(componentWorkflow={"systemParameters": {"repository": repository}})
        [entity] = map_component(data)
        assert (
            entity.body["metadata"]["annotations"].get("backstage.io/source-location") == expected
        )

    def test_source_location_reads_a_branch_beside_the_repository(self) -> None:
        parameters = {
            "repository": {"url": "https://github.com/a/b"},
            "revision": {"branch": "main"},
        }
        [entity] = map_component(component(componentWorkflow={"systemParameters": parameters}))
        assert entity.body["metadata"]["annotations"]["backstage.io/source-location"] == (
            "url:https://github.com/a/b/tree/main/"
        )


class TestApi:
    @pytest.mark.parametrize(
        ("endpoint_type", "spec_type"), API_TYPES, ids=[row[0] or "missing" for row in API_TYPES]
    )
    def test_api_type_follows_endpoint_type(self, endpoint_type: str, spec_type: str) -> None:
        _, api = map_component(component(**endpoints(ep={"type": endpoint_type, "port": 8080})))
        assert api.body["spec"]["type"] == spec_type
        assert api.body["spec"]["definition"].strip()
        assert validate_entity(api.body) == []

    def test_api_entity(self) -> None:
        _, api = map_component(
            component(displayName="Orders", **endpoints(http={"type": "REST", "port": 8080}))
        )
        assert (api.kind, api.namespace, api.name, api.scope) == (
            "API",
            "acme",
            "orders-http",
            "acme/shop/orders",
        )
        spec = api.body["spec"]
        assert (spec["type"], spec["lifecycle"], spec["owner"], spec["system"]) == (
            "openapi",
            "production",
            "group:default/guests",
            "shop",
        )
        metadata = api.body["metadata"]
        assert metadata["title"] == "Orders: http"
        assert metadata["tags"] == ["rest"]
        assert metadata["annotations"] == {
            "openchoreo.io/organization": "acme",
            "openchoreo.io/project": "shop",
            "openchoreo.io/component": "orders",
            "openchoreo.io/endpoint-name": "http",
            "openchoreo.io/endpoint-type": "REST",
            "openchoreo.io/endpoint-port": "8080",
            **LOCATIONS,
        }

    def test_schema_content_is_the_definition(self) -> None:
        schema = "type Query { orders: [String] }\n"
        _, api = map_component(
            component(
                **endpoints(gql={"type": "GraphQL", "port": 1, "schema": {"content": schema}})
            )
        )
        assert api.body["spec"]["definition"] == schema

    def test_nul_characters_are_dropped_from_the_schema_content(self) -> None:
        schema = {"content": "type Query {\x00 orders: [String] }\n"}
        _, api = map_component(
            component(**endpoints(gql={"type": "GraphQL", "port": 1, "schema": schema}))
        )
        assert api.body["spec"]["definition"] == "type Query { orders: [String] }\n"

    @pytest.mark.parametrize(
        "workload",
        [
            {"ep": {"type": "REST", "port": 80}, "api\x00v2": {"type": "REST", "port": 81}},
            [{"name": "api\x00v2", "type": "REST"}, {"name": "ep", "type": "REST", "port": 80}],
        ],
        ids=["by-name", "list"],
    )
    def test_an_endpoint_whose_name_holds_a_nul_gets_no_api(self, workload: Any) -> None:
        """PostgreSQL (the state store's, and Backstage's) cannot store a NUL in text."""
        data = component(workload={"endpoints": workload})

        component_entity, *apis = map_component(data)

        assert [api.ref for api in apis] == ["api:acme/orders-ep"]
        assert component_entity.body["spec"]["providesApis"] == ["api:acme/orders-ep"]
        assert endpoint_names(data) == ["ep"]

    def test_endpoint_names_are_those_mapped_to_apis_in_workload_order(self) -> None:
        data = component(**endpoints(zeta={}, alpha={"type": "gRPC"}, beta=None))
        names = [
            api.body["metadata"]["annotations"]["openchoreo.io/endpoint-name"]
            for api in map_component(data)[1:]
        ]
        assert endpoint_names(data) == ["zeta", "alpha", "beta"]
        assert names == sorted(endpoint_names(data))

    def test_generated_openapi_definition_is_a_minimal_document(self) -> None:
        _, api = map_component(
            component(
                **endpoints(http={"type": "HTTP", "port": 8080, "schema": {"content": " \n"}})
            )
        )
        document = yaml.safe_load(api.body["spec"]["definition"])
        assert str(document["openapi"]).startswith("3.0")
        assert document["info"]["title"]
        assert document["info"]["version"]
        assert document["servers"] == [{"url": "http://orders:8080"}]
        assert document["paths"] == {}

    def test_generated_asyncapi_definition_names_the_port(self) -> None:
        _, api = map_component(component(**endpoints(ws={"type": "Websocket", "port": 9000})))
        document = yaml.safe_load(api.body["spec"]["definition"])
        assert document["asyncapi"]
        assert document["info"]["version"]
        assert document["servers"]["default"]["url"] == "orders:9000"

    @pytest.mark.parametrize("endpoint_type", ["gRPC", "TCP", "UDP", "GraphQL"])
    def test_generated_definition_for_other_types_names_type_and_port(
        self, endpoint_type: str
    ) -> None:
        _, api = map_component(component(**endpoints(ep={"type": endpoint_type, "port": 7070})))
        definition = api.body["spec"]["definition"]
        assert endpoint_type in definition
        assert "7070" in definition

    @pytest.mark.parametrize(
        ("port", "annotation"),
        [(8080, "8080"), ("8080", "8080"), (None, None), (True, None), ("http", None)],
        ids=["int", "digits", "missing", "bool", "word"],
    )
    def test_port_annotation_is_a_string_or_absent(self, port: Any, annotation: str | None) -> None:
        _, api = map_component(component(**endpoints(ep={"type": "TCP", "port": port})))
        assert api.body["metadata"]["annotations"].get("openchoreo.io/endpoint-port") == annotation


DELETION = {"openchoreo.io/deletion-timestamp": "2025-02-03T04:05:06Z"}


class TestBeingDeleted:
    """A resource with a `deletionTimestamp` stays in the catalog, annotated."""

    @pytest.mark.parametrize(
        "build",
        [
            lambda data: organization_entity(data, MAPPING, PROVIDER),
            lambda data: project_entity(data, "acme", MAPPING, PROVIDER),
            lambda data: map_component(data)[0],
        ],
        ids=["organization", "project", "component"],
    )
    def test_resource_being_deleted_is_kept_and_annotated(self, build: Any) -> None:
        data = component(deletionTimestamp=" 2025-02-03T04:05:06Z ")
        annotations = build(data).body["metadata"]["annotations"]
        assert annotations.items() >= DELETION.items()

    @pytest.mark.parametrize("blank", [None, "", "  "], ids=["null", "empty", "spaces"])
    def test_no_deletion_annotation_without_a_timestamp(self, blank: Any) -> None:
        entities = map_component(
            component(deletionTimestamp=blank, **endpoints(http={"type": "REST"}))
        )
        for entity in entities:
            assert "openchoreo.io/deletion-timestamp" not in entity.body["metadata"]["annotations"]


class TestApiNameOverride:
    def test_api_name_callback_names_the_apis_and_the_provided_refs(self) -> None:
        data = component(**endpoints(http={"type": "REST"}, grpc={"type": "gRPC"}))
        calls: list[tuple[str, str]] = []

        def api_name(component_name: str, endpoint: str) -> str:
            calls.append((component_name, endpoint))
            return f"renamed-{endpoint}"

        entities = component_entities(data, "acme", "shop", MAPPING, PROVIDER, api_name=api_name)
        assert calls == [("orders", "grpc"), ("orders", "http")]
        assert [entity.name for entity in entities[1:]] == ["renamed-grpc", "renamed-http"]
        assert entities[0].body["spec"]["providesApis"] == [
            "api:acme/renamed-grpc",
            "api:acme/renamed-http",
        ]

    def test_default_api_name_is_component_dash_endpoint(self) -> None:
        _, api = map_component(component(**endpoints(http={"type": "REST"})))
        assert api.name == api_entity_name("orders", "http") == "orders-http"


AWKWARD_COMPONENTS = [
    component(
        name="c" * 63, displayName="", **endpoints(**{"e" * 70: {"type": "REST", "port": 1}})
    ),
    component(
        name="x",
        type="ScheduledTask",
        displayName="Zählwerk ✓ 日本",
        **endpoints(
            **{
                "REST_api.v1": {"type": "REST", "port": 2},
                "my endpoint": {"type": "UDP"},
                "": {"type": "TCP", "port": "3"},
                " ": {},
                "日本語": {"type": "Websocket"},
            }
        ),
    ),
    component(
        name="y",
        type="APIProxy",
        description="   ",
        **endpoints(Api={"type": "gRPC"}, api={"type": "gRPC"}),
    ),
]


def awkward_entities() -> list[Entity]:
    entities = [
        organization_entity({"name": "acme", "displayName": "Ácme"}, MAPPING, PROVIDER),
        project_entity({"name": "shop", "displayName": "  "}, "acme", MAPPING, PROVIDER),
    ]
    for data in AWKWARD_COMPONENTS:
        entities += map_component(data)
    return entities


class TestEveryEntity:
    @pytest.mark.parametrize("entity", awkward_entities(), ids=lambda entity: entity.ref)
    def test_passes_validate_entity(self, entity: Entity) -> None:
        assert validate_entity(entity.body) == []

    def test_values_are_never_none(self) -> None:
        for entity in awkward_entities():
            assert None not in list(values(entity.body)), entity.ref

    def test_refs_are_unique_case_insensitively(self) -> None:
        refs = [entity.ref.lower() for entity in awkward_entities()]
        assert len(refs) == len(set(refs))

    def test_mapping_is_deterministic_whatever_the_input_order(self) -> None:
        data = AWKWARD_COMPONENTS[1]
        shuffled = copy.deepcopy(data)
        shuffled["workload"]["endpoints"] = dict(
            reversed(list(data["workload"]["endpoints"].items()))
        )
        shuffled = dict(reversed(list(shuffled.items())))
        first, second = map_component(data), map_component(shuffled)
        assert [entity.body for entity in first] == [entity.body for entity in second]
        assert [json.dumps(e.body, sort_keys=True) for e in first] == [
            json.dumps(e.body, sort_keys=True) for e in map_component(copy.deepcopy(data))
        ]
