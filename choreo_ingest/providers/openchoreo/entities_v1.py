"""OpenChoreo v1 resources -> Backstage entities, the way OpenChoreo's own Backstage provider
maps them (openchoreo-v1-api.md, last section; DESIGN.md, "Entities"), so teams moving from it
keep their refs: namespace -> Domain `default/<ns>`, project -> System `<ns>/<project>`,
component -> Component `<ns>/<component>`, workload endpoint with a schema -> API
`<ns>/<project>-<component>-<endpoint>` (made valid).

Where we differ from that provider, on purpose: `managed-by-location` is our own
(`provider:<name>`), API names always fit Backstage's 63 characters, an owner annotation that
is not an entity ref is skipped (with a warning) instead of written, a blank title of a
System, Component or API is left out instead of repeating the name (Backstage shows the name
then anyway), GitHub and GitLab SSH repository addresses become their https URL, credentials,
query and fragment of a repository URL are left out, and an endpoint whose name holds a NUL
character gets no API (neither PostgreSQL nor Backstage's database could store it).

Every function is pure and deterministic apart from the warning it logs for an unusable owner
annotation. A resource with a `metadata.deletionTimestamp` stays, annotated
`openchoreo.io/deletion-timestamp`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from choreo_ingest.config import MappingConfig
from choreo_ingest.errors import PermanentError
from choreo_ingest.models import JSON, Entity
from choreo_ingest.providers.openchoreo.data_warnings import data_warning
from choreo_ingest.providers.openchoreo.definitions import generated_definition
from choreo_ingest.providers.openchoreo.mapping_common import (
    DELETION_TIMESTAMP,
    SOURCE_LOCATION,
    UNKNOWN,
    as_mapping,
    endpoint_api_type,
    entity,
    metadata,
    port,
    preview,
    required_name,
    schema_content,
    source_location,
    text,
    type_tags,
)
from choreo_ingest.providers.openchoreo.naming import (
    entity_name,
    namespace_name,
    owner_problem,
    tags,
    v1_api_entity_name,
)

__all__ = [
    "DOMAIN_NAMESPACE",
    "OWNER_ANNOTATION",
    "ApiEndpoint",
    "ApiName",
    "Dependency",
    "api_endpoint_names",
    "api_endpoints",
    "component_entities",
    "dependencies",
    "namespace_entity",
    "project_entity",
    "project_owner",
    "trim_workload",
    "v1_api_entity_name",
]


ApiName = Callable[[str, str, str], str]
"""Names an endpoint's API entity from (project, component, endpoint)."""

DOMAIN_NAMESPACE = "default"
"""Domains (namespaces) live here; everything below a namespace lives in its own namespace."""
OWNER_ANNOTATION = "backstage.io/owner"
DISPLAY_NAME = "openchoreo.dev/display-name"
DESCRIPTION = "openchoreo.dev/description"
STUB = "stub"
"""`mapping.apis_without_schema` value that maps endpoints without a schema too."""

_ENDPOINT_FIELDS = ("type", "port", "visibility", "displayName")
_SCHEMA_FIELDS = ("type", "content")


def namespace_entity(namespace: Mapping[str, Any], mapping: MappingConfig, provider: str) -> Entity:
    """A namespace becomes the Domain `default/<ns>`, titled with its display name or its name."""
    meta = as_mapping(namespace.get("metadata"))
    name = required_name(meta.get("name"), "namespace", namespace)
    annotations = {
        "namespace": name,
        "created-at": text(meta.get("creationTimestamp")),
        "status": text(as_mapping(namespace.get("status")).get("phase")),
        DELETION_TIMESTAMP: text(meta.get("deletionTimestamp")),
    }
    body = _metadata(entity_name(name), DOMAIN_NAMESPACE, meta, provider, annotations)
    body.setdefault("title", name)
    return entity("Domain", body, {"owner": mapping.default_owner}, scope=name)


def project_owner(project: Mapping[str, Any]) -> str | None:
    """The project's `backstage.io/owner` annotation when it is a usable owner ref, else None
    (an unusable one is logged as `owner_annotation_ignored`)."""
    return _owner_annotation(project, "Project")


def project_entity(
    project: Mapping[str, Any],
    mapping: MappingConfig,
    provider: str,
    *,
    namespace: str | None = None,
) -> Entity:
    """A project becomes the System `<ns>/<project>` in the Domain `default/<ns>`.

    The namespace is the project's `metadata.namespace`, else `namespace` (the one listed).
    """
    meta = as_mapping(project.get("metadata"))
    name = required_name(meta.get("name"), "project", project)
    ns = _namespace_of(project, namespace, "project")
    type_kind, type_name = _type_reference(as_mapping(project.get("spec")).get("type"))
    annotations = {
        "namespace": ns,
        "project": name,
        # What OpenChoreo's Backstage permission policy reads a System's project from (its
        # provider writes it; without it a per-project rule cannot match the System).
        "project-id": name,
        "project-uid": text(meta.get("uid")),
        # (v1.2+) What OpenChoreo's System processor relates a System to its project type by.
        "project-type": type_name,
        "project-type-kind": (type_kind or "ProjectType") if type_name else None,
        "created-at": text(meta.get("creationTimestamp")),
        "status": _ready_status(project),
        DELETION_TIMESTAMP: text(meta.get("deletionTimestamp")),
    }
    body = _metadata(entity_name(name), namespace_name(ns), meta, provider, annotations)
    spec = {
        "owner": project_owner(project) or mapping.default_owner,
        "domain": f"{DOMAIN_NAMESPACE}/{entity_name(ns)}",
    }
    return entity("System", body, spec, scope=f"{ns}/{name}")


def component_entities(
    component: Mapping[str, Any],
    workload: Mapping[str, Any] | None,
    project_owner: str | None,
    mapping: MappingConfig,
    provider: str,
    *,
    api_name: ApiName = v1_api_entity_name,
    namespace: str | None = None,
    endpoints: Sequence[ApiEndpoint] | None = None,
    consumes: Sequence[str] = (),
) -> list[Entity]:
    """The Component `<ns>/<component>`, then its APIs in endpoint-name order.

    `workload` is the component's workload (full or `trim_workload`ed; None when it has none):
    one API per endpoint with schema content, or per endpoint when `mapping.apis_without_schema`
    is `stub` (those get a generated definition). `project_owner` is `project_owner(project)`
    of the component's project. The owner is the component's owner annotation, else
    `project_owner`, else `mapping.default_owner`; its APIs share it. `api_name(project,
    component, endpoint)` names the APIs: a caller that finds two triples meeting on one name
    passes its own. The namespace is `metadata.namespace`, else `namespace`. `endpoints` is
    `api_endpoints(workload, mapping)`, for a caller that has it already. `consumes` holds the
    refs of the APIs the workload's `dependencies` name, as the caller found them (they are other
    components' APIs): `spec.consumesApis`, sorted.
    """
    meta = as_mapping(component.get("metadata"))
    spec = as_mapping(component.get("spec"))
    name = required_name(meta.get("name"), "component", component)
    ns = _namespace_of(component, namespace, "component")
    project = as_mapping(spec.get("owner")).get("projectName")
    if not isinstance(project, str) or not project.strip():
        raise PermanentError(
            f"OpenChoreo component without spec.owner.projectName: {preview(component)}"
        )
    type_kind, type_name = _type_reference(spec.get("componentType"))
    workload_meta = as_mapping(as_mapping(workload).get("metadata"))
    workload_name = text(workload_meta.get("name"))
    owner = _owner_annotation(component, "Component") or project_owner or mapping.default_owner
    ready = _is_ready(_ready_condition(component))
    parameters = as_mapping(as_mapping(spec.get("workflow")).get("parameters"))
    revision = as_mapping(as_mapping(parameters.get("repository")).get("revision"))
    annotations = {
        "component": name,
        "component-uid": text(meta.get("uid")),
        "component-type": type_name,
        "component-type-kind": type_kind,
        "project": project,
        "namespace": ns,
        "created-at": text(meta.get("creationTimestamp")),
        "status": "Ready" if ready else "Not Ready",
        "workload": workload_name,
        "branch": text(revision.get("branch")),
        DELETION_TIMESTAMP: text(meta.get("deletionTimestamp")),
    }
    body = _metadata(
        entity_name(name), namespace_name(ns), meta, provider, annotations, type_tags(type_name)
    )
    source = source_location(parameters, tree=False)
    if source:
        body["annotations"][SOURCE_LOCATION] = source
    place = _Place(ns, project, name, workload_name, owner, provider, f"{ns}/{project}/{name}")
    apis = [
        _api_entity(place, endpoint, details, content, mapping, api_name)
        for endpoint, details, content in (
            api_endpoints(workload, mapping) if endpoints is None else endpoints
        )
    ]
    component_spec: dict[str, JSON] = {
        "type": type_name or UNKNOWN,
        "lifecycle": "ready" if ready else "not ready",
        "owner": owner,
        "system": entity_name(project),
    }
    if apis:
        component_spec["providesApis"] = [api.ref for api in apis]
    if consumes:
        component_spec["consumesApis"] = sorted(set(consumes))
    return [entity("Component", body, component_spec, scope=place.scope), *apis]


def api_endpoint_names(workload: Mapping[str, Any] | None, mapping: MappingConfig) -> list[str]:
    """The endpoints of `workload` that `component_entities` maps to APIs, in the same (name)
    order: those with schema content, or all of them when `mapping.apis_without_schema` is
    `stub`. For a caller that settles API names before mapping."""
    return [endpoint for endpoint, _, _ in api_endpoints(workload, mapping)]


Dependency = tuple[str | None, str, str]
"""An endpoint a workload depends on: (its project, None for the workload's own; its component;
the endpoint's name)."""


def dependencies(workload: Mapping[str, Any] | None) -> list[Dependency]:
    """`spec.dependencies.endpoints` as (project, component, endpoint), in their order; an entry
    without a component or an endpoint name is skipped."""
    spec = as_mapping(as_mapping(workload).get("spec"))
    listed = as_mapping(spec.get("dependencies")).get("endpoints")
    if not isinstance(listed, list):
        return []
    found: list[Dependency] = []
    for item in listed:
        entry = as_mapping(item)
        project, component, endpoint = (entry.get(k) for k in ("project", "component", "name"))
        if _is_name(component) and _is_name(endpoint):
            found.append((project if _is_name(project) else None, component, endpoint))
    return found


def _is_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value) and "\x00" not in value


def trim_workload(workload: Mapping[str, Any]) -> dict[str, Any]:
    """Only what the mapping (and the caller's join) reads from a workload: `metadata.name`,
    `spec.owner`, each endpoint's type, port, visibility, display name and schema, and the
    endpoints it depends on.

    `component_entities` maps a trimmed workload exactly as the full one, so a caller can store
    workloads compactly.
    """
    meta = as_mapping(workload.get("metadata"))
    spec = as_mapping(workload.get("spec"))
    trimmed_spec: dict[str, Any] = {}
    if "owner" in spec:
        owner = as_mapping(spec["owner"])
        trimmed_spec["owner"] = {
            k: owner[k] for k in ("projectName", "componentName") if k in owner
        }
    raw = spec.get("endpoints")
    if type(raw) is dict or isinstance(raw, Mapping):
        trimmed_spec["endpoints"] = {
            str(key): _trim_endpoint(as_mapping(value))
            for key, value in raw.items()
            if "\x00" not in str(key)
        }
    needed = dependencies(workload)
    if needed:
        trimmed_spec["dependencies"] = {"endpoints": [_dependency(*found) for found in needed]}
    return {"metadata": {"name": meta["name"]} if "name" in meta else {}, "spec": trimmed_spec}


def _dependency(project: str | None, component: str, endpoint: str) -> dict[str, str]:
    named = {"component": component, "name": endpoint}
    return named if project is None else {"project": project, **named}


# --- APIs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a component's APIs sit and whom they belong to."""

    namespace: str
    project: str
    component: str
    workload: str | None
    owner: str
    provider: str
    scope: str


ApiEndpoint = tuple[str, Mapping[str, Any], str | None]
"""An endpoint that gets an API: its name, its details and its schema content (None: stub)."""


def api_endpoints(workload: Mapping[str, Any] | None, mapping: MappingConfig) -> list[ApiEndpoint]:
    """The endpoints of `workload` that get an API, sorted by name."""
    stub = mapping.apis_without_schema == STUB
    found = []
    for name, details in _endpoints(workload):
        content = schema_content(details)
        if content or stub:
            found.append((name, details, content))
    return found


def _api_entity(
    place: _Place,
    endpoint: str,
    details: Mapping[str, Any],
    content: str | None,
    mapping: MappingConfig,
    api_name: ApiName,
) -> Entity:
    """The API of one endpoint: its schema `content`, else (stubs wanted) a generated
    definition."""
    endpoint_type = text(details.get("type"))
    endpoint_port = port(details.get("port"))
    type_label = endpoint_type or "Unknown"
    description = f"{type_label} endpoint '{endpoint}' of component {place.component}" + (
        f", port {endpoint_port}" if endpoint_port else ""
    )
    if content:
        spec_type = _schema_api_type(as_mapping(details.get("schema")).get("type"))
        definition = content
    else:
        spec_type = endpoint_api_type(endpoint_type)
        definition = generated_definition(
            spec_type, type_label, place.component, endpoint, description, endpoint_port
        )
    fallback_title = " ".join(part for part in (place.component, endpoint.strip(), "API") if part)
    body = metadata(
        api_name(place.project, place.component, endpoint),
        namespace_name(place.namespace),
        place.provider,
        {
            "component": place.component,
            "endpoint-name": endpoint,
            "endpoint-type": endpoint_type,
            "endpoint-port": endpoint_port,
            "endpoint-visibility": _visibility(details.get("visibility")),
            "project": place.project,
            "namespace": place.namespace,
            "workload": place.workload,
        },
        title=text(details.get("displayName")) or fallback_title,
        description=description,
        entity_tags=tags([endpoint_type]),
    )
    spec = {
        "type": spec_type,
        "lifecycle": mapping.lifecycle,
        "owner": place.owner,
        "system": entity_name(place.project),
        "definition": definition,
    }
    return entity("API", body, spec, scope=place.scope)


def _endpoints(workload: Mapping[str, Any] | None) -> list[tuple[str, Mapping[str, Any]]]:
    """`spec.endpoints` as (name, details), sorted by name; no workload or endpoints -> []."""
    raw = as_mapping(as_mapping(as_mapping(workload).get("spec")).get("endpoints"))
    found = ((str(key), as_mapping(value)) for key, value in raw.items())
    return sorted((pair for pair in found if "\x00" not in pair[0]), key=_first)


def _first(pair: tuple[str, Mapping[str, Any]]) -> str:
    return pair[0]


def _schema_api_type(schema_type: object) -> str:
    """`schema.type` lower-cased, else as given (`proto` stays `proto`, as OpenChoreo's own
    provider writes it); missing or blank -> `openapi`."""
    return (text(schema_type) or "openapi").lower()


def _visibility(value: object) -> str | None:
    if not isinstance(value, list):
        return None
    return ",".join(shown for shown in map(text, value) if shown) or None


def _trim_endpoint(details: Mapping[str, Any]) -> dict[str, Any]:
    trimmed = {key: details[key] for key in _ENDPOINT_FIELDS if key in details}
    if "schema" in details:
        schema = as_mapping(details["schema"])
        trimmed["schema"] = {key: schema[key] for key in _SCHEMA_FIELDS if key in schema}
    return trimmed


# --- pieces ----------------------------------------------------------------------------------


def _metadata(
    name: str,
    namespace: str,
    meta: Mapping[str, Any],
    provider: str,
    openchoreo: Mapping[str, str | None],
    entity_tags: list[str] | None = None,
) -> dict[str, Any]:
    """v1 resources carry their title and description as `openchoreo.dev/` annotations."""
    annotations = as_mapping(meta.get("annotations"))
    return metadata(
        name,
        namespace,
        provider,
        openchoreo,
        title=annotations.get(DISPLAY_NAME),
        description=annotations.get(DESCRIPTION),
        entity_tags=entity_tags,
    )


def _namespace_of(resource: Mapping[str, Any], fallback: str | None, what: str) -> str:
    found = text(as_mapping(resource.get("metadata")).get("namespace")) or text(fallback)
    if not found:
        raise PermanentError(f"OpenChoreo {what} without a namespace: {preview(resource)}")
    return found


def _owner_annotation(resource: Mapping[str, Any], kind: str) -> str | None:
    """A resource's `backstage.io/owner` annotation, stripped, when Backstage can use it as an
    owner; a bare name is kept as written. Blank -> None; unusable -> None and a warning."""
    meta = as_mapping(resource.get("metadata"))
    value = as_mapping(meta.get("annotations")).get(OWNER_ANNOTATION)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    owner = value.strip() if isinstance(value, str) else None
    problem = owner_problem(owner) if owner else f"{value!r} is not a string"
    if problem:
        data_warning(
            "owner_annotation_ignored",
            f"{kind} {meta.get('namespace')}/{meta.get('name')}",
            kind=kind,
            namespace=meta.get("namespace"),
            name=meta.get("name"),
            owner=value,
            reason=problem,
        )
        return None
    return owner


def _type_reference(reference: object) -> tuple[str | None, str | None]:
    """(kind, name) of a type reference: `spec.componentType` or a project's `spec.type`
    (`{kind, name}`, or a bare name string)."""
    if isinstance(reference, str):
        return None, text(reference)
    as_ref = as_mapping(reference)
    return text(as_ref.get("kind")), text(as_ref.get("name"))


def _ready_condition(resource: Mapping[str, Any]) -> Mapping[str, Any] | None:
    conditions = as_mapping(resource.get("status")).get("conditions")
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if as_mapping(condition).get("type") == "Ready":
            return as_mapping(condition)
    return None


def _ready_status(resource: Mapping[str, Any]) -> str | None:
    return _status(_ready_condition(resource))


def _status(condition: Mapping[str, Any] | None) -> str | None:
    """A project's `Ready` / `Not Ready` from its Ready condition; None without one."""
    if condition is None:
        return None
    return "Ready" if _is_ready(condition) else "Not Ready"


def _is_ready(condition: Mapping[str, Any] | None) -> bool:
    """Whether a Ready condition says `True`. A component without one (not reconciled yet) is
    not ready: `Not Ready`, lifecycle `not ready`, as OpenChoreo's provider writes it."""
    return condition is not None and condition.get("status") == "True"
