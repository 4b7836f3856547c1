"""The OpenChoreo v1 -> Backstage mapping, as OpenChoreo's own Backstage provider maps v1."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import structlog
import yaml

from choreo_ingest.config import MappingConfig
from choreo_ingest.errors import PermanentError
from choreo_ingest.models import Entity
from choreo_ingest.providers.openchoreo.entities_v1 import (
    api_endpoint_names,
    api_endpoints,
    component_entities,
    dependencies,
    namespace_entity,
    project_entity,
    project_owner,
    trim_workload,
)
from choreo_ingest.providers.openchoreo.naming import is_valid_entity_name, validate_entity

MAPPING = MappingConfig()
STUBS = replace(MAPPING, apis_without_schema="stub")
PROVIDER = "openchoreo"
DEFAULT_OWNER = MAPPING.default_owner
LOCATIONS = {
    "backstage.io/managed-by-location": "provider:openchoreo",
    "backstage.io/managed-by-origin-location": "provider:openchoreo",
}
OPENAPI = "openapi: 3.0.0\ninfo: {title: orders, version: '1'}\npaths: {}\n"
CREATED = "2025-01-02T03:04:05Z"
DELETED = "2025-02-03T04:05:06Z"
HASH = r"[0-9a-f]{8}"


def resource(name: str, namespace: str | None = "acme", **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **extra.pop("metadata", {})}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "openchoreo.dev/v1alpha1", "metadata": metadata, **extra}


def ready(status: str) -> dict[str, Any]:
    condition = {"type": "Ready", "status": status, "reason": "Reconciled"}
    return {"conditions": [{"type": "Other", "status": "True"}, condition]}


def component(
    name: str = "orders",
    *,
    project: str = "shop",
    type_name: str | None = "deployment/service",
    owner: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"owner": {"projectName": project}, "autoDeploy": True}
    if type_name is not None:
        spec["componentType"] = {"kind": "ComponentType", "name": type_name}
    spec.update(extra.pop("spec", {}))
    metadata = extra.pop("metadata", {})
    if owner is not None:
        metadata.setdefault("annotations", {})["backstage.io/owner"] = owner
    return resource(name, kind="Component", metadata=metadata, spec=spec, **extra)


def workload(name: str = "orders-workload", /, **endpoints: Any) -> dict[str, Any]:
    spec = {
        "owner": {"projectName": "shop", "componentName": "orders"},
        "container": {"image": "ghcr.io/acme/orders:1", "env": [{"key": "A", "value": "b"}]},
        "endpoints": endpoints,
    }
    return resource(name, kind="Workload", spec=spec, status={"conditions": []})


def http(content: str | None = OPENAPI, **fields: Any) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"type": "HTTP", "port": 8080, **fields}
    if content is not None:
        endpoint["schema"] = {"type": "openapi", "content": content}
    return endpoint


def map_component(
    data: dict[str, Any],
    load: dict[str, Any] | None = None,
    owner_of_project: str | None = None,
    mapping: MappingConfig = MAPPING,
) -> list[Entity]:
    return component_entities(data, load, owner_of_project, mapping, PROVIDER)


def values(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for value in node.values():
            yield from values(value)
    elif isinstance(node, list):
        for value in node:
            yield from values(value)
    else:
        yield node


class TestNamespace:
    def test_becomes_a_domain_in_the_default_namespace(self) -> None:
        namespace = {
            "metadata": {
                "name": "acme",
                "creationTimestamp": CREATED,
                "labels": {"openchoreo.dev/control-plane": "true"},
                "annotations": {
                    "openchoreo.dev/display-name": " Acme Corp ",
                    "openchoreo.dev/description": "Our namespace",
                },
            },
            "status": {"phase": "Active"},
        }
        entity = namespace_entity(namespace, replace(MAPPING, default_owner="user:jane"), "oc")
        assert (entity.kind, entity.ref, entity.scope) == ("Domain", "domain:default/acme", "acme")
        assert entity.body == {
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Domain",
            "metadata": {
                "name": "acme",
                "namespace": "default",
                "title": "Acme Corp",
                "description": "Our namespace",
                "annotations": {
                    "openchoreo.io/namespace": "acme",
                    "openchoreo.io/created-at": CREATED,
                    "openchoreo.io/status": "Active",
                    "backstage.io/managed-by-location": "provider:oc",
                    "backstage.io/managed-by-origin-location": "provider:oc",
                },
                "labels": {"openchoreo.io/managed": "true"},
            },
            "spec": {"owner": "user:jane"},
        }

    def test_terminating_namespace_stays_with_its_deletion_timestamp(self) -> None:
        namespace = {
            "metadata": {"name": "acme", "deletionTimestamp": DELETED},
            "status": {"phase": "Terminating"},
        }
        annotations = namespace_entity(namespace, MAPPING, PROVIDER).body["metadata"]["annotations"]
        assert annotations["openchoreo.io/status"] == "Terminating"
        assert annotations["openchoreo.io/deletion-timestamp"] == DELETED

    @pytest.mark.parametrize(
        "blank", ["", "   ", None, 7], ids=["empty", "spaces", "null", "number"]
    )
    def test_without_a_display_name_the_domain_is_titled_with_its_name(self, blank: Any) -> None:
        """As OpenChoreo's own provider titles it (openchoreo-v1-api.md: display-name or name)."""
        meta = {"annotations": {"openchoreo.dev/display-name": blank}}
        body = namespace_entity(resource("acme", None, metadata=meta), MAPPING, PROVIDER).body
        assert body["metadata"]["title"] == "acme"
        assert "description" not in body["metadata"]

    def test_nameless_namespace_is_refused(self) -> None:
        with pytest.raises(PermanentError, match="namespace without a name"):
            namespace_entity({"metadata": {}}, MAPPING, PROVIDER)


class TestProject:
    def test_becomes_a_system_in_its_namespace_under_its_domain(self) -> None:
        project = resource(
            "shop",
            kind="Project",
            metadata={
                "uid": "p-uid",
                "creationTimestamp": CREATED,
                "annotations": {"openchoreo.dev/display-name": "Shöp"},
            },
            spec={"deploymentPipelineRef": {"kind": "DeploymentPipeline", "name": "default"}},
            status=ready("True"),
        )
        entity = project_entity(project, MAPPING, PROVIDER)
        assert (entity.ref, entity.scope) == ("system:acme/shop", "acme/shop")
        assert entity.body["spec"] == {"owner": DEFAULT_OWNER, "domain": "default/acme"}
        assert entity.body["metadata"]["title"] == "Shöp"
        assert entity.body["metadata"]["annotations"] == {
            "openchoreo.io/namespace": "acme",
            "openchoreo.io/project": "shop",
            "openchoreo.io/project-id": "shop",  # OpenChoreo's permission policy reads it
            "openchoreo.io/project-uid": "p-uid",
            "openchoreo.io/created-at": CREATED,
            "openchoreo.io/status": "Ready",
            **LOCATIONS,
        }

    @pytest.mark.parametrize(
        ("project_type", "annotations"),
        [
            (
                {"kind": "ClusterProjectType", "name": "default"},
                {"project-type": "default", "project-type-kind": "ClusterProjectType"},
            ),
            ({"name": "web"}, {"project-type": "web", "project-type-kind": "ProjectType"}),
            ("web", {"project-type": "web", "project-type-kind": "ProjectType"}),
            ({"kind": "ProjectType", "name": " "}, {}),
            (None, {}),
        ],
        ids=["cluster-kind", "kind-missing", "bare-name", "blank-name", "none"],
    )
    def test_project_type_annotations_as_openchoreos_provider_writes_them(
        self, project_type: Any, annotations: dict[str, str]
    ) -> None:
        spec = {} if project_type is None else {"type": project_type}
        entity = project_entity(resource("shop", spec=spec), MAPPING, PROVIDER)
        written = entity.body["metadata"]["annotations"]
        found = {key: written[f"openchoreo.io/{key}"] for key in annotations}
        assert found == annotations
        assert ("openchoreo.io/project-type" in written) == bool(annotations)

    def test_owner_annotation_owns_the_system(self) -> None:
        project = resource("shop", metadata={"annotations": {"backstage.io/owner": "team-x"}})
        assert project_entity(project, MAPPING, PROVIDER).body["spec"]["owner"] == "team-x"

    def test_namespace_argument_is_the_fallback_for_metadata(self) -> None:
        assert project_entity(resource("shop", None), MAPPING, PROVIDER, namespace="ns").ref == (
            "system:ns/shop"
        )
        assert project_entity(resource("shop"), MAPPING, PROVIDER, namespace="ns").ref == (
            "system:acme/shop"
        )

    def test_namespaceless_project_is_refused(self) -> None:
        with pytest.raises(PermanentError, match="project without a namespace"):
            project_entity(resource("shop", None), MAPPING, PROVIDER)

    @pytest.mark.parametrize(
        ("status", "expected"),
        [({}, None), (ready("True"), "Ready"), (ready("False"), "Not Ready")],
        ids=["no-condition", "ready", "not-ready"],
    )
    def test_status_from_ready_condition(self, status: Any, expected: str | None) -> None:
        annotations = project_entity(resource("shop", status=status), MAPPING, PROVIDER).body[
            "metadata"
        ]["annotations"]
        assert annotations.get("openchoreo.io/status") == expected

    def test_project_being_deleted_stays_annotated(self) -> None:
        project = resource("shop", metadata={"deletionTimestamp": DELETED})
        entity = project_entity(project, MAPPING, PROVIDER)
        assert entity.body["metadata"]["annotations"]["openchoreo.io/deletion-timestamp"] == DELETED


OWNER_CHAIN = [
    # component annotation, project annotation, expected owner
    ("group:acme/comp-team", "group:acme/proj-team", "group:acme/comp-team"),
    (None, "group:acme/proj-team", "group:acme/proj-team"),
    (None, None, DEFAULT_OWNER),
    ("  ", "user:default/jane", "user:default/jane"),
    ("team-x", "user:default/jane", "team-x"),
    ("Team-X", None, "Team-X"),
    (" group:default/spaced ", None, "group:default/spaced"),
    ("a b", "group:acme/proj-team", "group:acme/proj-team"),
    ("group:", None, DEFAULT_OWNER),
    ("x/y/z", "user:default/jane", "user:default/jane"),
    ("system:acme/shop", None, DEFAULT_OWNER),
    ("a b", "x/y/z", DEFAULT_OWNER),
]


class TestOwnerChain:
    @pytest.mark.parametrize(
        ("component_owner", "project_annotation", "expected"),
        OWNER_CHAIN,
        ids=[
            "component-wins",
            "project-next",
            "default-last",
            "blank-component-skipped",
            "bare-name-kept",
            "bare-name-kept-as-written",
            "stripped",
            "space-skipped",
            "empty-name-skipped",
            "two-slashes-skipped",
            "not-a-group-or-user-skipped",
            "both-invalid",
        ],
    )
    def test_component_then_project_then_default(
        self, component_owner: str | None, project_annotation: str | None, expected: str
    ) -> None:
        meta = {"annotations": {"backstage.io/owner": project_annotation}}
        owner_of_project = project_owner(resource("shop", metadata=meta))
        entities = map_component(
            component(owner=component_owner), workload(api=http()), owner_of_project
        )
        assert [entity.body["spec"]["owner"] for entity in entities] == [expected, expected]
        assert [validate_entity(entity.body) for entity in entities] == [[], []]

    @pytest.mark.parametrize("owner", ["a b", "group:", "x/y/z", "system:acme/shop"], ids=str)
    def test_invalid_owner_annotation_is_skipped_with_a_warning(self, owner: str) -> None:
        with structlog.testing.capture_logs() as logs:
            [entity] = map_component(component(owner=owner), None, "team-p")
        assert entity.body["spec"]["owner"] == "team-p"
        assert [
            (log["event"], log["log_level"], log["kind"], log["name"], log["owner"]) for log in logs
        ] == [("owner_annotation_ignored", "warning", "Component", "orders", owner)]

    @pytest.mark.parametrize("owner", ["x y " * 25_000, ["team-a"] * 10_000], ids=["text", "list"])
    def test_a_huge_owner_annotation_is_shown_cut_in_its_warning(self, owner: object) -> None:
        """Kubernetes allows 256 KB of annotations: a cron mail of one line as long, twice."""
        with structlog.testing.capture_logs() as logs:
            [entity] = map_component(component(owner=owner), None, "team-p")

        [log] = logs
        assert entity.body["spec"]["owner"] == "team-p"
        assert log["owner"].startswith(str(owner)[:100] if isinstance(owner, str) else "['team-a'")
        assert log["owner"].endswith(" characters)")
        assert len(log["owner"]) < 240
        assert len(log["reason"]) < 240

    def test_invalid_project_owner_annotation_is_skipped_with_a_warning(self) -> None:
        project = resource("shop", metadata={"annotations": {"backstage.io/owner": "a b"}})
        with structlog.testing.capture_logs() as logs:
            assert project_owner(project) is None
            assert project_entity(project, MAPPING, PROVIDER).body["spec"]["owner"] == (
                DEFAULT_OWNER
            )
        assert {(log["event"], log["kind"], log["name"]) for log in logs} == {
            ("owner_annotation_ignored", "Project", "shop")
        }

    def test_usable_annotation_logs_nothing(self) -> None:
        with structlog.testing.capture_logs() as logs:
            map_component(component(owner="team-x"))
        assert logs == []


class TestComponent:
    def test_component_spec_and_annotations(self) -> None:
        data = component(
            metadata={
                "uid": "c-uid",
                "creationTimestamp": CREATED,
                "annotations": {
                    "openchoreo.dev/display-name": "Orders",
                    "openchoreo.dev/description": "Takes orders",
                },
            },
            spec={
                "workflow": {
                    "kind": "Workflow",
                    "name": "docker",
                    "parameters": {
                        "repository": {
                            "url": "https://github.com/acme/orders.git",
                            "revision": {"branch": "main"},
                            "appPath": "/",
                        }
                    },
                }
            },
            status=ready("True"),
        )
        [entity, _] = map_component(data, workload(api=http()), "team-p")
        assert (entity.ref, entity.scope) == ("component:acme/orders", "acme/shop/orders")
        assert entity.body["spec"] == {
            "type": "deployment/service",
            "lifecycle": "ready",
            "owner": "team-p",
            "system": "shop",
            "providesApis": ["api:acme/shop-orders-api"],
        }
        metadata = entity.body["metadata"]
        assert (metadata["title"], metadata["description"]) == ("Orders", "Takes orders")
        assert metadata["tags"] == ["deployment", "service"]
        assert metadata["labels"] == {"openchoreo.io/managed": "true"}
        assert metadata["annotations"] == {
            "openchoreo.io/component": "orders",
            "openchoreo.io/component-uid": "c-uid",
            "openchoreo.io/component-type": "deployment/service",
            "openchoreo.io/component-type-kind": "ComponentType",
            "openchoreo.io/project": "shop",
            "openchoreo.io/namespace": "acme",
            "openchoreo.io/created-at": CREATED,
            "openchoreo.io/status": "Ready",
            "openchoreo.io/workload": "orders-workload",
            "openchoreo.io/branch": "main",  # as OpenChoreo's provider writes it
            "backstage.io/source-location": "url:https://github.com/acme/orders.git",
            **LOCATIONS,
        }

    @pytest.mark.parametrize(
        ("status", "lifecycle", "annotation"),
        [
            (ready("True"), "ready", "Ready"),
            (ready("False"), "not ready", "Not Ready"),
            (ready("Unknown"), "not ready", "Not Ready"),
            ({"conditions": [{"type": "Ready"}]}, "not ready", "Not Ready"),
            ({"conditions": [{"type": "Other", "status": "True"}]}, "not ready", "Not Ready"),
            ({"conditions": []}, "not ready", "Not Ready"),
            ({}, "not ready", "Not Ready"),
            (None, "not ready", "Not Ready"),
        ],
        ids=[
            "true",
            "false",
            "unknown",
            "no-status",
            "other-condition-only",
            "no-conditions",
            "empty-status",
            "missing",
        ],
    )
    def test_lifecycle_and_status_from_ready_condition(
        self, status: Any, lifecycle: str, annotation: str | None
    ) -> None:
        """As OpenChoreo's provider writes them: without a Ready condition (not reconciled yet)
        a component is not ready; the configured lifecycle is the APIs'."""
        data = component()
        if status is not None:
            data["status"] = status
        [entity] = map_component(data, mapping=replace(MAPPING, lifecycle="experimental"))
        assert entity.body["spec"]["lifecycle"] == lifecycle
        assert entity.body["metadata"]["annotations"].get("openchoreo.io/status") == annotation

    @pytest.mark.parametrize(
        ("component_type", "spec_type", "expected_tags"),
        [
            (
                {"kind": "ComponentType", "name": "deployment/service"},
                "deployment/service",
                ["deployment", "service"],
            ),
            (
                {"kind": "ClusterComponentType", "name": "statefulset/db"},
                "statefulset/db",
                ["statefulset", "db"],
            ),
            ({"name": "cronjob/report"}, "cronjob/report", ["cronjob", "report"]),
            ("proxy/gateway", "proxy/gateway", ["proxy", "gateway"]),
            ({"kind": "ComponentType", "name": "  "}, "unknown", None),
            ({"kind": "ComponentType"}, "unknown", None),
            (None, "unknown", None),
        ],
        ids=["namespaced", "cluster", "no-kind", "bare-string", "blank", "nameless", "missing"],
    )
    def test_spec_type_is_the_component_type_name(
        self, component_type: Any, spec_type: str, expected_tags: list[str] | None
    ) -> None:
        data = component(type_name=None, spec={"componentType": component_type})
        [entity] = map_component(data)
        assert entity.body["spec"]["type"] == spec_type
        assert entity.body["metadata"].get("tags") == expected_tags
        assert validate_entity(entity.body) == []

    @pytest.mark.parametrize(
        ("repository", "expected"),
        [
            (
                {"url": "https://github.com/acme/orders.git", "revision": {"branch": "feat/a b"}},
                "url:https://github.com/acme/orders.git",
            ),
            (
                {"url": "https://gitlab.com/acme/orders", "revision": {"branch": "dev"}},
                "url:https://gitlab.com/acme/orders",
            ),
            ({"url": "https://github.com/acme/orders"}, "url:https://github.com/acme/orders"),
            (
                {"url": "https://git.example.com/acme/orders", "revision": {"branch": "main"}},
                "url:https://git.example.com/acme/orders",
            ),
            ({"url": "git@github.com:acme/orders.git"}, "url:https://github.com/acme/orders"),
            (
                {"url": "https://gitlab.example.com/g/r.git?private_token=glpat-SECRET#top"},
                "url:https://gitlab.example.com/g/r.git",
            ),
            (
                {"url": "https://github.com/acme/orders?token=SECRET", "revision": {"branch": "m"}},
                "url:https://github.com/acme/orders",
            ),
            (
                {"url": "https://u:SECRET@git.example.com/acme/orders"},
                "url:https://git.example.com/acme/orders",
            ),
            ({"url": " "}, None),
            ({}, None),
        ],
        ids=[
            "github-branch",
            "gitlab-branch",
            "no-branch",
            "other-host",
            "ssh",
            "query-and-fragment-left-out",
            "query-left-out-on-a-forge",
            "credentials-left-out",
            "blank",
            "none",
        ],
    )
    def test_source_location_is_the_workflow_repository_as_given(
        self, repository: dict[str, Any], expected: str | None
    ) -> None:
        """`url:<repo>`, as the document and OpenChoreo's own provider write it (no branch tree);
        an SSH address becomes the https URL Backstage can read, and credentials, query and
        fragment (`?private_token=`) are left out."""
        data = component(spec={"workflow": {"parameters": {"repository": repository}}})
        [entity] = map_component(data)
        annotations = entity.body["metadata"]["annotations"]
        assert annotations.get("backstage.io/source-location") == expected

    def test_component_being_deleted_stays_annotated(self) -> None:
        data = component(metadata={"deletionTimestamp": DELETED})
        [entity, api] = map_component(data, workload(api=http()))
        assert entity.body["metadata"]["annotations"]["openchoreo.io/deletion-timestamp"] == DELETED
        assert validate_entity(entity.body) == []
        assert api.kind == "API"

    def test_without_workload_no_apis_and_no_workload_annotation(self) -> None:
        [entity] = map_component(component())
        assert "providesApis" not in entity.body["spec"]
        assert "openchoreo.io/workload" not in entity.body["metadata"]["annotations"]

    def test_projectless_component_is_refused(self) -> None:
        data = component()
        del data["spec"]["owner"]
        with pytest.raises(PermanentError, match=r"spec\.owner\.projectName"):
            map_component(data)

    def test_namespace_argument_is_the_fallback_for_metadata(self) -> None:
        data = component()
        del data["metadata"]["namespace"]
        [entity] = component_entities(data, None, None, MAPPING, PROVIDER, namespace="ns")
        assert (entity.ref, entity.scope) == ("component:ns/orders", "ns/shop/orders")


class TestApis:
    def test_only_endpoints_with_schema_content_become_apis(self) -> None:
        load = workload(
            zeta=http(),
            alpha={"type": "gRPC", "port": 9090, "schema": {"type": "proto", "content": "x"}},
            blank=http(content=" \n"),
            bare=http(content=None),
            typed_only={"type": "HTTP", "port": 1, "schema": {"type": "openapi"}},
        )
        entities = map_component(component(), load)
        assert [entity.ref for entity in entities] == [
            "component:acme/orders",
            "api:acme/shop-orders-alpha",
            "api:acme/shop-orders-zeta",
        ]
        assert entities[0].body["spec"]["providesApis"] == [e.ref for e in entities[1:]]
        assert {entity.scope for entity in entities} == {"acme/shop/orders"}
        assert api_endpoint_names(load, MAPPING) == ["alpha", "zeta"]

    def test_stub_setting_maps_endpoints_without_schema_too(self) -> None:
        load = workload(api=http(), bare=http(content=None), ws={"type": "Websocket", "port": 9000})
        entities = map_component(component(), load, mapping=STUBS)
        assert [entity.name for entity in entities[1:]] == [
            "shop-orders-api",
            "shop-orders-bare",
            "shop-orders-ws",
        ]
        assert api_endpoint_names(load, STUBS) == ["api", "bare", "ws"]
        given = component_entities(
            component(), load, None, STUBS, PROVIDER, endpoints=api_endpoints(load, STUBS)
        )
        assert given == entities  # a caller that found the endpoints already passes them
        _, with_schema, bare, ws = entities
        assert with_schema.body["spec"]["definition"] == OPENAPI
        document = yaml.safe_load(bare.body["spec"]["definition"])
        assert document["servers"] == [{"url": "http://orders:8080"}]
        assert (bare.body["spec"]["type"], ws.body["spec"]["type"]) == ("openapi", "asyncapi")
        assert yaml.safe_load(ws.body["spec"]["definition"])["asyncapi"]

    def test_an_endpoint_whose_name_holds_a_nul_gets_no_api_and_is_not_indexed(self) -> None:
        """PostgreSQL (the state store's, and Backstage's) cannot store a NUL in text."""
        bad = {"type": "HTTP", "port": 80, "schema": {"content": "x"}}
        data = workload(ep=bad)
        data["spec"]["endpoints"]["api\x00v2"] = bad

        entities = map_component(component(), data)

        assert [entity.ref for entity in entities] == [
            "component:acme/orders",
            "api:acme/shop-orders-ep",
        ]
        assert "api\x00v2" not in trim_workload(data)["spec"]["endpoints"]
        assert api_endpoint_names(data, MAPPING) == ["ep"]

    def test_nul_characters_are_dropped_from_titles(self) -> None:
        meta = {"annotations": {"openchoreo.dev/display-name": "Or\x00ders"}}
        [entity] = map_component(component(metadata=meta))
        assert entity.body["metadata"]["title"] == "Orders"

    def test_nul_characters_are_dropped_from_the_schema_content(self) -> None:
        _, api = map_component(component(), workload(api=http(content="open\x00" + OPENAPI[4:])))
        assert api.body["spec"]["definition"] == OPENAPI

    def test_schema_content_of_nul_characters_and_blanks_is_no_content(self) -> None:
        load = workload(api=http(content="\x00 \n\x00"))
        assert [entity.kind for entity in map_component(component(), load)] == ["Component"]
        _, stub = map_component(component(), load, mapping=STUBS)
        document = yaml.safe_load(stub.body["spec"]["definition"])
        assert document["info"]["description"].endswith("no schema was published.")

    @pytest.mark.parametrize(
        ("schema_type", "spec_type"),
        [
            ("openapi", "openapi"),
            ("OpenAPI", "openapi"),
            ("graphql", "graphql"),
            ("GraphQL", "graphql"),
            ("grpc", "grpc"),
            ("proto", "proto"),
            ("asyncapi", "asyncapi"),
            ("AsyncAPI", "asyncapi"),
            ("WSDL", "wsdl"),
            ("", "openapi"),
            (None, "openapi"),
        ],
        ids=lambda value: repr(value),
    )
    def test_spec_type_from_schema_type(self, schema_type: str | None, spec_type: str) -> None:
        endpoint: dict[str, Any] = {"type": "HTTP", "port": 80, "schema": {"content": "x"}}
        if schema_type is not None:
            endpoint["schema"]["type"] = schema_type
        _, api = map_component(component(), workload(ep=endpoint))
        assert api.body["spec"]["type"] == spec_type

    @pytest.mark.parametrize(
        ("endpoint_type", "spec_type"),
        [
            ("HTTP", "openapi"),
            ("gRPC", "grpc"),
            ("GraphQL", "graphql"),
            ("Websocket", "asyncapi"),
            ("TCP", "tcp"),
            ("UDP", "udp"),
            ("", "unknown"),
        ],
        ids=lambda value: repr(value),
    )
    def test_stub_spec_type_from_endpoint_type(self, endpoint_type: str, spec_type: str) -> None:
        _, api = map_component(
            component(), workload(ep={"type": endpoint_type, "port": 7070}), mapping=STUBS
        )
        assert api.body["spec"]["type"] == spec_type
        assert api.body["spec"]["definition"].strip()
        assert validate_entity(api.body) == []

    def test_api_entity(self) -> None:
        load = workload(api=http(visibility=["project", " external "], displayName="Orders API"))
        _, api = map_component(component(), load, "team-p")
        assert (api.ref, api.scope) == ("api:acme/shop-orders-api", "acme/shop/orders")
        assert api.body["spec"] == {
            "type": "openapi",
            "lifecycle": "production",
            "owner": "team-p",
            "system": "shop",
            "definition": OPENAPI,
        }
        metadata = api.body["metadata"]
        assert metadata["title"] == "Orders API"
        assert metadata["tags"] == ["http"]
        assert metadata["annotations"] == {
            "openchoreo.io/component": "orders",
            "openchoreo.io/endpoint-name": "api",
            "openchoreo.io/endpoint-type": "HTTP",
            "openchoreo.io/endpoint-port": "8080",
            "openchoreo.io/endpoint-visibility": "project,external",
            "openchoreo.io/project": "shop",
            "openchoreo.io/namespace": "acme",
            "openchoreo.io/workload": "orders-workload",
            **LOCATIONS,
        }

    def test_api_lifecycle_is_the_configured_one(self) -> None:
        mapping = replace(MAPPING, lifecycle="experimental")
        _, api = map_component(
            component(status=ready("False")), workload(api=http()), None, mapping
        )
        assert api.body["spec"]["lifecycle"] == "experimental"

    def test_title_without_display_name_names_component_and_endpoint(self) -> None:
        _, api = map_component(component(), workload(api=http(displayName="  ")))
        assert api.body["metadata"]["title"] == "orders api API"

    @pytest.mark.parametrize(
        ("visibility", "annotation"),
        [
            (None, None),
            ([], None),
            (["internal"], "internal"),
            ([" ", 3, "a"], "a"),
            (["pro\x00ject", "\x00", " external\x00"], "project,external"),
            ("x", None),
        ],
        ids=["missing", "empty", "one", "junk-dropped", "nul-dropped", "not-a-list"],
    )
    def test_visibility_annotation_is_comma_joined_or_absent(
        self, visibility: Any, annotation: str | None
    ) -> None:
        _, api = map_component(component(), workload(api=http(visibility=visibility)))
        annotations = api.body["metadata"]["annotations"]
        assert annotations.get("openchoreo.io/endpoint-visibility") == annotation

    @pytest.mark.parametrize(
        ("port", "annotation"),
        [(8080, "8080"), ("8080", "8080"), (None, None), (True, None), ("http", None)],
        ids=["int", "digits", "missing", "bool", "word"],
    )
    def test_port_annotation_is_a_string_or_absent(self, port: Any, annotation: str | None) -> None:
        _, api = map_component(component(), workload(api=http(port=port)))
        assert api.body["metadata"]["annotations"].get("openchoreo.io/endpoint-port") == annotation

    @pytest.mark.parametrize(
        ("project", "name", "endpoint", "expected"),
        [
            ("shop", "orders", "api", "shop-orders-api"),
            ("p" * 30, "c" * 30, "endpoint", rf"p{{30}}-c{{23}}-{HASH}"),
            ("shop", "orders", "REST_api", "shop-orders-REST_api"),
            ("shop", "orders", "my api", rf"shop-orders-my-api-{HASH}"),
        ],
        ids=["plain", "too-long", "upper-case-kept", "space"],
    )
    def test_api_name_is_project_component_endpoint_made_valid(
        self, project: str, name: str, endpoint: str, expected: str
    ) -> None:
        data = component(name, project=project)
        component_entity, api = map_component(data, workload(**{endpoint: http()}))
        assert re.fullmatch(expected, api.name), api.name
        assert is_valid_entity_name(api.name)
        assert len(api.name) <= 63
        assert component_entity.body["spec"]["providesApis"] == [api.ref]

    def test_api_name_callback_names_the_apis_and_the_provided_refs(self) -> None:
        calls: list[tuple[str, str, str]] = []

        def api_name(project: str, name: str, endpoint: str) -> str:
            calls.append((project, name, endpoint))
            return f"renamed-{endpoint}"

        entities = component_entities(
            component(), workload(b=http(), a=http()), None, MAPPING, PROVIDER, api_name=api_name
        )
        assert calls == [("shop", "orders", "a"), ("shop", "orders", "b")]
        assert entities[0].body["spec"]["providesApis"] == [
            "api:acme/renamed-a",
            "api:acme/renamed-b",
        ]

    @pytest.mark.parametrize(
        "endpoints",
        [None, {}, []],
        ids=["null", "empty", "list"],
    )
    def test_workload_without_endpoints_gives_no_apis(self, endpoints: Any) -> None:
        load = workload()
        load["spec"]["endpoints"] = endpoints
        [entity] = map_component(component(), load, mapping=STUBS)
        assert "providesApis" not in entity.body["spec"]
        assert entity.body["metadata"]["annotations"]["openchoreo.io/workload"] == (
            "orders-workload"
        )


FULL_WORKLOAD = workload(
    api=http(visibility=["external"], displayName="Orders", basePath="/api", targetPort=8081),
    grpc={
        "type": "gRPC",
        "port": 9090,
        "schema": {"type": "proto", "content": "syntax = 'proto3';", "extra": 1},
    },
    bare={"type": "TCP", "port": 5432, "visibility": ["project"]},
)


class TestTrimWorkload:
    def test_keeps_only_what_the_mapping_reads(self) -> None:
        trimmed = trim_workload(FULL_WORKLOAD)
        assert trimmed == {
            "metadata": {"name": "orders-workload"},
            "spec": {
                "owner": {"projectName": "shop", "componentName": "orders"},
                "endpoints": {
                    "api": {
                        "type": "HTTP",
                        "port": 8080,
                        "visibility": ["external"],
                        "displayName": "Orders",
                        "schema": {"type": "openapi", "content": OPENAPI},
                    },
                    "grpc": {
                        "type": "gRPC",
                        "port": 9090,
                        "schema": {"type": "proto", "content": "syntax = 'proto3';"},
                    },
                    "bare": {"type": "TCP", "port": 5432, "visibility": ["project"]},
                },
            },
        }
        assert json.loads(json.dumps(trimmed)) == trimmed

    @pytest.mark.parametrize("mapping", [MAPPING, STUBS], ids=["skip", "stub"])
    def test_trimmed_workload_maps_to_the_same_entities(self, mapping: MappingConfig) -> None:
        full = map_component(component(), FULL_WORKLOAD, "team-p", mapping)
        trimmed = map_component(component(), trim_workload(FULL_WORKLOAD), "team-p", mapping)
        assert [entity.body for entity in trimmed] == [entity.body for entity in full]
        assert len(full) == (3 if mapping is MAPPING else 4)

    @pytest.mark.parametrize(
        "load",
        [{}, {"metadata": {}, "spec": {}}, {"metadata": {"name": "w"}, "spec": {"endpoints": 3}}],
        ids=["empty", "bare", "junk-endpoints"],
    )
    def test_sparse_workloads_trim_to_the_same_mapping(self, load: dict[str, Any]) -> None:
        trimmed = trim_workload(load)
        assert [e.body for e in map_component(component(), trimmed, mapping=STUBS)] == [
            e.body for e in map_component(component(), load, mapping=STUBS)
        ]


DEPENDENCIES = {
    "endpoints": [
        {"component": "billing", "name": "rest", "visibility": "project", "envBindings": {}},
        {"project": "pay", "component": "ledger", "name": "grpc"},
        {"project": "", "component": "stock", "name": "api"},
        {"component": "", "name": "x"},
        {"component": "nameless"},
        {"component": 7, "name": "x"},
        {"component": "nul", "name": "a\x00b"},
        "junk",
    ]
}


class TestDependencies:
    def test_named_endpoints_only_with_their_project_when_given(self) -> None:
        load = workload(api=http())
        load["spec"]["dependencies"] = DEPENDENCIES
        assert dependencies(load) == [
            (None, "billing", "rest"),
            ("pay", "ledger", "grpc"),
            (None, "stock", "api"),
        ]

    @pytest.mark.parametrize(
        "value", [None, {}, {"endpoints": None}, {"endpoints": {"a": 1}}, "x"], ids=repr
    )
    def test_none_declared_is_none(self, value: Any) -> None:
        load = workload(api=http())
        load["spec"]["dependencies"] = value
        assert dependencies(load) == []
        assert dependencies(None) == []

    def test_trimming_keeps_them(self) -> None:
        load = workload(api=http())
        load["spec"]["dependencies"] = DEPENDENCIES
        trimmed = trim_workload(load)
        assert trimmed["spec"]["dependencies"] == {
            "endpoints": [
                {"component": "billing", "name": "rest"},
                {"project": "pay", "component": "ledger", "name": "grpc"},
                {"component": "stock", "name": "api"},
            ]
        }
        assert dependencies(trimmed) == dependencies(load)
        assert "dependencies" not in trim_workload(workload(api=http()))["spec"]

    def test_consumed_apis_are_sorted_once_each_and_absent_when_none(self) -> None:
        refs = ["api:acme/shop-stock-api", "api:acme/pay-ledger-grpc", "api:acme/shop-stock-api"]
        [entity, _] = component_entities(
            component(), workload(api=http()), None, MAPPING, PROVIDER, consumes=refs
        )
        assert entity.body["spec"]["consumesApis"] == [
            "api:acme/pay-ledger-grpc",
            "api:acme/shop-stock-api",
        ]
        assert validate_entity(entity.body) == []
        [alone, _] = map_component(component(), workload(api=http()))
        assert "consumesApis" not in alone.body["spec"]


def awkward_entities() -> list[Entity]:
    """A namespace, projects and components with awkward names, owners and endpoints."""
    long = "a" * 40 + "-" + "b" * 22
    entities = [
        namespace_entity({"metadata": {"name": "acme"}}, MAPPING, PROVIDER),
        namespace_entity({"metadata": {"name": long}, "status": {}}, MAPPING, PROVIDER),
        project_entity(resource("shop", metadata={"annotations": {"x": "y"}}), MAPPING, PROVIDER),
        project_entity(resource(long, long), MAPPING, PROVIDER),
    ]
    endpoints = {
        "REST_api.v1": http(),
        "my endpoint": {"type": "UDP", "schema": {"type": "Weird Type!", "content": "x"}},
        "e" * 70: {"type": "GraphQL", "port": "3", "schema": {"type": "graphql", "content": "q"}},
        "日本語": {"type": "Websocket"},
        "Api": http(),
        "api": http(),
        "": {"type": "TCP"},
    }
    placement = [
        ("c-1", "shop", "acme", MAPPING),
        ("c-2", "shop", "acme", STUBS),
        (long, long, long, MAPPING),
        (long[:-1] + "c", long, long, STUBS),
    ]
    for name, project, namespace, mapping in placement:
        data = component(name, project=project, owner="a b", status=ready("False"))
        data["metadata"]["namespace"] = namespace
        with structlog.testing.capture_logs():  # the owner annotation is ignored, loudly
            entities += map_component(data, workload(**copy.deepcopy(endpoints)), None, mapping)
    return entities


class TestEveryEntity:
    @pytest.mark.parametrize("entity", awkward_entities(), ids=lambda entity: entity.ref)
    def test_passes_validate_entity(self, entity: Entity) -> None:
        assert validate_entity(entity.body) == []

    def test_values_are_strings_and_never_none(self) -> None:
        for entity in awkward_entities():
            assert None not in list(values(entity.body)), entity.ref
            metadata = entity.body["metadata"]
            assert all(isinstance(v, str) for v in metadata["annotations"].values())
            assert metadata["labels"] == {"openchoreo.io/managed": "true"}
            assert entity.body["apiVersion"] == "backstage.io/v1alpha1"

    def test_refs_are_unique_case_insensitively_but_for_api_names_the_claims_keep_apart(
        self,
    ) -> None:
        """Endpoints `Api` and `api` map to names that differ only in case: the walk's claims
        on API names give one of them a hashed name (`test_api_names_case`)."""
        refs = [entity.ref for entity in awkward_entities()]
        assert len(refs) == len(set(refs))
        folded = Counter(ref.lower() for ref in refs)
        assert {ref for ref, count in folded.items() if count > 1} == {
            ref.lower() for ref in refs if ref.endswith("-Api")
        }

    def test_mapping_is_deterministic_whatever_the_input_order(self) -> None:
        data = component(status=ready("True"))
        load = copy.deepcopy(FULL_WORKLOAD)
        shuffled = copy.deepcopy(load)
        shuffled["spec"]["endpoints"] = dict(reversed(list(load["spec"]["endpoints"].items())))
        first = map_component(data, load, mapping=STUBS)
        second = map_component(dict(reversed(list(data.items()))), shuffled, mapping=STUBS)
        assert [entity.body for entity in first] == [entity.body for entity in second]
