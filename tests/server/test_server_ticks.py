"""serve's ticks as `/metrics`, `/health` and the status page report them: the last run moves only
with a tick that ran; ticks that keep being skipped (another process holds the run lock) or
failing make `/health` unhealthy and show in `/status` and on the page; and `/metrics` holds the
textfile's series written alike, plus its own two families, no `_created` series among them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest.config import Config
from choreo_ingest.errors import TransientError
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import Server
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service
from choreo_ingest.store import state_location
from choreo_ingest.store.run_lock import RunLock

from asgi_support import AsgiClient
from fakes import FakeClock, FakeProvider, make_config, make_entity

LAST_RUN = "choreo_ingest_last_run_timestamp_seconds"
SERVE_ONLY = {"choreo_ingest_state_readable", "choreo_ingest_http_requests"}
"""The families `/metrics` has besides the textfile's."""


def serving(config: Config, clock: FakeClock, provider: FakeProvider) -> tuple[Service, AsgiClient]:
    assert config.state_path is not None
    service = Service(config, config.state_path, clock, providers={provider.name: provider})
    server = Server(config, service.state, clock, service, Credentials())
    return service, AsgiClient(build_app(server))


def last_run(client: AsgiClient) -> float:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    [value] = [
        sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == LAST_RUN
    ]
    return value


def test_the_last_run_stays_at_the_last_tick_that_ran(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path)
    provider = FakeProvider([make_entity("a")], fail_at={0: TransientError("GET /x: 502")})
    service, client = serving(config, clock, provider)
    service.tick()  # its burst failed upstream (backoff): a tick that ran
    ran_at = clock.now()
    clock.advance(60.0)

    assert service.state.path is not None
    with RunLock(service.state.path):  # a cron `run` holds the lock: the tick is skipped
        assert service.tick().skipped
        assert last_run(client) == ran_at
    clock.advance(60.0)
    assert service.tick().result is not None

    assert last_run(client) == clock.now()


def test_ticks_skipped_for_longer_than_a_run_make_health_and_the_page_say_so(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path)
    service, client = serving(config, clock, FakeProvider([make_entity("a")]))
    service.tick()
    assert client.get("/health").status_code == 200

    with RunLock(service.state.path):
        clock.advance(service.run_allowance() + 1.0)
        service.tick()
        health = client.get("/health")
        status = client.get("/status").json()
        one_provider = client.get("/status/fake").json()
        page = client.get("/").text
        metrics_at = last_run(client)
    service.tick()

    assert health.status_code == 503
    assert health.json()["healthy"] is False
    [problem] = health.json()["problems"]
    assert problem.startswith("serve has run no tick in ")
    assert "another process holds the run lock" in problem
    assert status["problems"] == one_provider["problems"] == [problem]
    assert "serve has run no tick in " in page
    assert metrics_at < clock.now() - service.run_allowance()
    assert client.get("/health").status_code == 200
    assert "problems" not in client.get("/health").json()
    assert "problems" not in client.get("/status").json()
    assert "serve has run no tick" not in client.get("/").text


def test_metrics_are_the_textfile_written_alike_and_the_serve_counters_without_created(
    tmp_path: Path, clock: FakeClock
) -> None:
    """After a tick (which writes the textfile too) at the same instant, every textfile family
    is on `/metrics` byte for byte, the new ones included."""
    config = make_config(tmp_path)
    provider = FakeProvider([make_entity(n) for n in "abc"], fail_at={0: TransientError("502")})
    service, client = serving(config, clock, provider)
    service.tick()  # a failure
    with state_location(service.state).open() as store:
        events = [{"kind": "Component", "namespace": "acme", "name": n} for n in ("x", "y")]
        [seq, _] = store.add_events("fake", events, clock.now())
        store.fail_event("fake", seq, "GET /x: 404", max_attempts=1)
    clock.advance(3600.0)
    service.tick()  # the cycle completes; FakeProvider leaves the events in the inbox
    client.get("/healthz")

    answer = client.get("/metrics").text

    assert config.metrics_textfile is not None
    textfile = config.metrics_textfile.read_text()
    assert textfile in answer
    for line in (
        'choreo_ingest_bursts_total{outcome="ok",provider="fake"} 1.0',
        'choreo_ingest_bursts_total{outcome="failed",provider="fake"} 1.0',
        'choreo_ingest_events_pending{provider="fake"} 1.0',
        'choreo_ingest_events_parked{provider="fake"} 1.0',
    ):
        assert line in textfile.splitlines()
    in_textfile = {family.name for family in text_string_to_metric_families(textfile)}
    in_answer = {family.name for family in text_string_to_metric_families(answer)}
    assert in_answer - in_textfile == SERVE_ONLY
    assert "_created" not in answer
