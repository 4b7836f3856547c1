"""What v1 events read: the paths of a namespace's objects and listings, an object or every item
of a listing (the API's own 404 read as gone or as none), and the reads an event drain asks for
ahead of the events that will make them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from choreo_ingest.errors import NotFoundError
from choreo_ingest.models import Event
from choreo_ingest.providers.openchoreo.generation import (
    ListPage,
    Resource,
    Walk,
    confirm_gone,
    event_page_size,
    every_item,
)
from choreo_ingest.providers.openchoreo.resources_v1 import (
    as_object,
    read_page,
    segment,
    spec_owner,
)

Request = tuple[str, Mapping[str, str | int]]
NOT_FOUND = ("NOT_FOUND",)
"""The code of the API's own 404 (`{"error": "<Resource> not found", "code": "NOT_FOUND"}`)."""


def read_ahead(walk: Walk, events: Sequence[Event]) -> None:
    """Read at once what handling `events` will read first (`OpenChoreoClient.read_ahead`, as
    many at a time as `maxConcurrentRequests`; one at a time from a server that answers at
    once): a Project's or a Component's object and the component's workloads, a Workload's
    object and then those of the component it names. Each read is asked for once per event that
    will make it, so that events needing the same read share it. The answers come after every
    one of these events was sent, so each event sees its change, as a read of its own would."""
    first: list[Request] = []
    workloads: list[str | None] = []  # per request: the namespace of a Workload's read
    for event in events:
        namespace = event.namespace or ""
        if event.kind == "Component":
            reads = component_reads(walk, namespace, event.name)
        elif event.kind in ("Project", "Workload"):
            reads = [(object_path(namespace, f"{event.kind.lower()}s", event.name), {})]
        else:
            reads = []
        first += reads
        workloads += [namespace if event.kind == "Workload" else None] * len(reads)
    then: list[Request] = []
    answers = walk.client.read_ahead(first)
    for owner_namespace, answer in zip(workloads, answers, strict=True):
        if owner_namespace is not None and isinstance(answer, dict):
            component = spec_owner(answer, "componentName")
            then += component_reads(walk, owner_namespace, component) if component else []
    if then:
        walk.client.read_ahead(then, adding=True)


def component_reads(walk: Walk, namespace: str, component: str) -> list[Request]:
    """The requests `events_v1._component_delta` begins with: the component, and its
    workloads' first page."""
    workloads: dict[str, str | int] = {"component": component, "limit": event_page_size(walk, "v1")}
    return [
        (object_path(namespace, "components", component), {}),
        (listing_path(namespace, "workloads"), workloads),
    ]


def namespace_path(namespace: str) -> str:
    return f"/namespaces/{segment(namespace)}"


def listing_path(namespace: str, listing: str) -> str:
    return f"{namespace_path(namespace)}/{listing}"


def object_path(namespace: str, listing: str, name: str) -> str:
    return f"{listing_path(namespace, listing)}/{segment(name)}"


def read_object(walk: Walk, path: str) -> Resource | None:
    """The object at `path`; None when the API answers that it is not there."""
    try:
        return as_object(walk.client.get_json(path), path)
    except NotFoundError as missing:
        confirm_gone(missing, NOT_FOUND)
        return None


def listed_items(
    walk: Walk, path: str, only: Mapping[str, str], *, missing_is_empty: bool = False
) -> list[Resource]:
    """The items of a listing, every page (`every_item`), as large as the walk's
    (`event_page_size`): none when its first page answers the API's 404 and `missing_is_empty`.
    An expired cursor is a 500 to a request that carried one (`read_page`)."""
    limit = event_page_size(walk, "v1")

    def read(cursor: str | None) -> ListPage:
        return read_page(walk.client, path, {**only, "limit": limit}, cursor)

    return every_item(read, path, gone_codes=NOT_FOUND, missing_is_empty=missing_is_empty)
