"""What a v1 walk's page keeps for the events applied after it, about changes it listed first.

A page writes over the index rows by which an event finds what changed: a workload made again
for another component (its row names that one now) or with its component in another project
(its row names that project now, and the components page after it writes over the stored
Component), a workload that lost an API endpoint (its row no longer names the endpoint whose
claim on an API name the event is to release, and hand on: `api_names`), a project whose owner
changed (its row holds the new owner). An event applied after such a page in the same cycle
must still reach the component the workload left (and the project it left), the claims it
made, and the project's components. So the page keeps, beside its rows, what it
wrote over; the event that acts on it deletes it. Only this cycle's count (`current_only`):
the cycle's components listing maps those components again anyway, and the pruning of a later
completed cycle (whose sweep ran) removes the rest. A mark outlives its components' listing,
so the project's next event maps its components once more than it needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from choreo_ingest.config import MappingConfig
from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.openchoreo.entities_v1 import api_endpoint_names
from choreo_ingest.providers.openchoreo.generation import Walk
from choreo_ingest.providers.openchoreo.resources_v1 import PROJECT_OWNERS, WORKLOADS, spec_owner

WORKLOADS_LEFT = "workload-left"
"""Index: `<ns>/<workload>` grouped by `<ns>/<component>` -> the workload as that component
had it, before a walk's page indexed it for another, or for the same one in another project
(made again under its name for that one, or with it there), or with an API endpoint fewer."""
PROJECT_OWNER_CHANGED = "project-owner-changed"
"""Index: `<ns>/<project>` -> {owner: as it was}: a walk's page (or an event's read of the
project, `events_v1._missing_project`) found the project's owner changed against its row."""


def workloads_left(walk: Walk, rows: Sequence[IndexEntry]) -> list[IndexEntry]:
    """For each workload row of `rows` indexed before for another component, or for one in
    another project (the component was made again there: the page of the components after
    this one writes over its stored Component too), or with an API endpoint it has no more
    (gone, or its schema: the component's claim on that API's name is to be released by its
    event, which reads the claims off the rows), the row as that component had it
    (`WORKLOADS_LEFT`)."""
    before = walk.index.by_key(WORKLOADS, [row.key for row in rows]) if rows else {}
    return [
        IndexEntry(WORKLOADS_LEFT, row.key, old.group, old.value)
        for row in rows
        if (old := before.get(row.key)) is not None
        and (
            old.group != row.group
            or (
                old.value != row.value
                and (_project(old) != _project(row) or _apis_lost(walk, old, row))
            )
        )
    ]


def _project(row: IndexEntry) -> str | None:
    return spec_owner(row.value, "projectName") if isinstance(row.value, Mapping) else None


def _apis_lost(walk: Walk, old: IndexEntry, row: IndexEntry) -> bool:
    """Whether workload row `old` has an API endpoint that `row` (the same one, listed again)
    has not."""
    mapping = walk.config.mapping
    return bool(set(_apis(old, mapping)) - set(_apis(row, mapping)))


def _apis(row: IndexEntry, mapping: MappingConfig) -> list[str]:
    return api_endpoint_names(row.value if isinstance(row.value, Mapping) else None, mapping)


def owners_changed(walk: Walk, rows: Sequence[IndexEntry]) -> list[IndexEntry]:
    """For each project owner row of `rows` whose stored row holds another owner, a mark
    (`PROJECT_OWNER_CHANGED`) that keeps the owner it had."""
    before = walk.index.by_key(PROJECT_OWNERS, [row.key for row in rows]) if rows else {}
    return [
        IndexEntry(PROJECT_OWNER_CHANGED, row.key, "", old.value)
        for row in rows
        if (old := before.get(row.key)) is not None and old.value != row.value
    ]


def owner_change_listed(walk: Walk, key: str) -> bool:
    """Whether this cycle found the owner of project `key` changed before its event."""
    return bool(walk.index.by_key(PROJECT_OWNER_CHANGED, [key], current_only=True))


def owner_change_done(key: str) -> IndexEntry:
    """The deletion of project `key`'s mark: its components are mapped in this delta."""
    return IndexEntry(PROJECT_OWNER_CHANGED, key)


def moved_away(walk: Walk, group: str) -> list[IndexEntry]:
    """The rows, as component `group` had them, of the workloads a page of this cycle indexed
    for another component since."""
    return walk.index.by_group(WORKLOADS_LEFT, [group], current_only=True)[group]


def moved_done(moved: Sequence[IndexEntry]) -> list[IndexEntry]:
    """Deletions of `moved` rows: the component they left is mapped in this delta."""
    return [IndexEntry(WORKLOADS_LEFT, row.key) for row in moved]


def left_for(walk: Walk, keys: Sequence[str]) -> list[IndexEntry]:
    """The rows, as the component they left had them, of workloads `keys` that a page of this
    cycle indexed for another component."""
    return list(walk.index.by_key(WORKLOADS_LEFT, keys, current_only=True).values())
