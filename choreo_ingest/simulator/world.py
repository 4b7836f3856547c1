"""The simulated OpenChoreo world: generated items plus the mutations made since.

A `World` holds one listing per parent (the orgs; the projects of an org; the components of a
project). A listing is its generated slots (computed by the `Blueprint` on demand) merged with
explicit overrides, so a world of 200k components costs a few hundred bytes per listing read
plus its mutations, and a page costs O(page + log n). Hidden items sit in the listings (they
take up room in a page) but are never part of the visible world. All methods are thread-safe.
"""

from __future__ import annotations

import bisect
import copy
import heapq
import itertools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from choreo_ingest.clock import rfc3339
from choreo_ingest.simulator.records import (
    EPOCH,
    KUBERNETES_NAME,
    Blueprint,
    Draws,
    Record,
    list_item,
    workflow,
)

Kind = Literal["organization", "project", "component"]
ParentKey = tuple[str, ...]
"""Names of a listing's parents: () for orgs, (org,) for projects, (org, project) for components."""

KINDS: Final[tuple[Kind, Kind, Kind]] = ("organization", "project", "component")
QUERY_CHUNK: Final = 256


class NotFound(LookupError):
    """The named org, project or component does not exist or is not visible to the caller."""

    def __init__(self, kind: Kind, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found")


class Slot(NamedTuple):
    """One item of a listing, visible or not."""

    name: str
    hidden: bool
    position: int | None
    """Index of the generated item it is (or overrides); None for an added item."""
    record: Record | None
    """The stored record (the detail, for components); None: generate it from `position`."""


@dataclass(frozen=True)
class Page:
    items: list[Record]
    """The visible items of the page, as list calls return them."""
    last_name: str | None
    """Name of the last item the page covered, hidden or not (where the next page starts)."""
    has_more: bool


class _Listing:
    """A sorted listing: generated slots merged with overrides (replacements and deletions)."""

    def __init__(self, blueprint: Blueprint | None, parent: tuple[int, ...]) -> None:
        self._blueprint = blueprint
        self.parent = parent
        """Indices of the generated parents (meaningless when there is no blueprint)."""
        self._overrides: dict[str, Slot | None] = {}
        self._added: list[str] = []  # sorted names whose override is a Slot

    def get(self, name: str) -> Slot | None:
        if name in self._overrides:
            return self._overrides[name]
        if self._blueprint is None:
            return None
        found = self._blueprint.locate(self.parent, name)
        if found is None:
            return None
        index, hidden = found
        return Slot(name, hidden, index, None)

    def put(self, name: str, record: Record, hidden: bool, position: int | None = None) -> None:
        if self._overrides.get(name) is None:
            bisect.insort(self._added, name)
        self._overrides[name] = Slot(name, hidden, position, record)

    def record(self, slot: Slot) -> Record:
        """A private copy of the slot's record (stored, or generated on the spot)."""
        if slot.record is not None:
            return copy.deepcopy(slot.record)
        assert self._blueprint is not None
        assert slot.position is not None
        return self._blueprint.record(self.parent, slot.position)

    def remove(self, name: str) -> None:
        if self._overrides.get(name) is not None:
            del self._added[bisect.bisect_left(self._added, name)]
        self._overrides[name] = None

    def slots_after(self, after: str | None) -> Iterator[Slot]:
        generated = (s for s in self._generated_after(after) if s.name not in self._overrides)
        start = 0 if after is None else bisect.bisect_right(self._added, after)
        added = (self._overrides[self._added[i]] for i in range(start, len(self._added)))
        return heapq.merge(generated, (s for s in added if s is not None), key=_slot_name)

    def _generated_after(self, after: str | None) -> Iterator[Slot]:
        blueprint, parent = self._blueprint, self.parent
        if blueprint is None:
            return
        count = blueprint.count(parent)
        start = 0
        if after is not None:
            start = bisect.bisect_right(
                range(count), after, key=lambda i: blueprint.name(parent, i)
            )
            if start > 0:  # hidden items between the previous visible one and `start`
                for hidden in blueprint.hidden_names(parent, start - 1):
                    if hidden > after:
                        yield Slot(hidden, True, None, None)
        for index in range(start, count):
            yield Slot(blueprint.name(parent, index), False, index, None)
            for hidden in blueprint.hidden_names(parent, index):
                yield Slot(hidden, True, None, None)


def _slot_name(slot: Slot) -> str:
    return slot.name


class World:
    """A seeded OpenChoreo world with a mutation API (for tests and soaks) and a query API."""

    def __init__(self, blueprint: Blueprint) -> None:
        self.blueprint = blueprint
        self._lock = threading.RLock()
        self._listings: dict[ParentKey, _Listing] = {(): _Listing(blueprint, ())}
        self._mutations = 0

    @classmethod
    def generate(
        cls,
        orgs: int,
        projects: int,
        components: int,
        seed: int = 0,
        endpoints_max: int = 3,
        hidden_fraction: float = 0.05,
    ) -> World:
        """`projects` per org, `components` per project, all visible; hidden items come on top."""
        if min(orgs, projects, components, endpoints_max) < 0:
            raise ValueError("world sizes must not be negative")
        if not 0.0 <= hidden_fraction < 1.0:
            raise ValueError("hidden_fraction must be in [0, 1)")
        return cls(Blueprint(seed, orgs, projects, components, endpoints_max, hidden_fraction))

    @classmethod
    def empty(cls, seed: int = 0) -> World:
        return cls(Blueprint(seed, 0, 0, 0))

    # -- reads used by the API -------------------------------------------------------------

    def page(self, parent: ParentKey, after: str | None, limit: int) -> Page:
        """Up to `limit` items after `after` (hidden ones count, then are dropped)."""
        with self._lock:
            listing = self._listing(parent)
            covered = list(itertools.islice(listing.slots_after(after), limit + 1))
            has_more = len(covered) > limit
            covered = covered[:limit]
            items = [_list_record(listing, s, parent) for s in covered if not s.hidden]
            last = covered[-1].name if covered else after
            return Page(items, last, has_more)

    def require_listing(self, parent: ParentKey) -> None:
        """Raise NotFound if a parent of the listing is missing or hidden."""
        with self._lock:
            self._listing(parent)

    def list_all(self, parent: ParentKey) -> list[Record]:
        """Every visible item of a listing, as list calls return them."""
        with self._lock:
            listing = self._listing(parent)
            return [
                _list_record(listing, s, parent) for s in listing.slots_after(None) if not s.hidden
            ]

    def org(self, name: str) -> Record:
        with self._lock:
            return self._record((), name)

    def project(self, org: str, name: str) -> Record:
        with self._lock:
            return self._record((org,), name)

    def component(self, org: str, project: str, name: str) -> Record:
        """The component detail, as `GET ...?include=type,workload` returns it."""
        with self._lock:
            return self._record((org, project), name)

    # -- query API for tests ---------------------------------------------------------------

    def orgs(self) -> Iterator[Record]:
        return self._iterate(())

    def projects(self, org: str) -> Iterator[Record]:
        return self._iterate((org,))

    def components(self, org: str, project: str) -> Iterator[Record]:
        """Visible components as list items (no workload or workflow)."""
        return self._iterate((org, project))

    def component_details(self) -> Iterator[Record]:
        """Every visible component's detail across the world, in listing order."""
        for org in self.orgs():
            for project in self.projects(org["name"]):
                for item in self.components(org["name"], project["name"]):
                    try:
                        yield self.component(org["name"], project["name"], item["name"])
                    except NotFound:
                        continue  # deleted since the page was read

    def counts(self) -> tuple[int, int, int]:
        """(orgs, projects, components) visible now."""
        orgs = projects = components = 0
        for org in self.orgs():
            orgs += 1
            for project in self.projects(org["name"]):
                projects += 1
                components += sum(1 for _ in self.components(org["name"], project["name"]))
        return orgs, projects, components

    # -- mutations -------------------------------------------------------------------------

    def add_org(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = "Ready",
        hidden: bool = False,
    ) -> Record:
        """Add (or replace, with no projects) an organization."""
        _check_name(name)
        with self._lock:
            record: Record = {"name": name}
            _set_text(record, display_name, description)
            record.update(namespace=name, createdAt=self._next_created_at())
            _set_optional(record, "status", status)
            self._listings[()].put(name, record, hidden)
            self._drop_children((name,))
            self._listings[(name,)] = _Listing(None, ())
            return copy.deepcopy(record)

    def add_project(
        self,
        org: str,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = "Ready",
        hidden: bool = False,
    ) -> Record:
        """Add (or replace, with no components) a project of an existing org."""
        _check_name(name)
        with self._lock:
            listing = self._listing((org,))
            record: Record = {"uid": self._next_uid(), "name": name, "orgName": org}
            _set_text(record, display_name, description)
            record.update(deploymentPipeline="default-pipeline", createdAt=self._next_created_at())
            _set_optional(record, "status", status)
            listing.put(name, record, hidden)
            self._drop_children((org, name))
            self._listings[(org, name)] = _Listing(None, ())
            return copy.deepcopy(record)

    def add_component(
        self,
        org: str,
        project: str,
        name: str,
        *,
        component_type: str = "deployment/service",
        display_name: str | None = None,
        description: str | None = None,
        endpoints: Mapping[str, Mapping[str, Any]] | None = None,
        repository_url: str | None = None,
        branch: str | None = "main",
        status: str | None = "Ready",
        auto_deploy: bool = False,
        hidden: bool = False,
    ) -> Record:
        """Add (or replace) a component of an existing project; returns its detail."""
        _check_name(name)
        with self._lock:
            listing = self._listing((org, project))
            record: Record = {"uid": self._next_uid(), "name": name}
            _set_text(record, display_name, description)
            record.update(
                type=component_type,
                autoDeploy=auto_deploy,
                projectName=project,
                orgName=org,
                createdAt=self._next_created_at(),
            )
            _set_optional(record, "status", status)
            image = f"registry.example.com/{org}/{name}:v1"
            record["workload"] = {"containers": {"main": {"image": image}}}
            record["workload"]["endpoints"] = copy.deepcopy(dict(endpoints or {}))
            if repository_url is not None:
                record["componentWorkflow"] = workflow("docker", repository_url, branch)
            listing.put(name, record, hidden)
            return copy.deepcopy(record)

    def update_org(self, name: str, changes: Mapping[str, Any]) -> Record:
        """Change fields (JSON names; None removes the field) of a visible org."""
        return self._update((), name, changes)

    def update_project(self, org: str, name: str, changes: Mapping[str, Any]) -> Record:
        return self._update((org,), name, changes)

    def update_component(
        self, org: str, project: str, name: str, changes: Mapping[str, Any]
    ) -> Record:
        """Change detail fields (JSON names; None removes the field) of a visible component."""
        return self._update((org, project), name, changes)

    def set_endpoints(
        self, org: str, project: str, name: str, endpoints: Mapping[str, Mapping[str, Any]]
    ) -> Record:
        """Replace a component's `workload.endpoints` map."""
        with self._lock:
            record = self._record((org, project), name)
            workload = dict(record.get("workload") or {})
            workload["endpoints"] = copy.deepcopy(dict(endpoints))
            return self._update((org, project), name, {"workload": workload})

    def rename_component(self, org: str, project: str, name: str, new_name: str) -> Record:
        """Delete and re-add under a new name: same fields, new uid (as Kubernetes does)."""
        _check_name(new_name)
        with self._lock:
            record = self._record((org, project), name)
            self.delete_component(org, project, name)
            record.update(name=new_name, uid=self._next_uid(), createdAt=self._next_created_at())
            self._listing((org, project)).put(new_name, record, False)
            return copy.deepcopy(record)

    def delete_org(self, name: str) -> None:
        with self._lock:
            self._require((), name, visible_only=False)
            self._listings[()].remove(name)
            self._drop_children((name,))

    def delete_project(self, org: str, name: str) -> None:
        with self._lock:
            listing = self._listing((org,))
            self._require((org,), name, visible_only=False)
            listing.remove(name)
            self._drop_children((org, name))

    def delete_component(self, org: str, project: str, name: str) -> None:
        with self._lock:
            listing = self._listing((org, project))
            self._require((org, project), name, visible_only=False)
            listing.remove(name)

    # -- internals -------------------------------------------------------------------------

    def _iterate(self, parent: ParentKey) -> Iterator[Record]:
        """Visible items in order, read a chunk at a time so no lock is held between yields."""
        after: str | None = None
        while True:
            page = self.page(parent, after, QUERY_CHUNK)
            yield from page.items
            if not page.has_more:
                return
            after = page.last_name

    def _listing(self, parent: ParentKey) -> _Listing:
        """The listing under `parent`; raises NotFound naming the first missing or hidden parent."""
        listing = self._listings[()]
        for depth, name in enumerate(parent):
            slot = listing.get(name)
            if slot is None or slot.hidden:
                raise NotFound(KINDS[depth], name)
            key = parent[: depth + 1]
            child = self._listings.get(key)
            if child is None:  # a generated parent; an added one always has a stored listing
                assert slot.position is not None
                child = _Listing(self.blueprint, (*listing.parent, slot.position))
                self._listings[key] = child
            listing = child
        return listing

    def _require(
        self, parent: ParentKey, name: str, *, visible_only: bool
    ) -> tuple[_Listing, Slot]:
        listing = self._listing(parent)
        slot = listing.get(name)
        if slot is None or (visible_only and slot.hidden):
            raise NotFound(KINDS[len(parent)], name)
        return listing, slot

    def _record(self, parent: ParentKey, name: str) -> Record:
        """A private copy of the record (the detail, for components) of a visible item."""
        listing, slot = self._require(parent, name, visible_only=True)
        return listing.record(slot)

    def _update(self, parent: ParentKey, name: str, changes: Mapping[str, Any]) -> Record:
        with self._lock:
            listing, slot = self._require(parent, name, visible_only=True)
            record = listing.record(slot)
            for key, value in changes.items():
                if key == "name":
                    raise ValueError("use rename_component to change a name")
                if value is None:
                    record.pop(key, None)
                else:
                    record[key] = copy.deepcopy(value)
            self._listing(parent).put(name, record, slot.hidden, slot.position)
            return copy.deepcopy(record)

    def _drop_children(self, parent: ParentKey) -> None:
        for key in [k for k in self._listings if k[: len(parent)] == parent]:
            del self._listings[key]

    def _next_uid(self) -> str:
        self._mutations += 1
        return Draws(self.blueprint.seed, "mutation", self._mutations).uid()

    def _next_created_at(self) -> str:
        return rfc3339(EPOCH + 3 * 365 * 86_400 + self._mutations * 60) or ""


def _list_record(listing: _Listing, slot: Slot, parent: ParentKey) -> Record:
    record = listing.record(slot)
    return list_item(record) if len(parent) == 2 else record


def _check_name(name: str) -> None:
    if not KUBERNETES_NAME.match(name):
        raise ValueError(f"{name!r} is not a Kubernetes name ([a-z0-9-], at most 63 chars)")


def _set_text(record: Record, display_name: str | None, description: str | None) -> None:
    _set_optional(record, "displayName", display_name)
    _set_optional(record, "description", description)


def _set_optional(record: Record, key: str, value: Any) -> None:
    if value is not None:
        record[key] = value
