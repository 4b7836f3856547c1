"""OpenChoreo resources -> Backstage entities: org -> Domain, project -> System,
component -> Component, workload endpoint -> API (see DESIGN.md, "Entities").

Every function is pure and deterministic: the same input gives an equal body, which the store
content-hashes. `validate_entity` (from `naming`) checks a body against Backstage's rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from choreo_ingest.config import MappingConfig
from choreo_ingest.errors import PermanentError
from choreo_ingest.models import JSON, Entity
from choreo_ingest.providers.openchoreo.definitions import generated_definition
from choreo_ingest.providers.openchoreo.naming import (
    api_entity_name,
    entity_name,
    lower_kebab,
    namespace_name,
    tags,
    validate_entity,
)

__all__ = [
    "API_VERSION",
    "MANAGED_LABEL",
    "ORGANIZATION_NAMESPACE",
    "api_entity_name",
    "component_entities",
    "organization_entity",
    "organization_namespace",
    "project_entity",
    "validate_entity",
]

API_VERSION = "backstage.io/v1alpha1"
ORGANIZATION_NAMESPACE = "default"
"""Domains (organizations) live here; everything below an org lives in the org's namespace."""
MANAGED_LABEL = "openchoreo.io/managed"
LOCATION = "backstage.io/managed-by-location"
ORIGIN_LOCATION = "backstage.io/managed-by-origin-location"
SOURCE_LOCATION = "backstage.io/source-location"
_PREFIX = "openchoreo.io/"

_LEGACY_COMPONENT_TYPES = {"service": "service", "webapplication": "website"}
_API_TYPES = {
    "rest": "openapi",
    "http": "openapi",
    "graphql": "graphql",
    "grpc": "grpc",
    "websocket": "asyncapi",
    "tcp": "tcp",
    "udp": "udp",
}
_UNKNOWN = "unknown"


def organization_namespace(org: str) -> str:
    """The Backstage namespace that holds an organization's systems, components and APIs."""
    return namespace_name(org)


def being_deleted(resource: Mapping[str, Any]) -> bool:
    """A resource with a `deletionTimestamp` is on its way out: the catalog treats it as gone."""
    return bool(resource.get("deletionTimestamp"))


def live(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [resource for resource in resources if not being_deleted(resource)]


def organization_entity(org: Mapping[str, Any], mapping: MappingConfig, provider: str) -> Entity:
    name = _required_name(org, "organization")
    metadata = _metadata(
        entity_name(name),
        ORGANIZATION_NAMESPACE,
        org,
        provider,
        {"organization": name, "created-at": _text(org.get("createdAt")), "status": _status(org)},
    )
    return _entity("Domain", metadata, {"owner": mapping.default_owner}, scope=name)


def project_entity(
    project: Mapping[str, Any], org: str, mapping: MappingConfig, provider: str
) -> Entity:
    name = _required_name(project, "project")
    metadata = _metadata(
        entity_name(name),
        organization_namespace(org),
        project,
        provider,
        {
            "organization": org,
            "project": name,
            "uid": _text(project.get("uid")),
            "created-at": _text(project.get("createdAt")),
            "status": _status(project),
        },
    )
    spec = {
        "owner": mapping.default_owner,
        "domain": f"{ORGANIZATION_NAMESPACE}/{entity_name(org)}",
    }
    return _entity("System", metadata, spec, scope=f"{org}/{name}")


def component_entities(
    component: Mapping[str, Any], org: str, project: str, mapping: MappingConfig, provider: str
) -> list[Entity]:
    """The Component, then one API per workload endpoint in endpoint-name order."""
    name = _required_name(component, "component")
    namespace = organization_namespace(org)
    scope = f"{org}/{project}/{name}"
    component_type = _text(component.get("type"))
    annotations = {
        "organization": org,
        "project": project,
        "component": name,
        "component-type": component_type,
        "uid": _text(component.get("uid")),
        "created-at": _text(component.get("createdAt")),
        "status": _status(component),
    }
    metadata = _metadata(
        entity_name(name), namespace, component, provider, annotations, _type_tags(component_type)
    )
    source = _source_location(component)
    if source:
        metadata["annotations"][SOURCE_LOCATION] = source
    label = metadata.get("title") or name
    apis = [
        _api_entity(name, label, endpoint, details, org, project, mapping, provider)
        for endpoint, details in _endpoints(component)
    ]
    spec: dict[str, JSON] = {
        "type": _component_spec_type(component_type),
        "lifecycle": mapping.lifecycle,
        "owner": mapping.default_owner,
        "system": entity_name(project),
    }
    if apis:
        spec["providesApis"] = [api.ref for api in apis]
    return [_entity("Component", metadata, spec, scope=scope), *apis]


def _api_entity(
    component: str,
    component_label: str,
    endpoint: str,
    details: Mapping[str, Any],
    org: str,
    project: str,
    mapping: MappingConfig,
    provider: str,
) -> Entity:
    endpoint_type = _text(details.get("type"))
    port = _port(details.get("port"))
    spec_type = _api_spec_type(endpoint_type)
    type_label = endpoint_type or "Unknown"
    description = f"{type_label} endpoint '{endpoint}' of component {component}" + (
        f", port {port}" if port else ""
    )
    shown = endpoint.strip()
    resource = {
        "displayName": f"{component_label}: {shown}" if shown else component_label,
        "description": description,
    }
    metadata = _metadata(
        api_entity_name(component, endpoint),
        organization_namespace(org),
        resource,
        provider,
        {
            "organization": org,
            "project": project,
            "component": component,
            "endpoint-name": endpoint,
            "endpoint-type": endpoint_type,
            "endpoint-port": port,
        },
        tags([endpoint_type]),
    )
    spec = {
        "type": spec_type,
        "lifecycle": mapping.lifecycle,
        "owner": mapping.default_owner,
        "system": entity_name(project),
        "definition": _schema_content(details)
        or generated_definition(spec_type, type_label, component, endpoint, description, port),
    }
    return _entity("API", metadata, spec, scope=f"{org}/{project}/{component}")


# --- pieces ----------------------------------------------------------------------------------


def _entity(kind: str, metadata: dict[str, Any], spec: dict[str, JSON], *, scope: str) -> Entity:
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}
    return Entity(kind, metadata["namespace"], metadata["name"], body, scope)


def _metadata(
    name: str,
    namespace: str,
    resource: Mapping[str, Any],
    provider: str,
    openchoreo: Mapping[str, str | None],
    entity_tags: list[str] | None = None,
) -> dict[str, Any]:
    annotations = {_PREFIX + key: value for key, value in openchoreo.items() if value is not None}
    annotations[LOCATION] = annotations[ORIGIN_LOCATION] = f"provider:{provider}"
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "annotations": annotations,
        "labels": {MANAGED_LABEL: "true"},
    }
    title = _text(resource.get("displayName"))
    if title:
        metadata["title"] = title
    description = _text(resource.get("description"))
    if description:
        metadata["description"] = description
    if entity_tags:
        metadata["tags"] = entity_tags
    return metadata


def _required_name(resource: Mapping[str, Any], what: str) -> str:
    name = resource.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PermanentError(f"OpenChoreo {what} without a name: {_preview(resource)}")
    return name


def _text(value: object) -> str | None:
    """A string stripped of surrounding blanks; None for blanks and non-strings."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _status(resource: Mapping[str, Any]) -> str | None:
    return _text(resource.get("status"))


def _port(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        return value.strip()
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _preview(resource: Mapping[str, Any]) -> str:
    return json.dumps(resource, sort_keys=True, default=str)[:200]


def _endpoints(component: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """`workload.endpoints` as (name, details), sorted by name; absent or empty -> nothing."""
    raw = _mapping(component.get("workload")).get("endpoints")
    if isinstance(raw, Mapping):
        pairs = [(str(key), _mapping(value)) for key, value in raw.items()]
    elif isinstance(raw, list):  # tolerated: a list of endpoints that carry their own name
        pairs = [
            (item["name"], item) for item in raw if isinstance(_mapping(item).get("name"), str)
        ]
    else:
        pairs = []
    yield from sorted(pairs, key=lambda pair: pair[0])


def _component_spec_type(openchoreo_type: str | None) -> str:
    """`deployment/web-app` -> `web-app`; legacy `WebApplication` -> `website`, others kebab."""
    if not openchoreo_type:
        return _UNKNOWN
    if "/" in openchoreo_type:
        return lower_kebab(openchoreo_type.rsplit("/", 1)[1]) or _UNKNOWN
    legacy = _LEGACY_COMPONENT_TYPES.get(openchoreo_type.lower())
    return legacy or lower_kebab(openchoreo_type) or _UNKNOWN


def _type_tags(openchoreo_type: str | None) -> list[str]:
    """`deployment/web-app` -> [`deployment`, `web-app`]; `ScheduledTask` -> [`scheduled-task`]."""
    if not openchoreo_type:
        return []
    return tags(lower_kebab(part) for part in openchoreo_type.split("/"))


def _api_spec_type(endpoint_type: str | None) -> str:
    if not endpoint_type:
        return _UNKNOWN
    return _API_TYPES.get(endpoint_type.lower()) or lower_kebab(endpoint_type) or _UNKNOWN


def _schema_content(details: Mapping[str, Any]) -> str | None:
    content = _mapping(details.get("schema")).get("content")
    if isinstance(content, str):
        return content if content.strip() else None
    if isinstance(content, Mapping | list) and content:
        return json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False)
    return None


def _source_location(component: Mapping[str, Any]) -> str | None:
    """`url:<repository>` in Backstage's location format, when the build names an http(s) repo.

    GitHub and GitLab get their branch-tree URL when the branch is known; other hosts get the
    repository URL alone, since their tree-URL conventions differ.
    """
    parameters = _mapping(_mapping(component.get("componentWorkflow")).get("systemParameters"))
    repository = _mapping(parameters.get("repository"))
    url = _text(repository.get("url"))
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    revision = _mapping(repository.get("revision")) or _mapping(parameters.get("revision"))
    branch = _text(revision.get("branch"))
    host = parts.hostname or ""
    if branch and host in ("github.com", "gitlab.com"):
        base = url.rstrip("/").removesuffix(".git")
        tree = "/tree/" if host == "github.com" else "/-/tree/"
        return f"url:{base}{tree}{quote(branch, safe='/')}/"
    return f"url:{url}"
