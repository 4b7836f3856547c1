"""The v1 walk through the engine against the simulator's v1 API: what lands in the catalog,
what it costs, and how it behaves when cursors expire, namespaces vanish and servers misbehave.

The expected catalog is computed from the world's own v1 query API and the mapping rules of
`openchoreo-v1-api.md` (APIs only for endpoints with schema content, the first workload by name),
not from the provider's code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from choreo_ingest.config import (
    AuthConfig,
    Config,
    IncrementalConfig,
    OAuthConfig,
    OpenChoreoConfig,
)
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import SETTLE_SECONDS
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.models import entity_ref
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.reporting import status_report
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import (
    IN_PROCESS_URL,
    PausingProvider,
    expected_catalog,
    list_pages_at,
    simulator_transport,
    unresolved_refs,
)

PROVIDER = "openchoreo"
COMPONENTS = "namespaces/components"
"""How a cursor names the components phase: each namespace's, after its own workloads."""
CLIENT_ID, CLIENT_SECRET = "catalog-client", "s3cret-for-tests"


def v1_world(namespaces: int = 2, projects: int = 3, components: int = 7) -> World:
    return World.generate(namespaces, projects, components, seed=11)


def config_for(state_path: Path, **incremental: Any) -> Config:
    settings = replace(IncrementalConfig(), **{"chunk_size": 100, **incremental})
    oauth = OAuthConfig(
        token_url="http://openchoreo.test/oauth2/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    return Config(
        openchoreo=OpenChoreoConfig(
            base_url=IN_PROCESS_URL, auth=AuthConfig(oauth=oauth), incremental=settings
        ),
        state_path=state_path,
        providers=(PROVIDER,),
    )


def simulator(world: World, clock: FakeClock, **options: Any) -> SimulatorApi:
    defaults: dict[str, Any] = {
        "api": "v1",
        "oauth_client_id": CLIENT_ID,
        "oauth_client_secret": CLIENT_SECRET,
        "log_requests": True,
    }
    return SimulatorApi(world, SimulatorOptions(**{**defaults, **options}), clock)


def run(config: Config, api: SimulatorApi, clock: FakeClock, *, force: bool = True) -> RunResult:
    assert config.state_path is not None
    provider = OpenChoreoProvider(config, transport=simulator_transport(api))
    return run_once(config, config.state_path, clock, force=force, providers={PROVIDER: provider})


def until_completed(config: Config, api: SimulatorApi, clock: FakeClock, runs: int = 50) -> int:
    """Runs as cron would (the clock moves a burst interval between them); how many it took."""
    for number in range(1, runs + 1):
        result = run(config, api, clock, force=False)
        [outcome] = result.providers
        assert outcome.action != "failed", outcome.error
        if outcome.cycle_completed:
            return number
        clock.advance(config.incremental.burst_interval)
    pytest.fail(f"no cycle completed in {runs} runs")


def catalog(state_path: Path) -> dict[str, set[str]]:
    with Store.open(state_path, readonly=True) as store:
        return {
            entity_ref(body["kind"], body["metadata"]["namespace"], body["metadata"]["name"]): set(
                body["spec"].get("providesApis", [])
            )
            for body in store.iter_entities()
        }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class TestFullCycle:
    def test_catalog_is_exactly_the_v1_world(self, tmp_path: Path, clock: FakeClock) -> None:
        world = v1_world()
        config = config_for(tmp_path / "state.db")

        result = run(config, simulator(world, clock), clock)

        assert result.providers[0].cycle_completed
        assert catalog(tmp_path / "state.db") == expected_catalog(world)

    def test_one_request_per_list_page_and_none_per_component(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        world = v1_world(components=40)
        api = simulator(world, clock)

        run(config_for(tmp_path / "state.db"), api, clock)

        stats = api.stats
        assert stats.api_requests == list_pages_at(world, 100)
        assert set(stats.requests_by_route) - {"token", "public"} <= {
            "list_namespaces", "list_projects", "list_workloads", "list_components",
        }  # fmt: skip
        assert stats.token_requests == 1
        assert all(request.has_authorization for request in api.request_log
                   if request.path.startswith("/api/"))  # fmt: skip

    @pytest.mark.parametrize(("cached", "grants"), [(True, 1), (False, 3)], ids=["cached", "not"])
    def test_calls_share_one_token_through_the_token_cache_file(
        self, tmp_path: Path, clock: FakeClock, cached: bool, grants: int
    ) -> None:
        """Each `run` is a new process with new credentials, as cron starts them."""
        config = config_for(tmp_path / "state.db")
        assert config.openchoreo.auth.oauth is not None
        cache = tmp_path / "token.json" if cached else None
        oauth = replace(config.openchoreo.auth.oauth, token_cache_file=cache)
        auth = replace(config.openchoreo.auth, oauth=oauth)
        config = replace(config, openchoreo=replace(config.openchoreo, auth=auth))
        world = v1_world()
        api = simulator(world, clock)

        for _ in range(3):
            assert run(config, api, clock).providers[0].cycle_completed
            clock.advance(60)

        assert api.stats.token_requests == grants
        assert catalog(tmp_path / "state.db") == expected_catalog(world)
        if cache is not None:
            assert CLIENT_SECRET not in cache.read_text(encoding="utf-8")

    def test_auto_picks_v1_and_status_says_so(self, tmp_path: Path, clock: FakeClock) -> None:
        config = config_for(tmp_path / "state.db")

        run(config, simulator(v1_world(), clock), clock)

        report = status_report(tmp_path / "state.db", config, clock.now())
        assert report.to_json()["providers"][0]["api"] == "v1"

    def test_auto_picks_the_org_era_api_where_v1_is_missing(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = config_for(tmp_path / "state.db")
        config = replace(config, openchoreo=replace(config.openchoreo, auth=AuthConfig()))
        api = SimulatorApi(v1_world(), SimulatorOptions(api="orgs"), clock)

        result = run(config, api, clock)

        assert result.providers[0].cycle_completed
        report = status_report(tmp_path / "state.db", config, clock.now())
        assert report.to_json()["providers"][0]["api"] == "orgs"

    def test_no_api_at_either_path_names_both_as_a_setting_to_mend(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = config_for(tmp_path / "state.db")
        gone = httpx.MockTransport(
            lambda request: httpx.Response(404, json={"error": "nope", "code": "NOT_FOUND"})
        )
        provider = OpenChoreoProvider(
            replace(config, openchoreo=replace(config.openchoreo, auth=AuthConfig())),
            transport=gone,
        )

        result = run_once(config, tmp_path / "state.db", clock, providers={PROVIDER: provider})

        error = result.providers[0].error or ""
        assert "no OpenChoreo API at openchoreo.baseUrl http://openchoreo.test (GET " in error
        assert "/api/v1/namespaces and http://openchoreo.test/api/v1/orgs found" in error
        assert result.providers[0].misconfigured  # `run` exits 2, as `check` does: a setting

    def test_a_base_url_with_half_the_api_prefix_names_the_urls_it_asked(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """`https://host/api`: the prefix is added whole, so what was asked must be shown."""
        config = config_for(tmp_path / "state.db")
        config = replace(
            config, openchoreo=replace(config.openchoreo, base_url="http://h.test/api")
        )
        api = simulator(v1_world(namespaces=1, projects=1, components=1), clock)
        provider = OpenChoreoProvider(config, transport=simulator_transport(api))

        result = run_once(config, tmp_path / "state.db", clock, providers={PROVIDER: provider})

        error = result.providers[0].error or ""
        assert "GET http://h.test/api/api/v1/namespaces and http://h.test/api/api/v1/orgs" in error
        assert "or its API root (https://host/api/v1)" in error

    def test_the_request_rate_cap_holds_across_a_runs_drain_and_burst(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The drain and the burst of one run each made their own client: each got the whole
        `maxRequestsPerSecond`, so the server saw up to twice the cap where one met the other.
        (No OAuth here: the token endpoint, another server in a real install, is not capped.)"""
        world = v1_world(namespaces=1, projects=2, components=5)
        api = simulator(world, clock, oauth_client_id=None, oauth_client_secret=None)
        config = config_for(tmp_path / "state.db", chunk_size=5, max_requests_per_second=4.0)
        config = replace(config, openchoreo=replace(config.openchoreo, auth=AuthConfig()))
        until_completed(config, api, clock)
        [namespace] = [item["name"] for item in world.orgs()]
        events = [
            {"kind": "Component", "name": item["name"], "namespace": namespace, "action": "updated"}
            for project in world.projects(namespace)
            for item in world.components(namespace, project["name"])
        ]
        stored_events(tmp_path / "state.db", PROVIDER, events, clock)
        clock.advance(SETTLE_SECONDS)  # an `updated` event waits that long
        api.reset_stats()

        result = run(config, api, clock)

        assert result.events.applied == len({event["name"] for event in events})
        assert result.providers[0].pages > 0
        assert api.stats.max_requests_per_second <= 4

    @pytest.mark.parametrize("status", [404, 405])
    def test_a_wrong_token_url_is_named_not_taken_for_a_missing_api(
        self, tmp_path: Path, clock: FakeClock, status: int
    ) -> None:
        config = config_for(tmp_path / "state.db")
        assert config.openchoreo.api == "auto"

        def serve(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/oauth2/token":
                return httpx.Response(status, text="no such route")
            return httpx.Response(200, json={"items": [], "pagination": {}})

        provider = OpenChoreoProvider(config, transport=httpx.MockTransport(serve))
        result = run_once(config, tmp_path / "state.db", clock, providers={PROVIDER: provider})

        error = result.providers[0].error or ""
        assert "no OpenChoreo API" not in error
        assert "token request to openchoreo.auth.oauth.tokenUrl" in error
        assert f"HTTP {status}" in error

    def test_chunk_size_above_100_is_capped_with_a_warning(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        api = simulator(v1_world(namespaces=1, projects=1, components=150), clock)

        with structlog.testing.capture_logs() as logs:
            run(config_for(tmp_path / "state.db", chunk_size=500), api, clock)

        limits = {r.query["limit"][0] for r in api.request_log if "limit" in r.query}
        assert limits == {"100"}
        [warning] = [log for log in logs if log["event"] == "chunk_size_capped"]
        assert "openchoreo.incremental.chunkSize" in warning["message"]


def stored_cursor(state_path: Path) -> Any:
    with Store.open(state_path, readonly=True) as store:
        return store.load_provider(PROVIDER).cursor


def cursor_resets(state_path: Path) -> int:
    with Store.open(state_path, readonly=True) as store:
        return store.counters(PROVIDER).get("cursor_resets", 0)


class TestCursors:
    """Each request costs a second of simulated time, so a 2.5 s burst reads two pages and
    stops inside a listing; cursors live 5 s, so one stored across a 30 s pause expires."""

    @pytest.mark.parametrize(
        "kubernetes", [False, True], ids=["cursor-lives-from-its-answer", "from-listing-start"]
    )
    def test_expired_stored_cursor_costs_one_restart_of_its_own_listing(
        self, tmp_path: Path, clock: FakeClock, kubernetes: bool
    ) -> None:
        """`kubernetes`: every cursor of a listing dies a fixed time after its first page, as a
        continue token does once etcd compacts the revision it was read at."""
        world = v1_world(namespaces=1, projects=2, components=40)
        api = simulator(world, clock, cursor_ttl=25.0 if kubernetes else 5.0, latency=1.0,
                        cursor_ttl_from_listing_start=kubernetes)  # fmt: skip
        short = config_for(tmp_path / "state.db", chunk_size=10, burst_length=2.5)
        for _ in range(30):
            run(short, api, clock)
            stored = stored_cursor(tmp_path / "state.db") or {}
            if stored.get("phase") == COMPONENTS and stored.get("apiCursor"):
                break
        cursor = stored_cursor(tmp_path / "state.db")
        assert cursor["phase"] == COMPONENTS, cursor
        assert cursor["apiCursor"], cursor
        clock.advance(30.0)

        result = run(
            config_for(tmp_path / "state.db", chunk_size=10, burst_length=60.0), api, clock
        )

        assert result.providers[0].cycle_completed
        assert cursor_resets(tmp_path / "state.db") == 1
        assert api.stats.expired_cursors == 2  # asked once more: v1's 500 may be any fault
        assert catalog(tmp_path / "state.db") == expected_catalog(world)

    @pytest.mark.parametrize(
        "kubernetes", [False, True], ids=["cursor-lives-from-its-answer", "from-listing-start"]
    )
    def test_listing_whose_cursor_expires_between_every_burst_is_reported(
        self, tmp_path: Path, clock: FakeClock, kubernetes: bool
    ) -> None:
        api = simulator(v1_world(namespaces=1, projects=1, components=80), clock,
                        cursor_ttl=5.0, latency=1.0,
                        cursor_ttl_from_listing_start=kubernetes)  # fmt: skip
        config = config_for(tmp_path / "state.db", chunk_size=10, burst_length=2.5)

        for _ in range(12):
            run(config, api, clock)
            clock.advance(30.0)

        problems = status_report(tmp_path / "state.db", config, clock.now()).providers[0]
        assert any(
            "listing's cursor (GET /namespaces/org-00-" in problem  # names the namespace
            and "expired between the last" in problem
            and "the server fails on a resource of the page it leads to" in problem
            and "burst more often than a cursor lives" in problem
            for problem in problems.health_problems
        ), problems.health_problems

    @pytest.mark.parametrize(
        "kubernetes", [False, True], ids=["cursor-lives-from-its-answer", "from-listing-start"]
    )
    def test_a_listing_longer_than_its_cursors_live_is_reported(
        self, tmp_path: Path, clock: FakeClock, kubernetes: bool
    ) -> None:
        """Bursts 150 s apart read a page each, and cursors live 400 s. Counted from each
        answer, every stored cursor works and the cycle completes. Counted from the listing's
        first page, as Kubernetes continue tokens are, the eight-page listing dies before its
        end every time, though most bursts resume it (no stale-start streak forms): the walk
        says why once it has restarted three times."""
        api = simulator(v1_world(namespaces=1, projects=1, components=80), clock,
                        cursor_ttl=400.0, latency=1.0,
                        cursor_ttl_from_listing_start=kubernetes)  # fmt: skip
        config = config_for(tmp_path / "state.db", chunk_size=10, burst_length=2.5)

        completed = False
        with structlog.testing.capture_logs() as logs:
            for _ in range(20):
                completed = completed or run(config, api, clock).providers[0].cycle_completed
                clock.advance(150.0)

        problems = status_report(tmp_path / "state.db", config, clock.now()).providers[0]
        warned = [line["event"] for line in logs if line["log_level"] == "warning"]
        if not kubernetes:
            assert completed
            assert problems.health_problems == []
            return
        assert not completed
        [problem] = problems.health_problems
        assert problem.startswith(
            "the workloads listing restarted 4 times without coming to its end"
        )
        assert "lengthen openchoreo.incremental.burstLength" in problem
        assert warned == ["listing_stuck"]

    def test_a_listing_that_outlives_compaction_within_a_burst_is_not_stepped_over(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A page takes 50 s and a listing's cursors die 400 s after its first page (a
        continue token's revision compacted): every restart of the 12-page listing fails at
        the same page, on a cursor handed out moments before, as a page the server cannot
        build would. A listing older than compaction's 5 minutes explains it, so nothing is
        stepped over; the listing is reported instead."""
        api = simulator(v1_world(namespaces=2, projects=1, components=120), clock,
                        cursor_ttl=400.0, latency=50.0,
                        cursor_ttl_from_listing_start=True)  # fmt: skip
        config = config_for(
            tmp_path / "state.db", chunk_size=10, burst_length=3000, request_timeout=60
        )

        for _ in range(3):
            run(config, api, clock)
            clock.advance(10.0)

        cursor = stored_cursor(tmp_path / "state.db") or {}
        assert "skipped" not in cursor
        assert "failing" not in cursor
        problems = status_report(tmp_path / "state.db", config, clock.now()).providers[0]
        assert any(
            problem.startswith("the workloads listing restarted ")
            for problem in problems.health_problems
        ), problems.health_problems
        assert not any("stepped over" in problem for problem in problems.health_problems)

    def test_more_than_three_restarts_in_one_burst_fail_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Cursors that die before the next page is asked for, on the walk's root listing (never
        stepped over): the burst gives up, saying why. Every restart fails at the same page,
        which is also how a page the server cannot build fails, so the error names both
        causes."""
        api = simulator(v1_world(namespaces=30, projects=1, components=1), clock,
                        cursor_ttl=0.5, latency=1.0)  # fmt: skip

        config = config_for(tmp_path / "state.db", chunk_size=10, burst_length=60.0)

        result = run(config, api, clock)

        [outcome] = result.providers
        assert outcome.action == "failed"
        assert (outcome.error or "").endswith(
            "namespaces: the listing failed 4 times in one burst at its page 2 (after 10 items) "
            "with HTTP 500 INTERNAL_ERROR; the server may be failing on a resource in that page "
            "(see the openchoreo-api logs), or its cursors expire faster than a page takes "
            "(lower openchoreo.incremental.chunkSize)"
        )
        assert cursor_resets(tmp_path / "state.db") == 3  # each committed with the page after it

    def test_a_namespace_whose_cursors_die_at_once_is_stepped_over_with_both_causes(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The same cursors on a namespace's listing fail 3 times at one page, as a page the
        server cannot build does: the namespace is stepped over, and the problem says what to
        look for, and what to change if the server's logs name no resource."""
        api = simulator(v1_world(namespaces=1, projects=1, components=30), clock,
                        cursor_ttl=0.5, latency=1.0)  # fmt: skip
        config = config_for(tmp_path / "state.db", chunk_size=10, burst_length=60.0)

        with structlog.testing.capture_logs() as logs:
            result = run(config, api, clock)

        [outcome] = result.providers
        assert outcome.cycle_completed, outcome.error
        report = status_report(tmp_path / "state.db", config, clock.now())
        (problem,) = report.providers[0].health_problems
        assert "GET /namespaces/org-00-oscorp/workloads" in problem
        assert "lower openchoreo.incremental.chunkSize" in problem
        # Restarts a young listing's fresh cursors explain are the step-over's, said once.
        warned = [line["event"] for line in logs if line["log_level"] == "warning"]
        assert warned == ["listing_stepped_over"]

    def test_a_single_500_on_a_cursor_is_retried_not_taken_for_expiry(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """v1 says "expired" with a 500, which any server fault also answers: one more try
        tells them apart, so a passing fault costs one request, not a restarted listing."""
        world = v1_world(namespaces=1, projects=1, components=30)
        api = simulator(world, clock)
        faults = FailOnce(api, lambda request: "cursor=" in str(request.url))

        provider = OpenChoreoProvider(
            config_for(tmp_path / "state.db", chunk_size=10),
            transport=faults.transport(),
        )
        config = config_for(tmp_path / "state.db", chunk_size=10)
        result = run_once(config, tmp_path / "state.db", clock, providers={PROVIDER: provider})

        assert result.providers[0].cycle_completed
        assert faults.failed == 1
        assert cursor_resets(tmp_path / "state.db") == 0
        assert catalog(tmp_path / "state.db") == expected_catalog(world)

    def test_cursor_handed_back_unchanged_fails_instead_of_looping(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        api = simulator(v1_world(namespaces=1, projects=1, components=30), clock,
                        repeat_cursor_bug=True)  # fmt: skip

        result = run(config_for(tmp_path / "state.db", chunk_size=10), api, clock)

        [outcome] = result.providers
        assert outcome.action == "failed"
        assert "returned the same cursor again" in (outcome.error or "")

    @pytest.mark.parametrize("one_page_a_burst", [False, True], ids=["one-burst", "slow-pages"])
    def test_a_server_that_ignores_the_cursor_fails_instead_of_reading_page_one_for_ever(
        self, tmp_path: Path, clock: FakeClock, one_page_a_burst: bool
    ) -> None:
        """A proxy that drops the query: every request is the first page's, each with a new
        cursor (as a Kubernetes continue token would be), so no cursor is ever seen twice;
        with pages slow enough for one a burst, each burst meets the first page once."""
        live = simulator_transport(
            simulator(v1_world(namespaces=1, projects=1, components=30), clock)
        )
        fresh = iter(range(1_000_000))

        def drop_the_cursor(request: httpx.Request) -> httpx.Response:
            request.url = request.url.copy_remove_param("cursor")
            answer = live.handle_request(request)
            body = answer.json() if request.url.path.endswith("/workloads") else None
            if not body or not body["pagination"].get("nextCursor"):
                return answer
            handed_out = next(fresh)  # past 20 the listing ends: no test loops for ever
            body["pagination"]["nextCursor"] = f"fresh-{handed_out}" if handed_out < 20 else ""
            return httpx.Response(200, json=body)

        config = config_for(tmp_path / "state.db", chunk_size=10)
        inner = OpenChoreoProvider(config, transport=httpx.MockTransport(drop_the_cursor))
        provider = PausingProvider(inner, clock, burst_length=config.incremental.burst_length)
        assert config.state_path is not None
        for _ in range(6):
            provider.pages_left = 1 if one_page_a_burst else None
            result = run_once(
                config, config.state_path, clock, force=True, providers={PROVIDER: provider}
            )
            [outcome] = result.providers
            if outcome.action == "failed":
                break

        assert outcome.action == "failed"
        assert "answered the page before it again" in (outcome.error or "")
        assert next(fresh) == 2  # the second page was the first again, and the walk stopped


class TestMapping:
    def test_a_resource_being_deleted_stays_annotated(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        world = v1_world(namespaces=1, projects=1, components=3)
        ns = next(world.v1_namespaces())["metadata"]["name"]
        component = next(world.v1_components(ns))
        project = component["spec"]["owner"]["projectName"]
        name = component["metadata"]["name"]
        world.update_component(ns, project, name, {"deletionTimestamp": "2026-12-01T10:00:00Z"})

        run(config_for(tmp_path / "state.db"), simulator(world, clock), clock)

        with Store.open(tmp_path / "state.db", readonly=True) as store:
            body = store.entity_body(entity_ref("Component", ns, name))
        assert body is not None
        annotations = body["metadata"]["annotations"]
        assert annotations["openchoreo.io/deletion-timestamp"] == "2026-12-01T10:00:00Z"

    @pytest.mark.parametrize(
        ("holder", "other"),
        [(("a", "b-c"), ("a-b", "c")), (("a", "x-c"), ("a-x", "c"))],
        ids=["holder-listed-first", "holder-listed-second"],
    )
    def test_two_endpoints_that_would_share_a_name_never_do(
        self, tmp_path: Path, clock: FakeClock, holder: tuple[str, str], other: tuple[str, str]
    ) -> None:
        """(project, component, endpoint) that sorts first keeps `<p>-<c>-<e>`, whichever
        component the flat listing brings first; the other gets a hashed name."""
        world = v1_world(namespaces=1, projects=1, components=0)
        ns = next(world.v1_namespaces())["metadata"]["name"]
        schema = {"type": "openapi", "content": "openapi: 3.0.0"}
        for project, component in (holder, other):
            world.add_project(ns, project)
            endpoints = {"e": {"type": "HTTP", "port": 80, "schema": schema}}
            world.add_component(ns, project, component, endpoints=endpoints)
        plain = entity_ref("API", ns, f"{holder[0]}-{holder[1]}-e")

        run(config_for(tmp_path / "state.db", chunk_size=1), simulator(world, clock), clock)

        found = catalog(tmp_path / "state.db")
        holder_apis = found[entity_ref("Component", ns, holder[1])]
        other_apis = found[entity_ref("Component", ns, other[1])]
        assert holder_apis == {plain}
        [hashed] = other_apis
        assert hashed != plain
        assert hashed.startswith(f"api:{ns}/a-")
        assert {plain, hashed} <= set(found)
        assert [ref for ref in found if ref.startswith("api:")] == sorted({plain, hashed})

        clock.advance(3600.0)
        run(config_for(tmp_path / "state.db", chunk_size=1), simulator(world, clock), clock)
        assert catalog(tmp_path / "state.db") == found, "the next cycle keeps the same names"

    def test_dependencies_become_consumed_apis_wherever_their_page_is(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """As OpenChoreo's own provider: a dependency on an endpoint that has an API (in the
        consumer's project unless it names another) is a `consumesApis` ref; one on an endpoint
        without a schema, a missing component or the wrong project is none. One component a
        page: `aaa` comes before the components it depends on, `web` after them."""
        world = v1_world(namespaces=1, projects=1, components=0)
        ns = next(world.v1_namespaces())["metadata"]["name"]
        schema = {"type": "openapi", "content": "openapi: 3.0.0"}
        world.add_project(ns, "shop")
        world.add_project(ns, "pay")
        served = {"api": {"type": "HTTP", "port": 80, "schema": schema}, "admin": {"type": "TCP"}}
        world.add_component(ns, "shop", "orders", endpoints=served)
        world.add_component(ns, "pay", "billing", endpoints={"rest": served["api"]})
        needs = [
            {"component": "orders", "name": "api"},
            {"project": "pay", "component": "billing", "name": "rest"},
            {"component": "orders", "name": "admin"},  # no schema: no API
            {"component": "ghost", "name": "api"},  # no such component
            {"project": "shop", "component": "billing", "name": "rest"},  # not its project
        ]
        for consumer in ("aaa", "web"):
            world.add_component(ns, "shop", consumer, endpoints={})
            [load] = world.v1_workloads(ns, consumer)
            name = load["metadata"]["name"]
            world.update_workload(ns, name, {"dependencies": {"endpoints": needs}})
        config = config_for(tmp_path / "state.db", chunk_size=1)

        run(config, simulator(world, clock), clock)

        with Store.open(tmp_path / "state.db", readonly=True) as store:
            bodies = list(store.iter_entities())
        consumed = {
            body["metadata"]["name"]: body["spec"].get("consumesApis")
            for body in bodies
            if body["kind"] == "Component"
        }
        wanted = [f"api:{ns}/pay-billing-rest", f"api:{ns}/shop-orders-api"]
        assert consumed == {"aaa": wanted, "web": wanted, "orders": None, "billing": None}
        assert unresolved_refs(bodies) == []

    def test_a_consumed_api_that_lost_its_plain_name_is_named_as_it_is(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        world = v1_world(namespaces=1, projects=1, components=0)
        ns = next(world.v1_namespaces())["metadata"]["name"]
        endpoints = {"e": {"type": "HTTP", "port": 80, "schema": {"content": "openapi: 3.0.0"}}}
        for project, component in (("a", "b-c"), ("a-b", "c")):
            world.add_project(ns, project)
            world.add_component(ns, project, component, endpoints=endpoints)
        world.add_component(ns, "a", "z", endpoints={})
        [load] = world.v1_workloads(ns, "z")
        needs = [
            {"component": "b-c", "name": "e"},
            {"project": "a-b", "component": "c", "name": "e"},
        ]
        world.update_workload(ns, load["metadata"]["name"], {"dependencies": {"endpoints": needs}})
        config = config_for(tmp_path / "state.db", chunk_size=1)

        run(config, simulator(world, clock), clock)

        found = catalog(tmp_path / "state.db")
        with Store.open(tmp_path / "state.db", readonly=True) as store:
            body = store.entity_body(entity_ref("Component", ns, "z"))
        assert body is not None
        holder, other = (found[entity_ref("Component", ns, c)] for c in ("b-c", "c"))
        assert holder == {f"api:{ns}/a-b-c-e"}
        assert len(other) == 1
        assert other != holder  # the other one's API has a hashed name
        assert body["spec"]["consumesApis"] == sorted(holder | other)

    def test_namespace_gone_mid_walk_leaves_at_the_sweep(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        world = v1_world(namespaces=2, projects=1, components=3)
        api = simulator(world, clock, latency=1.0)
        config = config_for(tmp_path / "state.db", chunk_size=100)
        run(config, api, clock)
        victim = next(world.v1_namespaces())["metadata"]["name"]
        short = config_for(tmp_path / "state.db", chunk_size=100, burst_length=2.5)
        clock.advance(3600.0)
        run(short, api, clock)  # the new cycle has listed the namespaces, not yet their insides
        world.delete_org(victim)

        until_completed(config, api, clock)

        found = catalog(tmp_path / "state.db")
        assert not [
            ref for ref in found if ref.startswith((f"component:{victim}/", f"api:{victim}/"))
        ]
        clock.advance(3600.0)  # what this cycle saw before the namespace went goes with the next
        until_completed(config, api, clock)
        assert catalog(tmp_path / "state.db") == expected_catalog(world)


class FailOnce:
    """The simulator behind a transport that answers the first request `matches` picks with a
    bare 500 `INTERNAL_ERROR`, as any v1 server fault looks."""

    def __init__(self, api: SimulatorApi, matches: Callable[[httpx.Request], bool]) -> None:
        self._inner = simulator_transport(api)
        self._matches = matches
        self.failed = 0

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if not self.failed and self._matches(request):
                self.failed += 1
                body = {"error": "Internal server error", "code": "INTERNAL_ERROR"}
                return httpx.Response(500, json=body)
            return self._inner.handle_request(request)

        return httpx.MockTransport(handle)
