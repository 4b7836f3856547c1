"""Crash-and-fault soak: SIGKILL `choreo-ingest run --force` at random moments, N times, while the
world changes and events arrive, against a simulator serving 5xx, 429 and expired cursors; then
let it finish and check that nothing was lost or duplicated.

    python bench/soak.py [--kills 100] [--components 20000] [--seed 1] [--json]

The simulator runs as its own process with `--control`; the soak mutates its world (adds,
deletes and replaces components) and reads it back through the `/_control/` routes. Every few
iterations, when the stored traversal cursor is in the middle of an API listing, it waits out
the cursor TTL before the next run, so that the run resumes with an expired cursor (410).
After the kills it runs (with longer bursts) until the interrupted cycle completes, then one
more full cycle (so that changes nobody sent an event for are picked up and swept), and checks:
the catalog equals the world (every ref, kind and body, nothing extra, no duplicate), the
change log replays to the catalog, `health` exits 0, the metrics textfile parses. Exits 0 only
if every check passes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import PROVIDER, SimulatorProcess, ingest, scratch, write_config
from soak_check import Verdict, check_catalog, check_change_log, check_health, check_metrics

from choreo_ingest.store import Store

ORGS = 2
ENDPOINT_SETS: tuple[dict[str, dict[str, Any]], ...] = (
    {},
    {"http": {"type": "REST", "port": 8080}},
    {"grpc": {"type": "gRPC", "port": 50051}, "metrics": {"type": "HTTP", "port": 9090}},
    {"my endpoint": {"type": "GraphQL", "port": 4000}},
)
MAX_FINISHING_RUNS = 2000
FINISHING_BURST_LENGTH = 30.0
"""Bursts once the kills are over: long enough that waiting out a 429 fits in them."""
RESUME_SECONDS = 1.5
"""Enough for a run to start, drain the inbox and send its first list request."""


@dataclass
class Options:
    kills: int = 100
    components: int = 20_000
    seed: int = 1
    error_rate: float = 0.05
    rate_limit: float = 150.0
    cursor_ttl: float = 6.0
    expire_every: int = 10
    burst_length: float = 3.0
    per_project: int = 100
    """Components per project: more pages per listing, more moments in the middle of one."""


@dataclass
class Figures:
    kills: int = 0
    runs: int = 0
    exit_codes: dict[str, int] = field(default_factory=dict)
    finishing_runs: int = 0
    mutations: dict[str, int] = field(default_factory=dict)
    events_fed: int = 0
    cursor_waits: int = 0
    cycles_completed: int = 0
    cursor_resets: int = 0
    bursts_failed: int = 0
    events: dict[str, int] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    change_rows: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.0


class WorldModel:
    """What the soak believes the simulator holds; mutations go through the control routes."""

    def __init__(self, simulator: SimulatorProcess, world: dict[str, Any], rng: random.Random):
        self._simulator = simulator
        self._rng = rng
        self.projects = [(p["orgName"], p["name"]) for p in world["projects"]]
        self.components = {(c["orgName"], c["projectName"], c["name"]) for c in world["components"]}
        self.added = 0
        self.counts: Counter[str] = Counter()

    def mutate(self) -> dict[str, str]:
        """One random add, delete or replacement; returns the event that describes it."""
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
        return {
            "kind": "Component",
            "name": name,
            "namespace": org,
            "project": project,
            "action": action,
        }

    def _put(self, org: str, project: str, name: str) -> None:
        endpoints = self._rng.choice(ENDPOINT_SETS)
        self._simulator.control(
            "POST",
            "add_component",
            org=org,
            project=project,
            name=name,
            endpoints=json.dumps(endpoints),
        )
        self.components.add((org, project, name))


def soak(options: Options, log: Any = sys.stderr) -> tuple[Figures, Verdict]:
    started = time.perf_counter()
    projects = max(1, round(options.components / (ORGS * options.per_project)))
    simulator = SimulatorProcess(
        ORGS,
        projects,
        options.per_project,
        seed=options.seed,
        error_rate=options.error_rate,
        rate_limit=options.rate_limit,
        cursor_ttl=options.cursor_ttl,
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
        self.figures = Figures()
        self.codes: Counter[str] = Counter()
        self.config = self._config(options.burst_length)
        self.model = WorldModel(simulator, simulator.world(), self.rng)

    def _config(self, burst_length: float) -> Path:
        return write_config(
            self.directory,
            self.simulator.url,
            burstLength=burst_length,
            burstInterval=1,
            backoff=[1, 2],
            requestTimeout=2,
        )

    def kill_loop(self) -> None:
        """Mutate, feed events, maybe wait out the cursor TTL, run and SIGKILL; until N kills."""
        options, figures, rng = self.options, self.figures, self.rng
        pending: list[dict[str, str]] = []
        kill_window = options.burst_length + 1.0  # start-up, burst, the end
        iteration = last_wait = 0
        while figures.kills < options.kills:
            iteration += 1
            pending += [self.model.mutate() for _ in range(rng.randint(0, 3))]
            if pending and rng.random() < 0.5:
                self._feed(pending)
                pending = []
            earliest_kill = 0.0
            due = options.expire_every and iteration - last_wait >= options.expire_every
            if due and _holds_api_cursor(self.directory / "state.db"):
                time.sleep(options.cursor_ttl + 0.5)  # the stored API cursor expires: 410
                figures.cursor_waits += 1
                last_wait = iteration
                earliest_kill = RESUME_SECONDS  # let the run get as far as resuming the listing
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

    def finish(self) -> None:
        """Longer bursts until the interrupted cycle completes, then one more full cycle."""
        print("soak: kills done; finishing the cycle, then one more", file=self.log, flush=True)
        self.config = self._config(max(self.options.burst_length, FINISHING_BURST_LENGTH))
        for _ in range(2):
            self.figures.finishing_runs += _run_until_cycle_completes(self.config, self.codes)

    def verify(self) -> Verdict:
        figures, verdict = self.figures, Verdict()
        figures.exit_codes = dict(self.codes)
        figures.mutations = dict(self.model.counts)
        world = self.simulator.world()
        believed = {(c["orgName"], c["projectName"], c["name"]) for c in world["components"]}
        verdict.add(
            "simulator world matches the soak's mutations",
            believed == self.model.components,
            f"{len(believed):,} components",
        )
        catalog_refs = check_catalog(verdict, self.config, world)
        figures.change_rows = check_change_log(verdict, self.config, catalog_refs)
        check_health(verdict, self.config)
        check_metrics(verdict, self.directory / "metrics.prom", len(catalog_refs))
        _read_counters(self.directory / "state.db", figures)
        figures.server = _server_figures(self.simulator.stats())
        errors = self.simulator.errors()
        verdict.add("simulator raised no internal errors", not errors, errors[-500:])
        return verdict

    def _feed(self, events: list[dict[str, str]]) -> None:
        ndjson = "".join(json.dumps(event) + "\n" for event in events)
        ingest(self.config, "event", "-", input_text=ndjson).check()
        self.figures.events_fed += len(events)


def _holds_api_cursor(state_path: Path) -> bool:
    """Whether the stored traversal cursor is in the middle of an API listing."""
    if not state_path.exists():
        return False
    with Store.open(state_path, readonly=True) as store:
        cursor = store.load_provider(PROVIDER).cursor
    keys = ("orgApiCursor", "projectApiCursor", "componentApiCursor")
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


def _read_counters(state_path: Path, figures: Figures) -> None:
    with Store.open(state_path, readonly=True) as store:
        counters = store.counters(PROVIDER)
    figures.cycles_completed = counters.get("cycles_completed", 0)
    figures.cursor_resets = counters.get("cursor_resets", 0)
    figures.bursts_failed = counters.get("bursts_failed", 0)
    figures.events = {
        name.removeprefix("events_"): value
        for name, value in counters.items()
        if name.startswith("events_")
    }


def _server_figures(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": stats["total_requests"],
        "server_errors_5xx": stats["server_errors"],
        "rate_limited_429": stats["rate_limited"],
        "expired_cursors_410": stats["expired_cursors"],
        "max_in_flight": stats["max_in_flight"],
    }


def main(argv: list[str] | None = None) -> int:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--components", type=int, default=defaults.components)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--error-rate", type=float, default=defaults.error_rate)
    parser.add_argument("--rate-limit", type=float, default=defaults.rate_limit)
    parser.add_argument("--cursor-ttl", type=float, default=defaults.cursor_ttl)
    parser.add_argument(
        "--expire-every",
        type=int,
        default=defaults.expire_every,
        help="wait out the cursor TTL at most every Nth run, mid-listing (0: never)",
    )
    parser.add_argument("--burst-length", type=float, default=defaults.burst_length)
    parser.add_argument("--per-project", type=int, default=defaults.per_project)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    options = Options(
        kills=args.kills,
        components=args.components,
        seed=args.seed,
        error_rate=args.error_rate,
        rate_limit=args.rate_limit,
        cursor_ttl=args.cursor_ttl,
        expire_every=args.expire_every,
        burst_length=args.burst_length,
        per_project=args.per_project,
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
