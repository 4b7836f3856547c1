"""The organization-era OpenChoreo API (`openchoreo-api.md`): the seed's design, no release.

    orgs        GET /orgs                                   -> Domain entities, push each org
    projects    per queued org: GET /orgs/{org}/projects    -> System entities, push each project
    components  per queued project: GET .../components, then one detail call per component
                (`include=type,workload`)                   -> Component + API entities

Envelope `{success, data}`; a listing ends at `nextCursor == ""`, and a server that sends no
`nextCursor` at all does not paginate and is refused. 410 (and a 400 on a request that carried a
cursor) means the cursor is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from choreo_ingest.errors import CursorRejected, NotFoundError, PermanentError
from choreo_ingest.models import Delta, Event, IndexEntry, QueuedItem, QueueItem, entity_ref
from choreo_ingest.providers.openchoreo.api_names import (
    ApiClaim,
    Owner,
    Pending,
    names_handed_on,
    resolve_api_names,
)
from choreo_ingest.providers.openchoreo.claimed_orgs import (
    claimed_projects,
    claimed_rows,
    released,
    released_in,
)
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient
from choreo_ingest.providers.openchoreo.entities import (
    api_entity_name,
    component_entities,
    endpoint_names,
    organization_entity,
    organization_namespace,
    project_entity,
)
from choreo_ingest.providers.openchoreo.generation import (
    KUBERNETES_NAME,
    Harvest,
    ListPage,
    Phase,
    Resource,
    Walk,
    confirm_gone,
    event_page_size,
    every_item,
    org_era_name_of,
    queued_text,
    scope_projects,
)
from choreo_ingest.providers.openchoreo.index_overlay import with_rows
from choreo_ingest.providers.openchoreo.many_reads import Gone
from choreo_ingest.providers.openchoreo.naming import entity_name, hashed_entity_name

ORG_QUEUE = "orgs"
PROJECT_QUEUE = "projects"
PROJECTS = "project"
"""Index: `<org>/<project>` for every project a cycle listed or an event read."""
DETAIL_PARAMS = {"include": "type,workload"}
KINDS = ("Organization", "Project", "Component")
ACTIONS = ("created", "updated", "deleted")
NOT_FOUND_CODES = ("ORGANIZATION_NOT_FOUND", "PROJECT_NOT_FOUND", "COMPONENT_NOT_FOUND")
"""The codes of the API's own 404s (`openchoreo-api.md`); its `NOT_FOUND` is a route it lacks."""
_SCOPE_KEYS = {"Organization": (), "Project": ("namespace",), "Component": ("namespace",)}
"""Keys an event of each kind needs besides `name`; a Component's `project` is optional."""


def _segment(value: str) -> str:
    return quote(value, safe="")


def unwrap(body: Any, path: str) -> dict[str, Any]:
    """The `data` object of an org-era envelope."""
    if not isinstance(body, dict) or "data" not in body or body.get("success") is False:
        raise PermanentError(
            f"GET {path}: response is not an OpenChoreo envelope", method="GET", path=path
        )
    data = body["data"]
    if not isinstance(data, dict):
        raise PermanentError(f"GET {path}: data is not an object", method="GET", path=path)
    return data


def get_object(
    client: OpenChoreoClient, path: str, params: Mapping[str, str] | None = None
) -> Resource:
    return unwrap(client.get_json(path, params), path)


@dataclass(frozen=True)
class _Orgs:
    name: str = "orgs"
    queue: str | None = None
    follows_previous: bool = False

    def path(self, item: QueuedItem | None) -> str:
        return "/orgs"

    def scope(self, item: QueuedItem) -> str:
        raise AssertionError("the root listing is never stepped over")

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        harvest = Harvest()
        for org in resources:
            name = org_era_name_of(org, "/orgs")
            harvest.entities.append(organization_entity(org, walk.config.mapping, walk.provider))
            harvest.queue_items.append(QueueItem(ORG_QUEUE, name, {"name": name}))
        return harvest


@dataclass(frozen=True)
class _Projects:
    name: str = "projects"
    queue: str | None = ORG_QUEUE
    follows_previous: bool = False

    def path(self, item: QueuedItem | None) -> str:
        return f"/orgs/{_segment(queued_text(item, 'name'))}/projects"

    def scope(self, item: QueuedItem) -> str:
        return queued_text(item, "name")

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        org = queued_text(item, "name")
        harvest = Harvest()
        for project in resources:
            name = org_era_name_of(project, self.path(item))
            harvest.entities.append(
                project_entity(project, org, walk.config.mapping, walk.provider)
            )
            harvest.queue_items.append(
                QueueItem(PROJECT_QUEUE, f"{org}/{name}", {"org": org, "project": name})
            )
            harvest.index.append(_project_row(org, name))
        return harvest


@dataclass(frozen=True)
class _Components:
    name: str = "components"
    queue: str | None = PROJECT_QUEUE
    follows_previous: bool = False

    def path(self, item: QueuedItem | None) -> str:
        org, project = queued_text(item, "org"), queued_text(item, "project")
        return f"/orgs/{_segment(org)}/projects/{_segment(project)}/components"

    def scope(self, item: QueuedItem) -> str:
        # The organization's: the claims on API names (`api_names`) are the org's, keyed
        # `<org>/<plain>|<project>/...`, and a project's kept APIs need theirs.
        return queued_text(item, "org")

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        org, project = queued_text(item, "org"), queued_text(item, "project")
        path = self.path(item)
        names = [org_era_name_of(component, path) for component in resources]
        details = walk.client.get_many(
            [(f"{path}/{_segment(name)}", DETAIL_PARAMS) for name in names]
        )
        found = [unwrap(detail, path) for detail in details if not _deleted(detail)]
        return component_harvest(walk, org, project, found)


def _deleted(detail: object) -> bool:
    """Whether a component's detail read found it deleted while walked (the document's
    `COMPONENT_NOT_FOUND`). A 404 in another shape fails the burst (`confirm_gone`): something in
    front of the API without the route, and leaving the component out would have the sweep
    remove it."""
    if not isinstance(detail, Gone):
        return False
    if detail.error is not None:
        confirm_gone(detail.error, NOT_FOUND_CODES)
    return True


def _project_row(org: str, project: str) -> IndexEntry:
    return IndexEntry(PROJECTS, f"{org}/{project}", "", True)


def _missing_project(walk: Walk, org: str, project: str) -> Harvest:
    """The System of a component's project that no cycle has listed yet (an event may name a
    component of a new project before the project's own event is applied)."""
    if walk.index.by_key(PROJECTS, [f"{org}/{project}"]):
        return Harvest()
    try:
        found = get_object(walk.client, f"/orgs/{_segment(org)}/projects/{_segment(project)}")
    except NotFoundError:
        return Harvest()
    entity = project_entity(found, org, walk.config.mapping, walk.provider)
    return Harvest(entities=[entity], index=[_project_row(org, project)])


def component_harvest(
    walk: Walk,
    org: str,
    project: str,
    details: Sequence[Resource],
    pending: Pending | None = None,
    *,
    displacing: bool = True,
) -> Harvest:
    """Component and API entities of these component details, API names resolved against every
    other component's claims (two endpoints never share a ref)."""
    pending = {} if pending is None else pending
    claims = [
        ApiClaim(
            namespace=organization_namespace(org),
            owner=(project, org_era_name_of(detail, "component")),
            endpoint=endpoint,
            plain=api_entity_name(org_era_name_of(detail, "component"), endpoint),
            origin=org,
        )
        for detail in details
        for endpoint in endpoint_names(detail)
    ]
    names, harvest, displaced, _ = resolve_api_names(
        walk, claims, _hashed_name, pending, whole=True, identity=_component_of
    )
    harvest.index += claimed_rows(org, claims)
    for detail in details:
        harvest.entities += component_entities(
            detail,
            org,
            project,
            walk.config.mapping,
            walk.provider,
            api_name=lambda component, endpoint: names[(project, component, endpoint)],
        )
    # A lost plain name is the winner's too (org-era names have no capitals): the winner's
    # entity takes its ref, and nothing is left to remove.
    for project_name, component in displaced if displacing else ():
        path = f"/orgs/{_segment(org)}/projects/{_segment(project_name)}/components/"
        try:
            detail = get_object(walk.client, path + _segment(component), DETAIL_PARAMS)
        except NotFoundError:
            continue
        harvest.add(component_harvest(walk, org, project_name, [detail], pending, displacing=False))
    return harvest


def _component_of(owner: tuple[str, ...]) -> tuple[str, ...]:
    """A claim's owner as one component: its name is unique in its org, in whichever project."""
    return owner[-1:]


def _hashed_name(owner: tuple[str, ...], endpoint: str) -> str:
    return hashed_entity_name(f"{owner[-1]}-{endpoint}", "/".join((*owner, endpoint)))


class OrgsGeneration:
    """The org-era API as the traversal needs it."""

    name = "orgs"
    gone_codes = NOT_FOUND_CODES
    phases: Sequence[Phase] = (_Orgs(), _Projects(), _Components())

    def list_page(
        self, client: OpenChoreoClient, path: str, *, limit: int, cursor: str | None
    ) -> ListPage:
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        params["pagination"] = "cursor"
        try:
            body = client.get_json(path, params, expired_on=(410,))
        except PermanentError as error:
            if cursor is None or error.status != 400:
                raise
            # INVALID_CURSOR_FORMAT or INVALID_INPUT: the cursor, since the rest was sent before.
            raise CursorRejected(
                str(error), method=error.method, path=error.path, status=400, code=error.code
            ) from None
        data = unwrap(body, path)
        items = data.get("items", ...)
        if items is None:  # Go writes an empty slice so
            items = []
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise PermanentError(
                f"GET {path}: HTTP 200: response data has no list of items", path=path, status=200
            )
        next_cursor = data.get("nextCursor")
        if next_cursor is None:
            raise PermanentError(
                f"the OpenChoreo API at {client.base_url} does not support cursor pagination "
                f"(no nextCursor in GET {path})",
                method="GET",
                path=path,
                status=200,
            )
        if not isinstance(next_cursor, str):
            raise PermanentError(f"GET {path}: HTTP 200: nextCursor is not a string", path=path)
        return ListPage(items=items, next_cursor=next_cursor)

    def event_problem(self, body: Mapping[str, Any]) -> str | None:
        kind, action = body.get("kind"), body.get("action")
        if kind not in KINDS:
            return f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})"
        if action not in ACTIONS:
            return f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})"
        for key in ("name", *_SCOPE_KEYS[str(kind)], "project"):
            value = body.get(key)
            if key == "project" and (kind != "Component" or value is None):
                continue
            if not isinstance(value, str) or not value.strip():
                return f"{kind} event needs a non-empty {key!r}"
            if not KUBERNETES_NAME.fullmatch(value):
                return (
                    f"{key} {value!r:.80} is not an OpenChoreo name (lowercase a-z, 0-9, '-', '.')"
                )
        return None

    def is_ignored(self, body: Mapping[str, Any]) -> bool:
        return False

    def read_ahead(self, walk: Walk, events: Sequence[Event]) -> None:
        """Nothing: an org-era event reads one component's detail, as the walk does."""

    def event_delta(self, walk: Walk, event: Event) -> Delta:
        """What the catalog must do for `event`; the API's 404 on re-read means the resource is
        gone (a 404 in another shape fails the event: `confirm_gone`)."""
        mapping, provider = walk.config.mapping, walk.provider
        if event.kind == "Organization":
            if event.action == "deleted":
                return _scope_gone(walk, event.name)
            try:
                org = get_object(walk.client, f"/orgs/{_segment(event.name)}")
            except NotFoundError as missing:
                confirm_gone(missing, NOT_FOUND_CODES)
                return _scope_gone(walk, event.name)
            return Delta(upserts=[organization_entity(org, mapping, provider)])
        org_name = _required(event.namespace, event, "namespace")
        org_path = f"/orgs/{_segment(org_name)}"
        if event.kind == "Project":
            scope = f"{org_name}/{event.name}"
            if event.action == "deleted":
                return _scope_gone(walk, org_name, event.name)
            try:
                project = get_object(walk.client, f"{org_path}/projects/{_segment(event.name)}")
            except NotFoundError as missing:
                confirm_gone(missing, NOT_FOUND_CODES)
                gone = _scope_gone(walk, org_name, event.name)
                return Delta(index=[IndexEntry(PROJECTS, scope)]).then(gone)
            entity = project_entity(project, org_name, mapping, provider)
            return Delta(upserts=[entity], index=[_project_row(org_name, event.name)])
        if not event.project:
            found = _component_in_some_project(walk, org_name, event)
        elif event.action == "deleted":
            # Read nothing, unless the catalog holds it in another project (`_component_gone`).
            found = _component_gone(walk, org_name, event.project, event.name)
        else:
            found = _component_mapped(walk, org_name, event.project, event.name)
        done = Delta(index=released(walk, org_name, event.name)).then(found)

        return names_handed_on(walk, done, _taker_back(walk, org_name))


def _taker_back(walk: Walk, org: str) -> Callable[[Owner, Delta], Delta]:
    """`names_handed_on`'s `take_back`: the owner's claims released, and the owner mapped again,
    on the rows `done` will have written."""

    def take_back(owner: Owner, done: Delta) -> Delta:
        overlay = with_rows(walk, done.index)
        freed = Delta(index=released(overlay, org, owner[-1]))
        return done.then(freed.then(_component_mapped(overlay, org, *owner)))

    return take_back


def _scope_gone(walk: Walk, org: str, project: str | None = None) -> Delta:
    """An organization (a project of it) gone with its components, whose claims on API names
    go too: a component of another project that waits on a name one of them held takes it now
    (`names_handed_on`), not at the sweep."""
    done = Delta(
        removal_scopes=[org if project is None else f"{org}/{project}"],
        index=released_in(walk, org, project),
    )
    return names_handed_on(walk, done, _taker_back(walk, org))


def _component_mapped(walk: Walk, org: str, project: str, component: str) -> Delta:
    """The component read again in `project`, or gone from it (`_component_gone`)."""
    found = _component_delta(walk, org, project, component)
    return found if found is not None else _component_gone(walk, org, project, component)


def _component_delta(walk: Walk, org: str, project: str, component: str) -> Delta | None:
    """The component read again with its endpoints; None when it answers 404.

    A component's name is unique in its org, so one the catalog holds in another project was
    made again in this one (a move): the APIs it had there go with this event (its claims
    there on the names it still has go with its harvest: `_component_of`). Else they would stay
    until the cycle's end whenever the `deleted` event about the project it left does not
    apply: two events without `project` are one object to the inbox, which keeps only the
    newest, and an event can be lost."""
    path = f"/orgs/{_segment(org)}/projects/{_segment(project)}/components/{_segment(component)}"
    try:
        detail = get_object(walk.client, path, DETAIL_PARAMS)
    except NotFoundError as missing:
        confirm_gone(missing, NOT_FOUND_CODES)
        return None
    left = [p for p in _stored_projects(walk, org, component) if p != project]
    harvest = _missing_project(walk, org, project)
    harvest.add(component_harvest(walk, org, project, [detail]))
    scopes = [f"{org}/{p}/{component}" for p in [project, *left]]
    return Delta(upserts=harvest.entities, removal_scopes=scopes, index=harvest.index)


def _component_gone(walk: Walk, org: str, project: str, component: str) -> Delta:
    """A component that answered 404 in `project`, or was deleted there: what it had there
    goes. Where the catalog holds it in another project (a move whose `deleted` did not apply),
    it is read there: mapped there if it is there, else it goes from there as well."""
    gone = Delta(removal_scopes=[f"{org}/{project}/{component}"])
    other = next((p for p in _stored_projects(walk, org, component) if p != project), None)
    if other is None:
        return gone
    found = _component_delta(walk, org, other, component)
    if found is not None:
        return gone.then(found)
    return Delta(removal_scopes=[*gone.removal_scopes, f"{org}/{other}/{component}"])


def _stored_projects(walk: Walk, org: str, component: str) -> list[str]:
    """The project the catalog holds the component in (its Component's scope), if any, then
    those it made claims in (`claimed_projects`): a walk's page that lists it made again in
    another project writes its Component over, not the APIs it had in the one it left."""
    ref = entity_ref("Component", organization_namespace(org), entity_name(component))
    held = sorted(scope_projects(walk.index, ref, org, component))
    return held + [p for p in claimed_projects(walk, org, component) if p not in held]


def _component_in_some_project(walk: Walk, org: str, event: Event) -> Delta:
    """A Component event without `project` (the document makes it optional). A component's name
    is unique in its org (a Kubernetes name in the org's namespace), so it is read in each of
    the org's projects until one has it; gone from all (or `deleted`), it leaves whichever
    project it was in."""
    projects = _project_names(walk, org)
    if event.action != "deleted":
        for project in projects:
            delta = _component_delta(walk, org, project, event.name)
            if delta is not None:
                return delta
    # Where the catalog holds it too: its project may be gone with no event about it yet.
    held = [p for p in _stored_projects(walk, org, event.name) if p not in projects]
    return Delta(removal_scopes=[f"{org}/{project}/{event.name}" for project in [*projects, *held]])


def _project_names(walk: Walk, org: str) -> list[str]:
    """The names of an org's projects, every page (`every_item`): none when the org answers the
    API's own 404 (it is gone); a 404 in another shape fails the event, and an expired cursor
    (410) restarts the listing from its first page, as the walk does. Its pages are as large as
    the walk's (`event_page_size`)."""
    path = f"/orgs/{_segment(org)}/projects"
    limit = event_page_size(walk, OrgsGeneration.name)

    def read(cursor: str | None) -> ListPage:
        return ORGS.list_page(walk.client, path, limit=limit, cursor=cursor)

    projects = every_item(read, path, gone_codes=NOT_FOUND_CODES, missing_is_empty=True)
    return [org_era_name_of(project, path) for project in projects]


def _required(value: str | None, event: Event, key: str) -> str:
    if not value:
        raise PermanentError(f"{event.kind} event for {event.name!r} has no {key!r}")
    return value


ORGS = OrgsGeneration()
