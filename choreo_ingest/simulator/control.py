"""Debug routes for benchmarks and soaks, served only with `SimulatorOptions(control=True)`.

    GET  /_control/stats                 the request counters (SimulatorStats) as JSON
    POST /_control/reset_stats           forget the counters
    GET  /_control/world[?api=v1|orgs]   every visible item, in the served generation's shapes:
                                         v1 {namespaces, projects, components, workloads},
                                         orgs {orgs, projects, components (details)}
    POST /_control/add_component?namespace=&project=&name=[&type=][&endpoints=<JSON map>]
                                 [&owner=][&repository=]
    POST /_control/delete_component?namespace=&name=[&project=]
    POST /_control/update?kind=namespace|project|component|workload&namespace=&name=
                          [&project=]&changes=<JSON object>   (e.g. {"deletionTimestamp": ...})
    POST /_control/add_workload?namespace=&name=&component=[&image=][&endpoints=<JSON map>]
    POST /_control/delete_workload?namespace=&name=

`org` works wherever `namespace` does. Endpoints for components are org-era (as the world
stores them; v1 shows `REST` as `HTTP`), for workloads v1. They answer `{"success": true, "data":
...}` or `{"success": false, "error": ...}`, take their parameters from the query string, need
the API's token when it needs one (they change the world), and bypass latency, faults and the
counters, so a soak can watch and change the world.

With `SimulatorOptions.webhooks`, every change made here is forwarded as OpenChoreo's event
forwarder reports it (webhooks.py), one event per resource that changed, queued before the
route answers: add_component: `Component` created (updated when the name existed), plus its
workloads created, updated or deleted; delete_component: `Component` deleted and each workload
it owned deleted; update: the `Namespace`, `Project`, `Component` (and any of its workloads
that changed) or `Workload` updated; add_workload: `Workload` created (updated when the name
existed); delete_workload: `Workload` deleted. Workloads are the visible ones the v1 API lists.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from choreo_ingest.simulator.metering import SimulatorStats
from choreo_ingest.simulator.records import Record
from choreo_ingest.simulator.records_v1 import OWNER
from choreo_ingest.simulator.webhooks import Action, EventForwarder, ForwardedEvent, forwarded
from choreo_ingest.simulator.world import Hidden, NotFound, World

CONTROL_PREFIX: Final = "/_control/"

Query = Mapping[str, list[str]]
Answer = tuple[int, Any]
"""(HTTP status, the `data` document or an error message)."""


class ControlRoutes:
    def __init__(
        self,
        world: World,
        stats: Callable[[], SimulatorStats],
        reset: Callable[[], None],
        api: Callable[[], str] = lambda: "orgs",
        forwarder: Callable[[], EventForwarder | None] = lambda: None,
    ) -> None:
        self._world = world
        self._stats = stats
        self._reset = reset
        self._api = api
        self._forwarder = forwarder
        self._mutating = threading.Lock()
        """One mutation at a time: its events are read around it and queued in order."""
        self._events: list[ForwardedEvent] | None = None
        """While a mutation runs with webhooks on: where its events are collected."""

    def answer(self, method: str, path: str, query: Query) -> tuple[int, bytes]:
        """Status and JSON body for a request under CONTROL_PREFIX."""
        route = path[len(CONTROL_PREFIX) :].rstrip("/")
        handlers: dict[str, tuple[str, Callable[[Query], Answer]]] = {
            "stats": ("GET", self._get_stats),
            "reset_stats": ("POST", self._reset_stats),
            "world": ("GET", self._get_world),
            "add_component": ("POST", self._add_component),
            "delete_component": ("POST", self._delete_component),
            "update": ("POST", self._update),
            "add_workload": ("POST", self._add_workload),
            "delete_workload": ("POST", self._delete_workload),
        }
        if route not in handlers:
            return _body(404, f"no control route {route!r}")
        wanted, handler = handlers[route]
        if method.upper() != wanted:
            return _body(405, f"{route} takes {wanted}")
        try:
            if wanted == "POST" and route != "reset_stats":
                with self._mutating:
                    return _body(*self._forwarding(handler, query))
            return _body(*handler(query))
        except (NotFound, Hidden) as missing:
            return _body(404, str(missing))
        except (KeyError, ValueError) as error:
            return _body(400, f"bad parameters: {error}")

    def _forwarding(self, handler: Callable[[Query], Answer], query: Query) -> Answer:
        """Run a mutating handler; with webhooks, queue the events that describe its change."""
        forwarder = self._forwarder()
        if forwarder is None:
            return handler(query)
        events: list[ForwardedEvent] = []
        self._events = events
        try:
            answer = handler(query)
        finally:
            self._events = None
        forwarder.forward(events)
        return answer

    def _forwarding_on(self) -> bool:
        return self._events is not None

    def _emit(self, kind: str, name: str, namespace: str, action: Action) -> None:
        if self._events is not None:
            self._events.append(forwarded(kind, name, namespace, action))

    def _workloads_of(self, namespace: str, component: str) -> dict[str, Record]:
        """The visible workloads the component owns (nothing to read without webhooks)."""
        if not self._forwarding_on():
            return {}
        try:
            found = self._world.v1_workloads(namespace, component)
            return {workload["metadata"]["name"]: workload for workload in found}
        except NotFound:
            return {}

    def _emit_workload_changes(
        self, namespace: str, before: Mapping[str, Record], after: Mapping[str, Record]
    ) -> None:
        for name in sorted(before.keys() | after.keys()):
            if name not in after:
                self._emit("Workload", name, namespace, "deleted")
            elif name not in before:
                self._emit("Workload", name, namespace, "created")
            elif before[name] != after[name]:
                self._emit("Workload", name, namespace, "updated")

    def _get_stats(self, query: Query) -> Answer:
        stats = dataclasses.asdict(self._stats())
        stats["responses_by_status"] = {
            str(status): count for status, count in stats["responses_by_status"].items()
        }
        return 200, stats

    def _reset_stats(self, query: Query) -> Answer:
        self._reset()
        return 200, {"reset": True}

    def _get_world(self, query: Query) -> Answer:
        api = _one(query, "api", self._api())
        if api == "v1":
            return 200, self._v1_world()
        if api != "orgs":
            raise ValueError("api must be v1 or orgs")
        world = self._world
        orgs, projects, components = [], [], []
        for org in world.orgs():
            orgs.append(org)
            for project in world.projects(org["name"]):
                projects.append(project)
                for item in world.components(org["name"], project["name"]):
                    try:
                        detail = world.component(org["name"], project["name"], item["name"])
                    except NotFound:
                        continue  # deleted while the dump was being read
                    components.append(detail)
        return 200, {"orgs": orgs, "projects": projects, "components": components}

    def _v1_world(self) -> dict[str, list[Any]]:
        world = self._world
        dump: dict[str, list[Any]] = {
            "namespaces": [],
            "projects": [],
            "components": [],
            "workloads": [],
        }
        for namespace in world.v1_namespaces():
            name = namespace["metadata"]["name"]
            dump["namespaces"].append(namespace)
            dump["projects"] += world.v1_projects(name)
            dump["components"] += world.v1_components(name)
            dump["workloads"] += world.v1_workloads(name)
        return dump

    def _add_component(self, query: Query) -> Answer:
        endpoints = _json(query, "endpoints", "{}")
        owner = query.get("owner")
        namespace, name = _namespace(query), _one(query, "name")
        existed = self._forwarding_on() and self._located(namespace, name)
        before = self._workloads_of(namespace, name)
        detail = self._world.add_component(
            namespace,
            _one(query, "project"),
            name,
            component_type=_one(query, "type", "deployment/service"),
            endpoints=endpoints,
            repository_url=query["repository"][0] if query.get("repository") else None,
            annotations={OWNER: owner[0]} if owner else None,
        )
        self._emit("Component", name, namespace, "updated" if existed else "created")
        self._emit_workload_changes(namespace, before, self._workloads_of(namespace, name))
        return 200, detail

    def _delete_component(self, query: Query) -> Answer:
        namespace, name = _namespace(query), _one(query, "name")
        project = _one(query, "project", "") or self._project_of(namespace, name)
        before = self._workloads_of(namespace, name)
        self._world.delete_component(namespace, project, name)
        self._emit("Component", name, namespace, "deleted")
        self._emit_workload_changes(namespace, before, {})
        return 200, {"deleted": name}

    def _update(self, query: Query) -> Answer:
        kind, namespace, name = _one(query, "kind"), _namespace(query), _one(query, "name")
        changes = _json(query, "changes", "{}")
        world = self._world
        if kind == "namespace":
            answer = world.update_org(name, changes)
            self._emit("Namespace", name, "", "updated")
            return 200, answer
        if kind == "project":
            answer = world.update_project(namespace, name, changes)
            self._emit("Project", name, namespace, "updated")
            return 200, answer
        if kind == "component":
            project = _one(query, "project", "") or self._project_of(namespace, name)
            before = self._workloads_of(namespace, name)
            answer = world.update_component(namespace, project, name, changes)
            self._emit("Component", name, namespace, "updated")
            self._emit_workload_changes(namespace, before, self._workloads_of(namespace, name))
            return 200, answer
        if kind == "workload":
            answer = world.update_workload(namespace, name, changes)
            self._emit("Workload", name, namespace, "updated")
            return 200, answer
        raise ValueError(f"unknown kind {kind!r}")

    def _add_workload(self, query: Query) -> Answer:
        namespace, name = _namespace(query), _one(query, "name")
        existed = self._forwarding_on() and self._workload_exists(namespace, name)
        workload = self._world.add_workload(
            namespace,
            name,
            component=_one(query, "component"),
            image=query["image"][0] if query.get("image") else None,
            endpoints=_json(query, "endpoints", "{}"),
        )
        self._emit("Workload", name, namespace, "updated" if existed else "created")
        return 200, workload

    def _delete_workload(self, query: Query) -> Answer:
        namespace, name = _namespace(query), _one(query, "name")
        self._world.delete_workload(namespace, name)
        self._emit("Workload", name, namespace, "deleted")
        return 200, {"deleted": name}

    def _located(self, namespace: str, component: str) -> bool:
        """Whether the namespace holds a component of that name (visible or hidden)."""
        return self._world.v1.locate_component(namespace, component) is not None

    def _workload_exists(self, namespace: str, name: str) -> bool:
        try:
            self._world.v1.workload(namespace, name)
        except Hidden:
            return True
        except NotFound:
            return False
        return True

    def _project_of(self, namespace: str, component: str) -> str:
        found = self._world.v1.locate_component(namespace, component)
        if found is None:
            raise NotFound("component", component)
        return found[0]


def _namespace(query: Query) -> str:
    return _one(query, "namespace", "") or _one(query, "org")


def _one(query: Query, key: str, default: str | None = None) -> str:
    values = query.get(key)
    if values:
        return values[0]
    if default is None:
        raise KeyError(key)
    return default


def _json(query: Query, key: str, default: str) -> dict[str, Any]:
    document = json.loads(_one(query, key, default))
    if not isinstance(document, dict):
        raise ValueError(f"{key} must be a JSON object")
    return document


def _body(status: int, document: Any) -> tuple[int, bytes]:
    if status == 200:
        envelope = {"success": True, "data": document}
    else:
        envelope = {"success": False, "error": document}
    return status, json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
