"""The simulator posts OpenChoreo's event-forwarder webhooks for changes made through its control
routes: the bodies, the URL and headers, one attempt each, the bounded queue, the counters."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.simulator.webhooks import QUEUE_CAPACITY, EventForwarder, forwarded

WAIT_SECONDS = 10.0
HOOK_PATH = "/api/events/http/openchoreo"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A tiny webhook receiver: records every request, answers `status`; while `hold` is clear
    it keeps each request waiting (after recording it), so the sender's queue fills."""

    port: int = 0
    status: int = 202
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    hold: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    def wait_for(self, count: int) -> list[Received]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, WAIT_SECONDS)
            return list(self.received)

    def bodies(self) -> list[Any]:
        with self.arrived:
            return [request.json() for request in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.hold.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = Received(
                "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, b""
            )
            request.body = self.rfile.read(length)
            with found.arrived:
                found.received.append(request)
                found.arrived.notify_all()
            found.hold.wait(WAIT_SECONDS)
            self.send_response(found.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        found.hold.set()
        server.shutdown()
        server.server_close()
        thread.join()


def v1_world() -> World:
    world = World.empty()
    world.add_org("acme")
    world.add_project("acme", "shop")
    world.add_component("acme", "shop", "cart", endpoints={"http": {"type": "REST", "port": 80}})
    return world


@pytest.fixture
def make_api() -> Iterator[Any]:
    made: list[SimulatorApi] = []

    def make(*urls: str, world: World | None = None, **options: Any) -> SimulatorApi:
        settings = {"api": "v1", "control": True, "webhooks": urls, **options}
        api = SimulatorApi(world or v1_world(), SimulatorOptions(**settings))
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def control(api: SimulatorApi, route: str, **params: str) -> dict[str, Any]:
    response = api.handle("POST", f"/_control/{route}", urlencode(params), {})
    document: dict[str, Any] = json.loads(response.body)
    assert response.status == 200, document
    return document


def stats(api: SimulatorApi) -> dict[str, Any]:
    response = api.handle("GET", "/_control/stats", "", {})
    data: dict[str, Any] = json.loads(response.body)["data"]
    return data


def event(kind: str, name: str, namespace: str, action: str) -> dict[str, str]:
    return {"kind": kind, "name": name, "namespace": namespace, "action": action}


def test_a_new_component_is_posted_as_the_forwarder_posts_it(
    make_api: Any, receiver: Receiver
) -> None:
    api = make_api(receiver.url)
    control(api, "add_component", namespace="acme", project="shop", name="orders")
    assert api.wait_for_webhooks(WAIT_SECONDS)

    requests = receiver.wait_for(2)
    assert [request.json() for request in requests] == [
        event("Component", "orders", "acme", "created"),
        event("Workload", "orders-workload", "acme", "created"),
    ]
    first = requests[0]
    assert (first.method, first.path) == ("POST", HOOK_PATH)
    assert first.headers["content-type"] == "application/json"
    assert "authorization" not in first.headers
    assert (
        first.body == b'{"kind":"Component","name":"orders","namespace":"acme","action":"created"}'
    )
    assert int(first.headers["content-length"]) == len(first.body)
    counts = stats(api)
    assert (counts["webhook_events"], counts["webhook_posts"]) == (2, 2)
    assert (counts["webhook_failures"], counts["webhook_dropped"]) == (0, 0)


def test_every_control_change_posts_the_events_of_what_changed(
    make_api: Any, receiver: Receiver
) -> None:
    api = make_api(receiver.url)
    control(api, "add_component", namespace="acme", project="shop", name="cart")  # put again
    control(api, "add_workload", namespace="acme", name="cart-extra", component="cart")
    control(api, "add_workload", namespace="acme", name="cart-extra", component="cart")
    changes = json.dumps({"endpoints": {"web": {"type": "HTTP", "port": 8080}}})
    control(api, "update", kind="workload", namespace="acme", name="cart-extra", changes=changes)
    control(api, "delete_workload", namespace="acme", name="cart-extra")
    title = json.dumps({"displayName": "ACME"})
    control(api, "update", kind="namespace", namespace="acme", name="acme", changes=title)
    owner = json.dumps({"annotations": {"backstage.io/owner": "group:default/shop"}})
    control(api, "update", kind="project", namespace="acme", name="shop", changes=owner)
    workload = json.dumps({"workload": {"containers": {"main": {"image": "cart:v2"}}}})
    control(api, "update", kind="component", namespace="acme", name="cart", changes=workload)
    control(api, "delete_component", namespace="acme", name="cart")
    assert api.wait_for_webhooks(WAIT_SECONDS)

    assert receiver.bodies() == [
        event("Component", "cart", "acme", "updated"),
        event("Workload", "cart-workload", "acme", "updated"),
        event("Workload", "cart-extra", "acme", "created"),
        event("Workload", "cart-extra", "acme", "updated"),
        event("Workload", "cart-extra", "acme", "updated"),
        event("Workload", "cart-extra", "acme", "deleted"),
        event("Namespace", "acme", "", "updated"),
        event("Project", "shop", "acme", "updated"),
        event("Component", "cart", "acme", "updated"),
        event("Workload", "cart-workload", "acme", "updated"),  # its image changed
        event("Component", "cart", "acme", "deleted"),
        event("Workload", "cart-workload", "acme", "deleted"),
    ]


def test_a_deleted_component_takes_every_workload_it_owned(
    make_api: Any, receiver: Receiver
) -> None:
    api = make_api(receiver.url)
    control(api, "add_workload", namespace="acme", name="cart-zz", component="cart")
    control(api, "delete_component", namespace="acme", name="cart")
    assert api.wait_for_webhooks(WAIT_SECONDS)
    assert receiver.bodies()[1:] == [
        event("Component", "cart", "acme", "deleted"),
        event("Workload", "cart-workload", "acme", "deleted"),
        event("Workload", "cart-zz", "acme", "deleted"),
    ]


def test_a_refused_change_posts_nothing(make_api: Any, receiver: Receiver) -> None:
    api = make_api(receiver.url)
    response = api.handle("POST", "/_control/delete_component", "namespace=acme&name=ghost", {})
    assert response.status == 404
    response = api.handle("POST", "/_control/add_component", "namespace=acme&name=x", {})
    assert response.status == 400  # no project
    assert api.wait_for_webhooks(WAIT_SECONDS)
    assert receiver.received == []
    assert stats(api)["webhook_events"] == 0


def test_each_url_gets_each_event_once(make_api: Any, receiver: Receiver) -> None:
    api = make_api(receiver.url, receiver.url.replace(HOOK_PATH, "/events/openchoreo"))
    control(api, "delete_workload", namespace="acme", name="cart-workload")
    assert api.wait_for_webhooks(WAIT_SECONDS)
    requests = receiver.wait_for(2)
    assert [request.path for request in requests] == [HOOK_PATH, "/events/openchoreo"]
    assert {request.body for request in requests} == {
        b'{"kind":"Workload","name":"cart-workload","namespace":"acme","action":"deleted"}'
    }
    assert stats(api)["webhook_posts"] == 2


@pytest.mark.parametrize("status", [500, 503, 302, 404])
def test_a_failed_post_is_counted_and_never_retried(
    make_api: Any, receiver: Receiver, status: int
) -> None:
    receiver.status = status
    api = make_api(receiver.url)
    control(api, "delete_workload", namespace="acme", name="cart-workload")
    assert api.wait_for_webhooks(WAIT_SECONDS)
    assert len(receiver.received) == 1
    counts = stats(api)
    assert (counts["webhook_posts"], counts["webhook_failures"]) == (0, 1)
    assert counts["webhook_last_error"] == f"{receiver.url}: HTTP {status}"


def test_an_unreachable_url_is_one_failure(make_api: Any) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        api = make_api(url)
        control(api, "delete_workload", namespace="acme", name="cart-workload")
        assert api.wait_for_webhooks(WAIT_SECONDS)
    counts = stats(api)
    assert (counts["webhook_events"], counts["webhook_failures"]) == (1, 1)
    assert counts["webhook_last_error"].startswith(f"{url}: URLError")


def test_events_past_a_full_queue_are_dropped_and_counted(
    make_api: Any, receiver: Receiver
) -> None:
    """One event in flight (the receiver holds it), 1024 queued, the rest dropped."""
    receiver.hold.clear()
    api = make_api(receiver.url)
    title = json.dumps({"displayName": "x"})
    control(api, "update", kind="namespace", namespace="acme", name="acme", changes=title)
    receiver.wait_for(1)  # the first event is being posted: it left the queue
    extra = 7
    for _ in range(QUEUE_CAPACITY + extra):
        control(api, "update", kind="namespace", namespace="acme", name="acme", changes=title)
    assert stats(api)["webhook_dropped"] == extra
    receiver.hold.set()
    assert api.wait_for_webhooks(30.0)
    counts = stats(api)
    assert counts["webhook_events"] == 1 + QUEUE_CAPACITY
    assert counts["webhook_posts"] == 1 + QUEUE_CAPACITY
    assert len(receiver.received) == 1 + QUEUE_CAPACITY


def test_the_forwarder_alone_drops_past_its_capacity(receiver: Receiver) -> None:
    receiver.hold.clear()
    forwarder = EventForwarder([receiver.url], capacity=2)
    try:
        forwarder.forward([forwarded("Namespace", "a", "ignored", "updated")])
        receiver.wait_for(1)
        forwarder.forward([forwarded("Component", c, "acme", "created") for c in "bcde"])
        assert forwarder.counts().webhook_dropped == 2
        receiver.hold.set()
        assert forwarder.wait_idle(WAIT_SECONDS)
        assert receiver.bodies() == [
            event("Namespace", "a", "", "updated"),
            event("Component", "b", "acme", "created"),
            event("Component", "c", "acme", "created"),
        ]
    finally:
        forwarder.close()


def test_without_webhooks_nothing_is_posted_or_counted(make_api: Any) -> None:
    api = make_api()
    control(api, "add_component", namespace="acme", project="shop", name="orders")
    assert api.wait_for_webhooks(0)
    assert stats(api)["webhook_events"] == 0


def test_reset_stats_forgets_the_webhook_counts(make_api: Any, receiver: Receiver) -> None:
    api = make_api(receiver.url)
    control(api, "delete_workload", namespace="acme", name="cart-workload")
    assert api.wait_for_webhooks(WAIT_SECONDS)
    assert stats(api)["webhook_posts"] == 1
    control(api, "reset_stats")
    assert stats(api)["webhook_posts"] == 0


@pytest.mark.parametrize("url", ["ftp://host/x", "/relative", "http:///no-host", "hook"])
def test_webhook_urls_must_be_http_with_a_host(url: str) -> None:
    with pytest.raises(ValueError, match="webhook URL"):
        SimulatorOptions(webhooks=(url,))


@pytest.mark.slow
def test_simulate_serve_posts_webhooks_for_control_changes(receiver: Receiver) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", "simulate", "serve", "--port", "0", "--control",
         "--orgs", "1", "--projects", "1", "--components", "2", "--webhook", receiver.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        root = process.stderr.readline().rsplit(" ", 1)[-1].strip().removesuffix("/api/v1")
        world = httpx.get(f"{root}/_control/world").json()["data"]
        namespace = world["namespaces"][0]["metadata"]["name"]
        project = world["projects"][0]["metadata"]["name"]
        params = {"namespace": namespace, "project": project, "name": "fresh"}
        assert httpx.post(f"{root}/_control/add_component", params=params).status_code == 200

        requests = receiver.wait_for(2)
        assert [request.json() for request in requests] == [
            event("Component", "fresh", namespace, "created"),
            event("Workload", "fresh-workload", namespace, "created"),
        ]
        assert requests[0].headers["content-type"] == "application/json"
        counts = httpx.get(f"{root}/_control/stats").json()["data"]
        assert (counts["webhook_events"], counts["webhook_failures"]) == (2, 0)
    finally:
        process.terminate()
        try:
            _, errors = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # killed: the assertion below says what it printed
            process.kill()
            _, errors = process.communicate()
    assert process.returncode == 0, errors


def test_simulate_serve_wants_control_for_webhooks() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "choreo_ingest", "simulate", "serve", "--port", "0",
         "--webhook", "http://127.0.0.1:9/hook"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "add --control" in done.stderr
