"""Freshness under `serve`: how soon a change made in OpenChoreo reaches the catalog through the
event webhook while cycles burst, and what `GET /status` costs meanwhile.

    python bench/freshness.py            # 3 namespaces x 10 projects x 100 components, 60 s
    python bench/freshness.py --quick    # 3 x 4 x 50, 15 s
    python bench/freshness.py --json     # one JSON document (figures and results)

The v1 simulator runs as its own process with `--control --webhook <serve>/api/events/http/
openchoreo`, so every change made through its control routes is POSTed to `serve` as OpenChoreo's
event forwarder would post it; it adds 10 ms to every API request. `choreo-ingest serve` runs as
its own process on a fresh state file, with short bursts (`burstLength` 3 s, `burstInterval` 1 s,
`chunkSize` 25; `--quick`: 10) and a short rest (`restLength` 0.02 min = 1.2 s), so cycles follow
each other and a burst is in progress during most of the measurement (`--burst-length`,
`--burst-interval`, `--rest-minutes`, `--chunk-size`, `--latency` change them). Once the first
cycle has completed, the benchmark:

- creates a new component and deletes an existing one through the control routes, alternately,
  at `--rate` changes a second for `--seconds`, and for each measures the seconds from just
  before the control call until the catalog holds it (created) or no longer holds it (deleted),
  read through `POST /entities/batch` every 20 ms (one batch for every change still awaited; the
  moment its answer arrives counts, so every figure includes one such read, reported apart);
- polls `GET /status` every 50 ms throughout and records each answer's latency, `running` and
  the provider's `state`;
- classifies each change by the provider's `state` in the last `/status` answer before its
  control call: "bursting" (a burst was in progress when the change was made), else not.

Targets: freshness p95 <= 2 s for the changes made while a burst was in progress, none lost;
`/status` p99 < 100 ms. Exits 1 if either is missed.

The state file is read only once `serve` has stopped: a reader in another process while it runs
can crash it (see bench/README.md, benchmark 6).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import PROVIDER, Result, cli, machine, print_table, scratch

from choreo_ingest.store import Store

FRESHNESS_TARGET_SECONDS = 2.0
STATUS_P99_TARGET_SECONDS = 0.100
STATUS_EVERY_SECONDS = 0.050
CATALOG_EVERY_SECONDS = 0.020
GIVE_UP_SECONDS = 30.0
"""A change not seen in the catalog this long after its control call counts as lost."""
START_SECONDS = 120.0
"""How long the first cycle may take before the measurement starts."""
HOOK_PATH = "/api/events/http/openchoreo"


@dataclass(frozen=True)
class Options:
    namespaces: int = 3
    projects: int = 10
    components: int = 100
    """Per project."""
    seconds: float = 60.0
    rate: float = 2.0
    """Changes a second (creates and deletes alternate)."""
    burst_length: float = 3.0
    burst_interval: float = 1.0
    rest_minutes: float = 0.02
    chunk_size: int = 25
    latency: float = 0.01
    """Seconds the simulator adds to every API request (a real API server is not free)."""
    seed: int = 1


FULL = Options()
QUICK = Options(namespaces=3, projects=4, components=50, seconds=15.0, chunk_size=10)


@dataclass
class Change:
    action: str
    """"created" or "deleted"."""
    ref: str
    started: float
    """Monotonic, just before the control call."""
    call_seconds: float = 0.0
    """How long the control call took (the event is queued before it answers)."""
    seen: float | None = None
    state_at_change: str | None = None
    """The provider's state in the last /status answer before the control call."""
    burst_overlap: bool = False
    """Some /status answer between the control call and the catalog seeing it said bursting."""

    @property
    def seconds(self) -> float | None:
        return None if self.seen is None else self.seen - self.started


@dataclass(frozen=True)
class StatusSample:
    started: float
    latency: float
    status: int
    running: bool
    state: str | None
    cycle_id: int | None


@dataclass
class Figures:
    options: dict[str, Any] = field(default_factory=dict)
    machine: str = ""
    components_in_world: int = 0
    entities_at_start: int = 0
    """The provider's `activeEntities` when the measurement began."""
    first_cycle_seconds: float = 0.0
    changes: dict[str, Any] = field(default_factory=dict)
    catalog_reads: dict[str, Any] = field(default_factory=dict)
    """Latency of the `POST /entities/batch` reads that watch the catalog."""
    status: dict[str, Any] = field(default_factory=dict)
    webhooks: dict[str, Any] = field(default_factory=dict)
    serve_counters: dict[str, int] = field(default_factory=dict)
    """The provider's counters over serve's whole run (its first cycle included)."""
    cycles_started_during: int = 0
    states_seen: dict[str, int] = field(default_factory=dict)


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """The simulator and `serve`, each its own process (and process group), stopped at exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[subprocess.Popen[bytes]] = []

    def simulator(self, options: Options, hook_url: str) -> str:
        """Start the simulator; its root URL (no `/api/v1`)."""
        stderr_path = self.directory / "simulator.stderr"
        argv = [
            *cli(), "simulate", "serve", "--port", "0", "--control", "--api", "v1",
            "--orgs", str(options.namespaces), "--projects", str(options.projects),
            "--components", str(options.components), "--seed", str(options.seed),
            "--latency", str(options.latency), "--webhook", hook_url,
        ]  # fmt: skip
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        self.started.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = stderr_path.read_text().split("\n", 1)[0]
            if "openchoreo simulator at " in line:
                return line.rsplit(" ", 1)[-1].strip().removesuffix("/api/v1")
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"simulator did not start: {stderr_path.read_text()[-2000:]}")

    def serve(self, config: Path, port: int, token: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CHOREO_INGEST_SERVE_TOKEN": token}
        for name in ("CHOREO_INGEST_CONFIG", "CHOREO_INGEST_DB"):
            env.pop(name, None)
        argv = [*cli(), "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"]
        with (self.directory / "serve.stderr").open("wb") as stderr:
            process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True
            )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def write_config(directory: Path, root: str, options: Options) -> Path:
    document = {
        "openchoreo": {
            "baseUrl": root,
            "api": "v1",
            "incremental": {
                "burstLength": options.burst_length,
                "burstInterval": options.burst_interval,
                "restLength": options.rest_minutes,
                "chunkSize": options.chunk_size,
            },
        },
        "state": {"path": str(directory / "state.db")},
    }
    path = directory / "choreo-ingest.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# -- the measurement ------------------------------------------------------------------------------


class StatusPoller(threading.Thread):
    """`GET /status` every 50 ms (on a fixed schedule, not after each answer)."""

    def __init__(self, base: str) -> None:
        super().__init__(name="status-poller", daemon=True)
        self.base = base
        self.samples: list[StatusSample] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10.0) as client:
            tick = time.monotonic()
            while not self.stopping.is_set():
                started = time.monotonic()
                response = client.get("/status")
                latency = time.monotonic() - started
                running, state, cycle = False, None, None
                if response.status_code == 200:
                    document = response.json()
                    running = bool(document["running"])
                    providers = document["providers"]
                    if providers:
                        state, cycle = providers[0]["state"], providers[0]["cycleId"]
                sample = StatusSample(started, latency, response.status_code, running, state, cycle)
                self.samples.append(sample)
                tick += STATUS_EVERY_SECONDS
                self.stopping.wait(max(0.0, tick - time.monotonic()))

    def state_before(self, moment: float) -> str | None:
        starts = [sample.started for sample in self.samples]
        index = bisect_right(starts, moment) - 1
        return self.samples[index].state if index >= 0 else None

    def bursting_between(self, begin: float, end: float) -> bool:
        return any(
            begin <= sample.started <= end and sample.state == "bursting" for sample in self.samples
        )


class CatalogWatcher(threading.Thread):
    """Reads every awaited ref through `POST /entities/batch` every 20 ms; marks each change
    seen when the catalog holds (created) or no longer holds (deleted) its ref."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(name="catalog-watcher", daemon=True)
        self.base = base
        self.token = token
        self.awaited: dict[str, Change] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.latencies: list[float] = []

    def await_change(self, change: Change) -> None:
        with self.lock:
            self.awaited[change.ref] = change

    def pending(self) -> int:
        with self.lock:
            return len(self.awaited)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=10.0) as client:
            while not self.stopping.is_set():
                with self.lock:
                    refs = list(self.awaited)
                if refs:
                    sent = time.monotonic()
                    answer = client.post("/entities/batch", json={"refs": refs})
                    answer.raise_for_status()
                    now = time.monotonic()
                    self.latencies.append(now - sent)
                    missing = set(answer.json()["missing"])
                    with self.lock:
                        for ref in refs:
                            change = self.awaited[ref]
                            if (change.action == "created") != (ref in missing):
                                change.seen = now
                                del self.awaited[ref]
                            elif now - change.started > GIVE_UP_SECONDS:
                                del self.awaited[ref]
                self.stopping.wait(CATALOG_EVERY_SECONDS)


class Driver:
    """Makes the changes through the simulator's control routes."""

    def __init__(self, root: str, world: dict[str, Any], seed: int) -> None:
        self.client = httpx.Client(base_url=root, timeout=30.0)
        self.rng = random.Random(seed)
        self.projects = sorted(
            (p["metadata"]["namespace"], p["metadata"]["name"]) for p in world["projects"]
        )
        self.deletable = sorted(
            (c["metadata"]["namespace"], c["metadata"]["name"]) for c in world["components"]
        )
        self.rng.shuffle(self.deletable)
        self.created = 0

    def change(self, action: str) -> Change:
        if action == "created":
            namespace, project = self.rng.choice(self.projects)
            self.created += 1
            name = f"fresh-{self.created:05d}"
            params = {"namespace": namespace, "project": project, "name": name}
            route = "add_component"
        else:
            namespace, name = self.deletable.pop()
            params = {"namespace": namespace, "name": name}
            route = "delete_component"
        change = Change(action, f"component:{namespace}/{name}", time.monotonic())
        response = self.client.post(f"/_control/{route}", params=params)
        change.call_seconds = time.monotonic() - change.started
        if response.status_code != 200:
            raise RuntimeError(f"control {route}: HTTP {response.status_code}: {response.text}")
        return change


def wait_for_first_cycle(
    base: str, process: subprocess.Popen[bytes], stderr: Path
) -> tuple[float, dict[str, Any]]:
    """Seconds until the first cycle completed, and the provider's `/status` entry then."""
    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=10.0) as client:
        while time.monotonic() - started < START_SECONDS:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited {process.returncode}: {stderr.read_text()}")
            try:
                response = client.get("/status")
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                providers = response.json()["providers"]
                if providers and providers[0]["lastCompletedAt"]:
                    return time.monotonic() - started, providers[0]
            time.sleep(0.1)
    raise RuntimeError(f"no cycle completed in {START_SECONDS} s: {stderr.read_text()[-2000:]}")


def measure(options: Options, log: Any = sys.stderr) -> Figures:
    figures = Figures(options=asdict(options), machine=machine())
    token = secrets.token_urlsafe(24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with scratch("freshness") as directory:
        processes = Processes(directory)
        try:
            root = processes.simulator(options, base + HOOK_PATH)
            config = write_config(directory, root, options)
            serve = processes.serve(config, port, token)
            seconds, provider = wait_for_first_cycle(base, serve, directory / "serve.stderr")
            figures.first_cycle_seconds = round(seconds, 2)
            world = httpx.get(f"{root}/_control/world", timeout=60).json()["data"]
            figures.components_in_world = len(world["components"])
            print(
                f"freshness: first cycle in {figures.first_cycle_seconds} s; measuring "
                f"{options.seconds:.0f} s at {options.rate}/s",
                file=log,
                flush=True,
            )
            changes, poller, watcher = run_changes(options, root, base, token, world)
            figures.webhooks = webhook_counts(root)
            processes.stop()  # serve ends its burst after the page in flight
            figures.serve_counters = read_counters(directory / "state.db")
        finally:
            processes.stop()
    cycles = [sample.cycle_id for sample in poller.samples if sample.cycle_id is not None]
    figures.cycles_started_during = max(cycles) - provider["cycleId"] if cycles else 0
    figures.entities_at_start = provider["activeEntities"]
    figures.changes = change_figures(changes)
    figures.catalog_reads = summary(watcher.latencies)
    figures.status = status_figures(poller.samples)
    figures.states_seen = dict(Counter(str(sample.state) for sample in poller.samples))
    return figures


def run_changes(
    options: Options, root: str, base: str, token: str, world: dict[str, Any]
) -> tuple[list[Change], StatusPoller, CatalogWatcher]:
    poller = StatusPoller(base)
    watcher = CatalogWatcher(base, token)
    driver = Driver(root, world, options.seed)
    poller.start()
    time.sleep(0.2)  # a /status answer before the first change
    watcher.start()
    changes: list[Change] = []
    count = max(1, round(options.seconds * options.rate))
    started = time.monotonic()
    try:
        for index in range(count):
            due = started + index / options.rate
            time.sleep(max(0.0, due - time.monotonic()))
            change = driver.change("created" if index % 2 == 0 else "deleted")
            changes.append(change)
            watcher.await_change(change)
        deadline = time.monotonic() + GIVE_UP_SECONDS + 1
        while watcher.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stopping.set()
        watcher.join()
        time.sleep(0.1)
        poller.stopping.set()
        poller.join()
        driver.client.close()
    for change in changes:
        change.state_at_change = poller.state_before(change.started)
        end = change.seen if change.seen is not None else change.started + GIVE_UP_SECONDS
        change.burst_overlap = poller.bursting_between(change.started, end)
    return changes, poller, watcher


def webhook_counts(root: str) -> dict[str, Any]:
    stats = httpx.get(f"{root}/_control/stats", timeout=30).json()["data"]
    return {key: value for key, value in stats.items() if key.startswith("webhook_")}


def read_counters(state_path: Path) -> dict[str, int]:
    """The provider's counters and its entity count (only once serve has stopped)."""
    with Store.open(state_path, readonly=True) as store:
        counters = dict(sorted(store.counters(PROVIDER).items()))
        counters["entities"] = sum(store.entity_counts(PROVIDER).values())
        return counters


# -- figures --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _rounded(percentile(values, 0.50)),
        "p95": _rounded(percentile(values, 0.95)),
        "p99": _rounded(percentile(values, 0.99)),
        "max": _rounded(max(values) if values else None),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def change_figures(changes: list[Change]) -> dict[str, Any]:
    def seconds(selected: list[Change]) -> list[float]:
        return [c.seconds for c in selected if c.seconds is not None]

    bursting = [c for c in changes if c.state_at_change == "bursting"]
    others = [c for c in changes if c.state_at_change != "bursting"]
    figures: dict[str, Any] = {
        "made": len(changes),
        "lost": sum(c.seen is None for c in changes),
        "made_while_bursting": len(bursting),
        "overlapping_a_burst": sum(c.burst_overlap for c in changes),
        "state_at_change": dict(Counter(str(c.state_at_change) for c in changes)),
        "control_call": summary([c.call_seconds for c in changes]),
        "all": summary(seconds(changes)),
        "while_bursting": summary(seconds(bursting)),
        "not_bursting": summary(seconds(others)),
    }
    for action in ("created", "deleted"):
        mine = [c for c in changes if c.action == action]
        figures[action] = summary(seconds(mine))
        figures[f"{action}_while_bursting"] = summary(
            seconds([c for c in mine if c.state_at_change == "bursting"])
        )
    return figures


def status_figures(samples: list[StatusSample]) -> dict[str, Any]:
    return {
        "all": summary([s.latency for s in samples]),
        "while_running": summary([s.latency for s in samples if s.running]),
        "while_bursting": summary([s.latency for s in samples if s.state == "bursting"]),
        "not_running": summary([s.latency for s in samples if not s.running]),
        "non_200": sum(s.status != 200 for s in samples),
    }


def verdicts(figures: Figures) -> list[Result]:
    changes, status = figures.changes, figures.status
    fresh = changes["while_bursting"]
    ms = 1000.0

    def triple(block: dict[str, Any]) -> str:
        if not block["n"]:
            return "no samples"
        return (
            f"p50 {block['p50']:.3f} s, p95 {block['p95']:.3f} s, max {block['max']:.3f} s "
            f"(n={block['n']})"
        )

    fresh_ok = bool(fresh["n"]) and fresh["p95"] <= FRESHNESS_TARGET_SECONDS
    fresh_ok = fresh_ok and changes["lost"] == 0
    status_ok = status["all"]["n"] > 0 and status["all"]["p99"] < STATUS_P99_TARGET_SECONDS
    status_ok = status_ok and status["non_200"] == 0
    return [
        Result("freshness", "created (info)", triple(changes["created"]), None),
        Result("freshness", "deleted (info)", triple(changes["deleted"]), None),
        Result(
            "freshness",
            "created while bursting (info)",
            triple(changes["created_while_bursting"]),
            None,
        ),
        Result(
            "freshness",
            "deleted while bursting (info)",
            triple(changes["deleted_while_bursting"]),
            None,
        ),
        Result("freshness", "not bursting (info)", triple(changes["not_bursting"]), None),
        Result(
            "freshness",
            "catalog read, included above (info)",
            f"POST /entities/batch p50 {_ms(figures.catalog_reads['p50'])}, p95 "
            f"{_ms(figures.catalog_reads['p95'])} (n={figures.catalog_reads['n']})",
            None,
        ),
        Result(
            "freshness",
            "samples during bursts (info)",
            f"{changes['made_while_bursting']} of {changes['made']} made while a burst was in "
            f"progress; {changes['overlapping_a_burst']} overlapped one; {changes['lost']} lost",
            None,
        ),
        Result(
            "freshness",
            f"p95 while bursting <= {FRESHNESS_TARGET_SECONDS:g} s, none lost",
            f"{fresh['p95']} s" if fresh["n"] else "no samples",
            fresh_ok,
        ),
        Result(
            "status",
            "latency p50 (info)",
            f"{status['all']['p50'] * ms:.1f} ms (n={status['all']['n']}); while bursting "
            f"p50 {_ms(status['while_bursting']['p50'])}, p99 "
            f"{_ms(status['while_bursting']['p99'])} (n={status['while_bursting']['n']})",
            None,
        ),
        Result(
            "status",
            f"latency p99 < {STATUS_P99_TARGET_SECONDS * ms:.0f} ms",
            f"{status['all']['p99'] * ms:.1f} ms (max {status['all']['max'] * ms:.1f} ms)",
            status_ok,
        ),
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="3 x 4 x 50 components, 15 s")
    parser.add_argument("--seconds", type=float, help="how long changes are made")
    parser.add_argument("--rate", type=float, help="changes a second (default 2)")
    parser.add_argument("--seed", type=int, help="seed of the world and the changes")
    parser.add_argument("--burst-length", type=float, help="serve's burstLength (seconds)")
    parser.add_argument("--burst-interval", type=float, help="serve's burstInterval (seconds)")
    parser.add_argument("--rest-minutes", type=float, help="serve's restLength (minutes)")
    parser.add_argument("--chunk-size", type=int, help="serve's chunkSize")
    parser.add_argument("--latency", type=float, help="seconds the simulator adds per request")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    options = QUICK if args.quick else FULL
    names = (
        "seconds", "rate", "seed", "burst_length", "burst_interval", "rest_minutes", "chunk_size",
        "latency",
    )  # fmt: skip
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    options = Options(**{**asdict(options), **overrides})
    figures = measure(options)
    results = verdicts(figures)
    passed = all(result.passed is not False for result in results)
    if args.json:
        document = {
            "passed": passed,
            "figures": asdict(figures),
            "results": [asdict(result) for result in results],
        }
        print(json.dumps(document, indent=2))
    else:
        print(
            f"{figures.machine}; world {figures.components_in_world:,} components "
            f"({figures.entities_at_start:,} entities), first cycle {figures.first_cycle_seconds}"
            f" s, {figures.cycles_started_during} cycles started while measuring; /status "
            f"states seen {figures.states_seen}; webhooks {figures.webhooks}; serve counters "
            f"{figures.serve_counters}"
        )
        print_table(results)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
