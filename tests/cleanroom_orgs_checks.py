"""What the catalog must hold after choreo-ingest walked the clean-room organization-era
server, according to DESIGN.md ("Entities") and the README: exactly what the world's visible
resources map to, with valid names, refs that resolve and the OpenChoreo coordinates as
annotations; and what every request to the server must have carried. For
`test_cleanroom_orgs_*.py`."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import yaml
from cleanroom_orgs import TOKEN, Server
from cleanroom_orgs_cli import PROVIDER
from cleanroom_orgs_world import Key, World

from backstage_validator import backstage_validator_missing, run_backstage_validator

OWNER = "group:default/guests"
LIFECYCLE = "production"
COMPONENT_TYPES = {
    "deployment/web-app": "web-app",
    "statefulset/db": "db",
    "cronjob/report": "report",
    "job/migrate": "migrate",
    "proxy/edge-gw": "edge-gw",
    "deployment/service": "service",
    "Service": "service",
    "WebApplication": "website",
    "ScheduledTask": "scheduled-task",
    "ManualTask": "manual-task",
    "Webhook": "webhook",
    "APIProxy": "api-proxy",
    "TestRunner": "test-runner",
    "EventHandler": "event-handler",
}
API_TYPES = {
    "REST": "openapi",
    "HTTP": "openapi",
    "GraphQL": "graphql",
    "gRPC": "grpc",
    "Websocket": "asyncapi",
    "TCP": "tcp",
    "UDP": "udp",
}
NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
DNS_LABEL = re.compile(r"[a-z0-9]+(-+[a-z0-9]+)*")
TAG = re.compile(r"[a-z0-9+#]+(-[a-z0-9+#]+)*")


def ref(body: dict[str, Any]) -> str:
    meta = body["metadata"]
    return (
        f"{body['kind'].lower()}:{meta.get('namespace', 'default').lower()}/{meta['name'].lower()}"
    )


def resolve(value: str, default_kind: str, namespace: str) -> str:
    """A ref as Backstage's parseEntityRef reads it, lower-cased: `[kind:][namespace/]name`."""
    kind, _, rest = value.rpartition(":") if ":" in value.split("/")[0] else ("", "", value)
    ns, _, name = rest.rpartition("/")
    return f"{(kind or default_kind).lower()}:{(ns or namespace).lower()}/{name.lower()}"


def endpoints_of(world: World, key: Key) -> dict[str, dict[str, Any]]:
    return world.components[key].get("_endpoints") or {}


def shown(value: Any) -> str | None:
    """What a title or description should be: absent when the field is missing or empty."""
    return value.strip() or None if isinstance(value, str) else None


def check_catalog(world: World, bodies: list[dict[str, Any]]) -> None:
    """The catalog is exactly what the world's visible resources map to (DESIGN.md, "Entities")."""
    refs = [ref(body) for body in bodies]
    duplicates = [r for r, n in Counter(refs).items() if n > 1]
    assert not duplicates, duplicates[:5]
    by_ref = dict(zip(refs, bodies, strict=True))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for body in bodies:
        by_kind.setdefault(body["kind"], []).append(body)
    assert set(by_kind) <= {"Domain", "System", "Component", "API"}, set(by_kind)

    for body in bodies:
        meta = body["metadata"]
        assert body["apiVersion"] == "backstage.io/v1alpha1"
        assert NAME.fullmatch(meta["name"]), meta["name"]
        assert len(meta["name"]) <= 63, meta["name"]
        assert DNS_LABEL.fullmatch(meta["namespace"])
        assert len(meta["namespace"]) <= 63
        assert meta["labels"] == {"openchoreo.io/managed": "true"}
        annotations = meta["annotations"]
        assert all(isinstance(v, str) for v in annotations.values()), annotations
        assert annotations["backstage.io/managed-by-location"] == f"provider:{PROVIDER}"
        assert annotations["backstage.io/managed-by-origin-location"] == f"provider:{PROVIDER}"
        assert all(TAG.fullmatch(t) and len(t) <= 63 for t in meta.get("tags", [])), meta
        assert "title" not in meta or meta["title"].strip(), meta
        assert body["spec"]["owner"] == OWNER

    # Domains: one per visible organization, in namespace default.
    domains = {
        (b["metadata"]["namespace"], b["metadata"]["name"]): b for b in by_kind.get("Domain", [])
    }
    assert set(domains) == {("default", org) for (org,) in world.visible_orgs()}
    for (_, org), body in domains.items():
        item = world.orgs[(org,)]
        _check_common(body, item, {"organization": org})

    # Systems: one per visible project, in the org's namespace, in the org's Domain.
    systems = {
        (b["metadata"]["namespace"], b["metadata"]["name"]): b for b in by_kind.get("System", [])
    }
    assert set(systems) == set(world.visible_projects())
    for (org, project), body in systems.items():
        item = world.projects[(org, project)]
        _check_common(body, item, {"organization": org, "project": project, "uid": item["uid"]})
        domain = resolve(body["spec"]["domain"], "Domain", org)
        assert domain == f"domain:default/{org}", body["spec"]

    # Components: one per visible component, in the org's namespace, in its project's System.
    components = {
        (b["metadata"]["namespace"], b["metadata"]["name"]): b for b in by_kind.get("Component", [])
    }
    expected = {
        (org, name): (org, project, name) for org, project, name in world.visible_components()
    }
    assert set(components) == set(expected), (
        sorted(set(expected) - set(components))[:5],
        sorted(set(components) - set(expected))[:5],
    )
    provided: dict[str, tuple[str, str, str]] = {}
    for where, body in components.items():
        org, project, name = key = expected[where]
        item = world.components[key]
        annotations = {
            "organization": org,
            "project": project,
            "component": name,
            "component-type": item["type"],
            "uid": item["uid"],
        }
        _check_common(body, item, annotations)
        spec = body["spec"]
        assert spec["type"] == COMPONENT_TYPES[item["type"]], (item["type"], spec)
        assert spec["lifecycle"] == LIFECYCLE
        assert resolve(spec["system"], "System", org) == f"system:{org}/{project}", spec
        source = body["metadata"]["annotations"].get("backstage.io/source-location")
        assert (source is not None) == bool(item.get("_workflow")), (name, source)
        if source is not None:
            assert source.startswith("url:https://"), source
        apis = [resolve(r, "API", org) for r in spec.get("providesApis", [])]
        assert len(apis) == len(set(apis)) == len(endpoints_of(world, key)), (name, apis)
        for api in apis:
            assert api in by_ref, f"{name}: providesApis {api} does not resolve"
            assert api not in provided, f"{api} provided by {provided[api]} and {key}"
            provided[api] = key

    # APIs: one per endpoint of a visible component, provided by that component only.
    api_bodies = {ref(b): b for b in by_kind.get("API", [])}
    assert set(api_bodies) == set(provided), sorted(set(api_bodies) ^ set(provided))[:5]
    seen_endpoints = set()
    for api_ref, body in api_bodies.items():
        org, project, name = key = provided[api_ref]
        annotations = body["metadata"]["annotations"]
        endpoint_name = annotations["openchoreo.io/endpoint-name"]
        details = endpoints_of(world, key)[endpoint_name]
        seen_endpoints.add((key, endpoint_name))
        assert body["metadata"]["namespace"] == org
        for field, value in {
            "organization": org,
            "project": project,
            "component": name,
            "endpoint-type": details["type"],
            "endpoint-port": str(details["port"]),
        }.items():
            assert annotations[f"openchoreo.io/{field}"] == value, (api_ref, field, annotations)
        spec = body["spec"]
        assert spec["type"] == API_TYPES[details["type"]], (details, spec)
        assert spec["lifecycle"] == LIFECYCLE
        assert resolve(spec["system"], "System", org) == f"system:{org}/{project}"
        definition = spec["definition"]
        assert isinstance(definition, str), api_ref
        assert definition.strip(), api_ref
        content = (details.get("schema") or {}).get("content")
        if isinstance(content, str) and content.strip():
            assert definition == content, api_ref
        elif isinstance(content, dict) and content:
            assert yaml.safe_load(definition) == content, (api_ref, definition)
        plain = f"{name}-{endpoint_name}"
        if NAME.fullmatch(plain) and plain == plain.lower() and len(plain) <= 63:
            # a valid name is kept, unless another endpoint's name meets it
            rivals = [
                (k, e)
                for k in world.visible_components()
                if k[0] == org
                for e in endpoints_of(world, k)
                if f"{k[2]}-{e}".lower() == plain and (k, e) != (key, endpoint_name)
            ]
            if not rivals:
                assert body["metadata"]["name"] == plain, (plain, body["metadata"]["name"])
    expected_endpoints = {
        (key, e) for key in world.visible_components() for e in endpoints_of(world, key)
    }
    assert seen_endpoints == expected_endpoints


def _check_common(body: dict[str, Any], item: dict[str, Any], coordinates: dict[str, str]) -> None:
    meta = body["metadata"]
    annotations = meta["annotations"]
    for field, value in coordinates.items():
        assert annotations.get(f"openchoreo.io/{field}") == value, (field, annotations)
    assert annotations.get("openchoreo.io/created-at") == item["createdAt"]
    assert annotations.get("openchoreo.io/status") == item.get("status"), (
        meta["name"],
        annotations,
    )
    assert annotations.get("openchoreo.io/deletion-timestamp") == item.get("deletionTimestamp")
    assert meta.get("title") == shown(item.get("displayName")), (meta, item.get("displayName"))
    assert meta.get("description") == shown(item.get("description")), meta


def check_requests(server: Server, chunk: int) -> None:
    """Every request carried the configured token; list calls asked for cursor mode with the
    configured limit; detail calls asked for the workload."""
    assert server.requests
    for request in server.requests:
        assert request.authorization == f"Bearer {TOKEN}", request
    for request in server.list_requests():
        assert request.param("pagination") == "cursor", request
        assert request.param("limit") == str(chunk), request
    details = [r for r in server.requests if r.path.count("/components/") == 1]
    assert details
    for request in details:
        include = (request.param("include") or "").split(",")
        assert "workload" in include, request


def validate_with_backstage(bodies: list[dict[str, Any]]) -> None:

    if backstage_validator_missing() is None:
        lines = [json.dumps(body, sort_keys=True, ensure_ascii=False) for body in bodies]
        assert run_backstage_validator(lines) == []
