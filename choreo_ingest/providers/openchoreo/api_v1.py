"""The OpenChoreo v1 API (`openchoreo-v1-api.md`): what every release since v1.0.0 serves.

    namespaces  GET /namespaces                             -> Domain entities, push each namespace
    projects    per namespace: GET /namespaces/{ns}/projects  -> System entities; owners indexed
    workloads   per namespace: GET /namespaces/{ns}/workloads -> indexed by component, no entities
    components  per namespace: GET /namespaces/{ns}/components
                                                            -> Component + API entities

One request per list page and none per component: workloads and components are flat listings of
the namespace, met through the lookup index (a component's workloads are one indexed read per
page). Every namespace's workloads are listed before any namespace's components, so a component
page always finds the workloads this cycle listed, whatever order the pages come in.

Bare `{items, pagination: {nextCursor}}`; a listing ends when `nextCursor` is missing or empty.
A 500 on a request that carried a cursor means the cursor expired (there is no 410 in v1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from choreo_ingest.errors import AuthError, CursorExpired, NotFoundError, PermanentError
from choreo_ingest.logs import get_logger
from choreo_ingest.models import Delta, Event, IndexEntry, QueuedItem, QueueItem, entity_ref
from choreo_ingest.providers.openchoreo.api_names import (
    CLAIMS,
    ApiClaim,
    Owner,
    Pending,
    claim_key,
    resolve_api_names,
)
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient
from choreo_ingest.providers.openchoreo.entities_v1 import (
    api_endpoint_names,
    component_entities,
    namespace_entity,
    project_entity,
    project_owner,
    trim_workload,
)
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
from choreo_ingest.providers.openchoreo.mapping_common import as_mapping
from choreo_ingest.providers.openchoreo.naming import (
    entity_name,
    hashed_entity_name,
    namespace_name,
    v1_api_entity_name,
)

log = get_logger("choreo_ingest.providers.openchoreo")

NAMESPACES = "namespaces"
PROJECT_OWNERS = "project"
"""Index: `<ns>/<project>` -> {owner}: the project's owner annotation, for its components."""
WORKLOADS = "workload"
"""Index: `<ns>/<workload>` grouped by `<ns>/<component>` -> the trimmed workload."""
MAX_LIMIT = 100
INGESTED_KINDS = ("Namespace", "Project", "Component", "Workload")
ACTIONS = ("created", "updated", "deleted")
KIND_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")


def _segment(value: str) -> str:
    return quote(value, safe="")


def _object(body: Any, path: str) -> Resource:
    if not isinstance(body, dict):
        raise PermanentError(f"GET {path}: HTTP 200: the response is not an object", path=path)
    return body


def _spec_owner(resource: Mapping[str, Any], key: str) -> str | None:
    value = as_mapping(as_mapping(resource.get("spec")).get("owner")).get(key)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class _Namespaces:
    name: str = "namespaces"
    queue: str | None = None

    def path(self, item: QueuedItem | None) -> str:
        return "/namespaces"

    def gone(self, item: QueuedItem) -> list[str]:
        return []  # a single listing: its 404 is an error, never a parent gone

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

    def path(self, item: QueuedItem | None) -> str:
        return f"/namespaces/{_segment(queued_text(item, 'namespace'))}/{self.name}"

    def gone(self, item: QueuedItem) -> list[str]:
        return []


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
            harvest.index.append(_owner_row(namespace, project))
        return harvest


@dataclass(frozen=True)
class _Workloads(_InNamespace):
    name: str = "workloads"

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        namespace = queued_text(item, "namespace")
        return Harvest(index=[row for w in resources if (row := _workload_row(namespace, w))])


@dataclass(frozen=True)
class _Components(_InNamespace):
    name: str = "components"

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        return component_harvest(walk, queued_text(item, "namespace"), resources, listed=True)


def _owner_row(namespace: str, project: Resource) -> IndexEntry:
    name = name_of(project, "project")
    return IndexEntry(PROJECT_OWNERS, f"{namespace}/{name}", "", {"owner": project_owner(project)})


def _workload_row(namespace: str, workload: Resource) -> IndexEntry | None:
    """The workload as the index keeps it; None for one that names no component."""
    component = _spec_owner(workload, "componentName")
    if component is None:
        return None
    name = name_of(workload, "workload")
    return IndexEntry(
        WORKLOADS, f"{namespace}/{name}", f"{namespace}/{component}", trim_workload(workload)
    )


def component_harvest(
    walk: Walk,
    namespace: str,
    components: Sequence[Resource],
    *,
    listed: bool,
    pending: Pending | None = None,
    displacing: bool = True,
) -> Harvest:
    """Component and API entities of these components of `namespace`, each joined with its first
    workload by name (`listed`: only workloads this cycle listed count, as for a listing page;
    else the index as it stands) and with its project's owner."""
    pending = {} if pending is None else pending
    mapping = walk.config.mapping
    placed = [(c, p) for c in components if (p := _project_of(c, namespace)) is not None]
    names = [name_of(component, "component") for component, _ in placed]
    workloads = walk.index.by_group(
        WORKLOADS, [f"{namespace}/{name}" for name in names], current_only=listed
    )
    chosen = {name: _first_value(workloads[f"{namespace}/{name}"]) for name in names}
    projects = {project for _, project in placed}
    owners = walk.index.by_key(PROJECT_OWNERS, [f"{namespace}/{p}" for p in sorted(projects)])
    claims = [
        ApiClaim(
            namespace=namespace_name(namespace),
            owner=(project, name),
            endpoint=endpoint,
            plain=v1_api_entity_name(project, name, endpoint),
        )
        for (_, project), name in zip(placed, names, strict=True)
        for endpoint in api_endpoint_names(chosen[name], mapping)
    ]
    api_names, harvest, displaced = resolve_api_names(walk, claims, _hashed_name, pending)
    for (component, project), name in zip(placed, names, strict=True):
        owner_row = owners.get(f"{namespace}/{project}")
        project_default = owner_row.value.get("owner") if owner_row is not None else None
        harvest.entities += component_entities(
            component,
            chosen[name],
            project_default if isinstance(project_default, str) else None,
            mapping,
            walk.provider,
            api_name=lambda p, c, e: api_names[(p, c, e)],
            namespace=namespace,
        )
    for owner in displaced if displacing else ():
        harvest.add(_rename_displaced(walk, namespace, owner, pending))
    return harvest


def _project_of(component: Resource, namespace: str) -> str | None:
    """The project a component names (`spec.owner.projectName`); one that names none cannot be
    placed in the catalog, and is skipped (None) rather than failing the page it came in."""
    project = _spec_owner(component, "projectName")
    if project is not None:
        return project
    log.warning(
        "component_without_project",
        namespace=namespace,
        component=name_of(component, "component"),
        message="spec.owner.projectName is missing; the component is left out",
    )
    return None


def _rename_displaced(walk: Walk, namespace: str, owner: Owner, pending: Pending) -> Harvest:
    """A component that lost the plain name of one of its APIs, read again to move it."""
    component = owner[-1]
    path = f"/namespaces/{_segment(namespace)}/components/{_segment(component)}"
    try:
        resource = _object(walk.client.get_json(path), path)
    except NotFoundError:
        return Harvest()
    return component_harvest(
        walk, namespace, [resource], listed=False, pending=pending, displacing=False
    )


def _first_value(rows: Sequence[IndexEntry]) -> Mapping[str, Any] | None:
    """The first workload by name (rows come ordered by key, `<ns>/<workload>`)."""
    return rows[0].value if rows and isinstance(rows[0].value, Mapping) else None


def _hashed_name(owner: Owner, endpoint: str) -> str:
    project, component = owner
    triple = f"{project}/{component}/{endpoint}"
    return hashed_entity_name(f"{project}-{component}-{endpoint}", triple)


class V1Generation:
    """The v1 API as the traversal needs it."""

    name = "v1"
    max_limit = MAX_LIMIT
    phases: Sequence[Phase] = (_Namespaces(), _Projects(), _Workloads(), _Components())

    def list_page(
        self, client: OpenChoreoClient, path: str, *, limit: int, cursor: str | None
    ) -> ListPage:
        params: dict[str, str | int] = {"limit": min(limit, MAX_LIMIT)}
        if cursor is None:
            return parse_list(client.get_json(path, params), path)
        params["cursor"] = cursor
        try:
            body = client.get_json(path, params, expired_on=(500,))
        except CursorExpired:
            # v1 answers 500 for an expired cursor and for any other fault: once more tells
            # them apart, since an expired cursor keeps answering 500.
            body = client.get_json(path, params, expired_on=(500,))
        return parse_list(body, path)

    def event_problem(self, body: Mapping[str, Any]) -> str | None:
        kind, action, name = body.get("kind"), body.get("action"), body.get("name")
        if not isinstance(kind, str) or not KIND_NAME.fullmatch(kind):
            return f"kind {kind!r:.80} is not a resource kind (expected e.g. Component)"
        if action not in ACTIONS:
            return f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})"
        if not isinstance(name, str) or not KUBERNETES_NAME.fullmatch(name):
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
        """Re-read what the event names, whatever its action says (404: it is gone).

        A 403 says the object exists where this client may not look: the event forwarder posts
        the events of every namespace, and a role may cover only some. Such an event changes
        nothing (the walk, whose lists leave those objects out, settles the catalog); as an
        error it would hold up every event after it and then be parked.
        """
        try:
            return self._event_delta(walk, event)
        except AuthError as error:
            if error.status != 403:
                raise
            log.info(
                "event_not_visible",
                kind=event.kind,
                name=event.name,
                namespace=event.namespace,
                path=error.path,
            )
            return Delta()

    def _event_delta(self, walk: Walk, event: Event) -> Delta:
        if event.kind == "Namespace":
            return _namespace_delta(walk, event.name)
        namespace = event.namespace or ""
        if event.kind == "Project":
            return _project_delta(walk, namespace, event.name)
        if event.kind == "Component":
            return _component_delta(walk, namespace, event.name)
        if event.kind == "Workload":
            return _workload_delta(walk, namespace, event.name)
        return Delta()


def parse_list(body: Any, path: str) -> ListPage:
    """`{items, pagination: {nextCursor?}}`; a missing, null or empty cursor ends the listing.
    `items: null` is an empty page (Go writes an empty slice so); a body without `items` is not
    a v1 list."""
    items = body.get("items", ...) if isinstance(body, dict) else None
    if items is None and isinstance(body, dict):
        items = []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PermanentError(
            f"GET {path}: HTTP 200: the response has no list of items", path=path, status=200
        )
    pagination = body.get("pagination")
    next_cursor = pagination.get("nextCursor") if isinstance(pagination, dict) else None
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise PermanentError(f"GET {path}: HTTP 200: nextCursor is not a string", path=path)
    return ListPage(items=items, next_cursor=next_cursor or "")


def _namespace_delta(walk: Walk, namespace: str) -> Delta:
    path = f"/namespaces/{_segment(namespace)}"
    try:
        resource = _object(walk.client.get_json(path), path)
    except NotFoundError:
        return Delta(removal_scopes=[namespace])
    return Delta(upserts=[namespace_entity(resource, walk.config.mapping, walk.provider)])


def _project_delta(walk: Walk, namespace: str, project: str) -> Delta:
    path = f"/namespaces/{_segment(namespace)}/projects/{_segment(project)}"
    try:
        resource = _object(walk.client.get_json(path), path)
    except NotFoundError:
        return Delta(
            removal_scopes=[f"{namespace}/{project}"],
            index=[IndexEntry(PROJECT_OWNERS, f"{namespace}/{project}")],
        )
    entity = project_entity(resource, walk.config.mapping, walk.provider, namespace=namespace)
    return Delta(upserts=[entity], index=[_owner_row(namespace, resource)])


def _component_delta(walk: Walk, namespace: str, component: str) -> Delta:
    """The component as it is now, with its workloads read again (its APIs follow them)."""
    base = f"/namespaces/{_segment(namespace)}"
    workloads = _workloads_of(walk, namespace, component)
    try:
        resource = _object(walk.client.get_json(f"{base}/components/{_segment(component)}"), base)
    except NotFoundError:
        return _component_gone(walk, namespace, component, workloads)
    listed = [row for w in workloads if (row := _workload_row(namespace, w))]
    stale = _stale_workload_rows(walk, namespace, component, listed)
    project = _spec_owner(resource, "projectName") or ""
    system = _missing_project(walk, namespace, project)
    # The fresh rows are committed with the delta; the join must see them already.
    overlay = _with_rows(walk, [*listed, *system.index], stale)
    harvest = component_harvest(overlay, namespace, [resource], listed=False)
    return Delta(
        upserts=[*system.entities, *harvest.entities],
        removal_scopes=[f"{namespace}/{project}/{component}"],
        index=[*stale, *listed, *system.index, *harvest.index],
    )


def _missing_project(walk: Walk, namespace: str, project: str) -> Harvest:
    """The System (and owner row) of a component's project that the catalog does not hold yet:
    an event may name a component of a project that no cycle has listed."""
    key = f"{namespace}/{project}"
    if not project or walk.index.by_key(PROJECT_OWNERS, [key]):
        return Harvest()
    path = f"/namespaces/{_segment(namespace)}/projects/{_segment(project)}"
    try:
        resource = _object(walk.client.get_json(path), path)
    except NotFoundError:
        return Harvest()
    entity = project_entity(resource, walk.config.mapping, walk.provider, namespace=namespace)
    return Harvest(entities=[entity], index=[_owner_row(namespace, resource)])


def _workload_delta(walk: Walk, namespace: str, workload: str) -> Delta:
    path = f"/namespaces/{_segment(namespace)}/workloads/{_segment(workload)}"
    try:
        resource = _object(walk.client.get_json(path), path)
        component = _spec_owner(resource, "componentName")
    except NotFoundError:
        known = walk.index.by_key(WORKLOADS, [f"{namespace}/{workload}"])
        row = known.get(f"{namespace}/{workload}")
        component = row.group.partition("/")[2] if row is not None else None
    if component is None:
        return Delta(index=[IndexEntry(WORKLOADS, f"{namespace}/{workload}")])
    return _component_delta(walk, namespace, component)


def _workloads_of(walk: Walk, namespace: str, component: str) -> list[Resource]:
    """Every workload of one component: `?component=` pages (one page, as a rule)."""
    path = f"/namespaces/{_segment(namespace)}/workloads"
    found: list[Resource] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        params: dict[str, str | int] = {"component": component, "limit": MAX_LIMIT}
        if cursor:
            params["cursor"] = cursor
        page = parse_list(walk.client.get_json(path, params), path)
        found += page.items
        if not page.next_cursor:
            return found
        if page.next_cursor in seen or page.next_cursor == cursor:
            # Taken for the end, a cut-short list would remove the workloads it left out.
            raise PermanentError(
                f"GET {path} returned a cursor it had returned before; refusing to loop",
                method="GET",
                path=path,
            )
        seen.add(page.next_cursor)
        cursor = page.next_cursor


def _stale_workload_rows(
    walk: Walk, namespace: str, component: str, listed: Sequence[IndexEntry]
) -> list[IndexEntry]:
    """Deletions for the component's indexed workloads that it no longer has."""
    group = f"{namespace}/{component}"
    fresh = {row.key for row in listed}
    known = walk.index.by_group(WORKLOADS, [group])[group]
    return [IndexEntry(WORKLOADS, row.key) for row in known if row.key not in fresh]


def _component_gone(
    walk: Walk, namespace: str, component: str, workloads: Sequence[Resource]
) -> Delta:
    """A component that answered 404: it leaves with its APIs, its indexed workloads and its
    claims on API names (a component that lost a name to it gets it back at its next read)."""
    group = f"{namespace}/{component}"
    known = walk.index.by_group(WORKLOADS, [group])[group]
    owners = [*workloads, *(row.value for row in known if isinstance(row.value, Mapping))]
    projects = sorted({p for w in owners if (p := _spec_owner(w, "projectName"))})
    chosen = _first_value(known)
    claims = [
        claim_key(
            ApiClaim(
                namespace=namespace_name(namespace),
                owner=(project, component),
                endpoint=endpoint,
                plain=v1_api_entity_name(project, component, endpoint),
            )
        )
        for project in projects
        for endpoint in api_endpoint_names(chosen, walk.config.mapping)
    ]
    return Delta(
        removals=[entity_ref("Component", namespace_name(namespace), entity_name(component))],
        removal_scopes=[f"{namespace}/{project}/{component}" for project in projects],
        index=[
            *(IndexEntry(WORKLOADS, row.key) for row in known),
            *(IndexEntry(CLAIMS, key) for key in claims),
        ],
    )


class _OverlayIndex:
    """The walk's index with rows a delta is about to write laid over it."""

    def __init__(self, walk: Walk, rows: Sequence[IndexEntry], removed: Sequence[IndexEntry]):
        self._index = walk.index
        self._rows = list(rows)
        self._removed = {(row.table, row.key) for row in removed}

    def by_key(self, table: str, keys: Sequence[str]) -> dict[str, IndexEntry]:
        found = self._index.by_key(table, keys)
        for row in self._rows:
            if row.table == table and row.key in keys:
                found[row.key] = row
        return {k: v for k, v in found.items() if (table, k) not in self._removed}

    def by_group(
        self, table: str, groups: Sequence[str], *, current_only: bool = False
    ) -> dict[str, list[IndexEntry]]:
        found = self._index.by_group(table, groups, current_only=current_only)
        for group in groups:
            mine = {row.key: row for row in self._rows if row.table == table and row.group == group}
            kept = [
                r for r in found[group] if (table, r.key) not in self._removed and r.key not in mine
            ]
            found[group] = sorted([*kept, *mine.values()], key=lambda row: row.key)
        return found


def _with_rows(walk: Walk, rows: Sequence[IndexEntry], removed: Sequence[IndexEntry]) -> Walk:
    overlay = _OverlayIndex(walk, rows, removed)
    return Walk(walk.client, walk.queues, overlay, walk.config, walk.provider)


V1 = V1Generation()
