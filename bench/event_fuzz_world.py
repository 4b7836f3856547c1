"""The world changes `event_fuzz.py` plays, and the events OpenChoreo's forwarder posts for
them: random changes over a few clash-prone names (`p-a` `b` `c` and `p` `a-b` `c` both give
the API name `p-a-b-c`), each with a text for the report."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from choreo_ingest.simulator import World

OWNER = "backstage.io/owner"
SCHEMA = "openapi: 3.0.0\ninfo: {title: x, version: '1'}\n"
PROJECTS = ("p", "p-a", "q")
COMPONENTS = ("a", "a-b", "b", "b-c", "c")
ENDPOINTS = ("c", "b-c", "a-b-c", "B-c", "C", "e")
WORKLOADS = ("w1", "w2", "a-workload", "a-b-workload", "zz")
OWNERS = ("group:default/t1", "t2", "group:", None)

Change = tuple[str, Callable[[World, str], Any]]
Snapshot = dict[tuple[str, str], Any]


def event(kind: str, name: str, namespace: str, action: str) -> dict[str, Any]:
    return {"kind": kind, "name": name, "namespace": namespace, "action": action}


def snapshot(world: World, ns: str) -> Snapshot:
    """Every object of the namespace as the v1 API shows it, by kind and name."""
    found: Snapshot = {}
    for item in world.v1_namespaces():
        if item["metadata"]["name"] == ns:
            found[("Namespace", ns)] = item
    listings = (world.v1_projects, world.v1_components, world.v1_workloads)
    for kind, listing in zip(("Project", "Component", "Workload"), listings, strict=True):
        for item in listing(ns):
            found[(kind, item["metadata"]["name"])] = item
    return found


def events_between(before: Snapshot, after: Snapshot, ns: str) -> list[dict[str, Any]]:
    """What the event forwarder posts: a changed uid is a deletion and a creation."""
    posted = []
    for key in [*before, *(k for k in after if k not in before)]:
        kind, name = key
        if key not in after:
            posted.append(event(kind, name, ns, "deleted"))
        elif key not in before:
            posted.append(event(kind, name, ns, "created"))
        elif before[key] != after[key]:
            if before[key]["metadata"].get("uid") != after[key]["metadata"].get("uid"):
                posted.append(event(kind, name, ns, "deleted"))
                posted.append(event(kind, name, ns, "created"))
            else:
                posted.append(event(kind, name, ns, "updated"))
    return posted


def shown(endpoints: dict[str, Any]) -> str:
    """`{c:80, e:81 no schema}` for the report."""
    return (
        "{"
        + ", ".join(
            f"{name}:{e['port']}" + ("" if e["schema"]["content"].strip() else " no schema")
            for name, e in endpoints.items()
        )
        + "}"
    )


class Changes:
    """Random world changes over the clash-prone names, each with its text for the report."""

    def __init__(self, rng: random.Random, world: World, ns: str, deps: bool) -> None:
        self.rng, self.world, self.ns = rng, world, ns
        self.kinds = [
            "add_component", "add_component", "delete_component", "move_component",
            "add_workload", "add_workload", "update_workload", "delete_workload",
            "move_workload", "component_owner", "project_owner", "add_project",
            "delete_project", "namespace_label", "namespace_owner", "set_endpoints",
            "clash", "clash",
        ] + ["dependencies"] * (2 if deps else 0)  # fmt: skip

    def endpoints(self) -> dict[str, Any]:
        made = {}
        for _ in range(self.rng.randint(0, 2)):
            content = SCHEMA if self.rng.random() < 0.85 else "  "
            made[self.rng.choice(ENDPOINTS)] = {
                "type": "HTTP",
                "port": self.rng.choice([80, 81]),
                "schema": {"type": "openapi", "content": content},
            }
        return made

    def owner(self) -> dict[str, str]:
        chosen = self.rng.choice(OWNERS)
        return {} if chosen is None else {OWNER: chosen}

    def clashing(self, projects: list[str]) -> tuple[str, str, str] | None:
        """A new component, and an endpoint of it, whose API name is one an endpoint of the
        world gives already (`p-a` `b` `c` and `p` `a-b` `c`: `p-a-b-c`), in any case."""
        taken: set[str] = set()
        for item in self.world.v1_workloads(self.ns):
            owner = item["spec"]["owner"]
            for endpoint in item["spec"].get("endpoints") or {}:
                taken.add(f"{owner['projectName']}-{owner['componentName']}-{endpoint}".lower())
        existing = {c["metadata"]["name"] for c in self.world.v1_components(self.ns)}
        fits = [
            (p, c, e)
            for p in projects
            for c in COMPONENTS
            for e in ENDPOINTS
            if c not in existing and f"{p}-{c}-{e}".lower() in taken
        ]
        return self.rng.choice(fits) if fits else None

    def pick(self) -> Change | None:
        """One change that applies to the world as it is, or None for a kind that does not."""
        r, world, ns = self.rng, self.world, self.ns
        components = [
            (c["metadata"]["name"], c["spec"]["owner"]["projectName"])
            for c in world.v1_components(ns)
        ]
        projects = [p["metadata"]["name"] for p in world.v1_projects(ns)]
        workloads = [
            (w["metadata"]["name"], w["spec"]["owner"]["componentName"])
            for w in world.v1_workloads(ns)
        ]
        kind = r.choice(self.kinds)
        if kind == "add_component" and projects:
            p, c, e = r.choice(projects), r.choice(COMPONENTS), self.endpoints()
            return f"add_component({p!r}, {c!r}, {shown(e)})", lambda w, n: w.add_component(
                n, p, c, endpoints=e
            )
        if kind == "delete_component" and components:
            c, p = r.choice(components)
            return f"delete_component({p!r}, {c!r})", lambda w, n: w.delete_component(n, p, c)
        if kind == "move_component" and components and len(projects) > 1:
            c, p = r.choice(components)
            q, e = r.choice([x for x in projects if x != p]), self.endpoints()

            def move(w: World, n: str) -> None:
                w.delete_component(n, p, c)
                w.add_component(n, q, c, endpoints=e)

            return f"move_component({c!r}, {p!r} -> {q!r}, {shown(e)})", move
        if kind == "add_workload" and components:
            name, (c, _), e = r.choice(WORKLOADS), r.choice(components), self.endpoints()
            if any(name == known for known, _ in workloads):
                return None
            return f"add_workload({name!r}, {c!r}, {shown(e)})", lambda w, n: w.add_workload(
                n, name, component=c, endpoints=e
            )
        if kind == "move_workload" and workloads and components:
            (name, old), (c, _), e = r.choice(workloads), r.choice(components), self.endpoints()

            def remade(w: World, n: str) -> None:
                w.delete_workload(n, name)
                w.add_workload(n, name, component=c, endpoints=e)

            return f"move_workload({name!r}: {old!r} -> {c!r}, {shown(e)})", remade
        if kind == "update_workload" and workloads:
            (name, _), e = r.choice(workloads), self.endpoints()
            return f"update_workload({name!r}, {shown(e)})", lambda w, n: w.update_workload(
                n, name, {"endpoints": e}
            )
        if kind == "dependencies" and workloads and components:
            name, _ = r.choice(workloads)
            needs = [
                {"component": r.choice(components)[0], "name": r.choice(ENDPOINTS)}
                for _ in range(r.randint(0, 2))
            ]
            return f"dependencies({name!r}, {needs!r})", lambda w, n: w.update_workload(
                n, name, {"dependencies": {"endpoints": needs}}
            )
        if kind == "delete_workload" and workloads:
            name, _ = r.choice(workloads)
            return f"delete_workload({name!r})", lambda w, n: w.delete_workload(n, name)
        if kind == "component_owner" and components:
            (c, p), ann = r.choice(components), self.owner()
            return f"component_owner({p!r}, {c!r}, {ann!r})", lambda w, n: w.update_component(
                n, p, c, {"annotations": ann}
            )
        if kind == "project_owner" and projects:
            p, ann = r.choice(projects), self.owner()
            return f"project_owner({p!r}, {ann!r})", lambda w, n: w.update_project(
                n, p, {"annotations": ann}
            )
        if kind == "set_endpoints" and components:
            (c, p), e = r.choice(components), self.endpoints()
            return f"set_endpoints({p!r}, {c!r}, {shown(e)})", lambda w, n: w.set_endpoints(
                n, p, c, e
            )
        if kind == "clash" and (clash := self.clashing(projects)):
            p, c, clashing = clash
            return f"clash({p!r}, {c!r}, {clashing!r})", lambda w, n: w.add_component(
                n,
                p,
                c,
                endpoints={
                    clashing: {
                        "type": "HTTP",
                        "port": 80,
                        "schema": {"type": "openapi", "content": SCHEMA},
                    }
                },
            )
        if kind == "add_project" and (p := r.choice(PROJECTS)) not in projects:
            return f"add_project({p!r})", lambda w, n: w.add_project(n, p)
        if kind == "delete_project" and projects:
            p = r.choice(projects)
            return f"delete_project({p!r})", lambda w, n: w.delete_project(n, p)
        if kind == "namespace_label":
            value = r.choice(["true", "false", None])
            labels = {"openchoreo.dev/control-plane": value} if value else {}
            return f"namespace_labels({labels!r})", lambda w, n: w.update_org(n, {"labels": labels})
        if kind == "namespace_owner":
            ann = self.owner()
            return f"namespace_owner({ann!r})", lambda w, n: w.update_org(n, {"annotations": ann})
        return None


def project_adder(name: str) -> Callable[[World, str], Any]:
    return lambda world, ns: world.add_project(ns, name)
