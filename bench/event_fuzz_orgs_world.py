"""The org-era world changes `event_fuzz_orgs.py` plays, and the events the forwarder posts for
them: random changes over a few clash-prone names (component `a` with endpoint `b-c` and
component `a-b` with endpoint `c` both give the API name `a-b-c`), each with a text for the
report, and the orders a delivery may give them."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from event_fuzz_core import same_object
from event_fuzz_world import OWNER, SCHEMA

from choreo_ingest.simulator import World

PROJECTS = ("p", "p-a", "q")
COMPONENTS = ("a", "a-b", "b", "b-c", "c", "a-b-c")
ENDPOINTS = ("c", "b-c", "c-e", "e", "b-c-e", "B-c", "x" * 60)
ORGS = ("o2", "o2-a")
TYPES = ("HTTP", "REST", "gRPC", "GraphQL", "TCP", "UDP", "Websocket")
OWNERS = ("group:default/t1", "t2", None)
KINDS = (
    "add_component", "add_component", "add_component", "delete_component", "move_component",
    "move_component", "rename_component", "set_endpoints", "set_endpoints", "update_component",
    "component_owner", "add_project", "replace_project", "delete_project", "update_project",
    "update_org", "add_org", "delete_org", "deletion_mark",
)  # fmt: skip

Change = tuple[str, Callable[[World], Any]]
Snapshot = dict[tuple[str, str, str], Any]
"""(kind, name, org) -> the object as the API shows it (an Organization's org is '')."""


def event(
    kind: str, name: str, org: str, action: str, project: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "name": name, "action": action}
    if org:
        body["namespace"] = org
    if project is not None:
        body["project"] = project
    return body


def snapshot(world: World) -> Snapshot:
    found: Snapshot = {}
    for org in world.orgs():
        o = org["name"]
        found[("Organization", o, "")] = world.org(o)
        for project in world.projects(o):
            p = project["name"]
            found[("Project", p, o)] = world.project(o, p)
            for c in world.components(o, p):
                found[("Component", c["name"], o)] = world.component(o, p, c["name"])
    return found


def events_between(before: Snapshot, after: Snapshot) -> list[dict[str, Any]]:
    """What the event forwarder posts: a changed uid or creation time is a deletion and a
    creation; a Component event names the project the component is (or was) in."""
    posted = []
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key), after.get(key)
        if new is None:
            posted.append(_said(key, "deleted", before[key]))
        elif old is None:
            posted.append(_said(key, "created", new))
        elif old != new:
            if any(old.get(k) != new.get(k) for k in ("uid", "createdAt", "projectName")):
                posted += [_said(key, "deleted", old), _said(key, "created", new)]
            else:
                posted.append(_said(key, "updated", new))
    return posted


def _said(key: tuple[str, str, str], action: str, record: dict[str, Any]) -> dict[str, Any]:
    kind, name, org = key
    project = record.get("projectName") if kind == "Component" else None
    return event(kind, name, org, action, project)


def _at_or_below(e: dict[str, Any], d: dict[str, Any]) -> bool:
    """Whether `e`'s object is `d`'s or lies below it (org > project > component); a Component
    event without `project` counts as below every project of its org."""
    if d["kind"] == "Organization":
        return bool((e["name"] if e["kind"] == "Organization" else e.get("namespace")) == d["name"])
    if e["kind"] == "Organization" or e.get("namespace") != d.get("namespace"):
        return False
    if d["kind"] == "Project":
        if e["kind"] == "Project":
            return bool(e["name"] == d["name"])
        return e.get("project") in (None, d["name"])
    return bool(e["kind"] == "Component" and e["name"] == d["name"])


def _ordered(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether `a`, sent before `b`, stays before it: the same object, or one of them a
    `deleted` (org-era events apply it without a read) of the other's object or above it. A
    forwarder does not reorder one object's events, and across a parent and its child the
    reorder would have a blind removal undo a newer event (an artefact, not a finding)."""
    if same_object(a, b):
        return True
    return (a["action"] == "deleted" and _at_or_below(b, a)) or (
        b["action"] == "deleted" and _at_or_below(a, b)
    )


def interleaved(rng: random.Random, posted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A random order that keeps every pair `_ordered` says must keep its order."""
    left, out = list(range(len(posted))), []
    while left:
        free = [i for i in left if not any(j < i and _ordered(posted[j], posted[i]) for j in left)]
        i = rng.choice(free)
        left.remove(i)
        out.append(posted[i])
    return out


def in_mode(rng: random.Random, mode: str, posted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as the seed's delivery mode hands them over."""
    if mode == "shuffle":
        return interleaved(rng, posted)
    if mode == "lose_deleted":
        return [
            e
            for i, e in enumerate(posted)
            if e["action"] != "deleted"
            or not any(same_object(o, e) and o["action"] != "deleted" for o in posted[i + 1 :])
            or rng.random() >= 0.7
        ]
    if mode == "dup":
        doubled = []
        for e in posted:
            doubled += [e, copy.deepcopy(e)] if rng.random() < 0.5 else [e]
        return interleaved(rng, doubled)
    if mode == "noproj":
        stripped = [copy.deepcopy(e) for e in posted]
        for e in stripped:
            if e["kind"] == "Component" and rng.random() < 0.5:
                e.pop("project", None)
        return stripped
    return posted


class Changes:
    """Random world changes over the clash-prone names, each with its text for the report;
    `kinds`: the kinds a pick draws from, one as often as it is listed (a fuzzer may add to
    them: `event_fuzz_orgs_mid_cycle.py` sets endpoints and makes components more often)."""

    def __init__(self, rng: random.Random, world: World, org: str) -> None:
        self.rng, self.world, self.org = rng, world, org
        self.kinds = list(KINDS)

    def endpoints(self, most: int = 2) -> dict[str, Any]:
        made: dict[str, Any] = {}
        for _ in range(self.rng.randint(0, most)):
            details: dict[str, Any] = {
                "type": self.rng.choice(TYPES),
                "port": self.rng.choice([80, 81]),
            }
            if self.rng.random() < 0.6:
                content = SCHEMA if self.rng.random() < 0.8 else " "
                details["schema"] = {"type": "openapi", "content": content}
            made[self.rng.choice(ENDPOINTS)] = details
        return made

    def pick(self) -> Change | None:
        """One change that may apply to the world as it is, or None for a kind that does not."""
        r, w = self.rng, self.world
        orgs = [o["name"] for o in w.orgs()]
        projects = [(o, p["name"]) for o in orgs for p in w.projects(o)]
        components = [(o, p, c["name"]) for o, p in projects for c in w.components(o, p)]
        kind = r.choice(self.kinds)
        if kind == "add_component" and projects:
            (o, p), c, e = r.choice(projects), r.choice(COMPONENTS), self.endpoints()
            return f"add_component({o!r}, {p!r}, {c!r}, {sorted(e)})", lambda w: w.add_component(
                o, p, c, endpoints=e
            )
        if kind == "delete_component" and components:
            o, p, c = r.choice(components)
            return f"delete_component({o!r}, {p!r}, {c!r})", lambda w: w.delete_component(o, p, c)
        if kind == "move_component" and components:
            o, p, c = r.choice(components)
            others = [q for oo, q in projects if oo == o and q != p]
            if not others:
                return None
            q, kept = r.choice(others), None if r.random() < 0.5 else self.endpoints()

            def move(w: World) -> None:
                had = w.component(o, p, c).get("workload", {}).get("endpoints", {})
                w.delete_component(o, p, c)
                w.add_component(o, q, c, endpoints=had if kept is None else kept)

            shown = "kept" if kept is None else sorted(kept)
            return f"move_component({o!r}, {c!r}: {p!r} -> {q!r}, {shown})", move
        if kind == "rename_component" and components:
            (o, p, c), n = r.choice(components), r.choice(COMPONENTS)
            return f"rename_component({o!r}, {p!r}, {c!r} -> {n!r})", lambda w: w.rename_component(
                o, p, c, n
            )
        if kind == "set_endpoints" and components:
            (o, p, c), e = r.choice(components), self.endpoints(3)
            return f"set_endpoints({o!r}, {p!r}, {c!r}, {sorted(e)})", lambda w: w.set_endpoints(
                o, p, c, e
            )
        if kind == "update_component" and components:
            o, p, c = r.choice(components)
            change: dict[str, Any] = r.choice(
                [
                    {"displayName": r.choice(["X", None])},
                    {"description": r.choice(["d", None])},
                    {"type": r.choice(["Service", "deployment/web-app"])},
                    {"status": r.choice(["Ready", "NotReady", None])},
                ]
            )
            return self._update_component(o, p, c, change)
        if kind == "component_owner" and components:
            (o, p, c), owner = r.choice(components), r.choice(OWNERS)
            return self._update_component(o, p, c, {"annotations": {OWNER: owner} if owner else {}})
        if kind == "deletion_mark":
            mark = r.choice(["2030-01-01T00:00:00Z", None])
            if components and r.random() < 0.6:
                o, p, c = r.choice(components)
                return self._update_component(o, p, c, {"deletionTimestamp": mark})
            if projects:
                o, p = r.choice(projects)
                return self._update_project(o, p, {"deletionTimestamp": mark})
            return None
        if kind == "add_project" and orgs:
            o, p = r.choice(orgs), r.choice(PROJECTS)
            if (o, p) in projects:
                return None
            return f"add_project({o!r}, {p!r})", lambda w: w.add_project(o, p)
        if kind == "replace_project" and projects:
            o, p = r.choice(projects)
            return f"replace_project({o!r}, {p!r})", lambda w: w.add_project(o, p)
        if kind == "delete_project" and projects:
            o, p = r.choice(projects)
            return f"delete_project({o!r}, {p!r})", lambda w: w.delete_project(o, p)
        if kind == "update_project" and projects:
            o, p = r.choice(projects)
            change = r.choice(
                [
                    {"displayName": r.choice(["P", None])},
                    {"status": r.choice(["Ready", None])},
                    {"annotations": {OWNER: "t3"}},
                ]
            )
            return self._update_project(o, p, change)
        if kind == "update_org" and orgs:
            o = r.choice(orgs)
            change = r.choice(
                [
                    {"displayName": r.choice(["O", None])},
                    {"status": r.choice(["Ready", "NotReady"])},
                    {"annotations": {OWNER: "t4"}},
                    {"description": "x"},
                ]
            )
            return f"update_org({o!r}, {change!r})", lambda w: w.update_org(o, change)
        if kind == "add_org":
            o, with_project = (
                r.choice([*ORGS, *([self.org] if r.random() < 0.1 else [])]),
                r.random(),
            )

            def add(w: World) -> None:
                w.add_org(o)
                if with_project < 0.7:
                    w.add_project(o, "p")

            return f"add_org({o!r}{', p' if with_project < 0.7 else ''})", add
        if kind == "delete_org" and orgs:
            o = r.choice(orgs)
            if o == self.org and r.random() < 0.8:
                return None
            return f"delete_org({o!r})", lambda w: w.delete_org(o)
        return None

    @staticmethod
    def _update_component(o: str, p: str, c: str, change: dict[str, Any]) -> Change:
        return f"update_component({o!r}, {p!r}, {c!r}, {change!r})", lambda w: w.update_component(
            o, p, c, change
        )

    @staticmethod
    def _update_project(o: str, p: str, change: dict[str, Any]) -> Change:
        return f"update_project({o!r}, {p!r}, {change!r})", lambda w: w.update_project(o, p, change)
