"""Entities from the OpenChoreo mapping pass Backstage's own validators, refs included.

Runs validate.mjs (@backstage/catalog-model) under node; skipped when node or the pinned npm
packages are missing (`npm ci --prefix tests/backstage`), failed instead under `CI=true`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest
import structlog

from choreo_ingest.config import MappingConfig
from choreo_ingest.models import Entity
from choreo_ingest.providers.openchoreo.entities import (
    component_entities,
    organization_entity,
    project_entity,
    validate_entity,
)
from choreo_ingest.providers.openchoreo.entities_v1 import (
    component_entities as v1_component_entities,
)
from choreo_ingest.providers.openchoreo.entities_v1 import (
    namespace_entity,
    project_owner,
)
from choreo_ingest.providers.openchoreo.entities_v1 import (
    project_entity as v1_project_entity,
)
from choreo_ingest.providers.openchoreo.naming import hashed_entity_name, v1_api_entity_name

from backstage_validator import (
    entity_lines,
    run_backstage_validator,
    skip_unless_backstage_validator,
)

pytestmark = pytest.mark.slow

Change = Callable[[dict[str, Any]], None]

PROVIDER = "openchoreo"
LONG = "a" * 40 + "-" + "b" * 22  # 63 chars: the longest Kubernetes name
COMPONENT_TYPES = [
    "deployment/web-app",
    "statefulset/db",
    "cronjob/nightly-report",
    "job/migrate",
    "proxy/gateway",
    "Service",
    "WebApplication",
    "ScheduledTask",
    "ManualTask",
    "Webhook",
    "APIProxy",
    "TestRunner",
    "EventHandler",
    "SomethingNewer",
    "",
]
ENDPOINT_TYPES = ["HTTP", "REST", "gRPC", "GraphQL", "Websocket", "TCP", "UDP", "MQTT", ""]
AWKWARD_ENDPOINT_NAMES = [
    "REST_api.v1",
    "my endpoint",
    "e" * 70,
    "日本語",
    "Api",
    "api",
    "-leading",
    "trailing.",
    "a..b",
    "",
    " ",
    "slash/inside",
    "Çafé",
    "nul\x00inside",
]
REPOSITORIES = [
    {"url": "https://github.com/acme/orders.git", "revision": {"branch": "feature/x y"}},
    {"url": "https://gitlab.com/acme/orders", "revision": {"branch": "main"}},
    {"url": "https://git.example.com/acme/orders"},
    {"url": "git@github.com:acme/orders.git"},
    {"url": "   "},
    {"url": "https://gitlab.example.com/g/r.git?private_token=glpat-SECRET#top"},
]
NUL_SCHEMA = {"type": "openapi", "content": "openapi: 3.0.0\x00\npaths: {}\n"}
"""PostgreSQL, Backstage's usual database, cannot store a NUL: the mapping drops them."""


def _endpoints(names: list[str], types: list[str]) -> dict[str, Any]:
    endpoints: dict[str, Any] = {}
    for index, name in enumerate(names):
        endpoint: dict[str, Any] = {"type": types[index % len(types)], "port": 8000 + index}
        if index % 3 == 1:
            endpoint["schema"] = {"type": "REST", "content": "openapi: 3.0.0\npaths: {}\n"}
        if index % 3 == 2:
            endpoint["schema"] = {"content": "  \n"}
        endpoints[name] = endpoint
    return endpoints


def _component(name: str, component_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "uid": f"uid-{name[:20]}",
        "name": name,
        "type": component_type,
        "autoDeploy": True,
        "createdAt": "2025-01-02T03:04:05Z",
        **extra,
    }


def awkward_world() -> list[Entity]:
    """Two orgs, three projects and components of every type with every kind of endpoint."""
    mapping = MappingConfig()
    orgs = [
        {"name": "acme", "displayName": "Ácme Çorp 日本", "description": "", "status": "Ready"},
        {"name": LONG, "displayName": "   ", "createdAt": "2025-01-01T00:00:00Z"},
    ]
    entities = [organization_entity(org, mapping, PROVIDER) for org in orgs]
    projects = [
        ("acme", {"uid": "p1", "name": "shop", "displayName": "", "status": "NotReady"}),
        ("acme", {"uid": "p2", "name": LONG, "description": "Långt namn"}),
        (LONG, {"uid": "p3", "name": "default", "displayName": "Default"}),
    ]
    entities += [project_entity(project, org, mapping, PROVIDER) for org, project in projects]
    typed = [
        _component(
            f"c-{index}",
            component_type,
            displayName=["", "  ", "Zählwerk ✓", None][index % 4],
            workload={"endpoints": _endpoints(AWKWARD_ENDPOINT_NAMES[:4], ENDPOINT_TYPES)},
            componentWorkflow={
                "systemParameters": {"repository": REPOSITORIES[index % len(REPOSITORIES)]}
            },
        )
        for index, component_type in enumerate(COMPONENT_TYPES)
    ]
    special = [
        _component(
            LONG,
            "deployment/web-app",
            workload={"endpoints": _endpoints(AWKWARD_ENDPOINT_NAMES, ENDPOINT_TYPES)},
        ),
        _component(
            "all-endpoint-types",
            "Service",
            workload={"endpoints": _endpoints(ENDPOINT_TYPES, ENDPOINT_TYPES)},
        ),
        _component("no-workload", "Service"),
        _component("empty-endpoints", "Service", workload={"endpoints": {}}),
        _component("null-endpoints", "Service", workload={"endpoints": None}),
        _component(
            "odd-ports",
            "Service",
            workload={"endpoints": {"a": {"type": "REST", "port": "8080"}, "b": {"type": "TCP"}}},
        ),
        _component(
            "nul-inputs",
            "Service",
            displayName="Nul\x00 inputs",
            workload={"endpoints": {"api": {"type": "REST", "schema": NUL_SCHEMA}, "n\x00": {}}},
        ),
    ]
    # Component names are unique within an org (they share its Kubernetes namespace).
    placement = [
        ("acme", "shop", typed),
        ("acme", LONG, special),
        (LONG, "default", typed + special),
    ]
    for org, project, components in placement:
        for component in components:
            entities += component_entities(component, org, project, mapping, PROVIDER)
    return entities


def test_awkward_world_is_large_enough_to_mean_something() -> None:
    entities = awkward_world()
    kinds = {entity.kind for entity in entities}
    assert kinds == {"Domain", "System", "Component", "API"}
    assert len(entities) > 150


def test_every_mapped_entity_passes_backstage_validation() -> None:
    skip_unless_backstage_validator()
    entities = awkward_world()
    problems = run_backstage_validator(entity_lines(entity.body for entity in entities))
    assert problems == []


def test_python_validator_accepts_what_backstage_accepts() -> None:
    problems = {entity.ref: validate_entity(entity.body) for entity in awkward_world()}
    assert {ref: found for ref, found in problems.items() if found} == {}


def test_no_mapped_string_holds_a_nul_or_a_repository_token() -> None:
    """The worlds' inputs hold NUL characters (which PostgreSQL, Backstage's usual database,
    cannot store) and a token in a repository URL's query; their entities hold neither."""
    entities = [*awkward_world(), *v1_world()]
    refs = {entity.ref for entity in entities}
    assert {"api:acme/nul-inputs-api", "api:acme/shop-nul-inputs-api"} <= refs
    found = [text for entity in entities for text in _strings(entity.body)]
    assert [text for text in found if "\x00" in text or "SECRET" in text] == []


def _strings(node: object) -> list[str]:
    """Every key and string value in `node`."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [*node, *(text for value in node.values() for text in _strings(value))]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []


# --- the validator is not a no-op: each broken entity is reported, for its own fault ----------

_DOMAIN = organization_entity({"name": "acme"}, MappingConfig(), PROVIDER).body
_SYSTEM = project_entity({"name": "shop"}, "acme", MappingConfig(), PROVIDER).body
_COMPONENT, _API = (
    entity.body
    for entity in component_entities(
        _component(
            "orders", "Service", workload={"endpoints": {"http": {"type": "REST", "port": 80}}}
        ),
        "acme",
        "shop",
        MappingConfig(),
        PROVIDER,
    )
)


def _broken(base: Mapping[str, Any], index: int, change: Change) -> dict[str, Any]:
    body = copy.deepcopy(dict(base))
    body["metadata"]["name"] = f"broken-{index}"
    change(body)
    return body


def _set(*path: str, value: Any) -> Change:
    def change(body: dict[str, Any]) -> None:
        _parent(body, path)[path[-1]] = value

    return change


def _drop(*path: str) -> Change:
    def change(body: dict[str, Any]) -> None:
        del _parent(body, path)[path[-1]]

    return change


def _parent(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path[:-1]:
        body = body[key]
    return body


BROKEN: list[tuple[str, Mapping[str, Any], Change, str]] = [
    ("name-with-space", _API, _set("metadata", "name", value="has space"), "policy"),
    ("name-too-long", _API, _set("metadata", "name", value="n" * 64), "policy"),
    ("name-ends-with-dash", _COMPONENT, _set("metadata", "name", value="orders-"), "policy"),
    ("namespace-upper-case", _COMPONENT, _set("metadata", "namespace", value="Acme"), "policy"),
    ("empty-title", _SYSTEM, _set("metadata", "title", value=""), "policy"),
    (
        "annotation-not-a-string",
        _API,
        _set("metadata", "annotations", "openchoreo.io/endpoint-port", value=80),
        "policy",
    ),
    (
        "annotation-key-two-slashes",
        _API,
        _set("metadata", "annotations", "a/b/c", value="x"),
        "policy",
    ),
    (
        "label-value-with-space",
        _API,
        _set("metadata", "labels", "openchoreo.io/managed", value="yes please"),
        "policy",
    ),
    ("tag-upper-case", _COMPONENT, _set("metadata", "tags", value=["Web"]), "policy"),
    (
        "tag-with-slash",
        _COMPONENT,
        _set("metadata", "tags", value=["deployment/web-app"]),
        "policy",
    ),
    ("foreign-root-field", _DOMAIN, _set("extra", value={}), "policy"),
    ("api-without-definition", _API, _drop("spec", "definition"), "kind"),
    ("api-with-empty-definition", _API, _set("spec", "definition", value=""), "kind"),
    ("component-without-lifecycle", _COMPONENT, _drop("spec", "lifecycle"), "kind"),
    ("component-without-type", _COMPONENT, _drop("spec", "type"), "kind"),
    ("system-without-owner", _SYSTEM, _drop("spec", "owner"), "kind"),
    ("domain-without-owner", _DOMAIN, _drop("spec", "owner"), "kind"),
    ("empty-provided-api-ref", _COMPONENT, _set("spec", "providesApis", value=[""]), "kind"),
    ("not-a-backstage-api-version", _DOMAIN, _set("apiVersion", value="v1"), "kind"),
    ("malformed-domain-ref", _SYSTEM, _set("spec", "domain", value="default/"), "ref"),
    ("owner-is-a-system", _API, _set("spec", "owner", value="system:acme/shop"), "ref"),
]
CASES = [case for case, *_ in BROKEN]
BASE_SET = [_DOMAIN, _SYSTEM, _COMPONENT, _API]


@pytest.fixture(scope="module")
def problems_by_case() -> dict[str, list[dict[str, Any]]]:
    """One validator run over the good base set followed by every broken entity."""
    skip_unless_backstage_validator()
    bodies = [*BASE_SET]
    bodies += [_broken(base, index, change) for index, (_, base, change, _) in enumerate(BROKEN)]
    by_case: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    for problem in run_backstage_validator(entity_lines(bodies)):
        index = problem["line"] - 1 - len(BASE_SET)
        assert index >= 0, f"a good base entity was reported: {problem}"
        by_case[CASES[index]].append(problem)
    return by_case


@pytest.mark.parametrize(
    ("case", "check"), [(case, check) for case, *_, check in BROKEN], ids=CASES
)
def test_backstage_rejects_broken_entity_for_its_fault(
    problems_by_case: dict[str, list[dict[str, Any]]], case: str, check: str
) -> None:
    assert [problem["check"] for problem in problems_by_case[case]] == [check]


@pytest.mark.parametrize(
    ("base", "change"), [(base, change) for _, base, change, _ in BROKEN], ids=CASES
)
def test_python_validator_rejects_what_backstage_rejects(
    base: Mapping[str, Any], change: Change
) -> None:
    assert validate_entity(_broken(base, 0, change)) != []


def test_backstage_reports_unresolved_and_duplicate_refs() -> None:
    skip_unless_backstage_validator()
    problems = run_backstage_validator(entity_lines([_SYSTEM, _COMPONENT, _API, _API]))
    found = sorted((problem["line"], problem["check"]) for problem in problems)
    # the System's domain is missing, and the API appears twice
    assert found == [(1, "ref"), (4, "duplicate")]


# --- the v1 mapping (OpenChoreo's own provider's shapes) ----------------------------------------

V1_COMPONENT_TYPES = [
    {"kind": "ComponentType", "name": "deployment/service"},
    {"kind": "ClusterComponentType", "name": "deployment/web-application"},
    {"kind": "ComponentType", "name": "statefulset/db"},
    {"kind": "ComponentType", "name": "cronjob/report"},
    {"kind": "ComponentType", "name": "job/migrate"},
    {"kind": "ComponentType", "name": "proxy/gateway"},
    {"kind": "ComponentType", "name": "Odd Type/Ünïcode ✓"},
    {"kind": "ComponentType"},
    None,
]
V1_READY = [None, "True", "False", "Unknown"]
V1_OWNERS = [None, "team-x", "Team-X", "group:acme/platform", "user:default/jane", "a b", "x/y/z"]
V1_SCHEMA_TYPES = ["openapi", "OpenAPI", "graphql", "proto", "grpc", "asyncapi", "WSDL 1.1", None]


def _v1_resource(name: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "creationTimestamp": "2025-01-02T03:04:05Z"}
    metadata.update(extra.pop("metadata", {}))
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"metadata": metadata, **extra}


def _v1_status(ready: str | None) -> dict[str, Any]:
    if ready is None:
        return {}
    return {"conditions": [{"type": "Ready", "status": ready, "reason": "Reconciled"}]}


def _v1_endpoints(names: list[str]) -> dict[str, Any]:
    endpoints: dict[str, Any] = {}
    types = ["HTTP", "gRPC", "GraphQL", "Websocket", "TCP", "UDP", ""]
    for index, name in enumerate(names):
        endpoint: dict[str, Any] = {
            "type": types[index % len(types)],
            "port": 8000 + index,
            "visibility": [["project"], ["namespace", "external"], []][index % 3],
        }
        if index % 3 != 2:
            schema_type = V1_SCHEMA_TYPES[index % len(V1_SCHEMA_TYPES)]
            endpoint["schema"] = {"content": "openapi: 3.0.0\npaths: {}\n"}
            if schema_type is not None:
                endpoint["schema"]["type"] = schema_type
        if index % 4 == 1:
            endpoint["displayName"] = ["Orders API", "  ", "Zählwerk ✓"][index % 3]
        endpoints[name] = endpoint
    return endpoints


def _apart_up_to_case() -> Callable[[str, str, str], str]:
    """v1 API names as the walk's claims keep them apart (`api_names`): a name that differs
    only in case from one given before gets a hashed name."""
    given: set[str] = set()

    def api_name(project: str, component: str, endpoint: str) -> str:
        name = v1_api_entity_name(project, component, endpoint)
        if name.lower() in given:
            name = hashed_entity_name(name, f"{project}/{component}/{endpoint}")
        given.add(name.lower())
        return name

    return api_name


def v1_world() -> list[Entity]:
    """Two namespaces, three projects, components of every type, readiness and owner
    annotation, with every kind of endpoint, mapped once without and once with stub APIs."""
    mapping = MappingConfig()
    stubs = replace(mapping, apis_without_schema="stub")
    namespaces = [
        _v1_resource(
            "acme",
            None,
            metadata={"annotations": {"openchoreo.dev/display-name": "Ácme 日本"}},
            status={"phase": "Active"},
        ),
        _v1_resource(LONG, None, metadata={"deletionTimestamp": "2025-03-01T00:00:00Z"}),
    ]
    entities = [namespace_entity(namespace, mapping, PROVIDER) for namespace in namespaces]
    projects = [
        _v1_resource("shop", "acme", metadata={"annotations": {"backstage.io/owner": "team-p"}}),
        _v1_resource(LONG, "acme", metadata={"annotations": {"backstage.io/owner": "a b"}}),
        _v1_resource("default", LONG, status=_v1_status("True")),
    ]
    owners = {}
    for resource in projects:
        entities.append(v1_project_entity(resource, mapping, PROVIDER))
        metadata = resource["metadata"]
        owners[(metadata["namespace"], metadata["name"])] = project_owner(resource)
    placement = [("acme", "shop"), ("acme", LONG), (LONG, "default")]
    api_name = _apart_up_to_case()
    index = 0
    for namespace, project in placement:
        for stub in (False, True):
            for component_type in V1_COMPONENT_TYPES:
                index += 1
                name = f"c-{index}" if index % 5 else f"{LONG[:-3]}-{index:02d}"
                owner = V1_OWNERS[index % len(V1_OWNERS)]
                spec: dict[str, Any] = {
                    "owner": {"projectName": project},
                    "componentType": component_type,
                    "workflow": {
                        "parameters": {"repository": REPOSITORIES[index % len(REPOSITORIES)]}
                    },
                }
                metadata = {
                    "uid": f"uid-{index}",
                    "annotations": {
                        "openchoreo.dev/display-name": ["", "Orders ✓", "  "][index % 3]
                    },
                }
                if owner is not None:
                    metadata["annotations"]["backstage.io/owner"] = owner
                if index % 6 == 0:
                    metadata["deletionTimestamp"] = "2025-03-01T00:00:00Z"
                component = _v1_resource(
                    name,
                    namespace,
                    metadata=metadata,
                    spec=spec,
                    status=_v1_status(V1_READY[index % len(V1_READY)]),
                )
                endpoint_names = AWKWARD_ENDPOINT_NAMES if index % 4 == 0 else ["api", "grpc"]
                workload = (
                    None
                    if index % 7 == 0
                    else _v1_resource(
                        f"{name}-workload",
                        namespace,
                        spec={
                            "owner": {"projectName": project, "componentName": name},
                            "endpoints": _v1_endpoints(endpoint_names),
                        },
                    )
                )
                # Every third component consumes the APIs mapped before it in its namespace.
                earlier = [e.ref for e in entities if e.kind == "API" and e.namespace == namespace]
                with structlog.testing.capture_logs():  # unusable owner annotations warn
                    entities += v1_component_entities(
                        component,
                        workload,
                        owners[(namespace, project)],
                        stubs if stub else mapping,
                        PROVIDER,
                        api_name=api_name,
                        consumes=earlier[-3:] if index % 3 == 0 else (),
                    )
    nul_component = _v1_resource(
        "nul-inputs",
        "acme",
        metadata={"annotations": {"openchoreo.dev/display-name": "Nul\x00 inputs"}},
        spec={"owner": {"projectName": "shop"}},
    )
    endpoint = {"type": "HTTP", "visibility": ["pro\x00ject"], "schema": NUL_SCHEMA}
    nul_workload = _v1_resource("nul-inputs", "acme", spec={"endpoints": {"api": endpoint}})
    nul_workload["spec"]["endpoints"]["n\x00"] = endpoint
    entities += v1_component_entities(
        nul_component, nul_workload, owners[("acme", "shop")], mapping, PROVIDER
    )
    return entities


def test_v1_world_is_large_enough_to_mean_something() -> None:
    entities = v1_world()
    assert {entity.kind for entity in entities} == {"Domain", "System", "Component", "API"}
    assert sum(entity.kind == "API" for entity in entities) > 100
    assert any("providesApis" in entity.body["spec"] for entity in entities)
    assert any("consumesApis" in entity.body["spec"] for entity in entities)
    assert any("/" in entity.body["spec"].get("type", "") for entity in entities)


def test_every_v1_entity_passes_backstage_validation() -> None:
    """Component types with a slash, `not ready` lifecycles, bare owners: Backstage takes them,
    and every domain, system, providesApis and consumesApis ref resolves inside the catalog."""
    skip_unless_backstage_validator()
    entities = v1_world()
    problems = run_backstage_validator(entity_lines(entity.body for entity in entities))
    assert problems == []


def test_python_validator_accepts_every_v1_entity() -> None:
    problems = {entity.ref: validate_entity(entity.body) for entity in v1_world()}
    assert {ref: found for ref, found in problems.items() if found} == {}


def test_v1_world_has_api_names_with_capitals() -> None:
    names = [entity.name for entity in v1_world() if entity.kind == "API"]
    assert any(name != name.lower() for name in names)


def _v1_component_with_apis(*endpoints: str) -> list[dict[str, Any]]:
    mapping = MappingConfig()
    domain = namespace_entity({"metadata": {"name": "acme"}}, mapping, PROVIDER)
    system = v1_project_entity(_v1_resource("shop", "acme"), mapping, PROVIDER)
    component_and_apis = v1_component_entities(
        _v1_resource("orders", "acme", spec={"owner": {"projectName": "shop"}}),
        _v1_resource("w", "acme", spec={"endpoints": _v1_endpoints(list(endpoints))}),
        None,
        mapping,
        PROVIDER,
    )
    return [domain.body, system.body, *(entity.body for entity in component_and_apis)]


def test_backstage_takes_a_v1_api_name_with_capitals_and_the_ref_to_it() -> None:
    skip_unless_backstage_validator()
    bodies = _v1_component_with_apis("httpApi")
    assert bodies[2]["spec"]["providesApis"] == ["api:acme/shop-orders-httpApi"]
    assert run_backstage_validator(entity_lines(bodies)) == []


def test_backstage_reports_api_names_that_differ_only_in_case_as_duplicates() -> None:
    """Why the walk never writes two such names (`api_names`): the catalog takes them for one."""
    skip_unless_backstage_validator()
    bodies = _v1_component_with_apis("httpApi", "httpapi")
    problems = run_backstage_validator(entity_lines(bodies))
    assert [(problem["line"], problem["check"]) for problem in problems] == [(5, "duplicate")]


def test_backstage_reports_a_v1_component_whose_api_is_missing() -> None:
    """The conformance run really resolves providesApis: without its API the component fails."""
    skip_unless_backstage_validator()
    mapping = MappingConfig()
    domain = namespace_entity({"metadata": {"name": "acme"}}, mapping, PROVIDER)
    system = v1_project_entity(_v1_resource("shop", "acme"), mapping, PROVIDER)
    component, api = v1_component_entities(
        _v1_resource("orders", "acme", spec={"owner": {"projectName": "shop"}}),
        _v1_resource("orders-workload", "acme", spec={"endpoints": _v1_endpoints(["api"])}),
        None,
        mapping,
        PROVIDER,
    )
    assert component.body["spec"]["providesApis"] == [api.ref]
    bodies = [domain.body, system.body, component.body]
    problems = run_backstage_validator(entity_lines(bodies))
    assert [(problem["line"], problem["check"]) for problem in problems] == [(3, "ref")]
    assert "spec.providesApis" in problems[0]["message"]
    assert run_backstage_validator(entity_lines([*bodies, api.body])) == []
