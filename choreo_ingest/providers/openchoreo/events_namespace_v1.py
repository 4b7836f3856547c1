"""v1 Namespace events: a namespace OpenChoreo serves becomes its Domain; one gone, or no longer
served (its `openchoreo.dev/control-plane` label taken off), leaves with everything below it, as
at the sweep; one served again with projects the catalog does not know asks for a walk."""

from __future__ import annotations

from collections.abc import Mapping

from choreo_ingest.clock import parse_rfc3339
from choreo_ingest.models import Delta, IndexEntry
from choreo_ingest.providers.openchoreo.api_names import CLAIMS, claim_owner
from choreo_ingest.providers.openchoreo.entities_v1 import namespace_entity
from choreo_ingest.providers.openchoreo.event_reads_v1 import (
    listed_items,
    listing_path,
    namespace_path,
    read_object,
)
from choreo_ingest.providers.openchoreo.generation import Resource, Walk, event_page_size, name_of
from choreo_ingest.providers.openchoreo.mapping_common import as_mapping
from choreo_ingest.providers.openchoreo.naming import namespace_name
from choreo_ingest.providers.openchoreo.resources_v1 import PROJECT_OWNERS, read_page

PROJECTS_PROBED = 20
"""Projects a Namespace event reads (at most) to tell whether the catalog knows the namespace."""
NEW_PROJECT_SECONDS = 600.0
"""A project made this recently has its own `created` event coming (`_holds_unknown_projects`)."""
CONTROL_PLANE_LABEL = "openchoreo.dev/control-plane"
"""The label of the namespaces OpenChoreo serves (`/namespaces` lists only those set to "true")."""


def namespace_delta(walk: Walk, namespace: str) -> Delta:
    resource = served_namespace(walk, namespace)
    if resource is None:  # gone, or its label taken off: what it had leaves, as at the sweep
        return namespace_gone(walk, namespace)
    domain = namespace_entity(resource, walk.config.mapping, walk.provider)
    return Delta(upserts=[domain], refresh=_holds_unknown_projects(walk, namespace))


def _holds_unknown_projects(walk: Walk, namespace: str) -> bool:
    """Whether the namespace has projects, made a while ago, while the catalog knows none of
    it: served again (its label put back) with everything it held all along, for which no event
    comes. Only a walk brings them, so the event asks for one.

    No walk for a namespace the catalog knows (the forwarder's `created` for each at its
    start), nor for one new and empty, nor for one made with its projects (a GitOps bundle):
    their own `created` events come after the namespace's. A project without a creation time
    counts as new."""
    path = listing_path(namespace, "projects")
    listed: list[Resource] = []
    cursor: str | None = None
    limit = min(PROJECTS_PROBED, event_page_size(walk, "v1"))  # chunkSize holds here too
    for _ in range(PROJECTS_PROBED):  # pages: one may be empty, with a cursor
        page = read_page(walk.client, path, {"limit": limit}, cursor)
        listed += page.items
        if len(listed) >= PROJECTS_PROBED or not (cursor := page.next_cursor):
            break
    keys = [f"{namespace}/{name_of(project, path)}" for project in listed]
    if not keys or walk.index.by_key(PROJECT_OWNERS, keys):
        return False
    made_before = walk.clock.now() - NEW_PROJECT_SECONDS
    if not any(_created_before(project, made_before) for project in listed):
        return False
    return not _project_keys(walk, namespace)


def _created_before(resource: Resource, moment: float) -> bool:
    created = as_mapping(resource.get("metadata")).get("creationTimestamp")
    try:
        return isinstance(created, str) and parse_rfc3339(created) < moment
    except ValueError:
        return False


def namespace_gone(walk: Walk, namespace: str) -> Delta:
    """What the namespace had leaves, with its claims on API names: no claim of another
    namespace waits on them, and one made again under its name claims afresh."""
    released = claims_released(walk, namespace)
    return Delta(
        removal_scopes=[namespace], index=[*_project_rows_dropped(walk, namespace), *released]
    )


def claims_released(walk: Walk, namespace: str, project: str | None = None) -> list[IndexEntry]:
    """Deletions of the claims on API names (`api_names.CLAIMS`) of the components of the
    namespace (of its `project` only, if given): one scan of the namespace's claims."""
    rows = walk.index.by_group_prefix(CLAIMS, f"{namespace_name(namespace)}/")
    return [
        IndexEntry(CLAIMS, row.key)
        for row in rows
        if project is None or claim_owner(row)[1][:1] == (project,)
    ]


def _project_rows_dropped(walk: Walk, namespace: str) -> list[IndexEntry]:
    """The namespace's project rows, dropped: one this cycle wrote vouches for the namespace
    (`_project_delta`, `_missing_project`), and an event for a component of a namespace whose
    label was taken off (its components still answer) would otherwise bring it back."""
    return [IndexEntry(PROJECT_OWNERS, key) for key in _project_keys(walk, namespace)]


def _project_keys(walk: Walk, namespace: str) -> list[str]:
    """The keys (`<namespace>/<project>`) of the namespace's indexed projects."""
    prefix = f"{namespace}/"
    rows = walk.index.by_group(PROJECT_OWNERS, [""])[""]
    return [row.key for row in rows if row.key.startswith(prefix)]


def served_namespace(walk: Walk, namespace: str) -> Resource | None:
    """The namespace when OpenChoreo serves it, else None.

    `/namespaces` lists only the namespaces labelled `openchoreo.dev/control-plane: "true"`,
    and OpenChoreo's `/namespaces/{ns}` answers 404 for any other (`kube-system`, or one whose
    label was taken off). The label on the read vouches for it; a read without it (a server
    that reads any namespace, or leaves labels out) is settled by the listing, which is what
    the walk takes.
    """
    resource = read_object(walk, namespace_path(namespace))
    if resource is None:
        return None
    metadata = resource.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if isinstance(labels, Mapping) and labels.get(CONTROL_PLANE_LABEL) == "true":
        return resource
    listed = listed_items(walk, "/namespaces", {})
    return resource if any(name_of(item, "/namespaces") == namespace for item in listed) else None
