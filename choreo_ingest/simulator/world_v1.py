"""The v1 view of a `World`: namespace-wide listings, refilled pages, lookups and workloads.

The world's listings stay organization-era (orgs, the projects of an org, the components of a
project); this view reads them as v1 serves them. Components are listed flat across a
namespace's projects (a k-way merge of the project listings, so a page stays O(page + projects)).
Workloads are derived from their components (records_v1.workloads) plus the ones written here
(added, changed or deleted): a generated component's workloads share its numbered name head, so
the derived ones come out in name order from the component order, and the few others are merged
in. Pages are refilled: hidden items are skipped until `limit` visible ones are found. Every
method runs under the world's lock.
"""

from __future__ import annotations

import copy
import heapq
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from choreo_ingest.simulator import records_v1
from choreo_ingest.simulator.listing import Hidden, Kind, Listing, NotFound, ParentKey, Slot
from choreo_ingest.simulator.records import Draws, Record
from choreo_ingest.simulator.records_v1 import GENERATED_HEAD

WORKLOAD_METADATA_FIELDS: Final = ("annotations", "labels", "deletionTimestamp")


@dataclass(frozen=True)
class V1Page:
    items: list[Record]
    """Up to `limit` visible items (fewer only at the end of the listing)."""
    last_name: str | None
    """Name of the last item the page covered (where the next page starts)."""
    has_more: bool


@dataclass(frozen=True)
class _Entry:
    name: str
    hidden: bool
    build: Callable[[], Record]


@dataclass(frozen=True)
class _StoredWorkload:
    project: str
    component: str
    record: Record | None
    """None: the derived workload of this name was deleted."""
    hidden: bool = False


Builder = Callable[[], Record]
Located = tuple[str, Listing, Slot]
"""(project name, the project's component listing, the component's slot)."""


class V1View:
    def __init__(
        self, lock: threading.RLock, listing: Callable[[ParentKey], Listing], seed: int
    ) -> None:
        self._lock = lock
        self._listing = listing
        self._seed = seed
        self._stored: dict[str, dict[str, _StoredWorkload]] = {}
        self._version = 0
        self._extras: dict[str, tuple[int, list[_Entry]]] = {}

    # -- pages -----------------------------------------------------------------------------

    def namespaces(self, after: str | None, limit: int) -> V1Page:
        with self._lock:
            listing = self._listing(())
            entries = (
                _Entry(slot.name, slot.hidden, _builder(self._namespace, listing, slot))
                for slot in listing.slots_after(after)
            )
            return _fill(entries, limit)

    def projects(self, namespace: str, after: str | None, limit: int) -> V1Page:
        with self._lock:
            listing = self._optional_listing((namespace,))
            if listing is None:
                return V1Page([], None, False)
            entries = (
                _Entry(slot.name, slot.hidden, _builder(self._project, namespace, listing, slot))
                for slot in listing.slots_after(after)
            )
            return _fill(entries, limit)

    def components(
        self, namespace: str, after: str | None, limit: int, project: str | None = None
    ) -> V1Page:
        """Components across the namespace's projects; NotFound for an unknown `project`."""
        with self._lock:
            entries = (
                _Entry(slot.name, slot.hidden, _builder(self._component, namespace, listing, slot))
                for _, listing, slot in self._component_slots(namespace, after, project)
            )
            return _fill(entries, limit)

    def workloads(
        self, namespace: str, after: str | None, limit: int, component: str | None = None
    ) -> V1Page:
        """Workloads across the namespace; `component` keeps those it owns (none if unknown)."""
        with self._lock:
            if component is None:
                return _fill(self._workload_entries(namespace, after), limit)
            entries = self._owned_workloads(namespace, component)
            return _fill((e for e in entries if after is None or e.name > after), limit)

    # -- single objects (NotFound if missing, Hidden if the caller may not see it) ---------

    def namespace(self, name: str) -> Record:
        with self._lock:
            listing = self._listing(())
            # A namespace without OpenChoreo's label (`kube-system`) is not found, as there.
            return self._namespace(listing, _visible(listing.get(name), "organization", name))

    def project(self, namespace: str, name: str) -> Record:
        with self._lock:
            listing = self._optional_listing((namespace,))
            if listing is None:
                raise NotFound("project", name)
            return self._project(namespace, listing, _visible(listing.get(name), "project", name))

    def component(self, namespace: str, name: str) -> Record:
        with self._lock:
            found = self.locate_component(namespace, name)
            if found is None:
                raise NotFound("component", name)
            _, listing, slot = found
            return self._component(namespace, listing, _visible(slot, "component", name))

    def workload(self, namespace: str, name: str) -> Record:
        with self._lock:
            entry = self._find_workload(namespace, name)
            if entry is None:
                raise NotFound("workload", name)
            if entry.hidden:
                raise Hidden("workload", name)
            return entry.build()

    def locate_component(self, namespace: str, name: str) -> Located | None:
        """Where a component (visible or hidden) of the namespace lives, if anywhere."""
        with self._lock:
            projects = self._optional_listing((namespace,))
            if projects is None:
                return None
            for project in projects.slots_after(None):
                if project.hidden:
                    continue  # hidden projects hold no components
                listing = self._listing((namespace, project.name))
                slot = listing.get(name)
                if slot is not None:
                    return project.name, listing, slot
            return None

    # -- workload mutations ----------------------------------------------------------------

    def add_workload(
        self,
        namespace: str,
        name: str,
        component: str,
        image: str | None,
        endpoints: Mapping[str, Any] | None,
        hidden: bool,
    ) -> Record:
        with self._lock:
            found = self.locate_component(namespace, component)
            if found is None or found[2].hidden:
                raise NotFound("component", component)
            project, listing, slot = found
            detail = listing.record(slot)
            image = image or f"registry.example.com/{namespace}/{component}:v1"
            owned = copy.deepcopy(endpoints)
            record = records_v1.workload_resource(name, namespace, detail, image, owned)
            self._store(namespace, name, _StoredWorkload(project, component, record, hidden))
            return copy.deepcopy(record)

    def update_workload(self, namespace: str, name: str, changes: Mapping[str, Any]) -> Record:
        """Change spec fields (`container`, `endpoints`, ...) or metadata fields (`annotations`,
        `labels`, `deletionTimestamp`) of a visible workload; None removes the field."""
        with self._lock:
            if {"name", "owner"} & set(changes):
                raise ValueError("a workload's name and owner cannot change")
            record = self.workload(namespace, name)
            for key, value in changes.items():
                part = record["metadata"] if key in WORKLOAD_METADATA_FIELDS else record["spec"]
                if value is None:
                    part.pop(key, None)
                else:
                    part[key] = copy.deepcopy(value)
            owner = record["spec"]["owner"]
            stored = _StoredWorkload(owner["projectName"], owner["componentName"], record)
            self._store(namespace, name, stored)
            return copy.deepcopy(record)

    def delete_workload(self, namespace: str, name: str) -> None:
        with self._lock:
            entry = self._find_workload(namespace, name)
            if entry is None:
                raise NotFound("workload", name)
            owner = entry.build()["spec"]["owner"]
            tombstone = _StoredWorkload(owner["projectName"], owner["componentName"], None)
            self._store(namespace, name, tombstone)

    def forget(
        self, namespace: str, project: str | None = None, component: str | None = None
    ) -> None:
        """Drop the written workloads of a namespace, a project or a component that went away."""
        with self._lock:
            stored = self._stored.get(namespace, {})
            for name, entry in list(stored.items()):
                if project is not None and entry.project != project:
                    continue
                if component is not None and entry.component != component:
                    continue
                del stored[name]
            self.changed()

    def changed(self) -> None:
        """Note a mutation of the world (it may change derived workloads)."""
        self._version += 1

    # -- internals -------------------------------------------------------------------------

    def _optional_listing(self, parent: ParentKey) -> Listing | None:
        try:
            return self._listing(parent)
        except NotFound:  # a deleted, unknown or hidden parent: an empty listing in v1
            return None

    def _draws(self, kind: str, listing: Listing, slot: Slot) -> Draws | None:
        if slot.position is None:
            return None
        return Draws(self._seed, "v1", kind, *listing.parent, slot.position)

    def _namespace(self, listing: Listing, slot: Slot) -> Record:
        return records_v1.namespace(listing.record(slot))

    def _project(self, namespace: str, listing: Listing, slot: Slot) -> Record:
        rng = self._draws("project", listing, slot)
        return records_v1.project(listing.record(slot), namespace, rng)

    def _component(self, namespace: str, listing: Listing, slot: Slot) -> Record:
        rng = self._draws("component", listing, slot)
        return records_v1.component(listing.record(slot), namespace, rng)

    def _derived(
        self, namespace: str, listing: Listing, slot: Slot, build: Callable[[Record], Builder]
    ) -> list[_Entry]:
        """The component's derived workloads that no written one replaces or deletes."""
        if slot.record is None and slot.position is None:
            return []  # a generated hidden component: nothing to derive
        rng = self._draws("workload", listing, slot)
        resources = records_v1.workloads(listing.record(slot), namespace, rng)
        return [
            _Entry(r["metadata"]["name"], slot.hidden, build(r))
            for r in resources
            if r["metadata"]["name"] not in self._stored.get(namespace, {})
        ]

    def _component_slots(
        self, namespace: str, after: str | None, project: str | None = None
    ) -> Iterator[Located]:
        projects = self._optional_listing((namespace,))
        if project is not None:
            slot = projects.get(project) if projects is not None else None
            if slot is None:
                raise NotFound("project", project)
            if slot.hidden:
                return iter(())
            listing = self._listing((namespace, project))
            return _tagged(project, listing, listing.slots_after(after))
        if projects is None:
            return iter(())
        streams = []
        for slot in projects.slots_after(None):
            if not slot.hidden:
                listing = self._listing((namespace, slot.name))
                streams.append(_tagged(slot.name, listing, listing.slots_after(after)))
        return heapq.merge(*streams, key=_located_name)

    def _workload_entries(self, namespace: str, after: str | None) -> Iterator[_Entry]:
        head = GENERATED_HEAD.match(after) if after is not None else None
        start = head.group(1) if head is not None else after

        def derived() -> Iterator[_Entry]:
            for _, listing, slot in self._component_slots(namespace, start):
                if slot.position is not None:
                    yield from self._derived(namespace, listing, slot, _handing_over)

        ordered = (e for e in derived() if after is None or e.name > after)
        extras = (e for e in self._extra_workloads(namespace) if after is None or e.name > after)
        return heapq.merge(ordered, extras, key=_entry_name)

    def _extra_workloads(self, namespace: str) -> list[_Entry]:
        """Written workloads and those of added components, in name order (cached per change)."""
        cached = self._extras.get(namespace)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        entries = [
            _Entry(name, stored.hidden, _copier(stored.record))
            for name, stored in self._stored.get(namespace, {}).items()
            if stored.record is not None
        ]
        projects = self._optional_listing((namespace,))
        for project in projects.slots_after(None) if projects is not None else ():
            if not project.hidden:
                listing = self._listing((namespace, project.name))
                for slot in listing.stored_slots():
                    if slot.position is None:
                        entries += self._derived(namespace, listing, slot, _copier)
        entries.sort(key=_entry_name)
        self._extras[namespace] = (self._version, entries)
        return entries

    def _owned_workloads(self, namespace: str, component: str) -> list[_Entry]:
        found = self.locate_component(namespace, component)
        entries = []
        if found is not None:
            entries = self._derived(namespace, found[1], found[2], _handing_over)
        entries += [
            _Entry(name, stored.hidden, _copier(stored.record))
            for name, stored in self._stored.get(namespace, {}).items()
            if stored.component == component and stored.record is not None
        ]
        return sorted(entries, key=_entry_name)

    def _find_workload(self, namespace: str, name: str) -> _Entry | None:
        stored = self._stored.get(namespace, {}).get(name)
        if stored is not None:
            if stored.record is None:
                return None
            return _Entry(name, stored.hidden, _copier(stored.record))
        head = GENERATED_HEAD.match(name)
        if head is not None:  # the generated component with this head, if any, derives it
            for _, listing, slot in self._component_slots(namespace, head.group(1)):
                if slot.position is None:
                    continue
                if slot.name.startswith(head.group(0)):
                    for entry in self._derived(namespace, listing, slot, _handing_over):
                        if entry.name == name:
                            return entry
                break
        return next((e for e in self._extra_workloads(namespace) if e.name == name), None)

    def _store(self, namespace: str, name: str, stored: _StoredWorkload) -> None:
        self._stored.setdefault(namespace, {})[name] = stored
        self.changed()


def _fill(entries: Iterable[_Entry], limit: int) -> V1Page:
    """Up to `limit` visible items; `has_more` when anything (visible or not) follows them."""
    items: list[Record] = []
    last: str | None = None
    for entry in entries:
        if len(items) == limit:
            return V1Page(items, last, True)
        last = entry.name
        if not entry.hidden:
            items.append(entry.build())
    return V1Page(items, last, False)


def _visible(slot: Slot | None, kind: Kind, name: str) -> Slot:
    if slot is None:
        raise NotFound(kind, name)
    if slot.hidden:
        raise Hidden(kind, name)
    return slot


def _tagged(project: str, listing: Listing, slots: Iterator[Slot]) -> Iterator[Located]:
    for slot in slots:
        yield project, listing, slot


def _builder(build: Callable[..., Record], *args: Any) -> Callable[[], Record]:
    return lambda: build(*args)


def _copier(record: Record | None) -> Builder:
    """A builder for a record kept here: every call gets a private copy."""
    return lambda: copy.deepcopy(record or {})


def _handing_over(record: Record) -> Builder:
    """A builder for a record made for one caller: it gets the record itself."""
    return lambda: record


def _located_name(located: Located) -> str:
    return located[2].name


def _entry_name(entry: _Entry) -> str:
    return entry.name
