"""Entities from the OpenChoreo mapping pass Backstage's own validators, refs included.

Runs validate.mjs (@backstage/catalog-model) under node; skipped when node or the pinned npm
packages are missing (`npm ci --prefix tests/backstage`), failed instead under `CI=true`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from choreo_ingest.config import MappingConfig
from choreo_ingest.models import Entity
from choreo_ingest.providers.openchoreo.entities import (
    component_entities,
    organization_entity,
    project_entity,
    validate_entity,
)

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
]
REPOSITORIES = [
    {"url": "https://github.com/acme/orders.git", "revision": {"branch": "feature/x y"}},
    {"url": "https://gitlab.com/acme/orders", "revision": {"branch": "main"}},
    {"url": "https://git.example.com/acme/orders"},
    {"url": "git@github.com:acme/orders.git"},
    {"url": "   "},
]


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
