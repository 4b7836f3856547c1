"""Debug routes for benchmarks and soaks, served only with `SimulatorOptions(control=True)`.

    GET  /_control/stats                 the request counters (SimulatorStats) as JSON
    POST /_control/reset_stats           forget the counters
    GET  /_control/world                 every visible org, project and component detail
    POST /_control/add_component?org=&project=&name=[&type=][&endpoints=<JSON map>]
    POST /_control/delete_component?org=&project=&name=

They answer `{"success": true, "data": ...}` or `{"success": false, "error": ...}`, take their
parameters from the query string (the server reads no request bodies), and bypass the token,
latency, faults and the counters, so a soak can watch and change the world while it runs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from choreo_ingest.simulator.metering import SimulatorStats
from choreo_ingest.simulator.world import NotFound, World

CONTROL_PREFIX: Final = "/_control/"

Query = Mapping[str, list[str]]
Answer = tuple[int, Any]
"""(HTTP status, the `data` document or an error message)."""


class ControlRoutes:
    def __init__(
        self, world: World, stats: Callable[[], SimulatorStats], reset: Callable[[], None]
    ) -> None:
        self._world = world
        self._stats = stats
        self._reset = reset

    def answer(self, method: str, path: str, query: Query) -> tuple[int, bytes]:
        """Status and JSON body for a request under CONTROL_PREFIX."""
        route = path[len(CONTROL_PREFIX) :].rstrip("/")
        handlers: dict[str, tuple[str, Callable[[Query], Answer]]] = {
            "stats": ("GET", self._get_stats),
            "reset_stats": ("POST", self._reset_stats),
            "world": ("GET", self._get_world),
            "add_component": ("POST", self._add_component),
            "delete_component": ("POST", self._delete_component),
        }
        if route not in handlers:
            return _body(404, f"no control route {route!r}")
        wanted, handler = handlers[route]
        if method.upper() != wanted:
            return _body(405, f"{route} takes {wanted}")
        try:
            return _body(*handler(query))
        except NotFound as missing:
            return _body(404, str(missing))
        except (KeyError, ValueError) as error:
            return _body(400, f"bad parameters: {error}")

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

    def _add_component(self, query: Query) -> Answer:
        endpoints = json.loads(_one(query, "endpoints", "{}"))
        if not isinstance(endpoints, dict):
            raise ValueError("endpoints must be a JSON object")
        detail = self._world.add_component(
            _one(query, "org"),
            _one(query, "project"),
            _one(query, "name"),
            component_type=_one(query, "type", "deployment/service"),
            endpoints=endpoints,
        )
        return 200, detail

    def _delete_component(self, query: Query) -> Answer:
        name = _one(query, "name")
        self._world.delete_component(_one(query, "org"), _one(query, "project"), name)
        return 200, {"deleted": name}


def _one(query: Query, key: str, default: str | None = None) -> str:
    values = query.get(key)
    if values:
        return values[0]
    if default is None:
        raise KeyError(key)
    return default


def _body(status: int, document: Any) -> tuple[int, bytes]:
    if status == 200:
        envelope = {"success": True, "data": document}
    else:
        envelope = {"success": False, "error": document}
    return status, json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
