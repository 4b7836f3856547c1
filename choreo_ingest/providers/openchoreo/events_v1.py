"""v1 events: the event forwarder's `{kind, name, namespace, action}`, applied as a delta.

Each event re-reads what it names, whatever its `action` says (the forwarder does not say what
changed): the API's 404 (`code: NOT_FOUND`) means gone, and the entity leaves with everything
below it; a 404 in another shape (a proxy's) fails the event, which is tried again. A workload event
recomputes its component's APIs, and those of the component the indexed workload -> component
link names (the workload answers 404, or was made again for another); a project event whose
owner changed maps its components again, since those without an owner of their own take the
project's. Namespace events: `events_namespace_v1`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from choreo_ingest.errors import AuthError
from choreo_ingest.logs import get_logger
from choreo_ingest.models import Delta, Event, IndexEntry, entity_ref
from choreo_ingest.providers.openchoreo.api_names import CLAIMS, claim_key, names_handed_on
from choreo_ingest.providers.openchoreo.entities_v1 import (
    api_endpoint_names,
    namespace_entity,
    project_entity,
)
from choreo_ingest.providers.openchoreo.event_reads_v1 import (
    listed_items,
    listing_path,
    namespace_path,
    object_path,
    read_object,
)
from choreo_ingest.providers.openchoreo.events_namespace_v1 import (
    claims_released,
    namespace_delta,
    namespace_gone,
    served_namespace,
)
from choreo_ingest.providers.openchoreo.generation import (
    Harvest,
    Resource,
    Walk,
    scope_projects,
)
from choreo_ingest.providers.openchoreo.index_overlay import stored, with_rows
from choreo_ingest.providers.openchoreo.listed_first import (
    left_for,
    moved_away,
    moved_done,
    owner_change_done,
    owner_change_listed,
    owners_changed,
)
from choreo_ingest.providers.openchoreo.naming import (
    entity_name,
    namespace_name,
)
from choreo_ingest.providers.openchoreo.resources_v1 import (
    PROJECT_OWNERS,
    WORKLOADS,
    api_claim,
    component_harvest,
    owner_row,
    spec_owner,
    workload_row,
)

log = get_logger("choreo_ingest.providers.openchoreo")

INGESTED_KINDS = ("Namespace", "Project", "Component", "Workload")


def event_delta(walk: Walk, event: Event) -> Delta:
    """The delta of one event of an ingested kind.

    A 403 says the object exists where this client may not look: the event forwarder posts
    the events of every namespace OpenChoreo serves, and a role may cover only some. Such an
    event changes nothing but a deletion (the walk, whose lists leave those objects out, settles
    the catalog); as an error it would hold up every event after it and then be parked."""
    try:
        return _delta(walk, event)
    except AuthError as error:
        if not error.object_hidden:
            raise
        gone = _deleted_behind_roles(walk, event, error)
        log.info(
            "event_not_visible",
            kind=event.kind,
            name=event.name,
            namespace=event.namespace,
            path=error.path,
            taken_for_gone=gone is not None,
        )
        return Delta() if gone is None else gone


def _deleted_behind_roles(walk: Walk, event: Event, error: AuthError) -> Delta | None:
    """The delta of a deleted Namespace or Project whose own read answered 403, or None.

    OpenChoreo checks a namespace's or project's read against the caller's roles before it looks
    the object up, so one deleted with the role binding that let this client see it (a
    namespace's own binding goes with the namespace) answers 403, not 404. The forwarder said
    it was deleted, and hidden or gone, the walk leaves it out: it goes, as at a 404."""
    namespace, name = event.namespace or "", event.name
    if event.action == "deleted" and event.kind == "Namespace":
        return namespace_gone(walk, name) if error.path == namespace_path(name) else None
    if event.action == "deleted" and event.kind == "Project":
        own = error.path == object_path(namespace, "projects", name)
        return _project_gone(walk, namespace, name) if own else None
    return None


def _delta(walk: Walk, event: Event) -> Delta:
    if event.kind == "Namespace":
        return namespace_delta(walk, event.name)
    namespace = event.namespace or ""
    if event.kind == "Project":
        return _project_delta(walk, namespace, event.name)
    if event.kind == "Component":
        return _component_event_delta(walk, namespace, event.name)
    if event.kind == "Workload":
        return _workload_delta(walk, namespace, event.name)
    return Delta()


def _project_delta(walk: Walk, namespace: str, project: str) -> Delta:
    resource = read_object(walk, object_path(namespace, "projects", project))
    if resource is None:
        return _project_gone(walk, namespace, project)
    entity = project_entity(resource, walk.config.mapping, walk.provider, namespace=namespace)
    row = owner_row(namespace, resource)
    # Only a row this cycle wrote vouches for the namespace: one from an earlier cycle may
    # outlive it (its label taken off: the Namespace event removed its entities, not its rows).
    known = walk.index.by_key(PROJECT_OWNERS, [row.key], current_only=True).get(row.key)
    listed_change = owner_change_listed(walk, row.key)  # by a page before this event
    domain = Harvest()
    if known is None:
        served = _namespace_domain(walk, namespace)
        if served is None:
            return Delta(
                removal_scopes=[f"{namespace}/{project}"],
                index=[IndexEntry(PROJECT_OWNERS, row.key)],
            )
        domain = served
    elif known.value == row.value and not listed_change:
        return Delta(upserts=[*domain.entities, entity], index=[row])
    # New to the catalog (its components were left out), or its owner changed (its components
    # without an owner of their own take the project's): map its components again.
    components = _listed(walk, namespace, "components", project=project)
    harvest = component_harvest(with_rows(walk, [row]), namespace, components, listed=False)
    forget = [owner_change_done(row.key)] if listed_change else []
    return Delta(
        upserts=[*domain.entities, entity, *harvest.entities],
        removals=harvest.removals,
        index=[row, *harvest.index, *forget],
    )


def _project_gone(walk: Walk, namespace: str, project: str) -> Delta:
    """The project leaves with its components, and their claims on API names: a component of
    another project that waits on a name one of them held takes it now (`names_handed_on`),
    as when a Component event says one is gone, not at the sweep."""
    key = f"{namespace}/{project}"
    released = claims_released(walk, namespace, project)
    done = Delta(removal_scopes=[key], index=[IndexEntry(PROJECT_OWNERS, key), *released])
    mapped: set[str] = set()

    def take_back(owner: tuple[str, ...], done: Delta) -> Delta:
        return _taken_back(walk, namespace, owner[-1], done, mapped)

    return names_handed_on(walk, done, take_back)


def _component_delta(walk: Walk, namespace: str, component: str) -> Delta:
    """The component as it is now, with its workloads read again (its APIs follow them)."""
    path = object_path(namespace, "components", component)
    resource = read_object(walk, path)
    if resource is None:
        workloads = _workloads_of(walk, namespace, component, gone=True)
        return _component_gone(walk, namespace, component, workloads)
    workloads = _workloads_of(walk, namespace, component)
    named = _projects_of(workloads)
    if named and (spec_owner(resource, "projectName") or "") not in named:
        # Its workloads, listed after it was read, name another project: it was made again
        # there in between (a read kept ahead is older still). Read once more, rather than
        # write its APIs where it no longer is, with rows that say where it went.
        resource = read_object(walk, path)
        if resource is None:
            return _component_gone(walk, namespace, component, workloads)
    listed = [row for w in workloads if (row := workload_row(namespace, w))]
    group = f"{namespace}/{component}"
    indexed = walk.index.by_group(WORKLOADS, [group])[group]
    fresh = {row.key for row in listed}
    stale = [IndexEntry(WORKLOADS, row.key) for row in indexed if row.key not in fresh]
    project = spec_owner(resource, "projectName") or ""
    # Made again in another project, its APIs there go too (the indexed workloads say where it
    # was, before this event too: an earlier part may have taken them). Its claims on names go,
    # the harvest claims again those it still has: one it has no more is free at once.
    # A workload a walk's page indexed for another component before this event (`moved`)
    # was this one's all the same: where it was, and its claims, as for the others.
    moved = moved_away(walk, group)
    had = [*indexed, *moved]
    if (before := stored(walk)) is not walk.index:  # an overlay: as stored, too
        had = [*before.by_group(WORKLOADS, [group])[group], *had]
    was = _stored_projects(walk, namespace, component)
    left = sorted((_projects_of(row.value for row in had) | was) - {project})
    released = _released_claims(walk, namespace, component, [project, *left], had)
    system = _missing_project(walk, namespace, project)
    # The fresh rows are committed with the delta; the join must see them already.
    overlay = with_rows(walk, [*stale, *released, *system.index, *listed])
    harvest = component_harvest(overlay, namespace, [resource], listed=False)
    return Delta(
        upserts=[*system.entities, *harvest.entities],
        removals=harvest.removals,
        removal_scopes=[f"{namespace}/{p}/{component}" for p in [project, *left]],
        index=[*stale, *listed, *released, *system.index, *harvest.index, *moved_done(moved)],
    )


def _stored_projects(walk: Walk, namespace: str, component: str) -> set[str]:
    """The project the stored Component is in (its scope `<ns>/<project>/<component>`): an
    event whose reads met the component before it was made again in another project, and its
    workloads after, wrote it (and its APIs) there, while its rows name the other project."""
    ref = entity_ref("Component", namespace_name(namespace), entity_name(component))
    return scope_projects(stored(walk), ref, namespace, component)


def _missing_project(walk: Walk, namespace: str, project: str) -> Harvest:
    """The System (and owner row) of a component's project that this cycle has not listed,
    with its namespace's Domain, both read again: an event may name a component of a project
    that no cycle has listed, and an owner row from an earlier cycle may outlive its project
    (deleted since) or its namespace (unlabelled). When either answers 404, the row is dropped
    (an IndexEntry without a value) and the component is left out."""
    key = f"{namespace}/{project}"
    if not project or walk.index.by_key(PROJECT_OWNERS, [key], current_only=True):
        return Harvest()
    gone = Harvest(index=[IndexEntry(PROJECT_OWNERS, key)])
    domain = _namespace_domain(walk, namespace)
    if domain is None:
        return gone
    resource = read_object(walk, object_path(namespace, "projects", project))
    if resource is None:
        return gone
    entity = project_entity(resource, walk.config.mapping, walk.provider, namespace=namespace)
    row = owner_row(namespace, resource)
    # An owner changed since its row was written: this event maps only its own component, so
    # it keeps the change for the Project event after it, as a walk's page does.
    changed = owners_changed(walk, [row])
    return Harvest(entities=[*domain.entities, entity], index=[row, *changed])


def _namespace_domain(walk: Walk, namespace: str) -> Harvest | None:
    """The Domain of a namespace an event names before the catalog holds any project of it;
    None when the namespace is gone or is not one OpenChoreo serves (`served_namespace`): its
    resources stay out, as the walk leaves them."""
    resource = served_namespace(walk, namespace)
    if resource is None:
        log.info("event_outside_catalog", namespace=namespace)
        return None
    return Harvest(entities=[namespace_entity(resource, walk.config.mapping, walk.provider)])


def _workload_delta(walk: Walk, namespace: str, workload: str) -> Delta:
    resource = read_object(walk, object_path(namespace, "workloads", workload))
    if resource is not None and (component := spec_owner(resource, "componentName")):
        return _component_event_delta(walk, namespace, component)
    key = f"{namespace}/{workload}"
    row = walk.index.by_key(WORKLOADS, [key]).get(key)  # gone, or owned by none: where it was
    if row is None:
        return Delta(index=[IndexEntry(WORKLOADS, key)])
    return _component_event_delta(walk, namespace, row.group.partition("/")[2])


def _component_event_delta(walk: Walk, namespace: str, component: str) -> Delta:
    """The component as it is now (`_taken_back`), then those whose claims wait on an API name
    that no claim holds any more (it gave one up): mapped again, one of them takes it, as a
    walk names it. Each is mapped on the rows those before it will have written."""
    mapped: set[str] = set()
    done = _taken_back(walk, namespace, component, Delta(), mapped)

    def take_back(owner: tuple[str, ...], done: Delta) -> Delta:
        return _taken_back(walk, namespace, owner[-1], done, mapped)

    return names_handed_on(walk, done, take_back, more_rounds=len(mapped))


def _taken_back(walk: Walk, namespace: str, component: str, done: Delta, mapped: set[str]) -> Delta:
    """`done`, then the component mapped on the rows `done` will have written; first, the same
    way, each component that a workload it lists was indexed for: deleted and made again under
    its name for this one (an owner is immutable, so that is how a workload moves), it is no
    longer theirs, and they may have taken another's in turn (a chain, mapped from its end).
    So too one that a walk's page found moved here, and that is gone since (no event may come
    for the component it left). `mapped`: those mapped so far, each taken from at most once."""
    mapped.add(component)
    todo = [component]
    while todo:
        name = todo[-1]
        overlay = with_rows(walk, done.index) if done.index else walk
        delta, group = _component_delta(overlay, namespace, name), f"{namespace}/{name}"
        listed = [row.key for row in delta.index if row.table == WORKLOADS and row.group == group]
        gone = [row.key for row in delta.index if row.table == WORKLOADS and row.value is None]
        rows = [
            *overlay.index.by_key(WORKLOADS, listed).values(),
            # indexed for this one by a walk's page already (gone since, too): the row it wrote
            # over says where
            *left_for(overlay, [*listed, *gone]),
        ]
        left = sorted({row.group.partition("/")[2] for row in rows if row.group != group} - mapped)
        if left:  # those first; this one again after them
            mapped.update(left)
            todo.extend(reversed(left))
            continue
        done = done.then(delta)
        todo.pop()
    return done


def _workloads_of(
    walk: Walk, namespace: str, component: str, *, gone: bool = False
) -> list[Resource]:
    """Every workload of one component (one page, as a rule). Of a component that answered 404
    (`gone`), a 404 says there are none: the document gives that answer to `project=`, and a
    server may give it to `component=` as well."""
    return _listed(walk, namespace, "workloads", component=component, gone=gone)


def _listed(
    walk: Walk, namespace: str, listing: str, *, gone: bool = False, **only: str
) -> list[Resource]:
    """Every item of a namespace's listing that the filter `only` (`project=`, `component=`)
    lets through, page by page. A first page that answers the API's 404 to `project=` (the
    document's answer for a project that does not exist), or to any filter naming a resource
    that is `gone`, says there is nothing to list; any other 404 fails the event, which is tried
    again, rather than take its workloads for none."""
    path = listing_path(namespace, listing)
    return listed_items(walk, path, only, missing_is_empty=gone or "project" in only)


def _component_gone(
    walk: Walk, namespace: str, component: str, workloads: Sequence[Resource]
) -> Delta:
    """A component that answered 404: it leaves with its APIs, its indexed workloads and its
    claims on API names (a component that lost a name to it takes it back: see
    `_component_event_delta`).
    A workload of it that is still listed (left behind: an orphan) keeps its row, as the walk
    indexes every workload listed: a consumer's dependency on it names what the walk names."""
    group = f"{namespace}/{component}"
    indexed = walk.index.by_group(WORKLOADS, [group])[group]
    moved = moved_away(walk, group)
    known = [*indexed, *moved]
    left = [row for w in workloads if (row := workload_row(namespace, w))]
    kept = {row.key for row in left}
    ref = entity_ref("Component", namespace_name(namespace), entity_name(component))
    # where its workloads say it was, and where its stored Component is (`_stored_projects`)
    projects = sorted(
        _projects_of([*workloads, *(row.value for row in known)])
        | _stored_projects(walk, namespace, component)
    )
    scopes = [f"{namespace}/{project}/{component}" for project in projects]
    if not scopes:  # no workload says where it was (they went to another component in a
        # rename, or it had none): its stored Component does, and its APIs share its scope
        scopes = [scope for scope in walk.index.entity_scopes([ref]).values() if scope]
    return Delta(
        removals=[ref],
        removal_scopes=scopes,
        index=[
            *(IndexEntry(WORKLOADS, row.key) for row in indexed if row.key not in kept),
            *left,
            *_released_claims(walk, namespace, component, projects, known),
            *moved_done(moved),
        ],
    )


def _projects_of(workloads: Iterable[object]) -> set[str]:
    """The projects that `workloads` (resources or indexed values) say their component is in."""
    return {
        project
        for workload in workloads
        if isinstance(workload, Mapping) and (project := spec_owner(workload, "projectName"))
    }


def _released_claims(
    walk: Walk,
    namespace: str,
    component: str,
    projects: Sequence[str],
    indexed: Sequence[IndexEntry],
) -> list[IndexEntry]:
    """Deletions of the component's claims on API names, as a member of each of `projects`,
    for the endpoints of its `indexed` workloads: its claims are those of the first one by name
    (as stored, or as overlaid), and deleting one it never made deletes nothing."""
    loads = [row.value for row in indexed if isinstance(row.value, Mapping)] if projects else []
    endpoints = sorted({e for w in loads for e in api_endpoint_names(w, walk.config.mapping)})
    claims = [api_claim(namespace, p, component, e) for p in projects for e in endpoints]
    return [IndexEntry(CLAIMS, claim_key(claim)) for claim in claims]
