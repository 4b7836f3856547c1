"""A `baseUrl` with no OpenChoreo API behind it: a setting to mend (`run` exits 2, as `check`
says) while no cycle has found the API there, whether the address answers 404, 405, 501 or a web
page (Backstage's own address, say), under `openchoreo.api: auto` or naming `v1`; upstream
trouble (exit 3) once a cycle has read the API at that address."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from test_walk_v1 import PROVIDER, config_for, run, simulator, v1_world

from choreo_ingest.config import AuthConfig, Config
from choreo_ingest.invocation import run_once
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.reporting import status_report
from choreo_ingest.store import Store

from event_fakes import component_event
from fakes import FakeClock
from sim_support import simulator_transport

WEB_PAGE = httpx.Response(200, text="<!doctype html><html><body>Backstage</body></html>")
"""What a web app answers every path with (no content type: the body says it)."""
NOT_FOUND = httpx.Response(404, json={"error": "Not found", "code": "NOT_FOUND"})
NOT_ALLOWED = httpx.Response(405, text="Method Not Allowed")
NOT_IMPLEMENTED = httpx.Response(501, text="Not Implemented")
ANSWERS = pytest.mark.parametrize(
    "answer",
    [WEB_PAGE, NOT_FOUND, NOT_ALLOWED, NOT_IMPLEMENTED],
    ids=["web-page", "404", "405", "501"],
)
APIS = pytest.mark.parametrize("api", ["auto", "v1"])


def answering(answer: httpx.Response) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(answer.status_code, content=answer.content)
    )


def run_against(config: Config, answer: httpx.Response, clock: FakeClock) -> tuple[str, bool]:
    """One forced run whose every request gets `answer`: (its error, whether it is to mend)."""
    assert config.state_path is not None
    provider = OpenChoreoProvider(config, transport=answering(answer))
    result = run_once(config, config.state_path, clock, force=True, providers={PROVIDER: provider})
    [outcome] = result.providers
    assert outcome.action == "failed"
    return outcome.error or "", outcome.misconfigured


def without_auth(config: Config, **openchoreo: str) -> Config:
    settings = replace(config.openchoreo, auth=AuthConfig(), **openchoreo)
    return replace(config, openchoreo=settings)


def configured(tmp_path: Path, api: str) -> Config:
    config = config_for(tmp_path / "state.db")
    return replace(config, openchoreo=replace(config.openchoreo, api=api))


def after_a_cycle(tmp_path: Path, api: str) -> tuple[Config, FakeClock]:
    """The config and clock of a state whose first cycle read the simulator's v1 API."""
    clock = FakeClock()
    config = configured(tmp_path, api)
    assert run(config, simulator(v1_world(), clock), clock).providers[0].cycle_completed
    return config, clock


@pytest.mark.parametrize(
    ("api", "asked"),
    [
        ("auto", "/api/v1/namespaces and http://openchoreo.test/api/v1/orgs"),
        ("v1", "/api/v1/namespaces"),
    ],
)
@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (WEB_PAGE, "answered a web page, not the API"),
        (NOT_ALLOWED, "found nothing"),
        (NOT_IMPLEMENTED, "found nothing"),
    ],
    ids=["web-page", "405", "501"],
)
def test_a_web_page_or_a_route_not_served_at_every_path_is_a_base_url_to_mend(
    tmp_path: Path, api: str, asked: str, answer: httpx.Response, said: str
) -> None:
    """Whether `openchoreo.api` names the generation or not (`auto` takes a 405 or a 501 at the
    first listing for no API there, as a 404)."""
    config = without_auth(configured(tmp_path, api))

    error, to_mend = run_against(config, answer, FakeClock())

    assert error == (
        f"no OpenChoreo API at openchoreo.baseUrl http://openchoreo.test (GET "
        f"http://openchoreo.test{asked} {said}): set it to the "
        "server's address (https://host) or its API root (https://host/api/v1)"
    )
    assert to_mend  # `run` exits 2


@APIS
@ANSWERS
def test_no_api_where_a_cycle_read_it_is_upstream_trouble(
    tmp_path: Path, answer: httpx.Response, api: str
) -> None:
    config, clock = after_a_cycle(tmp_path, api)

    error, to_mend = run_against(without_auth(config), answer, clock)

    assert error.startswith("no OpenChoreo API at openchoreo.baseUrl http://openchoreo.test (")
    assert error.endswith(
        "), where its v1 API answered before: is the server, or a proxy in front of it, down "
        "or changed?"
    )
    assert not to_mend  # `run` exits 3 and backs off, as in any outage
    [shown] = status_report(tmp_path / "state.db", config, clock.now()).to_json()["providers"]
    assert shown["api"] == "v1"
    assert "apiSource" not in shown


@APIS
@ANSWERS
def test_no_api_at_a_new_base_url_is_a_setting_to_mend_after_cycles_elsewhere(
    tmp_path: Path, answer: httpx.Response, api: str
) -> None:
    config, clock = after_a_cycle(tmp_path, api)
    moved = without_auth(config, base_url="http://backstage.test:7007")

    error, to_mend = run_against(moved, answer, clock)

    assert error.startswith("no OpenChoreo API at openchoreo.baseUrl http://backstage.test:7007")
    assert error.endswith("or its API root (https://host/api/v1)")
    assert to_mend


def test_check_says_a_web_page_answered(tmp_path: Path) -> None:
    config = without_auth(config_for(tmp_path / "state.db"))
    provider = OpenChoreoProvider(config, transport=answering(WEB_PAGE))

    [api] = [c for c in provider.preflight(FakeClock()) if c.name == "openchoreo.api"]

    assert not api.ok
    assert "/api/v1/orgs answered a web page, not the API): set it to" in api.detail


@APIS
@pytest.mark.parametrize("status", [404, 405])
def test_a_404_or_405_past_the_root_listings_first_page_is_upstream_trouble(
    tmp_path: Path, api: str, status: int
) -> None:
    """The listing's first page answered in this very burst: its second page's 404 (or 405)
    says nothing of the address (a proxy's hiccup, a server being replaced), whatever was
    stored before."""
    clock = FakeClock()
    config = replace(configured(tmp_path, api), providers=(PROVIDER,))
    settings = replace(config.openchoreo.incremental, chunk_size=1)
    config = replace(config, openchoreo=replace(config.openchoreo, incremental=settings))
    served = simulator_transport(simulator(v1_world(namespaces=2), clock))

    def second_namespace_page_gone(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/namespaces") and "cursor" in request.url.params:
            return httpx.Response(status, json={"error": "Not found", "code": "NOT_FOUND"})
        return served.handle_request(request)

    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(second_namespace_page_gone))
    assert config.state_path is not None
    result = run_once(config, config.state_path, clock, providers={PROVIDER: provider})

    [outcome] = result.providers
    assert outcome.action == "failed"
    assert (outcome.error or "").startswith(f"GET /namespaces: HTTP {status}")
    assert not outcome.misconfigured


def one_page_at_a_time(config: Config) -> Config:
    settings = replace(config.openchoreo.incremental, chunk_size=1)
    return replace(config, openchoreo=replace(config.openchoreo, incremental=settings))


@APIS
def test_a_404_where_a_restarted_listing_begins_again_is_upstream_trouble(
    tmp_path: Path, api: str
) -> None:
    """The namespaces' first page answered in this very burst; the next page's cursor expired
    (500 twice) and the listing's first page, asked again, answers 404: the API was here."""
    clock = FakeClock()
    config = one_page_at_a_time(configured(tmp_path, api))
    served = simulator_transport(simulator(v1_world(namespaces=2), clock))
    firsts = 0

    def restart_meets_404(request: httpx.Request) -> httpx.Response:
        nonlocal firsts
        if request.url.path.endswith("/namespaces"):
            if "cursor" in request.url.params:
                return httpx.Response(500, json={"error": "boom", "code": "INTERNAL_ERROR"})
            firsts += 1
            if firsts > 1:
                return NOT_FOUND
        return served.handle_request(request)

    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(restart_meets_404))
    assert config.state_path is not None
    result = run_once(config, config.state_path, clock, providers={PROVIDER: provider})

    [outcome] = result.providers
    assert (outcome.action, firsts) == ("failed", 2)
    assert not outcome.misconfigured, outcome.error


@APIS
def test_a_state_from_before_api_source_keeps_what_its_cycles_read(
    tmp_path: Path, api: str
) -> None:
    """An earlier release kept no `apiSource`: the `api` its cycles stored at this address
    says the API was read here."""
    config, clock = after_a_cycle(tmp_path, api)
    with Store.open(tmp_path / "state.db") as store:
        store.set_facts(PROVIDER, {"apiSource": None}, clock.now())

    error, to_mend = run_against(without_auth(config), NOT_FOUND, clock)

    assert error.endswith(
        "), where its v1 API answered before: is the server, or a proxy in "
        "front of it, down or changed?"
    )
    assert not to_mend


@ANSWERS
def test_events_wait_for_a_base_url_with_no_api_and_say_it_is_to_mend(
    tmp_path: Path, answer: httpx.Response
) -> None:
    """Before any cycle found the API, a drain under `auto` asks the server first: no API there
    is the setting's, not the event's, so the events wait rather than spend their attempts."""
    clock = FakeClock()
    config = without_auth(configured(tmp_path, "auto"))
    assert run_against(config, answer, clock)[1]
    with Store.open(tmp_path / "state.db") as store:
        store.add_events(PROVIDER, [component_event("c1", "created")], clock.now())
    clock.advance(5)
    provider = OpenChoreoProvider(config, transport=answering(answer))

    assert config.state_path is not None
    result = run_once(config, config.state_path, clock, providers={PROVIDER: provider})

    assert [held.mendable for held in result.events.held] == [True]  # `run` exits 2
    with Store.open(tmp_path / "state.db", readonly=True) as store:
        [waiting] = store.pending_events(PROVIDER)
    assert waiting.attempts == 1  # as for an unwell API: the wait grows with its attempts
