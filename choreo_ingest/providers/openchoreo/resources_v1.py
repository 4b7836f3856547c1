"""What the v1 API's resources become: list bodies read, index rows, Component and API entities.

Shared by the walk (`api_v1`) and the events (`events_v1`): a page of a listing (`read_page`),
a list body's items and cursor (`parse_list`), the rows the lookup index keeps (a project's
owner, a workload by component), and the entities of a page of components, each joined with its
first workload by name and with its project's owner (`component_harvest`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from choreo_ingest.errors import AuthError, CursorExpired, NotFoundError, PermanentError
from choreo_ingest.logs import get_logger
from choreo_ingest.models import IndexEntry, entity_ref
from choreo_ingest.providers.openchoreo.api_names import (
    ApiClaim,
    ClaimKey,
    Owner,
    Pending,
    predicted_names,
    resolve_api_names,
)
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient
from choreo_ingest.providers.openchoreo.data_warnings import data_warning
from choreo_ingest.providers.openchoreo.entities_v1 import (
    api_endpoint_names,
    api_endpoints,
    component_entities,
    dependencies,
    project_owner,
    trim_workload,
)
from choreo_ingest.providers.openchoreo.generation import (
    Harvest,
    ListPage,
    Resource,
    Walk,
    name_of,
)
from choreo_ingest.providers.openchoreo.mapping_common import as_mapping
from choreo_ingest.providers.openchoreo.naming import (
    hashed_entity_name,
    namespace_name,
    v1_api_entity_name,
)

log = get_logger("choreo_ingest.providers.openchoreo")

PROJECT_OWNERS = "project"
"""Index: `<ns>/<project>` -> {owner}: the project's owner annotation, for its components."""
WORKLOADS = "workload"
"""Index: `<ns>/<workload>` grouped by `<ns>/<component>` -> the trimmed workload."""
MAX_LIMIT = 100


def segment(value: str) -> str:
    return quote(value, safe="")


def as_object(body: Any, path: str) -> Resource:
    if not isinstance(body, dict):
        raise PermanentError(f"GET {path}: HTTP 200: the response is not an object", path=path)
    return body


def spec_owner(resource: Mapping[str, Any], key: str) -> str | None:
    value = as_mapping(as_mapping(resource.get("spec")).get("owner")).get(key)
    return value if isinstance(value, str) and value else None


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


def read_page(
    client: OpenChoreoClient, path: str, params: Mapping[str, str | int], cursor: str | None
) -> ListPage:
    """One page of a listing (the walk's, an event's); CursorExpired when a request that carried
    a cursor answers 500 twice in a row. v1 answers 500 for an expired cursor and for any other
    fault: once more tells a passing fault apart, since an expired cursor keeps answering 500
    (as does a resource the server fails on, which the traversal tells by where it fails)."""
    if cursor is None:
        return parse_list(client.get_json(path, params), path)
    params = {**params, "cursor": cursor}
    try:
        body = client.get_json(path, params, expired_on=(500,))
    except CursorExpired:
        body = client.get_json(path, params, expired_on=(500,))
    return parse_list(body, path)


def owner_row(namespace: str, project: Resource) -> IndexEntry:
    name = name_of(project, "project")
    return IndexEntry(PROJECT_OWNERS, f"{namespace}/{name}", "", {"owner": project_owner(project)})


def workload_row(namespace: str, workload: Resource) -> IndexEntry | None:
    """The workload as the index keeps it; None for one that names no component."""
    component = spec_owner(workload, "componentName")
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
    else the index as it stands) and with its project's owner. A component whose project is not
    in the index (`listed`: not listed in this cycle) is left out: its System would not exist,
    and Backstage takes a ref to a missing entity for an error (OpenChoreo's own provider lists
    components project by project, so it never sees one either)."""
    pending = {} if pending is None else pending
    mapping = walk.config.mapping
    named = [(c, p) for c in components if (p := _project_of(c, namespace)) is not None]
    projects = sorted({project for _, project in named})
    owners = walk.index.by_key(
        PROJECT_OWNERS, [f"{namespace}/{p}" for p in projects], current_only=listed
    )
    placed = [(c, p) for c, p in named if _project_known(c, namespace, p, owners)]
    names = [name_of(component, "component") for component, _ in placed]
    workloads = walk.index.by_group(
        WORKLOADS, [f"{namespace}/{name}" for name in names], current_only=listed
    )
    chosen = {name: first_workload(workloads[f"{namespace}/{name}"]) for name in names}
    endpoints = {name: api_endpoints(chosen[name], mapping) for name in names}
    claims = [
        api_claim(namespace, project, name, endpoint)
        for (_, project), name in zip(placed, names, strict=True)
        for endpoint, _, _ in endpoints[name]
    ]
    api_names, harvest, displaced, lost = resolve_api_names(
        walk, claims, _hashed_name, pending, whole=True
    )
    consumed = _consumed_apis(walk, namespace, placed, names, chosen, api_names, pending, listed)
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
            endpoints=endpoints[name],
            consumes=consumed.get(name, ()),
        )
    for owner in displaced if displacing else ():
        harvest.add(_rename_displaced(walk, namespace, owner, pending, listed=listed))
    harvest.removals += lost_api_refs(namespace, lost)
    return harvest


def lost_api_refs(namespace: str, lost: Sequence[tuple[ClaimKey, ClaimKey]]) -> list[str]:
    """The refs of the APIs that lost their plain names (`resolve_api_names`), less those that
    are their holders' own refs: names that meet exactly (`a-b`/`c`, `a`/`b-c`), not in case."""
    return [
        _api_ref(namespace, *key)
        for key, holder in lost
        if _api_ref(namespace, *key) != _api_ref(namespace, *holder)
    ]


def _consumed_apis(
    walk: Walk,
    namespace: str,
    placed: Sequence[tuple[Resource, str]],
    names: Sequence[str],
    chosen: Mapping[str, Mapping[str, Any] | None],
    api_names: Mapping[ClaimKey, str],
    pending: Pending,
    listed: bool,
) -> dict[str, list[str]]:
    """Per component, the refs of the APIs its workload's `dependencies` name, as OpenChoreo's
    own provider finds them: a component of the namespace (in the dependency's project, else the
    consumer's) whose first workload maps that endpoint to an API, its project listed. A
    dependency on anything else (no such workload or project, no schema) gives no ref. The API
    is named as its own page names it: decided in this page, else as its stored claims say
    (`predicted_names`)."""
    wanted = {
        name: [(owner or project, target, endpoint) for owner, target, endpoint in needed]
        for (_, project), name in zip(placed, names, strict=True)
        if (needed := dependencies(chosen[name]))
    }
    if not wanted:
        return {}
    targets = {target for needed in wanted.values() for _, target, _ in needed}
    read = sorted(targets - chosen.keys())
    rows = walk.index.by_group(WORKLOADS, [f"{namespace}/{t}" for t in read], current_only=listed)
    workloads = {**{t: first_workload(rows[f"{namespace}/{t}"]) for t in read}, **chosen}
    projects = sorted({f"{namespace}/{project}" for n in wanted.values() for project, _, _ in n})
    known = walk.index.by_key(PROJECT_OWNERS, projects, current_only=listed)
    mapping = walk.config.mapping
    provided = {
        (project, target, endpoint)
        for needed in wanted.values()
        for project, target, endpoint in needed
        if f"{namespace}/{project}" in known
        and spec_owner(workloads[target] or {}, "projectName") == project
        and endpoint in api_endpoint_names(workloads[target], mapping)
    }
    # Every API endpoint of each target, so that its claims on endpoints gone decide nothing,
    # as when its own page names them (`resolve_api_names`, `whole`).
    elsewhere = [
        ApiClaim(namespace_name(namespace), owner, endpoint, v1_api_entity_name(*owner, endpoint))
        for owner in sorted({key[:2] for key in provided - api_names.keys()})
        for endpoint in api_endpoint_names(workloads[owner[1]], mapping)
    ]
    found = {**predicted_names(walk, elsewhere, _hashed_name, pending, whole=True), **api_names}
    prefix = f"api:{namespace_name(namespace)}/"
    return {
        name: [prefix + found[key] for key in needed if key in provided]
        for name, needed in wanted.items()
    }


def _project_of(component: Resource, namespace: str) -> str | None:
    """The project a component names (`spec.owner.projectName`); one that names none cannot be
    placed in the catalog, and is skipped (None) rather than failing the page it came in."""
    project = spec_owner(component, "projectName")
    if project is not None:
        return project
    name = name_of(component, "component")
    data_warning(
        "component_without_project",
        f"Component {namespace}/{name}",
        namespace=namespace,
        component=name,
        message="spec.owner.projectName is missing; the component is left out",
    )
    return None


def _project_known(
    component: Resource, namespace: str, project: str, owners: Mapping[str, IndexEntry]
) -> bool:
    if f"{namespace}/{project}" in owners:
        return True
    log.info(
        "component_of_unlisted_project",
        namespace=namespace,
        component=name_of(component, "component"),
        project=project,
        message="its project is not listed; the component is left out until it is",
    )
    return False


def _rename_displaced(
    walk: Walk, namespace: str, owner: Owner, pending: Pending, *, listed: bool
) -> Harvest:
    """A component that lost the plain name of one of its APIs, read again to move it (joined
    as the page that displaced it is: `listed`, only with what this cycle listed). Gone (404),
    or no longer readable by this client (403: the lists leave it out too), it is left to the
    sweep."""
    component = owner[-1]
    path = f"/namespaces/{segment(namespace)}/components/{segment(component)}"
    try:
        resource = as_object(walk.client.get_json(path), path)
    except NotFoundError:
        return Harvest()
    except AuthError as error:
        if not error.object_hidden:
            raise
        return Harvest()
    return component_harvest(
        walk, namespace, [resource], listed=listed, pending=pending, displacing=False
    )


def _api_ref(namespace: str, project: str, component: str, endpoint: str) -> str:
    """The ref of an endpoint's API under its plain name."""
    plain = v1_api_entity_name(project, component, endpoint)
    return entity_ref("API", namespace_name(namespace), plain)


def api_claim(namespace: str, project: str, component: str, endpoint: str) -> ApiClaim:
    """A component's claim on the plain name of its endpoint's API."""
    plain = v1_api_entity_name(project, component, endpoint)
    return ApiClaim(namespace_name(namespace), (project, component), endpoint, plain, namespace)


def first_workload(rows: Sequence[IndexEntry]) -> Mapping[str, Any] | None:
    """The first workload by name (rows come ordered by key, `<ns>/<workload>`)."""
    return rows[0].value if rows and isinstance(rows[0].value, Mapping) else None


def _hashed_name(owner: Owner, endpoint: str) -> str:
    project, component = owner
    triple = f"{project}/{component}/{endpoint}"
    return hashed_entity_name(f"{project}-{component}-{endpoint}", triple)
