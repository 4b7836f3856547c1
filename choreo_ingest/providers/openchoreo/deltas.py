"""Events -> deltas: re-read the one resource an event names and map it, or remove it if gone."""

from __future__ import annotations

from urllib.parse import quote

from choreo_ingest.config import MappingConfig
from choreo_ingest.errors import PermanentError
from choreo_ingest.models import Delta, Event
from choreo_ingest.providers.openchoreo.client import NotFoundError, OpenChoreoClient
from choreo_ingest.providers.openchoreo.entities import (
    being_deleted,
    component_entities,
    organization_entity,
    project_entity,
)

DETAIL_PARAMS = {"include": "type,workload"}


def event_delta(
    client: OpenChoreoClient, event: Event, mapping: MappingConfig, provider: str
) -> Delta:
    """What the catalog must do for `event`; a 404 on re-read means the resource is gone."""
    org_path = f"/orgs/{_segment(event.namespace if event.kind != 'Organization' else event.name)}"
    if event.kind == "Organization":
        scope = event.name
        if event.action == "deleted":
            return Delta(removal_scopes=[scope])
        try:
            org = client.get(org_path)
        except NotFoundError:
            return Delta(removal_scopes=[scope])
        return Delta(upserts=[organization_entity(org, mapping, provider)])
    org_name = _required(event.namespace, event, "namespace")
    if event.kind == "Project":
        scope = f"{org_name}/{event.name}"
        if event.action == "deleted":
            return Delta(removal_scopes=[scope])
        try:
            project = client.get(f"{org_path}/projects/{_segment(event.name)}")
        except NotFoundError:
            return Delta(removal_scopes=[scope])
        if being_deleted(project):
            return Delta(removal_scopes=[scope])
        return Delta(upserts=[project_entity(project, org_name, mapping, provider)])
    if event.kind == "Component":
        project_name = _required(event.project, event, "project")
        scope = f"{org_name}/{project_name}/{event.name}"
        if event.action == "deleted":
            return Delta(removal_scopes=[scope])
        path = f"{org_path}/projects/{_segment(project_name)}/components/{_segment(event.name)}"
        try:
            detail = client.get(path, DETAIL_PARAMS)
        except NotFoundError:
            return Delta(removal_scopes=[scope])
        if being_deleted(detail):
            return Delta(removal_scopes=[scope])
        entities = component_entities(detail, org_name, project_name, mapping, provider)
        return Delta(upserts=entities, removal_scopes=[scope])
    raise PermanentError(f"unsupported event kind {event.kind!r}")


def _required(value: str | None, event: Event, key: str) -> str:
    if not value:
        raise PermanentError(f"{event.kind} event for {event.name!r} has no {key!r}")
    return value


def _segment(value: str | None) -> str:
    return quote(value or "", safe="")
