"""SIGKILL `serve` mid-burst while OpenChoreo's events stream in: no event answered 202 is lost,
and once the service has run a full cycle the catalog is the simulator's world.

The v1 simulator runs in-process (a loopback server, 3 ms per API request so that bursts take
a while); `serve` runs as a subprocess with short bursts and rests, so a cycle is nearly always
in flight. A poster thread changes the world through the simulator's control routes (a new
component, or a generated one deleted) and POSTs the event-forwarder's event for each change to
serve's webhook routes, recording which POSTs were answered 202; it keeps going while serve is
killed and restarted, as the forwarder would (its POSTs then fail: those events are lost to the
forwarder, and only a full cycle brings their changes in). The test SIGKILLs serve KILLS times,
each time once that serve has answered EVENTS_PER_LIFE events 202 and `/status` says a burst is
in progress (at most 0.2 s later; at least KILLS / 2 kills must find the file `bursting`, and it
kills up to twice KILLS times for them, as a burst may end first), and restarts it. Every POST
must be answered 202 or meet a dead serve.

Every event has a key of its own (new names are never reused, a component is deleted once), so
the inbox never coalesces two of them, and every event committed to it (its AUTOINCREMENT seq)
ends as exactly one of applied, parked or dropped (those counters are bumped in the same
transaction as the event leaves the inbox), or is still pending. Checked:

- after each kill, in the state file as the kill left it: every event answered 202 so far is
  pending in the inbox, or its change is in the catalog (the component is there, or gone);
- at the end, once a whole cycle began and ended after the last change, and after an orderly
  stop: the inbox is empty, nothing was parked or dropped, every event stored was applied, at
  least as many events were stored as were answered 202 (at most as many as were posted), and
  the catalog equals `expected_catalog(world)`.

The test reads the state file itself only while serve is down; while serve runs it asks serve
(`/status`). A reader in another process opening the file while serve runs can crash serve
with SIGBUS: the store's own open and close of the state file and its -wal/-shm drop the
process's SQLite (POSIX) locks, so the other process takes itself for the only user and
truncates the -shm under serve (or, once the last such reader closes, deletes the WAL).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from ports import free_port

from choreo_ingest.models import entity_ref
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server
from choreo_ingest.store import Store

from sim_support import INHERITED_SETTINGS, expected_catalog, write_config

pytestmark = pytest.mark.slow

PROVIDER = "openchoreo"
KILLS = 6
EVENTS_PER_LIFE = 5
"""Events serve answers 202 after each start before it may be killed."""
SEED = 23
POSTS_PER_SECOND = 15.0
START_SECONDS = 20.0
BURST_WAIT_SECONDS = 20.0
SETTLE_SECONDS = 40.0
HOOK_PATHS = ("/api/events/http/openchoreo", "/events/openchoreo")


@dataclass
class Posted:
    event: dict[str, str]
    status: int | None = None
    error: str | None = None
    """The transport error, or the body of an answer other than 202."""

    @property
    def acknowledged(self) -> bool:
        return self.status == 202


class ServeProcess:
    """`choreo-ingest serve` on a fixed loopback port, started again after every kill."""

    def __init__(self, config: Path, port: int, directory: Path) -> None:
        self.config = config
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
        command = [
            sys.executable, "-m", "choreo_ingest", "-v", "--config", str(self.config),
            "serve", "--listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        with (self.directory / f"serve-{self.starts}.stderr").open("wb") as stderr:
            self.process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited {self.process.returncode} at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"serve did not answer /healthz in {START_SECONDS} s:\n{self.log()}")

    def status(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.base}/status", timeout=5)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_for_schema(self) -> None:
        """Until `/status` answers 200: the first tick has created the state file's schema."""
        deadline = time.monotonic() + START_SECONDS
        while self.status() is None:
            assert time.monotonic() < deadline, f"no state file in {START_SECONDS} s:\n{self.log()}"
            time.sleep(0.02)

    def wait_until_bursting(self) -> None:
        deadline = time.monotonic() + BURST_WAIT_SECONDS
        while time.monotonic() < deadline:
            document = self.status()
            providers = document["providers"] if document else []
            if providers and providers[0]["state"] == "bursting":
                return
            time.sleep(0.02)
        pytest.fail(f"no burst began in {BURST_WAIT_SECONDS} s:\n{self.log()}")

    def kill(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, f"serve died on its own:\n{self.log()}"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            pytest.fail(f"serve did not stop within 30 s of SIGTERM:\n{self.log()}")

    def log(self) -> str:
        return (self.directory / f"serve-{self.starts}.stderr").read_text(errors="replace")[-4000:]


class Poster(threading.Thread):
    """Changes the world through the control routes and POSTs each change's event to serve."""

    def __init__(self, api: SimulatorApi, base: str) -> None:
        super().__init__(name="event-poster", daemon=True)
        self.api = api
        self.base = base
        self.posted: list[Posted] = []
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.lock = threading.Lock()
        self.rng = random.Random(SEED)
        world = api.world
        namespaces = [n["metadata"]["name"] for n in world.v1_namespaces()]
        self.projects = [
            (namespace, project["metadata"]["name"])
            for namespace in namespaces
            for project in world.v1_projects(namespace)
        ]
        self.deletable = [
            (namespace, component["metadata"]["name"])
            for namespace in namespaces
            for component in world.v1_components(namespace)
        ]
        self.rng.shuffle(self.deletable)

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base, timeout=5.0) as client:
                made = 0
                while not self.stopping.is_set():
                    made += 1
                    event = self._change(made)
                    self._post(client, event, HOOK_PATHS[made % len(HOOK_PATHS)])
                    self.stopping.wait(1 / POSTS_PER_SECOND)
        except BaseException as error:  # reported by the test
            self.failure = error

    def records(self) -> list[Posted]:
        with self.lock:
            return list(self.posted)

    def _change(self, made: int) -> dict[str, str]:
        if made % 3 == 0 and self.deletable:
            namespace, name = self.deletable.pop()
            self._control("delete_component", namespace=namespace, name=name)
            action = "deleted"
        else:
            namespace, project = self.rng.choice(self.projects)
            name = f"crash-{made:05d}"
            self._control("add_component", namespace=namespace, project=project, name=name)
            action = "created"
        return {"kind": "Component", "name": name, "namespace": namespace, "action": action}

    def _control(self, route: str, **params: str) -> None:
        answer = self.api.handle("POST", f"/_control/{route}", urlencode(params), {})
        assert answer.status == 200, answer.body

    def _post(self, client: httpx.Client, event: dict[str, str], path: str) -> None:
        record = Posted(event)
        try:
            response = client.post(path, content=json.dumps(event).encode(), headers=JSON)
            record.status = response.status_code
            if response.status_code != 202:
                record.error = response.text
        except httpx.HTTPError as error:  # serve is down, or was killed mid-request
            record.error = type(error).__name__
        with self.lock:
            self.posted.append(record)


JSON = {"Content-Type": "application/json"}


def catalog(state_path: Path) -> dict[str, set[str]]:
    with Store.open(state_path, readonly=True) as store:
        return {
            entity_ref(body["kind"], body["metadata"]["namespace"], body["metadata"]["name"]): set(
                body["spec"].get("providesApis", [])
            )
            for body in store.iter_entities()
        }


@dataclass(frozen=True)
class Inbox:
    pending: list[dict[str, Any]]
    parked: int
    stored_ever: int
    """Events ever committed to the inbox (its AUTOINCREMENT sequence)."""


def read_inbox(state_path: Path) -> Inbox:
    with closing(sqlite3.connect(f"file:{state_path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT body, parked FROM event_inbox ORDER BY seq").fetchall()
        found = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'event_inbox'"
        ).fetchone()
    return Inbox(
        pending=[json.loads(body) for body, parked in rows if not parked],
        parked=sum(parked for _, parked in rows),
        stored_ever=int(found[0]) if found else 0,
    )


def counters(state_path: Path) -> dict[str, int]:
    with Store.open(state_path, readonly=True) as store:
        return dict(store.counters(PROVIDER))


def provider_state(state_path: Path) -> str:
    """The provider's state as the file holds it (`bursting` from a burst's start to its end)."""
    with Store.open(state_path, readonly=True) as store:
        return store.load_provider(PROVIDER).state.value


def component_ref(event: dict[str, str]) -> str:
    return entity_ref("Component", event["namespace"], event["name"])


def lost_events(state_path: Path, acknowledged: list[dict[str, str]]) -> list[dict[str, str]]:
    """The events answered 202 that are neither pending nor visible in the catalog."""
    inbox = read_inbox(state_path)
    pending = {json.dumps(body, sort_keys=True) for body in inbox.pending}
    present = set(catalog(state_path))
    lost = []
    for event in acknowledged:
        if json.dumps(event, sort_keys=True) in pending:
            continue
        in_catalog = component_ref(event) in present
        if in_catalog != (event["action"] == "created"):
            lost.append(event)
    return lost


@pytest.fixture
def simulator() -> Iterator[tuple[SimulatorApi, str]]:
    world = World.generate(2, 4, 40, seed=SEED)
    api = SimulatorApi(world, SimulatorOptions(api="v1", control=True, latency=0.003))
    with start_server(api) as server:
        yield api, server.root_url


def test_sigkill_mid_burst_loses_no_acknowledged_event(
    tmp_path: Path, simulator: tuple[SimulatorApi, str]
) -> None:
    api, root = simulator
    state_path = tmp_path / "state.db"
    config = write_config(
        tmp_path / "choreo-ingest.yaml",
        root,
        state={"path": str(state_path)},
        incremental={
            "burstLength": 1,
            "burstInterval": 0.5,
            "restLength": 0.01,
            "chunkSize": 10,
            "backoff": [1],
        },
    )
    serve = ServeProcess(config, free_port(), tmp_path)
    try:
        records = kill_while_posting(serve, api, state_path)
        settle(serve)
        assert serve.stop() == 0, serve.log()
    finally:
        serve.ensure_stopped()

    acknowledged = [r.event for r in records if r.acknowledged]
    answered = [(r.status, r.error) for r in records if r.status not in (None, 202)]
    assert answered == [], "answers other than 202"
    assert len(acknowledged) >= (KILLS + 1) * EVENTS_PER_LIFE
    assert any(not r.acknowledged for r in records), "no POST met a dead serve"
    inbox = read_inbox(state_path)
    assert (inbox.pending, inbox.parked) == ([], 0)
    applied = counters(state_path)
    assert applied.get("events_dropped", 0) == 0
    assert applied.get("events_parked", 0) == 0
    assert applied.get("events_applied", 0) == inbox.stored_ever
    assert len(acknowledged) <= inbox.stored_ever <= len(records)
    assert lost_events(state_path, acknowledged) == []
    assert catalog(state_path) == expected_catalog(api.world)


def kill_while_posting(serve: ServeProcess, api: SimulatorApi, state_path: Path) -> list[Posted]:
    """Start serve and the poster; KILLS times (more, up to twice as many, until half of them
    landed in a burst: one can end before the kill when its cycle completes): wait for a burst,
    SIGKILL serve at a random moment in it, check the state file it left, start serve again.
    Returns every POST made."""
    serve.start()
    # Not while the first tick creates the schema: an event stored into the half-made state
    # file is refused (503, "not a choreo-ingest state file"), and the forwarder never retries.
    serve.wait_for_schema()
    poster = Poster(api, serve.base)
    poster.start()
    kill_rng = random.Random(SEED)
    mid_burst = kills = 0
    try:
        while kills < KILLS or (mid_burst < KILLS // 2 and kills < 2 * KILLS):
            kills += 1
            wait_for_acknowledged(poster, EVENTS_PER_LIFE)
            serve.wait_until_bursting()
            time.sleep(kill_rng.uniform(0.0, 0.2))
            serve.kill()
            acknowledged = [r.event for r in poster.records() if r.acknowledged]
            assert lost_events(state_path, acknowledged) == [], "lost at a kill"
            mid_burst += provider_state(state_path) == "bursting"
            serve.start()
        time.sleep(0.5)  # events reach the restarted service too
    finally:
        poster.stopping.set()
        poster.join(timeout=30)
    assert poster.failure is None, repr(poster.failure)
    assert mid_burst >= KILLS // 2, f"only {mid_burst} of {kills} kills landed in a burst"
    return poster.records()


def wait_for_acknowledged(poster: Poster, count: int) -> None:
    """Until `count` more POSTs (from now) were answered 202."""
    goal = sum(r.acknowledged for r in poster.records()) + count
    deadline = time.monotonic() + START_SECONDS
    while sum(r.acknowledged for r in poster.records()) < goal:
        assert poster.failure is None, repr(poster.failure)
        assert time.monotonic() < deadline, f"serve answered no {count} events 202"
        time.sleep(0.02)


def settle(serve: ServeProcess) -> None:
    """Wait until the inbox is empty and the cycle after the one in progress now has completed
    (the cycle id moved on twice: a whole cycle began after the last change and ended)."""
    document = serve.status()
    assert document is not None, serve.log()
    first = document["providers"][0]["cycleId"]
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        document = serve.status()
        if document is not None:
            moved_on = document["providers"][0]["cycleId"] >= first + 2
            if moved_on and document["events"] == {"pending": 0, "parked": 0}:
                return
        time.sleep(0.1)
    pytest.fail(f"no whole cycle with an empty inbox in {SETTLE_SECONDS} s: {document}")
