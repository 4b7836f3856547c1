"""OpenChoreo organization-era resources -> Backstage entities: org -> Domain, project ->
System, component -> Component, workload endpoint -> API (see DESIGN.md, "Entities"). The v1
mapping is `entities_v1`.

Every function is pure and deterministic: the same input gives an equal body, which the store
content-hashes. `validate_entity` (from `naming`) checks a body against Backstage's rules.
A resource with a `deletionTimestamp` is still mapped, annotated `openchoreo.io/deletion-timestamp`.
An endpoint whose name holds a NUL character gets no API (PostgreSQL, Backstage's usual
database, cannot store it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from choreo_ingest.config import MappingConfig
from choreo_ingest.models import JSON, Entity
from choreo_ingest.providers.openchoreo.definitions import generated_definition
from choreo_ingest.providers.openchoreo.mapping_common import (
    API_VERSION,
    DELETION_TIMESTAMP,
    MANAGED_LABEL,
    SOURCE_LOCATION,
    UNKNOWN,
    as_mapping,
    endpoint_api_type,
    entity,
    metadata,
    port,
    required_name,
    schema_content,
    source_location,
    text,
    type_tags,
)
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
    "being_deleted",
    "component_entities",
    "endpoint_names",
    "live",
    "organization_entity",
    "organization_namespace",
    "project_entity",
    "validate_entity",
]

ORGANIZATION_NAMESPACE = "default"
"""Domains (organizations) live here; everything below an org lives in the org's namespace."""

_LEGACY_COMPONENT_TYPES = {"service": "service", "webapplication": "website"}


def organization_namespace(org: str) -> str:
    """The Backstage namespace that holds an organization's systems, components and APIs."""
    return namespace_name(org)


def being_deleted(resource: Mapping[str, Any]) -> bool:
    """Whether a resource carries a `deletionTimestamp` (it is on its way out).

    The mapping keeps such a resource (annotated); this predicate stays for callers that
    still filter on it.
    """
    return bool(resource.get("deletionTimestamp"))


def live(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [resource for resource in resources if not being_deleted(resource)]


def organization_entity(org: Mapping[str, Any], mapping: MappingConfig, provider: str) -> Entity:
    name = required_name(org.get("name"), "organization", org)
    annotations = {
        "organization": name,
        "created-at": text(org.get("createdAt")),
        "status": text(org.get("status")),
        DELETION_TIMESTAMP: text(org.get("deletionTimestamp")),
    }
    body = _metadata(entity_name(name), ORGANIZATION_NAMESPACE, org, provider, annotations)
    return entity("Domain", body, {"owner": mapping.default_owner}, scope=name)


def project_entity(
    project: Mapping[str, Any], org: str, mapping: MappingConfig, provider: str
) -> Entity:
    name = required_name(project.get("name"), "project", project)
    annotations = {
        "organization": org,
        "project": name,
        "uid": text(project.get("uid")),
        "created-at": text(project.get("createdAt")),
        "status": text(project.get("status")),
        DELETION_TIMESTAMP: text(project.get("deletionTimestamp")),
    }
    body = _metadata(entity_name(name), organization_namespace(org), project, provider, annotations)
    spec = {
        "owner": mapping.default_owner,
        "domain": f"{ORGANIZATION_NAMESPACE}/{entity_name(org)}",
    }
    return entity("System", body, spec, scope=f"{org}/{name}")


def component_entities(
    component: Mapping[str, Any],
    org: str,
    project: str,
    mapping: MappingConfig,
    provider: str,
    *,
    api_name: Callable[[str, str], str] = api_entity_name,
) -> list[Entity]:
    """The Component, then one API per workload endpoint in endpoint-name order.

    `api_name(component, endpoint)` names the APIs; a caller that finds two endpoints meeting
    on one name can pass its own to keep them apart.
    """
    name = required_name(component.get("name"), "component", component)
    namespace = organization_namespace(org)
    scope = f"{org}/{project}/{name}"
    component_type = text(component.get("type"))
    annotations = {
        "organization": org,
        "project": project,
        "component": name,
        "component-type": component_type,
        "uid": text(component.get("uid")),
        "created-at": text(component.get("createdAt")),
        "status": text(component.get("status")),
        DELETION_TIMESTAMP: text(component.get("deletionTimestamp")),
    }
    body = _metadata(
        entity_name(name), namespace, component, provider, annotations, type_tags(component_type)
    )
    workflow = as_mapping(component.get("componentWorkflow"))
    source = source_location(as_mapping(workflow.get("systemParameters")))
    if source:
        body["annotations"][SOURCE_LOCATION] = source
    label = body.get("title") or name
    apis = [
        _api_entity(name, label, endpoint, details, org, project, mapping, provider, api_name)
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
    return [entity("Component", body, spec, scope=scope), *apis]


def _api_entity(
    component: str,
    component_label: str,
    endpoint: str,
    details: Mapping[str, Any],
    org: str,
    project: str,
    mapping: MappingConfig,
    provider: str,
    api_name: Callable[[str, str], str],
) -> Entity:
    endpoint_type = text(details.get("type"))
    endpoint_port = port(details.get("port"))
    spec_type = endpoint_api_type(endpoint_type)
    type_label = endpoint_type or "Unknown"
    description = f"{type_label} endpoint '{endpoint}' of component {component}" + (
        f", port {endpoint_port}" if endpoint_port else ""
    )
    shown = endpoint.strip()
    body = metadata(
        api_name(component, endpoint),
        organization_namespace(org),
        provider,
        {
            "organization": org,
            "project": project,
            "component": component,
            "endpoint-name": endpoint,
            "endpoint-type": endpoint_type,
            "endpoint-port": endpoint_port,
        },
        title=f"{component_label}: {shown}" if shown else component_label,
        description=description,
        entity_tags=tags([endpoint_type]),
    )
    spec = {
        "type": spec_type,
        "lifecycle": mapping.lifecycle,
        "owner": mapping.default_owner,
        "system": entity_name(project),
        "definition": schema_content(details)
        or generated_definition(
            spec_type, type_label, component, endpoint, description, endpoint_port
        ),
    }
    return entity("API", body, spec, scope=f"{org}/{project}/{component}")


# --- pieces ----------------------------------------------------------------------------------


def _metadata(
    name: str,
    namespace: str,
    resource: Mapping[str, Any],
    provider: str,
    openchoreo: Mapping[str, str | None],
    entity_tags: list[str] | None = None,
) -> dict[str, Any]:
    """Org-era resources carry their title and description as `displayName`/`description`."""
    return metadata(
        name,
        namespace,
        provider,
        openchoreo,
        title=resource.get("displayName"),
        description=resource.get("description"),
        entity_tags=entity_tags,
    )


def endpoint_names(component: Mapping[str, Any]) -> list[str]:
    """The endpoints of `component` (a detail with its workload) that `component_entities` maps
    to APIs, in the workload's order. For a caller that settles API names before mapping."""
    return [name for name, _ in _workload_endpoints(component)]


def _endpoints(component: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """`workload.endpoints` as (name, details), sorted by name; absent or empty -> []."""
    return sorted(_workload_endpoints(component), key=lambda pair: pair[0])


def _workload_endpoints(component: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """`workload.endpoints` as (name, details) in the workload's order, without names that hold
    a NUL."""
    raw = as_mapping(component.get("workload")).get("endpoints")
    if isinstance(raw, Mapping):
        pairs = [(str(key), as_mapping(value)) for key, value in raw.items()]
    elif isinstance(raw, list):  # tolerated: a list of endpoints that carry their own name
        pairs = [
            (item["name"], item) for item in raw if isinstance(as_mapping(item).get("name"), str)
        ]
    else:
        pairs = []
    return [pair for pair in pairs if "\x00" not in pair[0]]


def _component_spec_type(openchoreo_type: str | None) -> str:
    """`deployment/web-app` -> `web-app`; legacy `WebApplication` -> `website`, others kebab."""
    if not openchoreo_type:
        return UNKNOWN
    if "/" in openchoreo_type:
        return lower_kebab(openchoreo_type.rsplit("/", 1)[1]) or UNKNOWN
    legacy = _LEGACY_COMPONENT_TYPES.get(openchoreo_type.lower())
    return legacy or lower_kebab(openchoreo_type) or UNKNOWN
