"""The world the clean-room organization-era OpenChoreo server (`cleanroom_orgs.py`) serves:
organizations, projects and components generated from a seed, written from `openchoreo-api.md`
alone, for `test_cleanroom_orgs_*.py`.

Where the document leaves room, it takes the least convenient legal reading: optional fields are
missing on some items and empty strings on others; names run to 63 characters; endpoints come in
every documented type, with free-form names; every org with components has a `default` project
with the same component names; a hidden org, hidden projects and runs of hidden components
(longer than a page) are there for the server to filter out after paging. Also the shapes the
tests build and the component items they add.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

WORKLOAD_TYPES = (
    "deployment/web-app",
    "statefulset/db",
    "cronjob/report",
    "job/migrate",
    "proxy/edge-gw",
    "deployment/service",
)
LEGACY_TYPES = (
    "Service",
    "WebApplication",
    "ScheduledTask",
    "ManualTask",
    "Webhook",
    "APIProxy",
    "TestRunner",
    "EventHandler",
)
ENDPOINT_TYPES = ("HTTP", "REST", "gRPC", "GraphQL", "Websocket", "TCP", "UDP")

Key = tuple[str, ...]


@dataclass
class World:
    """Organizations, projects and components as the API serves them. Keys: (org,), (org, project),
    (org, project, component). `hidden` keys exist but the caller may not see them."""

    orgs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    projects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    components: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Each holds the list-item fields plus `_endpoints` (dict or None) and `_workflow`."""
    hidden: set[Key] = field(default_factory=set)

    def visible_orgs(self) -> list[Key]:
        return sorted(k for k in self.orgs if k not in self.hidden)

    def visible_projects(self) -> list[Key]:
        return sorted(
            k for k in self.projects if k not in self.hidden and (k[0],) not in self.hidden
        )

    def visible_components(self) -> list[Key]:
        return sorted(
            k
            for k in self.components
            if k not in self.hidden and k[:2] not in self.hidden and k[:1] not in self.hidden
        )

    def delete_project(self, org: str, project: str) -> None:
        del self.projects[(org, project)]
        for key in [k for k in self.components if k[:2] == (org, project)]:
            del self.components[key]

    def delete_org(self, org: str) -> None:
        del self.orgs[(org,)]
        for key in [k for k in self.projects if k[0] == org]:
            self.delete_project(*key)


def _stamp(rng: random.Random) -> str:
    day = rng.randint(1, 28)
    if rng.random() < 0.5:
        return f"2024-03-{day:02d}T10:{rng.randint(0, 59):02d}:00Z"
    return f"2024-03-{day:02d}T10:00:00.{rng.randint(0, 999999):06d}+05:30"


def _optional(rng: random.Random, item: dict[str, Any], key: str, value: str) -> None:
    """Present, missing, or an empty string: the document marks the field optional."""
    roll = rng.random()
    if roll < 0.55:
        item[key] = value
    elif roll < 0.75:
        item[key] = ""


def _common(rng: random.Random, item: dict[str, Any], display_name: str, description: str) -> None:
    """What an organization, a project and a component item all have after their own fields: a
    creation time, then the optional display name and description."""
    item["createdAt"] = _stamp(rng)
    _optional(rng, item, "displayName", display_name)
    _optional(rng, item, "description", description)


def _status(rng: random.Random, item: dict[str, Any]) -> None:
    """An item's optional status: one of the three the document names, or none."""
    if rng.random() < 0.7:
        item["status"] = rng.choice(["Ready", "NotReady", "Unknown"])


def long_name(stem: str, length: int = 63) -> str:
    """A Kubernetes name of exactly `length` characters starting with `stem`."""
    filler = "-abcdefghijklmnopqrstuvwxyz0123456789" * 4
    name = (stem + filler)[:length].rstrip("-")
    return name + "x" * (length - len(name))


# Endpoint specs: (name, type, port, schema or None). Names are free-form map keys.
SPECIAL_ENDPOINTS: list[tuple[str, str, int, dict[str, Any] | None]] = [
    (
        "Public API (v2)",
        "REST",
        8080,
        {"type": "REST", "content": "openapi: 3.0.0\ninfo: {title: x, version: '1'}\npaths: {}\n"},
    ),
    ("grpc.orders.v1.OrderService/Get", "gRPC", 50051, {"type": "gRPC"}),
    ("events_stream", "Websocket", 65535, None),
    ("café-menu", "GraphQL", 1, {"content": ""}),
    ("metrics-" + "m" * 80, "HTTP", 9090, None),
    ("raw-tcp", "TCP", 6379, None),
    ("dns", "UDP", 53, {"type": "UDP", "content": "udp text"}),
    (
        "graph",
        "GraphQL",
        4000,
        {"type": "GraphQL", "content": {"kind": "Document", "definitions": []}},
    ),
    ("Public-API", "REST", 8082, None),
    ("public_api", "REST", 8083, None),
    ("HTTP", "HTTP", 80, None),
    ("http", "HTTP", 81, None),
    ("", "REST", 8081, None),
]


def endpoint(kind: str, port: int, schema: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "port": port}
    if schema is not None:
        body["schema"] = schema
    return body


def build_world(seed: int, shape: list[tuple[str, int, int]], *, hidden_org: bool = True) -> World:
    """`shape`: (org name, projects, components per project). Component names are unique per org
    (Kubernetes names in the org's namespace). A hidden org, hidden projects and runs of hidden
    components make short and empty pages."""
    rng = random.Random(seed)
    world = World()
    orgs = list(shape)
    if hidden_org:
        orgs.append(("zz-not-yours", 1, 3))
    special = 0
    for org_index, (org, n_projects, n_components) in enumerate(orgs):
        item: dict[str, Any] = {"name": org}
        _common(rng, item, f"Org {org[:20].title()}", f"The {org[:10]} organization")
        if rng.random() < 0.6:
            item["namespace"] = rng.choice([org, f"ns-{org_index}"])
        item["labels"] = {"openchoreo.dev/org": org}  # a field the document does not list
        _status(rng, item)
        world.orgs[(org,)] = item
        if org == "zz-not-yours":
            world.hidden.add((org,))
        for p in range(n_projects):
            project = (
                long_name(f"p{org_index}-proj-{p}") if p == 1 else f"proj-{p}-{org[:8]}".rstrip("-")
            )
            pitem: dict[str, Any] = {
                "uid": f"uid-p-{org_index}-{p}-{rng.getrandbits(32):08x}",
                "name": project,
                "orgName": org,
            }
            _common(rng, pitem, f"Project {p}", f"Project {p} of {org}")
            if rng.random() < 0.5:
                pitem["deploymentPipeline"] = "default-pipeline"
            _status(rng, pitem)
            if p == 2:
                pitem["deletionTimestamp"] = "2024-04-01T00:00:00Z"
            world.projects[(org, project)] = pitem
            if p == 3:  # the caller may not see this project
                world.hidden.add((org, project))
            for c in range(n_components):
                number = p * 1000 + c
                if c % 13 == 5:
                    name = long_name(f"c{org_index}-{number}-svc")
                else:
                    name = f"svc-{number:04d}"
                citem: dict[str, Any] = {
                    "uid": f"uid-c-{org_index}-{number}-{rng.getrandbits(48):012x}",
                    "name": name,
                    "type": (WORKLOAD_TYPES + LEGACY_TYPES)[(number + org_index) % 14],
                    "autoDeploy": rng.random() < 0.5,
                    "projectName": project,
                    "orgName": org,
                }
                _common(rng, citem, f"Service {number}", f"Component {number}")
                _status(rng, citem)
                if c % 17 == 3:
                    citem["deletionTimestamp"] = "2024-04-02T00:00:00Z"
                endpoints: dict[str, Any] | None
                roll = c % 4
                if roll == 0:
                    endpoints = None  # no workload at all, or one without endpoints
                else:
                    endpoints = {}
                    for _ in range(roll):
                        if rng.random() < 0.35:
                            ename, etype, eport, schema = SPECIAL_ENDPOINTS[
                                special % len(SPECIAL_ENDPOINTS)
                            ]
                            special += 1
                        else:
                            etype = rng.choice(ENDPOINT_TYPES)
                            ename = (
                                rng.choice(["api", "admin", "grpc", "ws", "rpc", "web"])
                                + f"-{rng.randint(1, 9)}"
                            )
                            eport = rng.randint(1, 65535)
                            schema = (
                                {"type": etype, "content": f"{etype} schema of {name}/{ename}"}
                                if rng.random() < 0.4
                                else None
                            )
                        endpoints[ename] = endpoint(etype, eport, schema)
                citem["_endpoints"] = endpoints
                citem["_workload_style"] = rng.choice(["none", "empty", "null-endpoints"])
                if c % 5 == 1:
                    citem["_workflow"] = {
                        "systemParameters": {
                            "repository": {
                                "url": rng.choice(
                                    [
                                        "https://github.com/acme/shop.git",
                                        "https://gitlab.example.com/team/repo",
                                        "git@github.com:acme/cart.git",
                                    ]
                                ),
                                "revision": {"branch": "main"},
                                "appPath": "/",
                            }
                        }
                    }
                world.components[(org, project, name)] = citem
                if c % 29 in (7, 8, 9, 10, 11, 12, 13, 14, 15):  # a run longer than a page
                    world.hidden.add((org, project, name))
    for org, _, n_components in orgs:
        if n_components and org != "zz-not-yours":  # OpenChoreo's per-org `default` project
            _add_default_project(world, org)
    return world


def _add_default_project(world: World, org: str) -> None:
    """A project called `default` in every org, with the same component names in each."""
    world.projects[(org, "default")] = {
        "uid": f"uid-default-{org}",
        "name": "default",
        "orgName": org,
        "displayName": "Default Project ☕",
        "description": "Created with the org.\nSecond line.",
        "createdAt": "2024-01-01T00:00:00Z",
        "status": "Ready",
    }
    for index, name in enumerate(("frontend", "backend", "worker")):
        world.components[(org, "default", name)] = {
            "uid": f"uid-{org}-{name}",
            "name": name,
            "type": LEGACY_TYPES[index],
            "autoDeploy": True,
            "projectName": "default",
            "orgName": org,
            "createdAt": "2024-01-01T00:00:00Z",
            "displayName": f"{name.title()} — ünïcode",
            "_endpoints": {"http": endpoint("HTTP", 8080, None)} if index < 2 else None,
        }


def add_collision(world: World, org: str, project: str) -> tuple[Key, Key]:
    """Components `pay` (endpoint `gate-api`) and `pay-gate` (endpoint `api`): both endpoints
    join to `pay-gate-api`."""
    base = {
        "type": "deployment/service",
        "autoDeploy": True,
        "projectName": project,
        "orgName": org,
        "createdAt": "2024-01-01T00:00:00Z",
    }
    a = (org, project, "pay")
    b = (org, project, "pay-gate")
    world.components[a] = {
        **base,
        "uid": "uid-pay",
        "name": "pay",
        "_endpoints": {"gate-api": endpoint("REST", 8080, None)},
    }
    world.components[b] = {
        **base,
        "uid": "uid-pay-gate",
        "name": "pay-gate",
        "_endpoints": {"api": endpoint("REST", 8080, None)},
    }
    return a, b


def component(org: str, project: str, name: str, kind: str, **fields: Any) -> dict[str, Any]:
    """A component list item (plus `_endpoints`), created 2024-06-01."""
    return {
        "uid": f"uid-{org}-{name}",
        "name": name,
        "type": kind,
        "autoDeploy": True,
        "projectName": project,
        "orgName": org,
        "createdAt": "2024-06-01T00:00:00Z",
        **fields,
    }


LONG_ORG = long_name("org-long")
BIG = [("acme", 5, 45), (LONG_ORG, 4, 40), ("globex", 3, 40), ("empty-org", 0, 0)]
SMALL = [("acme", 4, 12), ("globex", 2, 10)]
