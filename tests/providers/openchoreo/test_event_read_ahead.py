"""An event drain reads ahead (`ReadingAheadProvider`): the reads its next events begin with go
out at once, up to `maxConcurrentRequests` in flight, instead of one event's at a time. Each
event still comes out as its own reads would have made it: the answers are read after every
one of those events arrived, two events that ask for the same read share it (no request is
added, some are saved), and a request that failed for want of a working server is sent again
by the event that needs it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_walk_v1 import PROVIDER, config_for, simulator

from choreo_ingest.config import IncrementalConfig, OpenChoreoConfig
from choreo_ingest.errors import AuthError, NotFoundError
from choreo_ingest.event_input import parse_events
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import READ_AHEAD_EVENTS, SETTLE_SECONDS
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient
from choreo_ingest.providers.openchoreo.overtaken import EVENT_MARKS
from choreo_ingest.simulator import SimulatorApi, World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import expected_catalog, simulator_transport

SCHEMA = {"type": "openapi", "content": "openapi: 3.0.0\ninfo: {title: x, version: '1'}\n"}
BASE = "http://openchoreo.test/api/v1"


# -- the client keeps what it read ahead ---------------------------------------------------------


class CountingServer:
    """Answers each path (below /api/v1, query included) from `routes`; counts what was asked."""

    def __init__(self, routes: dict[str, Callable[[], httpx.Response]]) -> None:
        self.routes = routes
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = request.url.raw_path.decode().removeprefix("/api/v1")
        self.asked.append(route)
        return self.routes[route]()


def client_of(server: CountingServer) -> OpenChoreoClient:
    config = OpenChoreoConfig(base_url=BASE, incremental=IncrementalConfig())
    return OpenChoreoClient(
        config,
        clock=FakeClock(),
        deadline=None,
        transport=httpx.MockTransport(server),
        rng=lambda: 0.0,
        sequential_below=0.0,  # threads, however fast the fake answers
    )


def ok(body: dict[str, Any]) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(200, json=body)


CART = "/namespaces/acme/components/cart"
CART_WORKLOADS = ("/namespaces/acme/workloads", {"component": "cart", "limit": 50})


def test_a_read_asked_for_twice_is_sent_once_and_answers_two_asks_then_no_more() -> None:
    server = CountingServer(
        {
            CART: ok({"metadata": {"name": "cart"}}),
            "/namespaces/acme/workloads?component=cart&limit=50": ok({"items": []}),
        }
    )
    with client_of(server) as client:
        client.read_ahead([(CART, {}), CART_WORKLOADS, (CART, {})])
        assert len(server.asked) == 2

        first = client.get_json(CART)
        first["metadata"]["name"] = "changed by the event that read it"  # a copy
        assert client.get_json(CART) == {"metadata": {"name": "cart"}}
        assert client.get_json(*CART_WORKLOADS) == {"items": []}
        assert len(server.asked) == 2

        client.get_json(CART)  # its two asks answered: sent again
        assert len(server.asked) == 3


def test_a_refusal_read_ahead_is_raised_again_without_a_request() -> None:
    server = CountingServer(
        {
            CART: lambda: httpx.Response(
                404, json={"error": "Component not found", "code": "NOT_FOUND"}
            ),
            "/namespaces/acme/components/vault": lambda: httpx.Response(
                403,
                json={
                    "error": "You do not have permission to perform this operation",
                    "code": "FORBIDDEN",
                },
            ),
        }
    )
    with client_of(server) as client:
        client.read_ahead([(CART, {}), ("/namespaces/acme/components/vault", {})])

        with pytest.raises(NotFoundError):
            client.get_json(CART)
        with pytest.raises(AuthError):
            client.get_json("/namespaces/acme/components/vault")
        assert len(server.asked) == 2


def test_after_a_failure_for_want_of_a_server_nothing_more_is_read_ahead() -> None:
    """No retries, and nothing sent after it: an outage or a 429 is not made worse. The event
    that needs the read sends it again, with the usual retries."""
    answers = iter([httpx.Response(503)] * 3 + [httpx.Response(200, json={"ok": True})])
    server = CountingServer({CART: lambda: next(answers), "/namespaces/acme/x": ok({})})
    with client_of(server) as client:
        client.read_ahead([(CART, {}), ("/namespaces/acme/x", {}), ("/namespaces/acme/y", {})])
        assert server.asked == ["/namespaces/acme/components/cart"]

        assert client.get_json(CART) == {"ok": True}
        assert len(server.asked) == 4
        assert client.get_json("/namespaces/acme/x") == {}
        assert len(server.asked) == 5


def test_a_read_ahead_stops_sending_at_half_the_time_left() -> None:
    """The events it reads for need the rest: a slow server does not eat the drain's time."""
    clock = FakeClock()

    def slow() -> httpx.Response:
        clock.advance(3.0)
        return httpx.Response(200, json={})

    server = CountingServer({f"/namespaces/acme/components/c{n}": slow for n in range(5)})
    config = OpenChoreoConfig(base_url=BASE, incremental=IncrementalConfig())
    with OpenChoreoClient(
        config,
        clock=clock,
        deadline=clock.monotonic() + 10.0,
        transport=httpx.MockTransport(server),
        sequential_below=1e9,  # one at a time: a slow answer each
    ) as client:
        client.read_ahead([(f"/namespaces/acme/components/c{n}", {}) for n in range(5)])
        assert len(server.asked) == 2  # 3 s each, and 5 s was half the time left


def test_a_new_read_ahead_replaces_the_answers_of_the_last_unless_adding() -> None:
    server = CountingServer({CART: ok({}), "/namespaces/acme/components/shop": ok({})})
    with client_of(server) as client:
        client.read_ahead([(CART, {})])
        client.read_ahead([("/namespaces/acme/components/shop", {})], adding=True)
        client.get_json(CART)
        assert len(server.asked) == 2

        client.read_ahead([("/namespaces/acme/components/shop", {})])
        client.get_json(CART)
        assert len(server.asked) == 4


def test_a_cursor_request_is_never_answered_from_the_read_ahead() -> None:
    server = CountingServer({"/namespaces/acme/workloads?cursor=c1": ok({"items": []})})
    with client_of(server) as client:
        client.read_ahead([("/namespaces/acme/workloads", {"cursor": "c1"})])
        client.get_json("/namespaces/acme/workloads", {"cursor": "c1"}, expired_on=(500,))
        assert len(server.asked) == 2


# -- a drain of many events ----------------------------------------------------------------------


class Platform:
    """A v1 world mirrored by one completed cycle, then changed, and an event for each change."""

    def __init__(self, tmp_path: Path, *, overlap: float = 0.0, concurrent: int = 4) -> None:
        tmp_path.mkdir()
        self.clock = FakeClock()
        self.world = World.generate(1, 3, 12, seed=5)
        self.api: SimulatorApi = simulator(self.world, self.clock, latency=0.05)
        self.state_path = tmp_path / "state.db"
        self.config = config_for(self.state_path, max_concurrent_requests=concurrent)
        self.overlap = overlap
        self._lock = threading.Lock()
        self._in_flight = self.most_in_flight = 0
        assert self.run(force=True).providers[0].cycle_completed
        self.namespace = next(self.world.v1_namespaces())["metadata"]["name"]

    def transport(self) -> httpx.MockTransport:
        """The simulator, each answer held `overlap` seconds of real time, so that requests
        sent at once are seen in flight together (`most_in_flight`)."""
        inner = simulator_transport(self.api)

        def handle(request: httpx.Request) -> httpx.Response:
            with self._lock:
                self._in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self._in_flight)
            try:
                time.sleep(self.overlap)
                return inner.handle_request(request)
            finally:
                with self._lock:
                    self._in_flight -= 1

        return httpx.MockTransport(handle)

    def run(self, *, force: bool = False) -> RunResult:
        provider = OpenChoreoProvider(self.config, transport=self.transport())
        return run_once(
            self.config, self.state_path, self.clock, force=force, providers={PROVIDER: provider}
        )

    def change_everything(self) -> list[dict[str, Any]]:
        """New endpoints, deleted workloads and components, new components, a new project
        title: more events than one read-ahead takes, of every kind a drain reads ahead for."""
        namespace, events = self.namespace, []
        components = sorted(c["metadata"]["name"] for c in self.world.v1_components(namespace))
        workloads = sorted(self.world.v1_workloads(namespace), key=lambda w: w["metadata"]["name"])
        for number, workload in enumerate(workloads[:14]):
            name = workload["metadata"]["name"]
            if number % 4 == 3:
                self.world.delete_workload(namespace, name)
            else:
                endpoint = {f"e{number}": {"type": "HTTP", "port": 80 + number, "schema": SCHEMA}}
                self.world.update_workload(namespace, name, {"endpoints": endpoint})
            events.append({"kind": "Workload", "name": name, "namespace": namespace})
        # a deploy: the second workload's component changes too, and both events come (the
        # first event goes before any read-ahead)
        owner = workloads[1]["spec"]["owner"]["componentName"]
        events.append({"kind": "Component", "name": owner, "namespace": namespace})
        for name in components[-5:]:
            project = next(
                c["spec"]["owner"]["projectName"]
                for c in self.world.v1_components(namespace)
                if c["metadata"]["name"] == name
            )
            self.world.delete_component(namespace, project, name)
            events.append({"kind": "Component", "name": name, "namespace": namespace})
        project = next(self.world.v1_projects(namespace))["metadata"]["name"]
        for number in range(5):
            endpoints = {"rest": {"type": "HTTP", "port": 80, "schema": SCHEMA}}
            self.world.add_component(namespace, project, f"zz-new-{number}", endpoints=endpoints)
            events.append({"kind": "Component", "name": f"zz-new-{number}", "namespace": namespace})
        self.world.update_project(namespace, project, {"displayName": "A new title"})
        events.append({"kind": "Project", "name": project, "namespace": namespace})
        assert len(events) > READ_AHEAD_EVENTS
        return [{**body, "action": "updated"} for body in events]

    def drain(self, events: list[dict[str, Any]], *, all_of_them: bool = True) -> RunResult:
        parsed = parse_events(json.dumps(events), OpenChoreoProvider(self.config))
        assert parsed.rejected == []
        stored_events(self.state_path, PROVIDER, parsed.valid, self.clock)
        self.clock.advance(SETTLE_SECONDS)
        self.api.reset_stats()
        self.most_in_flight = 0
        result = self.run()
        assert [outcome.action for outcome in result.providers] == ["waiting"]
        if all_of_them:
            assert (result.events.applied, result.events.parked) == (len(events), 0)
        return result

    def bodies(self) -> dict[str, str]:
        with Store.open(self.state_path, readonly=True) as store:
            return {
                f"{body['kind']}:{body['metadata']['name']}": json.dumps(body, sort_keys=True)
                for body in store.iter_entities()
            }

    def mark_times(self) -> set[float]:
        """When the events' marks say they were applied (`overtaken.py`)."""
        with Store.open(self.state_path, readonly=True) as store:
            rows = store.index_by_group(PROVIDER, EVENT_MARKS, [""], min_cycle=0)[""]
        return {float(row.value["at"]) for row in rows if row.value is not None}


def without_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(OpenChoreoProvider, "read_ahead")


def test_events_read_ahead_come_out_as_each_read_alone_with_the_same_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ahead = Platform(tmp_path / "ahead")
    ahead.drain(ahead.change_everything())
    requests_ahead = dict(ahead.api.stats.requests_by_route)

    without_read_ahead(monkeypatch)
    alone = Platform(tmp_path / "alone")
    alone.drain(alone.change_everything())

    assert ahead.bodies() == alone.bodies()
    requests_alone = dict(alone.api.stats.requests_by_route)
    assert requests_ahead.keys() == requests_alone.keys()
    assert all(requests_ahead[route] <= requests_alone[route] for route in requests_alone)
    # a workload and its component changed: their events share the component's reads
    assert sum(requests_ahead.values()) == sum(requests_alone.values()) - 2
    assert {
        ref: body for ref, body in ahead.bodies().items() if ref.startswith(("Component", "API"))
    }
    assert expected_catalog(ahead.world) == expected_catalog(alone.world)


def test_an_event_is_marked_applied_when_what_it_read_was_read(tmp_path: Path) -> None:
    """Not later, when it is handled: a page of a listing begun in between would be held back
    though newer (`overtaken.py`). Of the 26 events the first reads alone, the others come in
    two read-aheads, each begun at its own time, 50 ms of fake time a request."""
    platform = Platform(tmp_path / "marks")
    platform.drain(platform.change_everything())

    assert len(platform.mark_times()) == 3


def test_a_drain_has_as_many_reads_in_flight_as_the_client_may_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ahead = Platform(tmp_path / "ahead", overlap=0.01)
    ahead.drain(ahead.change_everything())

    without_read_ahead(monkeypatch)
    alone = Platform(tmp_path / "alone", overlap=0.01)
    alone.drain(alone.change_everything())

    assert 1 < ahead.most_in_flight <= 4  # maxConcurrentRequests
    assert alone.most_in_flight == 1


@pytest.mark.parametrize("concurrent", [1, 4])
def test_a_slow_server_leaves_the_events_their_time_and_blames_none(
    tmp_path: Path, concurrent: int
) -> None:
    """Answers of 1 s against a drain of `burstLength` 10 s: the first event goes first, the
    read-ahead stops at half of what is left, the events after it use the rest, and none that
    then runs out of time is counted as one that never fits a burstLength. (The fake clock adds
    up the latencies of requests in flight together.)"""
    platform = Platform(tmp_path / "slow", concurrent=concurrent)
    events = platform.change_everything()
    platform.api = simulator(platform.world, platform.clock, latency=1.0)

    result = platform.drain(events, all_of_them=False)

    assert 0 < result.events.applied < len(events)
    assert (result.events.retried, result.events.parked) == (0, 0)
    with Store.open(platform.state_path, readonly=True) as store:
        assert all(item.attempts == 0 for item in store.pending_events(PROVIDER))


class HangingPlatform(Platform):
    """A read whose raw path holds `slow` answers after `slow_seconds`; one that holds
    `hanging` never answers within its timeout."""

    slow: str | None = None
    slow_seconds = 6.0
    hanging: str | None = None

    def transport(self) -> httpx.MockTransport:
        inner = simulator_transport(self.api)

        def handle(request: httpx.Request) -> httpx.Response:
            path = request.url.raw_path.decode()
            if self.hanging and self.hanging in path:
                self.clock.advance(min(10.0, request.extensions["timeout"]["read"]))
                raise httpx.ReadTimeout("no answer", request=request)
            if self.slow and self.slow in path:
                self.clock.advance(self.slow_seconds)
            return inner.handle_request(request)

        return httpx.MockTransport(handle)

    def queue_events_for_first(self, count: int) -> str:
        """Events for the first `count` components; the name of the first."""
        components = sorted(c["metadata"]["name"] for c in self.world.v1_components(self.namespace))
        events = [
            {"kind": "Component", "name": name, "namespace": self.namespace, "action": "created"}
            for name in components[:count]
        ]
        parsed = parse_events(json.dumps(events), OpenChoreoProvider(self.config))
        stored_events(self.state_path, PROVIDER, parsed.valid, self.clock)
        return components[0]

    def runs(self, count: int) -> tuple[int, int]:
        """`count` runs a minute apart: the events applied and parked."""
        applied = parked = 0
        for _ in range(count):
            self.clock.advance(60.0)
            result = self.run()
            applied, parked = applied + result.events.applied, parked + result.events.parked
        return applied, parked


def test_a_first_event_that_never_fits_is_parked_and_the_rest_applied(tmp_path: Path) -> None:
    """The drain's first event has the whole `burstLength` before any read-ahead: one whose
    reads never fit in it (its component answers in 6 s of the 10, its workloads listing is cut
    by the deadline) is counted, parked after 5 runs, and holds up nothing more."""
    platform = HangingPlatform(tmp_path / "hang")
    first = platform.queue_events_for_first(3)
    platform.slow, platform.hanging = f"/components/{first}", f"component={first}"

    assert platform.runs(6) == (2, 1)


@pytest.mark.parametrize("burst_length", [10.0, 4.0], ids=["as-requestTimeout", "shorter"])
def test_a_first_event_whose_server_stalls_holds_every_event_until_it_answers(
    tmp_path: Path, burst_length: float
) -> None:
    """Its read unanswered for all of requestTimeout (10 s, as burstLength), or for the whole
    burst when burstLength is shorter: the server has stalled, and no longer burst would help.
    The events wait out backoff steps, as for any outage (before, each run charged the first an
    attempt and parked it in 5 minutes; with the shorter burst, it was never held, so every
    drain charged it, and the attempts it piled up made the hold after the API came back the
    longest step), and all are applied once the server answers."""
    platform = HangingPlatform(tmp_path / "stall")
    platform.config = config_for(
        platform.state_path, max_concurrent_requests=4, burst_length=burst_length
    )
    first = platform.queue_events_for_first(3)
    platform.hanging = f"/components/{first}"

    assert platform.runs(6) == (0, 0)
    with Store.open(platform.state_path, readonly=True) as store:
        assert [item.attempts for item in store.pending_events(PROVIDER)] == [3, 0, 0]

    platform.hanging = None
    assert platform.runs(5) == (3, 0)


def test_under_a_rate_limit_every_drain_applies_events(tmp_path: Path) -> None:
    """`maxRequestsPerSecond: 1`: the read-ahead waits for the limit no longer than its half
    of the time, and the events use the rest."""
    platform = Platform(tmp_path / "rate")
    events = platform.change_everything()
    platform.config = config_for(
        platform.state_path, max_concurrent_requests=4, max_requests_per_second=1
    )
    parsed = parse_events(json.dumps(events), OpenChoreoProvider(platform.config))
    stored_events(platform.state_path, PROVIDER, parsed.valid, platform.clock)

    applied = []
    for _ in range(3):
        platform.clock.advance(60.0)
        applied.append(platform.run().events.applied)

    assert all(count > 0 for count in applied), applied
