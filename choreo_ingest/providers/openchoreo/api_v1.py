"""The OpenChoreo v1 API (`openchoreo-v1-api.md`): what every release since v1.0.0 serves.

    namespaces  GET /namespaces                             -> Domain entities, push each namespace
    projects    per namespace: GET /namespaces/{ns}/projects  -> System entities; owners indexed
    then, namespace by namespace:
    workloads   GET /namespaces/{ns}/workloads              -> indexed by component, no entities
    components  GET /namespaces/{ns}/components             -> Component + API entities

One request per list page and none per component: workloads and components are flat listings of
the namespace, met through the lookup index (a component's workloads are one indexed read per
page). Every namespace's projects come first: a cheap listing, whose owners the components and
the events of the whole cycle read. Then a namespace's workloads and components are walked
before the next namespace's (`follows_previous`): its workloads before its components, so a
component page always finds the workloads this cycle listed, whatever order the pages come in,
and a first cycle brings each namespace's components as soon as that namespace is walked.

Bare `{items, pagination: {nextCursor}}`; a listing ends when `nextCursor` is missing or empty.
A 500 on a request that carried a cursor is taken for an expired cursor (there is no 410 in v1),
though a server that fails on a resource of that page answers the same, every time: the
traversal names both causes when a listing's restarts keep failing at one page.
What a page's resources become is in `resources_v1`; how an event is applied, in `events_v1`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from choreo_ingest.models import Delta, Event, QueuedItem, QueueItem
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient
from choreo_ingest.providers.openchoreo.entities_v1 import namespace_entity, project_entity
from choreo_ingest.providers.openchoreo.event_reads_v1 import NOT_FOUND, read_ahead
from choreo_ingest.providers.openchoreo.events_v1 import INGESTED_KINDS, event_delta
from choreo_ingest.providers.openchoreo.generation import (
    KUBERNETES_NAME,
    Harvest,
    ListPage,
    Phase,
    Resource,
    Walk,
    name_of,
    queued_text,
)
from choreo_ingest.providers.openchoreo.listed_first import owners_changed, workloads_left
from choreo_ingest.providers.openchoreo.resources_v1 import (
    MAX_LIMIT,
    component_harvest,
    owner_row,
    read_page,
    segment,
    workload_row,
)

NAMESPACES = "namespaces"
KIND_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")


@dataclass(frozen=True)
class _Namespaces:
    name: str = "namespaces"
    queue: str | None = None
    follows_previous: bool = False

    def path(self, item: QueuedItem | None) -> str:
        return "/namespaces"

    def scope(self, item: QueuedItem) -> str:
        raise AssertionError("the root listing is never stepped over")

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        harvest = Harvest()
        for namespace in resources:
            name = name_of(namespace, "/namespaces")
            harvest.entities.append(namespace_entity(namespace, walk.config.mapping, walk.provider))
            harvest.queue_items.append(QueueItem(NAMESPACES, name, {"namespace": name}))
        return harvest


@dataclass(frozen=True)
class _InNamespace:
    """A listing in each namespace, `/namespaces/{ns}/<name>`. A namespace that is gone lists as
    empty (no 404 in v1): the sweep takes what it had."""

    name: str
    queue: str | None = NAMESPACES
    follows_previous: bool = False

    def path(self, item: QueuedItem | None) -> str:
        return f"/namespaces/{segment(queued_text(item, 'namespace'))}/{self.name}"

    def scope(self, item: QueuedItem) -> str:
        return queued_text(item, "namespace")


@dataclass(frozen=True)
class _Projects(_InNamespace):
    name: str = "projects"

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        namespace = queued_text(item, "namespace")
        harvest = Harvest()
        for project in resources:
            harvest.entities.append(
                project_entity(project, walk.config.mapping, walk.provider, namespace=namespace)
            )
            harvest.index.append(owner_row(namespace, project))
        # An owner changed since its row was written: kept for the Project event after this page.
        harvest.index += owners_changed(walk, harvest.index)
        return harvest


@dataclass(frozen=True)
class _Workloads(_InNamespace):
    name: str = "workloads"

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        """The workloads' rows, and for one indexed before for another component or another
        project (made again under its name for this one, or with its component there) the row
        as it was, for the move's event after this page (`listed_first`)."""
        namespace = queued_text(item, "namespace")
        rows = [row for w in resources if (row := workload_row(namespace, w))]
        return Harvest(index=[*rows, *workloads_left(walk, rows)])


@dataclass(frozen=True)
class _Components(_InNamespace):
    name: str = "components"
    follows_previous: bool = True  # each namespace's, as soon as its workloads are listed

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        return component_harvest(walk, queued_text(item, "namespace"), resources, listed=True)


class V1Generation:
    """The v1 API as the traversal needs it."""

    name = "v1"
    gone_codes = NOT_FOUND
    phases: Sequence[Phase] = (_Namespaces(), _Projects(), _Workloads(), _Components())

    def list_page(
        self, client: OpenChoreoClient, path: str, *, limit: int, cursor: str | None
    ) -> ListPage:
        return read_page(client, path, {"limit": min(limit, MAX_LIMIT)}, cursor)

    def event_problem(self, body: Mapping[str, Any]) -> str | None:
        kind, name = body.get("kind"), body.get("name")
        if not isinstance(kind, str) or not KIND_NAME.fullmatch(kind):
            return f"kind {kind!r:.80} is not a resource kind (expected e.g. Component)"
        # Any action goes (the intake wants a non-empty one): the event is re-read, as
        # OpenChoreo's own provider does, so the read decides, never the action.
        # Only the names this provider reads back must be Kubernetes object names; other
        # kinds (an RBAC role `system:admin`, say) are acknowledged and ignored whatever theirs.
        if kind not in INGESTED_KINDS:
            if not isinstance(name, str) or not name:
                return f"name {name!r:.80} is not a resource name"
        elif not isinstance(name, str) or not KUBERNETES_NAME.fullmatch(name):
            return f"name {name!r:.80} is not an OpenChoreo name (lowercase a-z, 0-9, '-', '.')"
        namespace = body.get("namespace")
        if kind in INGESTED_KINDS and kind != "Namespace":
            if not isinstance(namespace, str) or not KUBERNETES_NAME.fullmatch(namespace):
                return f"{kind} event needs a namespace (got {namespace!r:.80})"
        elif namespace is not None and not isinstance(namespace, str):
            return f"namespace {namespace!r:.80} is not a string"
        return None

    def is_ignored(self, body: Mapping[str, Any]) -> bool:
        return body.get("kind") not in INGESTED_KINDS

    def event_delta(self, walk: Walk, event: Event) -> Delta:
        """Re-read what the event names, whatever its action says (404: it is gone)."""
        return event_delta(walk, event)

    def read_ahead(self, walk: Walk, events: Sequence[Event]) -> None:
        read_ahead(walk, events)


V1 = V1Generation()
