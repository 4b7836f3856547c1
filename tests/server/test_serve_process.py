"""`choreo-ingest serve` as a process, as Kubernetes or systemd runs it: against the v1
simulator, events over HTTP, SIGTERM, and the ways it refuses to start."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from ports import free_port

from choreo_ingest.simulator.api import SimulatorApi
from choreo_ingest.simulator.options import SimulatorOptions
from choreo_ingest.simulator.server import RunningServer, start_server
from choreo_ingest.simulator.world import World
from choreo_ingest.store.schema import SCHEMA_VERSION

from sim_support import run_cli, wait_until, write_config

pytestmark = pytest.mark.slow

TOKEN = "serve-api-token"
NAMESPACE, PROJECT = "org-00-umbrella", "proj-00-search"
START_SECONDS = 20.0


def call(
    method: str, url: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, dict[str, Any], httpx.Headers]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.request(method, url, json=body, headers=headers, timeout=10)
    return answer.status_code, answer.json() if answer.content else {}, answer.headers


@pytest.fixture
def simulator() -> Iterator[RunningServer]:
    api = SimulatorApi(World.generate(2, 2, 3, seed=12), SimulatorOptions(api="v1", control=True))
    with start_server(api) as server:
        yield server


def serve_process(
    tmp_path: Path,
    simulator_url: str,
    *args: str,
    env: dict[str, str] | None = None,
    serve: dict[str, Any] | None = None,
    entry: tuple[str, ...] = ("-m", "choreo_ingest"),
) -> tuple[subprocess.Popen[str], str]:
    config = write_config(
        tmp_path / "choreo-ingest.yaml",
        simulator_url,
        token="openchoreo-token",
        state={"path": "state.db"},
        incremental={"burstLength": 2, "burstInterval": 1, "restLength": 10},
        **({"serve": serve} if serve else {}),
    )
    port = free_port()
    listen = args[args.index("--listen") + 1] if "--listen" in args else f"127.0.0.1:{port}"
    extra = [] if "--listen" in args else ["--listen", listen]
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CHOREO_INGEST")
    }
    environment.update(env or {})
    process = subprocess.Popen(
        [sys.executable, *entry, "serve", "--config", str(config), *extra, *args],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, f"http://127.0.0.1:{listen.rpartition(':')[2]}"


def ready(process: subprocess.Popen[str], url: str) -> None:
    def answered() -> bool:
        assert process.poll() is None, process.communicate()
        try:
            return call("GET", url + "/readyz")[0] == 200
        except httpx.TransportError:
            return False

    wait_until(answered, START_SECONDS, "serve to be ready")


def stop(process: subprocess.Popen[str], timeout: float = 15.0) -> tuple[int, str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def control(simulator: RunningServer, route: str) -> None:
    answer = httpx.post(simulator.root_url + "/_control/" + route, timeout=10)
    assert answer.json()["success"], answer.text


def in_catalog(url: str, ref: str) -> bool:
    status, document, _ = call("POST", url + "/entities/batch", {"refs": [ref]})
    assert status == 200, document
    return not document["missing"]


def test_serve_ingests_applies_events_over_http_and_stops_with_0(
    tmp_path: Path, simulator: RunningServer
) -> None:
    process, url = serve_process(tmp_path, simulator.url, env={"CHOREO_INGEST_SERVE_TOKEN": TOKEN})
    try:
        ready(process, url)
        wait_until(
            lambda: call("GET", url + "/status")[1]["providers"][0]["lastCompletedAt"],
            START_SECONDS,
            "the first cycle",
        )
        control(simulator, f"add_component?namespace={NAMESPACE}&project={PROJECT}&name=fresh")
        created = {"kind": "Component", "name": "fresh", "namespace": NAMESPACE}
        status, receipt, _ = call(
            "POST", url + "/api/events/http/openchoreo", {**created, "action": "created"}, None
        )
        assert (status, receipt["stored"]) == (202, 1)
        wait_until(lambda: in_catalog(url, f"component:{NAMESPACE}/fresh"), 5.0, "the create")

        control(simulator, f"delete_component?namespace={NAMESPACE}&name=fresh")
        call("POST", url + "/events/openchoreo", {**created, "action": "deleted"}, None)
        wait_until(lambda: not in_catalog(url, f"component:{NAMESPACE}/fresh"), 5.0, "the delete")

        served = call("GET", url + "/status")[1]
        printed = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
        for document in (served, printed):
            document.pop("running")  # serve may be bursting between the two reads
            document.pop("stateFile")  # as given: absolute for serve, relative for the CLI
            for provider in document["providers"]:
                provider.pop("state"), provider.pop("nextActionAt"), provider.pop("lastBurstAt")
        assert served == printed
    finally:
        started = time.monotonic()
        code, _, err = stop(process)
    assert code == 0, err
    assert time.monotonic() - started < 2 + 10  # burstLength, and then some
    assert TOKEN not in err


def test_a_token_short_enough_to_guess_is_warned_of_at_the_start(
    tmp_path: Path, simulator: RunningServer
) -> None:
    process, url = serve_process(
        tmp_path, simulator.url, env={"CHOREO_INGEST_SERVE_TOKEN": "changeme"}
    )
    try:
        ready(process, url)
    finally:
        code, _, err = stop(process)
    assert code == 0, err
    assert "serve_secret_short" in err
    assert "the token is 8 characters long, which a caller may guess" in err
    assert "changeme" not in err


def test_serve_ends_with_75_once_a_newer_release_migrated_its_state(
    tmp_path: Path, simulator: RunningServer
) -> None:
    """An upgrade in place whose cron `run` migrated the state beside a `serve` of the release
    before: no tick of that process can run again, and `/healthz` alive kept it up for good.
    75, not 4: started again, it runs the release installed now (the systemd unit does not
    restart a 4)."""
    process, url = serve_process(tmp_path, simulator.url)
    try:
        ready(process, url)
        with closing(sqlite3.connect(tmp_path / "state.db", timeout=30)) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        out, err = process.communicate(timeout=START_SECONDS)
    finally:
        if process.poll() is None:
            stop(process)
    assert process.returncode == 75, err
    assert out == ""
    assert f"state schema version {SCHEMA_VERSION + 1} is newer than this choreo-ingest" in err


def test_a_cron_run_beside_serve_is_turned_away_or_runs_but_never_overlaps(
    tmp_path: Path, simulator: RunningServer
) -> None:
    process, url = serve_process(tmp_path, simulator.url)
    try:
        ready(process, url)
        codes = {run_cli("run", "--force", cwd=tmp_path).returncode for _ in range(3)}
        status = call("GET", url + "/status", token=None)[0]
    finally:
        code, _, err = stop(process)
    assert codes <= {0, 75}
    assert status == 200
    assert code == 0, err


def test_healthz_is_answered_while_idle_connections_outnumber_the_open_file_limit(
    tmp_path: Path, simulator: RunningServer
) -> None:
    files = 128  # soft and hard: serve cannot raise it
    under_limit = (
        "-c",
        f"import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({files}, {files})); "
        "from choreo_ingest.cli import main; main(sys.argv[1:])",
    )
    process, url = serve_process(
        tmp_path, simulator.url, entry=under_limit, serve={"readTimeout": 2}
    )
    address = ("127.0.0.1", int(url.rpartition(":")[2]))
    idle: list[socket.socket] = []
    try:
        ready(process, url)
        idle = [socket.create_connection(address, timeout=START_SECONDS) for _ in range(files * 2)]
        status = call("GET", url + "/healthz", token=None)[0]
        closed = [connection.recv(1) for connection in idle]  # b"" once the server closed it
    finally:
        for connection in idle:
            connection.close()
        code, _, err = stop(process)
    assert status == 200
    assert set(closed) == {b""}
    assert code == 0, err
    assert "Traceback" not in err
    assert len(err.splitlines()) <= 4, err  # a line a minute, at most, about refused accepts


def answer_on_a_kept_connection(conn: socket.socket, path: str) -> tuple[bytes, bytes]:
    """A GET on an open connection: the answer's head, and what the connection gives after the
    body (b"" once the server closed it, nothing while it keeps it: a timeout)."""
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    conn.settimeout(0.5)
    try:
        after = conn.recv(1)
    except TimeoutError:
        after = b"(open)"
    conn.settimeout(20)
    return head, after


def test_with_a_shutdown_delay_it_answers_on_each_closing_its_connection_then_stops(
    tmp_path: Path, simulator: RunningServer
) -> None:
    """What a Deployment of several replicas needs: after SIGTERM, while the Service stops
    sending it new connections, the forwarder's kept-alive ones get an answer that closes
    them (its next request goes elsewhere) instead of a reset once the port closes."""
    process, url = serve_process(tmp_path, simulator.url, serve={"shutdownDelay": 2})
    address = ("127.0.0.1", int(url.rpartition(":")[2]))
    try:
        ready(process, url)
        with socket.create_connection(address, timeout=20) as kept:
            head, after = answer_on_a_kept_connection(kept, "/healthz")
            assert head.startswith(b"HTTP/1.1 200")
            assert after == b"(open)"
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: call("GET", url + "/readyz")[0] == 503, 1.5, "not ready")
            head, after = answer_on_a_kept_connection(kept, "/healthz")
        body = {"kind": "Component", "name": "x", "namespace": NAMESPACE, "action": "updated"}
        status, receipt, headers = call("POST", url + "/api/events/http/openchoreo", body, None)
        _, err = process.communicate(timeout=15)
        stopped = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head.lower()
    assert after == b""
    assert (status, receipt["stored"], headers["connection"]) == (202, 1, "close")
    assert process.returncode == 0, err
    assert 2 <= stopped < 2 + 10


def test_a_second_signal_ends_the_shutdown_delay(tmp_path: Path, simulator: RunningServer) -> None:
    process, url = serve_process(tmp_path, simulator.url, serve={"shutdownDelay": 600})
    try:
        ready(process, url)
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: call("GET", url + "/readyz")[0] == 503, 1.5, "not ready")
        signalled = time.monotonic()
        code, _, err = stop(process)
        stopped = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert code == 0, err
    assert stopped < 10


def test_a_post_whose_body_is_still_coming_at_the_stop_is_told_to_come_again(
    tmp_path: Path, simulator: RunningServer
) -> None:
    """The stop's grace (5 s) is shorter than `serve.readTimeout` (10 s): the request is cut,
    and its client had uvicorn's plain-text 500 and stderr a traceback at error level."""
    process, url = serve_process(tmp_path, simulator.url)
    try:
        ready(process, url)
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as conn:
            conn.sendall(
                b"POST /events/openchoreo HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            time.sleep(0.5)  # the request is in the route, reading its body
            process.send_signal(signal.SIGTERM)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    code = process.returncode

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer
    assert json.loads(body) == {"error": "serve is stopping: send it again"}
    assert code == 0
    assert "Traceback" not in err
    assert "Exception in ASGI application" not in err


def test_a_non_loopback_address_without_a_token_is_refused(
    tmp_path: Path, simulator: RunningServer
) -> None:
    process, _ = serve_process(tmp_path, simulator.url, "--listen", f"0.0.0.0:{free_port()}")
    _, err = process.communicate(timeout=START_SECONDS)

    assert process.returncode == 2
    assert "--listen: refusing to serve the API on 0.0.0.0:" in err  # the option that gave it
    assert "--insecure-no-auth" in err


def test_insecure_no_auth_starts_and_warns(tmp_path: Path, simulator: RunningServer) -> None:
    process, url = serve_process(
        tmp_path, simulator.url, "--listen", f"0.0.0.0:{free_port()}", "--insecure-no-auth"
    )
    try:
        ready(process, url)
        named = httpx.get(url + "/status", headers={"Host": "ingest.example:80"}, timeout=10)
    finally:
        code, _, err = stop(process)
    assert code == 0
    assert named.status_code == 200  # reached by whatever names point at it
    assert "api_exposed_without_auth" in err
    assert "events_open" in err  # and no events secret either


def test_a_loopback_serve_without_a_token_answers_only_its_own_names(
    tmp_path: Path, simulator: RunningServer
) -> None:
    """A web page whose name was rebound to 127.0.0.1 sends that name as `Host`."""
    process, url = serve_process(
        tmp_path, simulator.url, serve={"allowedHosts": ["ingest.internal"]}
    )
    port = url.rpartition(":")[2]
    try:
        ready(process, url)
        answers = {
            host: httpx.get(url + "/status", headers={"Host": host}, timeout=10)
            for host in (f"rebound.evil.example:{port}", f"localhost:{port}", "ingest.internal")
        }
    finally:
        code, _, err = stop(process)
    assert answers[f"rebound.evil.example:{port}"].status_code == 403
    assert "serve.allowedHosts" in answers[f"rebound.evil.example:{port}"].json()["error"]
    assert answers[f"localhost:{port}"].status_code == 200
    assert answers["ingest.internal"].status_code == 200
    assert code == 0, err


def test_a_busy_port_is_exit_75_worth_trying_again(
    tmp_path: Path, simulator: RunningServer
) -> None:
    """A service manager restarts on 75 (systemd's RestartPreventExitStatus=2 would not): the
    port is often the last serve's, still stopping."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        process, _ = serve_process(tmp_path, simulator.url, "--listen", f"127.0.0.1:{port}")
        _, err = process.communicate(timeout=START_SECONDS)

    assert process.returncode == 75
    assert f"--listen: cannot listen on 127.0.0.1:{port}" in err


def test_a_file_that_holds_no_state_is_exit_4_at_the_start(
    tmp_path: Path, simulator: RunningServer
) -> None:
    """No tick could ever open it: a failing loop that logs and answers 503 would hide that."""
    (tmp_path / "state.db").write_text("notes, not a state\n")

    process, _ = serve_process(tmp_path, simulator.url)
    _, err = process.communicate(timeout=START_SECONDS)

    assert process.returncode == 4
    assert "not a choreo-ingest state file; left untouched" in err
    assert (tmp_path / "state.db").read_text() == "notes, not a state\n"


def test_an_address_not_on_this_host_is_a_usage_error(
    tmp_path: Path, simulator: RunningServer
) -> None:
    process, _ = serve_process(
        tmp_path, simulator.url, "--listen", "192.0.2.1:8080", "--insecure-no-auth"
    )
    _, err = process.communicate(timeout=START_SECONDS)

    assert process.returncode == 2
    assert "--listen: cannot listen on 192.0.2.1:8080" in err


def test_without_the_serve_extra_it_exits_2_naming_the_extra(tmp_path: Path) -> None:
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9", token="t")
    without_uvicorn = (
        "import sys; sys.modules['uvicorn'] = None; "
        "from choreo_ingest.cli import main; main(sys.argv[1:])"
    )

    done = run_cli("serve", cwd=tmp_path, entry=("-c", without_uvicorn))

    assert done.returncode == 2
    assert "pip install '.[serve]' in choreo-ingest's source tree" in done.stderr
