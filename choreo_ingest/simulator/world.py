"""The simulated OpenChoreo world: generated items plus the mutations made since.

A `World` holds one listing per parent (the orgs; the projects of an org; the components of a
project; see listing.py), so a world of 200k components costs little memory and a page costs
O(page + log n). Hidden items sit in the listings (they take up room in an org-era page) but are
never part of the visible world. The records are organization-era (records.py); `World.v1`
serves the same world as OpenChoreo v1 resources (world_v1.py). All methods are thread-safe.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from choreo_ingest.clock import rfc3339
from choreo_ingest.simulator.listing import (
    KINDS,
    Hidden,
    Kind,
    Listing,
    NotFound,
    Page,
    ParentKey,
    Slot,
)
from choreo_ingest.simulator.records import (
    EPOCH,
    RESOURCE_NAME,
    Blueprint,
    Draws,
    Record,
    list_item,
    workflow,
)
from choreo_ingest.simulator.records_v1 import V1_ONLY_FIELDS
from choreo_ingest.simulator.world_v1 import V1Page, V1View

__all__ = ["Hidden", "Kind", "NotFound", "Page", "ParentKey", "V1Page", "World"]

QUERY_CHUNK: Final = 256


class World:
    """A seeded OpenChoreo world with a mutation API (for tests and soaks) and a query API."""

    def __init__(self, blueprint: Blueprint) -> None:
        self.blueprint = blueprint
        self._lock = threading.RLock()
        self._listings: dict[ParentKey, Listing] = {(): Listing(blueprint, ())}
        self._mutations = 0
        self._v1 = V1View(self._lock, self._listing, blueprint.seed)

    @property
    def v1(self) -> V1View:
        """The world as OpenChoreo v1 serves it: refilled pages and lookups (for the API)."""
        return self._v1

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

    def v1_namespaces(self) -> Iterator[Record]:
        """Visible orgs as v1 Namespaces, in name order."""
        return _all_pages(lambda after: self._v1.namespaces(after, QUERY_CHUNK))

    def v1_projects(self, namespace: str) -> Iterator[Record]:
        return _all_pages(lambda after: self._v1.projects(namespace, after, QUERY_CHUNK))

    def v1_components(self, namespace: str, project: str | None = None) -> Iterator[Record]:
        """Visible components of the namespace (of one project, if given) as v1 Components."""
        return _all_pages(lambda after: self._v1.components(namespace, after, QUERY_CHUNK, project))

    def v1_workloads(self, namespace: str, component: str | None = None) -> Iterator[Record]:
        """Visible workloads of the namespace (owned by one component, if given)."""
        return _all_pages(
            lambda after: self._v1.workloads(namespace, after, QUERY_CHUNK, component)
        )

    def v1_counts(self) -> dict[str, int]:
        """Visible namespaces, projects, components and workloads now."""
        counts = dict.fromkeys(("namespaces", "projects", "components", "workloads"), 0)
        for namespace in self.v1_namespaces():
            name = namespace["metadata"]["name"]
            counts["namespaces"] += 1
            counts["projects"] += sum(1 for _ in self.v1_projects(name))
            counts["components"] += sum(1 for _ in self.v1_components(name))
            counts["workloads"] += sum(1 for _ in self.v1_workloads(name))
        return counts

    # -- mutations -------------------------------------------------------------------------

    def add_org(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = "Ready",
        annotations: Mapping[str, str] | None = None,
        hidden: bool = False,
    ) -> Record:
        """Add (or replace, with no projects) an organization; `annotations` show in v1 only."""
        _check_name(name)
        with self._lock:
            record: Record = {"name": name}
            _set_text(record, display_name, description)
            record.update(namespace=name, createdAt=self._next_created_at())
            _set_optional(record, "status", status)
            _set_annotations(record, annotations)
            self._listings[()].put(name, record, hidden)
            self._drop_children((name,))
            self._listings[(name,)] = Listing(None, ())
            self._v1.forget(name)
            return _org_era(record)

    def add_project(
        self,
        org: str,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = "Ready",
        annotations: Mapping[str, str] | None = None,
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
            _set_annotations(record, annotations)
            listing.put(name, record, hidden)
            self._drop_children((org, name))
            self._listings[(org, name)] = Listing(None, ())
            self._v1.forget(org, project=name)
            return _org_era(record)

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
        annotations: Mapping[str, str] | None = None,
        hidden: bool = False,
    ) -> Record:
        """Add (or replace) a component of an existing project; returns its detail.

        Component names are unique in their org (a Kubernetes namespace): a name another project
        of the org holds is refused. `annotations` (e.g. `backstage.io/owner`) show in v1 only.
        """
        _check_name(name)
        with self._lock:
            listing = self._listing((org, project))
            self._check_unique(org, project, name)
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
            _set_annotations(record, annotations)
            listing.put(name, record, hidden)
            self._v1.forget(org, component=name)
            return _org_era(record)

    def update_org(self, name: str, changes: Mapping[str, Any]) -> Record:
        """Change fields (JSON names; None removes the field) of a visible org.

        On every kind, `deletionTimestamp` shows in both APIs (a v1 Namespace turns
        `Terminating`), and `annotations`/`labels` replace the v1-only metadata extras.
        """
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
            listing, slot = self._require((org, project), name, visible_only=True)
            record = listing.record(slot)
            self._check_unique(org, project, new_name)
            self.delete_component(org, project, name)
            record.update(name=new_name, uid=self._next_uid(), createdAt=self._next_created_at())
            self._listing((org, project)).put(new_name, record, False)
            self._v1.forget(org, component=new_name)
            return _org_era(record)

    def delete_org(self, name: str) -> None:
        with self._lock:
            self._require((), name, visible_only=False)
            self._listings[()].remove(name)
            self._drop_children((name,))
            self._v1.forget(name)

    def delete_project(self, org: str, name: str) -> None:
        with self._lock:
            listing = self._listing((org,))
            self._require((org,), name, visible_only=False)
            listing.remove(name)
            self._drop_children((org, name))
            self._v1.forget(org, project=name)

    def delete_component(self, org: str, project: str, name: str) -> None:
        with self._lock:
            listing = self._listing((org, project))
            self._require((org, project), name, visible_only=False)
            listing.remove(name)
            self._v1.forget(org, component=name)

    # -- v1 workload mutations (the derived workloads follow their component otherwise) ----

    def add_workload(
        self,
        namespace: str,
        name: str,
        *,
        component: str,
        image: str | None = None,
        endpoints: Mapping[str, Mapping[str, Any]] | None = None,
        hidden: bool = False,
    ) -> Record:
        """Add (or replace) a v1 Workload owned by a visible component; `endpoints` are stored
        as given (v1 shape), None leaves the map out. Returns the Workload."""
        _check_name(name)
        return self._v1.add_workload(namespace, name, component, image, endpoints, hidden)

    def update_workload(self, namespace: str, name: str, changes: Mapping[str, Any]) -> Record:
        """Change `spec` fields (`container`, `endpoints`) or `metadata` fields (`annotations`,
        `labels`, `deletionTimestamp`) of a visible workload; None removes the field."""
        return self._v1.update_workload(namespace, name, changes)

    def delete_workload(self, namespace: str, name: str) -> None:
        self._v1.delete_workload(namespace, name)

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

    def _listing(self, parent: ParentKey) -> Listing:
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
                child = Listing(self.blueprint, (*listing.parent, slot.position))
                self._listings[key] = child
            listing = child
        return listing

    def _require(self, parent: ParentKey, name: str, *, visible_only: bool) -> tuple[Listing, Slot]:
        listing = self._listing(parent)
        slot = listing.get(name)
        if slot is None or (visible_only and slot.hidden):
            raise NotFound(KINDS[len(parent)], name)
        return listing, slot

    def _record(self, parent: ParentKey, name: str) -> Record:
        """A private copy of the record (the detail, for components) of a visible item."""
        listing, slot = self._require(parent, name, visible_only=True)
        return _strip_v1_fields(listing.record(slot))

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
            self._v1.changed()
            return _org_era(record)

    def _check_unique(self, org: str, project: str, name: str) -> None:
        found = self._v1.locate_component(org, name)
        if found is not None and found[0] != project:
            raise ValueError(f"component {name!r} already exists in project {found[0]!r}")

    def _drop_children(self, parent: ParentKey) -> None:
        for key in [k for k in self._listings if k[: len(parent)] == parent]:
            del self._listings[key]

    def _next_uid(self) -> str:
        self._mutations += 1
        return Draws(self.blueprint.seed, "mutation", self._mutations).uid()

    def _next_created_at(self) -> str:
        return rfc3339(EPOCH + 3 * 365 * 86_400 + self._mutations * 60) or ""


def _list_record(listing: Listing, slot: Slot, parent: ParentKey) -> Record:
    record = _strip_v1_fields(listing.record(slot))
    return list_item(record) if len(parent) == 2 else record


def _strip_v1_fields(record: Record) -> Record:
    """The record as the org-era API shows it (in place)."""
    for key in V1_ONLY_FIELDS:
        record.pop(key, None)
    return record


def _org_era(record: Record) -> Record:
    """A private copy of a stored record as the org-era API shows it."""
    return _strip_v1_fields(copy.deepcopy(record))


def _all_pages(page_of: Callable[[str | None], V1Page]) -> Iterator[Record]:
    """Every item of a v1 listing, a chunk at a time so no lock is held between yields."""
    after: str | None = None
    while True:
        page = page_of(after)
        yield from page.items
        if not page.has_more:
            return
        after = page.last_name


def _set_annotations(record: Record, annotations: Mapping[str, str] | None) -> None:
    if annotations is not None:
        record["annotations"] = dict(annotations)


def _check_name(name: str) -> None:
    if not RESOURCE_NAME.match(name):
        raise ValueError(f"{name!r} is not a Kubernetes name ([a-z0-9-], at most 63 chars)")


def _set_text(record: Record, display_name: str | None, description: str | None) -> None:
    _set_optional(record, "displayName", display_name)
    _set_optional(record, "description", description)


def _set_optional(record: Record, key: str, value: Any) -> None:
    if value is not None:
        record[key] = value
