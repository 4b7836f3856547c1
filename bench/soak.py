"""Crash-and-fault soak: SIGKILL `choreo-ingest run --force` at random moments, N times, while the
world changes and events arrive, against a simulator serving 5xx, 429 and expired cursors; then
let it finish and check that nothing was lost or duplicated.

    python bench/soak.py [--api v1|orgs] [--kills 100] [--components 20000] [--seed 1] [--json]

`--api v1` (the default) soaks the OpenChoreo v1 API every release serves: OAuth2 client
credentials with short-lived tokens (`--token-lifetime`, 20 s), a 500 for an expired cursor,
flat namespace listings of projects, workloads and components, and v1 events
(`{kind, name, namespace, action}` for Component, Workload, Namespace and Project). `--api orgs`
soaks the organization-era API (410 for an expired cursor, no auth) as before.

The simulator runs as its own process with `--control`; the soak mutates its world (v1: adds,
deletes and replaces components, adds and deletes workloads, changes endpoints, namespace
titles and project owners; orgs: adds, deletes and replaces components) and reads it back
through the `/_control/` routes. Every few iterations, when the stored traversal cursor is in
the middle of an API listing, it waits out the cursor TTL before the next run, so that the run
resumes with an expired cursor. After the kills it runs (with longer bursts) until the
interrupted cycle completes, then one more full cycle (so that changes nobody sent an event for
are picked up and swept), and checks: the catalog equals the world (every ref, kind and body,
nothing extra, no duplicate), the change log replays to the catalog, `health` exits 0, the
metrics textfile parses; under v1 also that the walk made no per-component requests (none in
the last full cycle, and over the whole soak no more than the events explain). Exits 0 only if
every check passes.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common import PROVIDER, SimulatorProcess, ingest, scratch, write_config
from soak_check import Verdict, check_catalog, check_change_log, check_health, check_metrics

from choreo_ingest.events import SETTLE_SECONDS
from choreo_ingest.simulator.records import schema_content
from choreo_ingest.simulator.records_v1 import OWNER, suffixed
from choreo_ingest.store import Store

ORGS = 2
ORG_ENDPOINT_SETS: tuple[dict[str, dict[str, Any]], ...] = (
    {},
    {"http": {"type": "REST", "port": 8080}},
    {"grpc": {"type": "gRPC", "port": 50051}, "metrics": {"type": "HTTP", "port": 9090}},
    {"my endpoint": {"type": "GraphQL", "port": 4000}},
)
V1_ENDPOINT_SETS: tuple[dict[str, dict[str, Any]], ...] = (
    {},
    {"http": {"type": "HTTP", "port": 8080, "schema": {"type": "openapi", "content": "{http}"}}},
    {
        "grpc": {"type": "gRPC", "port": 50051, "schema": {"type": "proto", "content": "{grpc}"}},
        "metrics": {"type": "HTTP", "port": 9090},
    },
    {
        "my endpoint": {
            "type": "GraphQL",
            "port": 4000,
            "visibility": ["project", "external"],
            "schema": {"type": "graphql", "content": "{graphql}"},
        },
        "blank": {"type": "HTTP", "port": 8081, "schema": {"type": "openapi", "content": "  \n"}},
    },
    {"events": {"type": "Websocket", "port": 8090, "schema": {"content": "{websocket}"}}},
)
"""Endpoints in v1's shape; `{kind}` contents become a schema text naming the component."""
MAX_FINISHING_RUNS = 2000
FINISHING_BURST_LENGTH = 30.0
"""Bursts once the kills are over: long enough that waiting out a 429 fits in them."""
RESUME_SECONDS = 1.5
"""Enough for a run to start, drain the inbox and send its first list request."""
MAX_UNKILLED_RUNS = 10
"""Whole bursts run before the last kill, at most, until one leaves a cursor to expire."""
OAUTH_CLIENT = "choreo-ingest-soak"
OAUTH_SECRET = secrets.token_urlsafe(24)
"""A fresh client secret per soak: the simulator gets it through its environment."""
MAX_ATTEMPTS = 4
"""Attempts the client makes at one request (retries of 5xx and 429 included)."""
RATE_LIMITS = {"orgs": 150.0, "v1": 30.0}
"""The default cap: the org era reads every component's detail 5 at a time; a v1 walk sends
one list request at a time, so it meets a cap of 150 a second only rarely."""
PER_COMPONENT_ROUTES = ("get_component", "get_workload")
"""v1 routes a walk never needs: only events (and API-name displacements) read single objects."""


@dataclass
class Options:
    api: str = "v1"
    kills: int = 100
    components: int = 20_000
    seed: int = 1
    error_rate: float = 0.05
    rate_limit: float | None = None
    """Requests per second before 429s; None: RATE_LIMITS[api] (a v1 walk sends far fewer)."""
    cursor_ttl: float = 6.0
    expire_every: int = 10
    burst_length: float = 3.0
    per_project: int = 100
    """Components per project: more pages per listing, more moments in the middle of one."""
    token_lifetime: int = 20
    """v1 only: seconds an OAuth access token lives. Every run grants its own; a run replaces
    it after half its lifetime, so runs longer than that refresh it on the way."""

    @property
    def requests_per_second(self) -> float:
        return RATE_LIMITS[self.api] if self.rate_limit is None else self.rate_limit


@dataclass
class Figures:
    api: str = "v1"
    kills: int = 0
    runs: int = 0
    exit_codes: dict[str, int] = field(default_factory=dict)
    finishing_runs: int = 0
    mutations: dict[str, int] = field(default_factory=dict)
    events_fed: int = 0
    events_fed_by_kind: dict[str, int] = field(default_factory=dict)
    cursor_waits: int = 0
    cycles_completed: int = 0
    cursor_resets: int = 0
    bursts_failed: int = 0
    events: dict[str, int] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    last_cycle: dict[str, Any] = field(default_factory=dict)
    """Requests of the last full cycle (after every event was applied), by route."""
    change_rows: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.0


Event = dict[str, str]


class WorldModel(Protocol):
    counts: Counter[str]

    def mutate(self) -> list[Event]:
        """One random change of the simulator's world; the events that describe it."""
        ...

    def compare(self, world: dict[str, Any]) -> tuple[bool, str]:
        """Whether the world dump holds what the mutations made of it, and a summary."""
        ...


class OrgWorldModel:
    """What the soak believes an org-era simulator holds; mutations go through the control
    routes."""

    def __init__(self, simulator: SimulatorProcess, world: dict[str, Any], rng: random.Random):
        self._simulator = simulator
        self._rng = rng
        self.projects = [(p["orgName"], p["name"]) for p in world["projects"]]
        self.components = {(c["orgName"], c["projectName"], c["name"]) for c in world["components"]}
        self.added = 0
        self.counts: Counter[str] = Counter()

    def mutate(self) -> list[Event]:
        """One random add, delete or replacement."""
        roll = self._rng.random()
        if roll < 0.4 or not self.components:
            org, project = self._rng.choice(self.projects)
            self.added += 1
            name = f"soak-{self.added:05d}"
            self._put(org, project, name)
            action = "created"
        elif roll < 0.8:
            org, project, name = self._rng.choice(sorted(self.components))
            self._simulator.control("POST", "delete_component", org=org, project=project, name=name)
            self.components.discard((org, project, name))
            action = "deleted"
        else:
            org, project, name = self._rng.choice(sorted(self.components))
            self._put(org, project, name)
            action = "updated"
        self.counts[action] += 1
        event = {"kind": "Component", "name": name, "namespace": org, "project": project}
        return [{**event, "action": action}]

    def compare(self, world: dict[str, Any]) -> tuple[bool, str]:
        found = {(c["orgName"], c["projectName"], c["name"]) for c in world["components"]}
        return found == self.components, f"{len(found):,} components"

    def _put(self, org: str, project: str, name: str) -> None:
        endpoints = self._rng.choice(ORG_ENDPOINT_SETS)
        self._simulator.control(
            "POST",
            "add_component",
            org=org,
            project=project,
            name=name,
            endpoints=json.dumps(endpoints),
        )
        self.components.add((org, project, name))


class V1WorldModel:
    """What the soak believes a v1 simulator holds: components and workloads (and who owns
    each workload); mutations go through the control routes and come with v1 events."""

    def __init__(self, simulator: SimulatorProcess, world: dict[str, Any], rng: random.Random):
        self._simulator = simulator
        self._rng = rng
        self.namespaces = sorted(n["metadata"]["name"] for n in world["namespaces"])
        self.projects = sorted(
            (p["metadata"]["namespace"], p["metadata"]["name"]) for p in world["projects"]
        )
        self.components = {
            (c["metadata"]["namespace"], c["spec"]["owner"]["projectName"], c["metadata"]["name"])
            for c in world["components"]
        }
        self.workloads = {
            (w["metadata"]["namespace"], w["metadata"]["name"]): w["spec"]["owner"]["componentName"]
            for w in world["workloads"]
        }
        self.added = 0
        self.counts: Counter[str] = Counter()

    def mutate(self) -> list[Event]:
        roll = self._rng.random()
        if roll < 0.22 or not self.components:
            return self._add_component()
        if roll < 0.38:
            return self._delete_component()
        if roll < 0.46:
            return self._replace_component()
        if roll < 0.62:
            return self._add_workload()
        if roll < 0.72 and self.workloads:
            return self._delete_workload()
        if roll < 0.88 and self.workloads:
            return self._change_endpoints()
        if roll < 0.94:
            return self._retitle_namespace()
        return self._change_project_owner()

    def compare(self, world: dict[str, Any]) -> tuple[bool, str]:
        components = {
            (c["metadata"]["namespace"], c["spec"]["owner"]["projectName"], c["metadata"]["name"])
            for c in world["components"]
        }
        workloads = {
            (w["metadata"]["namespace"], w["metadata"]["name"]): w["spec"]["owner"]["componentName"]
            for w in world["workloads"]
        }
        same = components == self.components and workloads == self.workloads
        return same, f"{len(components):,} components, {len(workloads):,} workloads"

    # -- mutations -------------------------------------------------------------------------

    def _add_component(self) -> list[Event]:
        namespace, project = self._rng.choice(self.projects)
        self.added += 1
        name = f"soak-{self.added:05d}"
        self._put_component(namespace, project, name)
        return self._done("component created", "Component", name, namespace, "created")

    def _delete_component(self) -> list[Event]:
        namespace, project, name = self._rng.choice(sorted(self.components))
        self._simulator.control("POST", "delete_component", namespace=namespace, name=name)
        self.components.discard((namespace, project, name))
        owned = self._drop_workloads_of(namespace, name)
        events = self._done("component deleted", "Component", name, namespace, "deleted")
        if self._rng.random() < 0.5:  # the forwarder also reports the workloads going
            events += [_v1_event("Workload", w, namespace, "deleted") for w in owned]
        return events

    def _replace_component(self) -> list[Event]:
        """The component put again: other endpoints; its written workloads are dropped."""
        namespace, project, name = self._rng.choice(sorted(self.components))
        self._put_component(namespace, project, name)
        return self._done("component replaced", "Component", name, namespace, "updated")

    def _add_workload(self) -> list[Event]:
        """A second workload, named to sort before or after the component's first one."""
        namespace, _, component = self._rng.choice(sorted(self.components))
        self.added += 1
        prefix = self._rng.choice(("a", "z"))
        name = suffixed(component, f"{prefix}{self.added:05d}")
        endpoints = self._endpoints(component)
        self._simulator.control(
            "POST",
            "add_workload",
            namespace=namespace,
            name=name,
            component=component,
            endpoints=json.dumps(endpoints),
        )
        self.workloads[(namespace, name)] = component
        return self._done("workload created", "Workload", name, namespace, "created")

    def _delete_workload(self) -> list[Event]:
        namespace, name = self._rng.choice(sorted(self.workloads))
        self._simulator.control("POST", "delete_workload", namespace=namespace, name=name)
        del self.workloads[(namespace, name)]
        return self._done("workload deleted", "Workload", name, namespace, "deleted")

    def _change_endpoints(self) -> list[Event]:
        namespace, name = self._rng.choice(sorted(self.workloads))
        endpoints = self._endpoints(self.workloads[(namespace, name)])
        changes = json.dumps({"endpoints": endpoints})
        self._simulator.control(
            "POST", "update", kind="workload", namespace=namespace, name=name, changes=changes
        )
        return self._done("endpoints changed", "Workload", name, namespace, "updated")

    def _retitle_namespace(self) -> list[Event]:
        namespace = self._rng.choice(self.namespaces)
        self.added += 1
        changes = json.dumps({"displayName": f"Soak title {self.added}"})
        self._simulator.control(
            "POST", "update", kind="namespace", namespace=namespace, name=namespace, changes=changes
        )
        return self._done("namespace retitled", "Namespace", namespace, "", "updated")

    def _change_project_owner(self) -> list[Event]:
        """A new `backstage.io/owner` on a project: every component of it without its own owner
        changes owner (the project event updates the System; the components follow at the next
        full cycle)."""
        namespace, project = self._rng.choice(self.projects)
        owner = f"group:default/soak-team-{self._rng.randint(1, 5)}"
        changes = json.dumps({"annotations": {OWNER: owner}})
        self._simulator.control(
            "POST", "update", kind="project", namespace=namespace, name=project, changes=changes
        )
        return self._done("project owner changed", "Project", project, namespace, "updated")

    # -- helpers ---------------------------------------------------------------------------

    def _put_component(self, namespace: str, project: str, name: str) -> None:
        self._simulator.control(
            "POST",
            "add_component",
            namespace=namespace,
            project=project,
            name=name,
            endpoints=json.dumps(self._endpoints(name)),
        )
        self.components.add((namespace, project, name))
        self._drop_workloads_of(namespace, name)
        self.workloads[(namespace, suffixed(name, "workload"))] = name  # its one workload

    def _drop_workloads_of(self, namespace: str, component: str) -> list[str]:
        owned = sorted(
            w for (ns, w), c in self.workloads.items() if (ns, c) == (namespace, component)
        )
        for workload in owned:
            del self.workloads[(namespace, workload)]
        return owned

    def _endpoints(self, component: str) -> dict[str, Any]:
        chosen: dict[str, Any] = json.loads(json.dumps(self._rng.choice(V1_ENDPOINT_SETS)))
        for endpoint, details in chosen.items():
            schema = details.get("schema") or {}
            content = schema.get("content", "")
            if content.startswith("{") and content.endswith("}"):
                kind = {"http": "HTTP", "grpc": "gRPC", "graphql": "GraphQL"}.get(
                    content[1:-1], "Websocket"
                )
                schema["content"] = schema_content(kind, component, endpoint)
        return chosen

    def _done(self, what: str, kind: str, name: str, namespace: str, action: str) -> list[Event]:
        self.counts[what] += 1
        return [_v1_event(kind, name, namespace, action)]


def _v1_event(kind: str, name: str, namespace: str, action: str) -> Event:
    """An event as OpenChoreo's event-forwarder posts it."""
    return {"kind": kind, "name": name, "namespace": namespace, "action": action}


def soak(options: Options, log: Any = sys.stderr) -> tuple[Figures, Verdict]:
    started = time.perf_counter()
    projects = max(1, round(options.components / (ORGS * options.per_project)))
    v1 = options.api == "v1"
    simulator = SimulatorProcess(
        ORGS,
        projects,
        options.per_project,
        seed=options.seed,
        error_rate=options.error_rate,
        rate_limit=options.requests_per_second,
        cursor_ttl=options.cursor_ttl,
        api=options.api,
        oauth_client_id=OAUTH_CLIENT if v1 else None,
        oauth_client_secret=OAUTH_SECRET if v1 else None,
        token_lifetime=options.token_lifetime,
    )
    with simulator, scratch("soak") as directory:
        run = Soak(options, simulator, directory, log)
        run.kill_loop()
        run.figures.phase_seconds["kills"] = round(time.perf_counter() - started, 1)
        run.finish()
        run.figures.phase_seconds["finishing"] = round(
            time.perf_counter() - started - run.figures.phase_seconds["kills"], 1
        )
        verdict = run.verify()
    run.figures.elapsed_seconds = round(time.perf_counter() - started, 1)
    return run.figures, verdict


class Soak:
    def __init__(
        self, options: Options, simulator: SimulatorProcess, directory: Path, log: Any
    ) -> None:
        self.options = options
        self.simulator = simulator
        self.directory = directory
        self.log = log
        self.rng = random.Random(options.seed)
        self.figures = Figures(api=options.api)
        self.codes: Counter[str] = Counter()
        self.fed: Counter[str] = Counter()
        self.config = self._config(options.burst_length)
        world = simulator.world()
        self.model: WorldModel
        if options.api == "v1":
            self.model = V1WorldModel(simulator, world, self.rng)
        else:
            self.model = OrgWorldModel(simulator, world, self.rng)
        self._stats_before_last_cycle: dict[str, Any] = {}
        self._counters_before_last_cycle: dict[str, int] = {}

    def _config(self, burst_length: float) -> Path:
        oauth = None
        if self.options.api == "v1":
            oauth = {
                "tokenUrl": self.simulator.token_url,
                "clientId": OAUTH_CLIENT,
                "clientSecret": OAUTH_SECRET,
            }
        return write_config(
            self.directory,
            self.simulator.url,
            # v1: what a user gets by default (the first page of a cycle detects v1); orgs:
            # explicit, so no cycle first asks for v1's namespaces.
            api="auto" if self.options.api == "v1" else "orgs",
            oauth=oauth,
            burstLength=burst_length,
            burstInterval=1,
            backoff=[1, 2],
            requestTimeout=2,
        )

    def kill_loop(self) -> None:
        """Mutate, feed events, maybe wait out the cursor TTL, run and SIGKILL; until N kills."""
        options, figures, rng = self.options, self.figures, self.rng
        pending: list[Event] = []
        kill_window = options.burst_length + 1.0  # start-up, burst, the end
        iteration = last_wait = unkilled = 0
        while figures.kills < options.kills:
            iteration += 1
            for _ in range(rng.randint(0, 3)):
                pending += self.model.mutate()
            if pending and rng.random() < 0.5:
                self._feed(pending)
                pending = []
            earliest_kill = 0.0
            # Before the last kill, a cursor must have expired under a run at least once: on a
            # loaded machine every earlier check may have met a state between two listings.
            owed = bool(options.expire_every) and not figures.cursor_waits
            owed = owed and figures.kills == options.kills - 1
            due = options.expire_every and iteration - last_wait >= options.expire_every
            if (due or owed) and _holds_api_cursor(self.directory / "state.db"):
                time.sleep(options.cursor_ttl + 0.5)  # the stored API cursor expires
                figures.cursor_waits += 1
                last_wait = iteration
                earliest_kill = RESUME_SECONDS  # let the run get as far as resuming the listing
            elif owed and unkilled < MAX_UNKILLED_RUNS:
                unkilled += 1  # a whole burst, to leave a cursor in the middle of a listing
                run = ingest(self.config, "run", "--force")
                figures.runs += 1
                self.codes[str(run.returncode)] += 1
                _require_expected_exit(run.returncode, run.stderr)
                continue
            kill_after = rng.uniform(earliest_kill, kill_window)
            run = ingest(self.config, "run", "--force", kill_after=kill_after)
            figures.runs += 1
            if run.killed:
                figures.kills += 1
                if figures.kills % 10 == 0:
                    print(f"soak: {figures.kills} kills, {figures.runs} runs", file=self.log)
            else:
                self.codes[str(run.returncode)] += 1
                _require_expected_exit(run.returncode, run.stderr)
        if pending:
            self._feed(pending)
        time.sleep(SETTLE_SECONDS)  # so that the first finishing run applies every event fed

    def finish(self) -> None:
        """Longer bursts until the interrupted cycle completes, then one more full cycle."""
        print("soak: kills done; finishing the cycle, then one more", file=self.log, flush=True)
        self.config = self._config(max(self.options.burst_length, FINISHING_BURST_LENGTH))
        self.figures.finishing_runs += _run_until_cycle_completes(self.config, self.codes)
        self._stats_before_last_cycle = self.simulator.stats()
        self._counters_before_last_cycle = _counters(self.directory / "state.db")
        self.figures.finishing_runs += _run_until_cycle_completes(self.config, self.codes)

    def verify(self) -> Verdict:
        figures, verdict = self.figures, Verdict()
        figures.exit_codes = dict(self.codes)
        figures.mutations = dict(self.model.counts)
        figures.events_fed_by_kind = dict(self.fed)
        world = self.simulator.world()
        same, summary = self.model.compare(world)
        verdict.add("simulator world matches the soak's mutations", same, summary)
        catalog_refs = check_catalog(verdict, self.config, world, self.options.api)
        figures.change_rows = check_change_log(verdict, self.config, catalog_refs)
        check_health(verdict, self.config)
        check_metrics(verdict, self.directory / "metrics.prom", len(catalog_refs))
        _read_counters(self.directory / "state.db", figures)
        stats = self.simulator.stats()
        figures.server = _server_figures(stats)
        figures.last_cycle = _last_cycle(
            self._stats_before_last_cycle,
            stats,
            self._counters_before_last_cycle,
            _counters(self.directory / "state.db"),
        )
        if self.options.api == "v1":
            self._check_no_per_component_requests(verdict, stats)
        errors = self.simulator.errors()
        verdict.add("simulator raised no internal errors", not errors, errors[-500:])
        return verdict

    def _check_no_per_component_requests(self, verdict: Verdict, stats: dict[str, Any]) -> None:
        """Single reads come only from events: none in the last full cycle unless an event was
        handled in it, and over the whole soak at most one of each per event handling (a run
        killed mid-event handles it again; a request is tried up to MAX_ATTEMPTS times)."""
        routes = stats["requests_by_route"]
        last = self.figures.last_cycle
        handled_last = last["events_handled"]
        reads_last = sum(last["requests_by_route"].get(r, 0) for r in PER_COMPONENT_ROUTES)
        events = self.figures.events
        handled = sum(events.get(outcome, 0) for outcome in ("applied", "retried", "parked"))
        handlings = handled + self.figures.kills
        single = {route: routes.get(route, 0) for route in PER_COMPONENT_ROUTES}
        bound = MAX_ATTEMPTS * handlings
        verdict.add(
            "no per-component requests",
            reads_last <= len(PER_COMPONENT_ROUTES) * MAX_ATTEMPTS * handled_last
            and all(count <= bound for count in single.values()),
            f"last full cycle: {last['api_requests']:,} API requests, {reads_last} single reads "
            f"({handled_last} events handled in it); whole soak: "
            f"{', '.join(f'{route} {count:,}' for route, count in single.items())} "
            f"for {handled:,} event handlings and {self.figures.kills} kills "
            f"(at most {bound:,} each); {stats['requests_by_route'].get('list_components', 0):,} "
            "component list pages",
        )

    def _feed(self, events: list[Event]) -> None:
        ndjson = "".join(json.dumps(event) + "\n" for event in events)
        ingest(self.config, "event", "-", input_text=ndjson).check()
        self.figures.events_fed += len(events)
        self.fed.update(event["kind"] for event in events)


def _holds_api_cursor(state_path: Path) -> bool:
    """Whether the stored traversal cursor is in the middle of an API listing."""
    if not state_path.exists():
        return False
    with Store.open(state_path, readonly=True) as store:
        cursor = store.load_provider(PROVIDER).cursor
    # `apiCursor` since the walk speaks two API generations; the org-era names before that
    keys = ("apiCursor", "orgApiCursor", "projectApiCursor", "componentApiCursor")
    return isinstance(cursor, dict) and any(cursor.get(key) for key in keys)


def _require_expected_exit(code: int, stderr: str) -> None:
    """0 (a burst ran) and 3 (the burst failed under injected faults) are expected; no other."""
    if code not in (0, 3):
        raise RuntimeError(f"`run --force` exited {code}:\n{stderr[-3000:]}")


def _run_until_cycle_completes(config: Path, codes: Counter[str]) -> int:
    for runs in range(1, MAX_FINISHING_RUNS + 1):
        run = ingest(config, "run", "--force", "--json")
        codes[str(run.returncode)] += 1
        _require_expected_exit(run.returncode, run.stderr)
        if any(outcome["cycleCompleted"] for outcome in run.json()["providers"]):
            return runs
    raise RuntimeError(f"no cycle completed in {MAX_FINISHING_RUNS} runs")


def _counters(state_path: Path) -> dict[str, int]:
    with Store.open(state_path, readonly=True) as store:
        return dict(store.counters(PROVIDER))


def _read_counters(state_path: Path, figures: Figures) -> None:
    counters = _counters(state_path)
    figures.cycles_completed = counters.get("cycles_completed", 0)
    figures.cursor_resets = counters.get("cursor_resets", 0)
    figures.bursts_failed = counters.get("bursts_failed", 0)
    figures.events = {
        name.removeprefix("events_"): value
        for name, value in counters.items()
        if name.startswith("events_")
    }


def _last_cycle(
    before: dict[str, Any], after: dict[str, Any], counted: dict[str, int], now: dict[str, int]
) -> dict[str, Any]:
    """What the simulator served during the last full cycle, and the events handled in it."""
    routes_before = before.get("requests_by_route", {})
    routes = {
        route: count - routes_before.get(route, 0)
        for route, count in sorted(after["requests_by_route"].items())
        if count - routes_before.get(route, 0)
    }
    handled = sum(
        now.get(f"events_{outcome}", 0) - counted.get(f"events_{outcome}", 0)
        for outcome in ("applied", "retried", "parked")
    )
    return {
        "api_requests": after["api_requests"] - before.get("api_requests", 0),
        "token_requests": after["token_requests"] - before.get("token_requests", 0),
        "requests_by_route": routes,
        "events_handled": handled,
        "server_errors_5xx": after["server_errors"] - before.get("server_errors", 0),
        "expired_cursors": after["expired_cursors"] - before.get("expired_cursors", 0),
    }


def _server_figures(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": stats["total_requests"],
        "api_requests": stats["api_requests"],
        "token_requests": stats["token_requests"],
        "public_requests": stats["public_requests"],
        "requests_by_route": dict(sorted(stats["requests_by_route"].items())),
        "unauthorized_401": stats["responses_by_status"].get("401", 0),
        "server_errors_5xx": stats["server_errors"],
        "rate_limited_429": stats["rate_limited"],
        "expired_cursors": stats["expired_cursors"],
        # the org era's name for the same count (410 there; 500 in v1)
        "expired_cursors_410": stats["expired_cursors"],
        "max_in_flight": stats["max_in_flight"],
        "max_requests_per_second": stats["max_requests_per_second"],
    }


def main(argv: list[str] | None = None) -> int:
    defaults = Options()
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--api", choices=("v1", "orgs"), default=defaults.api)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--components", type=int, default=defaults.components)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--error-rate", type=float, default=defaults.error_rate)
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=defaults.rate_limit,
        help=f"requests per second before 429s (default: {RATE_LIMITS})",
    )
    parser.add_argument("--cursor-ttl", type=float, default=defaults.cursor_ttl)
    parser.add_argument(
        "--expire-every",
        type=int,
        default=defaults.expire_every,
        help="wait out the cursor TTL at most every Nth run, mid-listing (0: never)",
    )
    parser.add_argument("--burst-length", type=float, default=defaults.burst_length)
    parser.add_argument("--per-project", type=int, default=defaults.per_project)
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=defaults.token_lifetime,
        help="v1: seconds an OAuth access token lives",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    options = Options(
        api=args.api,
        kills=args.kills,
        components=args.components,
        seed=args.seed,
        error_rate=args.error_rate,
        rate_limit=RATE_LIMITS[args.api] if args.rate_limit is None else args.rate_limit,
        cursor_ttl=args.cursor_ttl,
        expire_every=args.expire_every,
        burst_length=args.burst_length,
        per_project=args.per_project,
        token_lifetime=args.token_lifetime,
    )
    figures, verdict = soak(options)
    if args.json:
        document = {
            "passed": verdict.passed,
            "options": asdict(options),
            "figures": asdict(figures),
            "checks": [asdict(check) for check in verdict.checks],
        }
        print(json.dumps(document, indent=2))
    else:
        print(json.dumps(asdict(figures), indent=2))
        for check in verdict.checks:
            print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
