"""The generated part of the simulated world: every field derived from (seed, position) on demand.

Nothing here is stored. A `Blueprint` names the shape of a world (how many orgs, projects per
org, components per project) and computes any org, project or component record, and the
hidden items between them, from the seed and the item's indices. Names embed a fixed-width
index right after a constant prefix, so name order is index order and a listing can find its
place with a binary search.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from choreo_ingest.clock import rfc3339

T = TypeVar("T")
Record = dict[str, Any]
"""An API object with the API's JSON field names."""

RESOURCE_NAME: Final = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_NAME_LENGTH: Final = 63
EPOCH: Final = 1_704_067_200.0  # 2024-01-01T00:00:00Z: every generated createdAt is later
CREATION_SPAN: Final = 2 * 365 * 86_400
MAX_HIDDEN_PER_GAP: Final = 3

ORG_WORDS: Final = (
    "acme", "globex", "initech", "umbrella", "hooli", "stark",
    "wayne", "tyrell", "wonka", "cyberdyne", "soylent", "oscorp",
)  # fmt: skip
PROJECT_WORDS: Final = (
    "payments", "checkout", "identity", "search", "catalog", "billing",
    "shipping", "analytics", "platform", "mobile", "support", "ledger",
)  # fmt: skip
COMPONENT_WORDS: Final = (
    "orders", "users", "inventory", "gateway", "notifier", "reports", "ledger", "auth",
    "frontend", "worker", "scheduler", "cache", "db", "api", "ui", "events", "mailer",
)  # fmt: skip
NON_ASCII_TITLES: Final = (
    "Zahlungsdienst für Bestellungen", "Café Commandes", "注文サービス", "Платёжный шлюз",
    "Ñandú Señales", "Υπηρεσία χρηστών", "Straße & Brücke", "数据分析平台", "🚀 Launch Pad",
)  # fmt: skip
DESCRIPTIONS: Final = (
    "Handles {word} for the {parent} team.",
    "Legacy {word} service kept for compatibility; do not extend.",
    "Gère les {word} et la facturation de {parent}.",
    "负责 {parent} 的 {word} 处理。",
    "First line about {word}.\nSecond line: owned by {parent}.",
)
STATUSES: Final = ("Ready", "Ready", "Ready", "Ready", "Ready", "Ready", "NotReady", "Unknown")
COMPONENT_TYPES: Final = (
    "deployment/web-app", "deployment/service", "deployment/web-app", "deployment/service",
    "statefulset/db", "cronjob/report", "job/migration", "proxy/api-gateway",
)  # fmt: skip
LEGACY_COMPONENT_TYPES: Final = (
    "Service", "WebApplication", "ScheduledTask", "ManualTask",
    "Webhook", "APIProxy", "TestRunner", "EventHandler",
)  # fmt: skip
ENDPOINT_TYPES: Final = ("HTTP", "REST", "gRPC", "GraphQL", "Websocket", "TCP", "UDP")
ENDPOINT_NAMES: Final = (
    "http", "api", "grpc", "graphql", "ws", "metrics", "admin", "tcp-port", "udp-stream", "public",
)  # fmt: skip
AWKWARD_ENDPOINT_NAMES: Final = (
    "REST_api.v1",
    "my endpoint",
    "an-endpoint-name-that-keeps-going-and-going-well-past-sixty-three-char",  # 70 chars
)
COMMON_PORTS: Final = (80, 443, 3000, 5432, 8080, 8443, 9090, 50051)
WORKFLOWS: Final = ("docker", "google-cloud-buildpacks", "react", "ballerina-buildpack")
BRANCHES: Final = ("main", "main", "main", "develop", "release/1.x")


class Draws:
    """Deterministic draws for one position in the world: a cheap stand-in for random.Random.

    Values come from a keyed hash of (seed, position), so any item can be rebuilt on its own,
    in any order, identically on every run and platform.
    """

    __slots__ = ("_next",)

    def __init__(self, seed: int, *position: object) -> None:
        self._next = _words(repr((seed, *position)).encode()).__next__

    def random(self) -> float:
        """A float in [0, 1)."""
        return self._next() / 4_294_967_296

    def randrange(self, stop: int) -> int:
        """An int in [0, stop); stop must be below 2**32 (the tiny modulo bias is harmless)."""
        return self._next() % stop

    def randint(self, low: int, high: int) -> int:
        return low + self._next() % (high - low + 1)

    def choice(self, options: Sequence[T]) -> T:
        return options[self._next() % len(options)]

    def sample(self, options: Sequence[T], count: int) -> list[T]:
        pool = list(options)
        for position in range(count):
            other = position + self._next() % (len(pool) - position)
            pool[position], pool[other] = pool[other], pool[position]
        return pool[:count]

    def uid(self) -> str:
        """A version-4 UUID."""
        words = [self._next() for _ in range(4)]
        words[1] = words[1] & 0xFFFF0FFF | 0x4000
        words[2] = words[2] & 0x3FFFFFFF | 0x80000000
        text = "".join(f"{word:08x}" for word in words)
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def created_at(self) -> str:
        return rfc3339(EPOCH + self.randrange(CREATION_SPAN)) or ""


def _words(key: bytes) -> Iterator[int]:
    """An endless stream of 32-bit words from a keyed hash, 16 words per hash call."""
    for block in itertools.count():
        salt = block.to_bytes(16, "big")
        yield from struct.unpack(">16I", hashlib.blake2b(key, digest_size=64, salt=salt).digest())


def _digest(seed: int, *position: object) -> bytes:
    return hashlib.blake2b(repr((seed, *position)).encode(), digest_size=16).digest()


def index_width(count: int) -> int:
    return max(2, len(str(max(count - 1, 0))))


@dataclass(frozen=True)
class Level:
    """How one level of the hierarchy names its generated items."""

    prefix: str
    words: tuple[str, ...]
    hidden_word: str

    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"^{re.escape(self.prefix)}(\d+)(?:-|x(\d)-)")


ORG_LEVEL: Final = Level("org-", ORG_WORDS, "restricted")
PROJECT_LEVEL: Final = Level("proj-", PROJECT_WORDS, "restricted")
COMPONENT_LEVEL: Final = Level("cmp-", COMPONENT_WORDS, "internal")
LEVELS: Final = (ORG_LEVEL, PROJECT_LEVEL, COMPONENT_LEVEL)
LEVEL_PATTERNS: Final = tuple(level.pattern() for level in LEVELS)


@dataclass(frozen=True)
class Blueprint:
    """The generated shape of a world; every item is computed from it when asked for."""

    seed: int
    orgs: int
    projects: int
    components: int
    endpoints_max: int = 3
    hidden_fraction: float = 0.0
    # Names and lookups are pure functions of the fields above; caching them per blueprint
    # makes the parents' lookups on every request (org, then project) nearly free.
    _names: Callable[[tuple[int, ...], int], str] = field(init=False, repr=False, compare=False)
    _locations: Callable[[tuple[int, ...], str], tuple[int, bool] | None] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", functools.lru_cache(8192)(self._generate_name))
        object.__setattr__(self, "_locations", functools.lru_cache(8192)(self._locate))

    def count(self, parent: tuple[int, ...]) -> int:
        """How many visible generated items the listing under `parent` holds."""
        return (self.orgs, self.projects, self.components)[len(parent)]

    def name(self, parent: tuple[int, ...], index: int) -> str:
        return self._names(parent, index)

    def _generate_name(self, parent: tuple[int, ...], index: int) -> str:
        level = LEVELS[len(parent)]
        digest = _digest(self.seed, "name", *parent, index)
        words = [level.words[digest[0] % len(level.words)]]
        if digest[1] < 102:  # 40%: a two-word name
            words.append(level.words[digest[2] % len(level.words)])
        name = f"{self._head(parent, index)}-{'-'.join(words)}"
        if digest[3] < 8:  # 3%: the longest name Kubernetes allows
            name = (name + "-" + "-".join(level.words))[:MAX_NAME_LENGTH].rstrip("-")
            name = name.ljust(MAX_NAME_LENGTH, "x")
        return name

    def hidden_names(self, parent: tuple[int, ...], index: int) -> list[str]:
        """Names of the items the caller may not see, listed right after visible item `index`."""
        if self.hidden_fraction <= 0:
            return []
        digest = _digest(self.seed, "hidden", *parent, index)
        if int.from_bytes(digest[:4], "big") >= self.hidden_fraction * 2**32:
            return []
        run = 1 + sum(1 for byte in digest[4 : 3 + MAX_HIDDEN_PER_GAP] if byte < 90)
        word = LEVELS[len(parent)].hidden_word
        return [f"{self._head(parent, index)}x{position}-{word}" for position in range(run)]

    def _head(self, parent: tuple[int, ...], index: int) -> str:
        number, width = self._number(parent, index), index_width(self._numbers(parent))
        return f"{LEVELS[len(parent)].prefix}{number:0{width}d}"

    def _number(self, parent: tuple[int, ...], index: int) -> int:
        # Components are Kubernetes objects in their org's namespace: their names are unique
        # across the org's projects, so they are numbered org-wide.
        if len(parent) == 2:
            return parent[1] * self.components + index
        return index

    def _numbers(self, parent: tuple[int, ...]) -> int:
        return self.projects * self.components if len(parent) == 2 else self.count(parent)

    def locate(self, parent: tuple[int, ...], name: str) -> tuple[int, bool] | None:
        """(index, hidden) of the generated item called `name`, or None if no such item exists."""
        return self._locations(parent, name)

    def _locate(self, parent: tuple[int, ...], name: str) -> tuple[int, bool] | None:
        match = LEVEL_PATTERNS[len(parent)].match(name)
        if match is None:
            return None
        index = int(match.group(1)) - self._number(parent, 0)
        if not 0 <= index < self.count(parent):
            return None
        if match.group(2) is None:
            return (index, False) if self.name(parent, index) == name else None
        return (index, True) if name in self.hidden_names(parent, index) else None

    def record(self, parent: tuple[int, ...], index: int) -> Record:
        """The generated org, project or component (detail) at `index` under `parent`."""
        if not parent:
            return self.org(index)
        if len(parent) == 1:
            return self.project(parent[0], index)
        return self.component(parent[0], parent[1], index)

    def org(self, org: int) -> Record:
        name = self.name((), org)
        rng = Draws(self.seed, "org", org)
        record: Record = {"name": name}
        _describe(record, rng, name, "platform")
        record["namespace"] = name
        record["createdAt"] = rng.created_at()
        _set_status(record, rng)
        return record

    def project(self, org: int, project: int) -> Record:
        name = self.name((org,), project)
        org_name = self.name((), org)
        rng = Draws(self.seed, "project", org, project)
        record: Record = {"uid": rng.uid(), "name": name, "orgName": org_name}
        _describe(record, rng, name, org_name)
        if rng.random() < 0.8:
            record["deploymentPipeline"] = "default-pipeline"
        record["createdAt"] = rng.created_at()
        _set_status(record, rng)
        return record

    def component(self, org: int, project: int, component: int) -> Record:
        """The component as the detail call with `include=type,workload` returns it."""
        name = self.name((org, project), component)
        org_name = self.name((), org)
        project_name = self.name((org,), project)
        rng = Draws(self.seed, "component", org, project, component)
        record: Record = {"uid": rng.uid(), "name": name}
        _describe(record, rng, name, project_name)
        legacy = rng.random() < 0.3
        record["type"] = rng.choice(LEGACY_COMPONENT_TYPES if legacy else COMPONENT_TYPES)
        record["autoDeploy"] = rng.random() < 0.5
        record["projectName"] = project_name
        record["orgName"] = org_name
        record["createdAt"] = rng.created_at()
        _set_status(record, rng)
        endpoints = self._endpoints(rng, name)
        if endpoints or rng.random() < 0.9:
            workload: Record = {"containers": {"main": {"image": _image(org_name, name, rng)}}}
            if endpoints or rng.random() < 0.5:  # the real server omits an empty map
                workload["endpoints"] = endpoints
            record["workload"] = workload
        if rng.random() < 0.6:
            record["componentWorkflow"] = workflow(
                rng.choice(WORKFLOWS),
                f"https://github.com/{org_name}/{name}",
                rng.choice(BRANCHES),
            )
        return record

    def _endpoints(self, rng: Draws, component: str) -> Record:
        count = rng.randint(0, self.endpoints_max)
        names = rng.sample(ENDPOINT_NAMES, min(count, len(ENDPOINT_NAMES)))
        names += [f"port-{extra}" for extra in range(len(names), count)]
        if names and rng.random() < 0.15:
            names[-1] = rng.choice(AWKWARD_ENDPOINT_NAMES)
        return {name: _endpoint(rng, component, name) for name in names}


def workflow(name: str, repository_url: str, branch: str | None) -> Record:
    repository: Record = {"url": repository_url, "appPath": "/"}
    if branch is not None:
        repository["revision"] = {"branch": branch}
    return {"name": name, "systemParameters": {"repository": repository}}


def list_item(detail: Record) -> Record:
    """A component as list calls return it: the detail without workload or workflow."""
    return {key: value for key, value in detail.items() if key not in DETAIL_ONLY_FIELDS}


DETAIL_ONLY_FIELDS: Final = frozenset({"workload", "componentWorkflow"})


def _describe(record: Record, rng: Draws, name: str, parent: str) -> None:
    words = name.split("-")[2:] or [name]
    roll = rng.random()
    if roll < 0.55:
        record["displayName"] = " ".join(word.capitalize() for word in words[:2])
    elif roll < 0.7:
        record["displayName"] = rng.choice(NON_ASCII_TITLES)
    elif roll < 0.8:
        record["displayName"] = ""
    roll = rng.random()
    if roll < 0.55:
        template = rng.choice(DESCRIPTIONS)
        record["description"] = template.format(word=words[0], parent=parent)
    elif roll < 0.6:
        record["description"] = ""


def _set_status(record: Record, rng: Draws) -> None:
    if rng.random() < 0.95:
        record["status"] = rng.choice(STATUSES)


def _image(org: str, component: str, rng: Draws) -> str:
    return f"registry.example.com/{org}/{component}:v{rng.randint(1, 40)}"


def _endpoint(rng: Draws, component: str, name: str) -> Record:
    kind = rng.choice(ENDPOINT_TYPES)
    port = rng.choice(COMMON_PORTS) if rng.random() < 0.7 else rng.randint(1, 65535)
    endpoint: Record = {"type": kind, "port": port}
    roll = rng.random()
    if roll < 0.3:
        endpoint["schema"] = {"type": kind, "content": schema_content(kind, component, name)}
    elif roll < 0.35:
        endpoint["schema"] = {"type": kind}
    return endpoint


def schema_content(kind: str, component: str, endpoint: str) -> str:
    title = f"{component} {endpoint}"
    if kind in ("HTTP", "REST"):
        return f"openapi: 3.0.0\ninfo:\n  title: {title}\n  version: 1.0.0\npaths: {{}}\n"
    if kind == "GraphQL":
        return "type Query {\n  health: String\n}\n"
    if kind == "gRPC":
        return 'syntax = "proto3";\nservice Health {\n  rpc Check (Ping) returns (Pong);\n}\n'
    if kind == "Websocket":
        return f"asyncapi: 2.6.0\ninfo:\n  title: {title}\n  version: 1.0.0\nchannels: {{}}\n"
    return f"{kind} stream served by {title}\n"
