"""The OpenChoreo provider end to end: engine, store and simulator together, cycle after cycle.

Most tests run in-process (the simulator's handler as the httpx transport) on a fake clock: the
simulator's `latency` sleeps on that clock, so requests cost fake time and bursts end at their
deadline without any real waiting. The CLI tests start `python -m choreo_ingest` against a
simulator on a loopback port.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from choreo_ingest.cli.app import app
from choreo_ingest.clock import SystemClock
from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.engine import ProviderOutcome
from choreo_ingest.invocation import run_once
from choreo_ingest.models import ProviderRecord, ProviderState, entity_ref
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo.entities import api_entity_name
from choreo_ingest.reporting import iter_export
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server
from choreo_ingest.store import Store

from backstage_validator import run_backstage_validator, skip_unless_backstage_validator
from fakes import FakeClock
from sim_support import (
    endpoint_names,
    expected_counts,
    expected_refs,
    ingest_world,
    plain,
    ref_of,
    run_cli,
    simulator_transport,
    unresolved_refs,
    write_config,
)

PROVIDER = "openchoreo"
BASE_URL = "http://openchoreo.test/api/v1"
MAX_RUNS = 200
LIST_ROUTES = ("/orgs", "/projects", "/components")


@dataclass
class Simulated:
    """A simulated platform and a state file, driven one `run_once` at a time."""

    world: World
    api: SimulatorApi
    config: Config
    state_path: Path
    clock: FakeClock
    outcomes: list[ProviderOutcome] = field(default_factory=list)
    burst_seconds: list[float] = field(default_factory=list)

    def run(self, *, force: bool = False) -> ProviderOutcome:
        """One `choreo-ingest run`, with a fresh provider as every process builds one."""
        provider = OpenChoreoProvider(self.config, transport=simulator_transport(self.api))
        started = self.clock.monotonic()
        result = run_once(
            self.config,
            self.state_path,
            self.clock,
            force=force,
            providers={PROVIDER: provider},
            rng=random.Random(0),
        )
        self.burst_seconds.append(self.clock.monotonic() - started)
        [outcome] = result.providers
        self.outcomes.append(outcome)
        return outcome

    def run_cycle(
        self,
        *,
        force: bool = False,
        between: Callable[[ProviderRecord], None] | None = None,
    ) -> list[ProviderOutcome]:
        """Runs until a cycle completes, waiting out each interval on the fake clock;
        `between(record)` sees the stored state after every run that left work."""
        first = len(self.outcomes)
        for _ in range(MAX_RUNS):
            outcome = self.run(force=force)
            force = False
            assert outcome.action == "burst", outcome
            if outcome.cycle_completed:
                return self.outcomes[first:]
            if between is not None:
                between(self.record())
            assert outcome.next_action_at is not None
            self.clock.advance(max(0.0, outcome.next_action_at - self.clock.now()))
        raise AssertionError(f"no cycle completed in {MAX_RUNS} runs")

    def record(self) -> ProviderRecord:
        with Store.open(self.state_path, readonly=True) as store:
            return store.load_provider(PROVIDER)

    def catalog(self) -> list[dict[str, Any]]:
        return list(iter_export(self.state_path))

    def refs(self) -> set[str]:
        return {ref_of(body) for body in self.catalog()}

    def counts(self) -> dict[str, int]:
        with Store.open(self.state_path, readonly=True) as store:
            return store.entity_counts(PROVIDER)

    def queue_keys(self, queue: str) -> list[str]:
        with Store.open(self.state_path, readonly=True) as store:
            return [item.key for item in store.read_queue(PROVIDER, queue, 0, 1_000_000)]


@pytest.fixture
def simulated(tmp_path: Path) -> Callable[..., Simulated]:
    """`simulated(world, incremental={...}, **simulator_options)`; the simulator's latency
    and cursor TTL run on the same fake clock as the engine."""

    def build(
        world: World, *, incremental: dict[str, Any] | None = None, **options: Any
    ) -> Simulated:
        clock = FakeClock()
        settings = {"chunk_size": 3, "burst_length": 2.0, "burst_interval": 30.0}
        incremental_config = replace(IncrementalConfig(), **(settings | (incremental or {})))
        config = Config(
            openchoreo=OpenChoreoConfig(
                base_url=BASE_URL, api="orgs", incremental=incremental_config
            ),
            state_path=tmp_path / "state.db",
            metrics_textfile=tmp_path / "metrics.prom",
            providers=(PROVIDER,),
        )
        api = SimulatorApi(world, SimulatorOptions(**{"api": "orgs", **options}), clock)
        return Simulated(world, api, config, tmp_path / "state.db", clock)

    return build


def assert_catalog_is_exactly(sim: Simulated, world: World) -> None:
    catalog = sim.catalog()
    assert {ref_of(body) for body in catalog} == expected_refs(world)
    assert sim.counts() == expected_counts(world)
    assert unresolved_refs(catalog) == []


def metric(path: Path, name: str) -> float:
    samples = [
        sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.name == name and sample.labels.get("provider") == PROVIDER
    ]
    assert len(samples) == 1, (name, samples)
    return samples[0]


def status_json(state_path: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["status", "--json", "--db", str(state_path)])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_unresolved_refs_names_each_dangling_reference() -> None:
    def body(kind: str, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
        return {"kind": kind, "metadata": {"namespace": namespace, "name": name}, "spec": spec}

    catalog = [
        body("Domain", "default", "acme"),
        body("System", "acme", "shop", domain="default/acme"),
        body("API", "acme", "cart-http", system="shop"),
        body("Component", "acme", "cart", system="shop", providesApis=["api:acme/cart-http"]),
        body("Component", "acme", "gone", system="nope", providesApis=["api:acme/none"]),
        body("System", "acme", "lost", domain="default/other"),
    ]

    assert unresolved_refs(catalog) == [
        "component:acme/gone -> system nope",
        "component:acme/gone -> api api:acme/none",
        "system:acme/lost -> domain default/other",
    ]


class TestFullCycle:
    def test_cycle_over_many_bursts_leaves_exactly_the_world(self, simulated) -> None:
        world = World.generate(3, 4, 8, seed=21, hidden_fraction=0.1)
        sim = simulated(world, latency=0.1, log_requests=True)

        outcomes = sim.run_cycle()

        assert len(outcomes) >= 4, "the cycle should take several bursts"
        assert sum(outcome.pages for outcome in outcomes) > 30
        assert sim.record().state is ProviderState.RESTING
        assert_catalog_is_exactly(sim, world)
        assert sim.counts()["API"] > 50

    def test_every_list_call_asks_for_cursor_pagination(self, simulated) -> None:
        world = World.generate(2, 2, 4, seed=3)
        sim = simulated(world, log_requests=True)

        sim.run_cycle()

        lists = [r for r in sim.api.request_log if r.path.endswith(LIST_ROUTES)]
        assert lists, "no list requests logged"
        assert all(r.query.get("pagination") == ["cursor"] for r in lists)
        assert all(r.query.get("limit") == ["3"] for r in lists)
        assert {r.status for r in sim.api.request_log} == {200}

    def test_every_entity_of_a_few_hundred_passes_backstage_validation(self, simulated) -> None:
        skip_unless_backstage_validator()
        world = World.generate(3, 4, 8, seed=5)
        sim = simulated(world, incremental={"chunk_size": 50})
        sim.run_cycle()
        catalog = sim.catalog()
        assert len(catalog) >= 200

        problems = run_backstage_validator(json.dumps(body) for body in catalog)

        assert problems == []

    def test_filtered_short_and_empty_pages_still_give_the_visible_world(self, simulated) -> None:
        world = World.generate(4, 3, 3, seed=8, hidden_fraction=0.9)
        assert short_pages_with_more(world, limit=2) > 0, "the world should filter pages"
        sim = simulated(world, incremental={"chunk_size": 2})

        sim.run_cycle()

        assert_catalog_is_exactly(sim, world)


def short_pages_with_more(world: World, limit: int) -> int:
    """Pages of the world's listings that hold fewer than `limit` visible items yet say more."""
    parents: list[tuple[str, ...]] = [()]
    parents += [(org["name"],) for org in world.orgs()]
    parents += [
        (org["name"], project["name"])
        for org in world.orgs()
        for project in world.projects(org["name"])
    ]
    short = 0
    for parent in parents:
        after = None
        while True:
            page = world.page(parent, after, limit)
            short += page.has_more and len(page.items) < limit
            if not page.has_more:
                break
            after = page.last_name
    return short


class TestCursorExpiry:
    def test_expired_cursor_restarts_the_listing_and_the_cycle_still_completes(
        self, simulated
    ) -> None:
        # Bursts of 5 fake seconds, 1 s per request, listings of 3 pages: some project listing
        # straddles a burst; its cursor is older than the 10 s TTL when the next burst comes.
        world = World.generate(2, 6, 2, seed=13, hidden_fraction=0.0)
        sim = simulated(
            world,
            incremental={
                "chunk_size": 2,
                "burst_length": 5.0,
                "max_concurrent_requests": 1,
            },
            latency=1.0,
            cursor_ttl=10.0,
        )

        sim.run_cycle()

        assert sim.api.stats.expired_cursors > 0
        assert_catalog_is_exactly(sim, world)
        orgs = [org["name"] for org in world.orgs()]
        projects = [f"{org}/{p['name']}" for org in orgs for p in world.projects(org)]
        assert sim.queue_keys("orgs") == orgs
        assert sorted(sim.queue_keys("projects")) == sorted(projects)
        assert len(sim.queue_keys("projects")) == len(projects)  # none queued twice
        [status] = status_json(sim.state_path)["providers"]
        assert status["cursorResets"] == sim.api.stats.expired_cursors
        assert metric(sim.config.metrics_textfile, "choreo_ingest_cursor_resets_total") == (
            sim.api.stats.expired_cursors
        )


class TestServerFaults:
    def test_repeated_cursor_fails_the_burst_instead_of_looping(self, simulated) -> None:
        sim = simulated(World.generate(5, 1, 1, seed=1), repeat_cursor_bug=True)

        first = sim.run()
        sim.clock.advance(first.next_action_at - sim.clock.now())
        second = sim.run()

        for outcome in (first, second):
            assert outcome.action == "failed"
            assert outcome.state is ProviderState.BACKING_OFF
            assert "returned the same cursor again" in (outcome.error or "")
        assert sim.api.stats.total_requests == 3  # page 1, then page 2 once per burst
        record = sim.record()
        assert record.attempts == 2
        assert "returned the same cursor again" in (record.last_error or "")

    @pytest.mark.parametrize("guarded", [False, True], ids=["unguarded", "guarded"])
    @pytest.mark.parametrize("deleted", ["org", "project"])
    def test_parent_deleted_mid_walk_is_skipped_and_swept_behind_the_guards(
        self, simulated, deleted: str, guarded: bool
    ) -> None:
        """The document: a listing whose parent answers 404 is skipped, "it will be swept as
        stale". The sweep takes what the parent held, so the removal guards apply; the parent
        itself, listed earlier in the cycle, goes in the next one."""
        world = World.generate(3, 3, 2, seed=17, hidden_fraction=0.0)
        sim = simulated(
            world,
            incremental={
                "chunk_size": 2,
                "max_concurrent_requests": 1,
                "burst_length": 1.0,
                "reject_removals_above_percentage": 1.0 if guarded else None,
            },
            latency=0.3,
        )
        sim.run_cycle()
        assert_catalog_is_exactly(sim, world)
        org = [org["name"] for org in world.orgs()][-1]
        project = [project["name"] for project in world.projects(org)][-1]
        gone_ref, phase = (
            (entity_ref("Domain", "default", org), "projects")
            if deleted == "org"
            else (entity_ref("System", org, project), "components")
        )
        subtree = expected_refs(world)
        done: list[str] = []

        def delete_while_queued(record: ProviderRecord) -> None:
            if record.cursor["phase"] == phase and not done:
                if deleted == "org":
                    world.delete_org(org)
                else:
                    world.delete_project(org, project)
                done.append(phase)

        sim.clock.advance(sim.config.incremental.rest_length)
        outcomes = sim.run_cycle(between=delete_while_queued)

        assert done, "the walk never paused in the phase that reads the deleted parent"
        assert all(outcome.error is None for outcome in outcomes)
        assert sim.api.stats.responses_by_status.get(404, 0) >= 1
        subtree -= expected_refs(world) | {gone_ref}
        assert subtree, "the deleted parent should have had entities below it"
        removed = sum(outcome.entities_removed for outcome in outcomes)
        blocked = outcomes[-1].removals_blocked
        if guarded:
            assert (removed, blocked) == (0, len(subtree))
            assert sim.refs() == expected_refs(world) | {gone_ref} | subtree
            return
        assert (removed, blocked) == (len(subtree), 0)
        assert sim.refs() == expected_refs(world) | {gone_ref}

        sim.clock.advance(sim.config.incremental.rest_length)
        sim.run_cycle()

        assert_catalog_is_exactly(sim, world)


class TestBetweenCycles:
    def test_deletions_additions_and_endpoint_changes_land_in_the_next_cycle(
        self, simulated
    ) -> None:
        world = World.generate(2, 2, 4, seed=4, hidden_fraction=0.0, endpoints_max=3)
        sim = simulated(world, incremental={"burst_length": 1.0}, latency=0.2)
        sim.run_cycle()
        assert_catalog_is_exactly(sim, world)
        with Store.open(sim.state_path, readonly=True) as store:
            since = store.last_change_seq()
        with_endpoints = [
            (detail["orgName"], detail["projectName"], detail["name"], endpoint_names(detail))
            for detail in world.component_details()
            if endpoint_names(detail)
        ]
        (org, project, doomed, doomed_endpoints), (_, _, changed, old_endpoints) = with_endpoints[
            :2
        ]
        world.delete_component(org, project, doomed)
        world.add_component(
            org,
            project,
            "cmp-new-arrival",
            endpoints={"rest": {"type": "REST", "port": 8080}, "grpc": {"type": "gRPC", "port": 1}},
        )
        changed_org, changed_project = with_endpoints[1][:2]
        world.set_endpoints(
            changed_org, changed_project, changed, {"only-new": {"type": "TCP", "port": 7000}}
        )

        outcomes = sim.run_cycle(force=True)

        assert len(outcomes) > 1
        assert_catalog_is_exactly(sim, world)
        removed_apis = {
            entity_ref("API", org, api_entity_name(doomed, endpoint))
            for endpoint in doomed_endpoints
        } | {
            entity_ref("API", changed_org, api_entity_name(changed, endpoint))
            for endpoint in old_endpoints
        }
        removed = removed_apis | {entity_ref("Component", org, doomed)}
        assert not removed & sim.refs()
        assert entity_ref("API", org, api_entity_name("cmp-new-arrival", "grpc")) in sim.refs()
        with Store.open(sim.state_path, readonly=True) as store:
            deletes = {row.ref for row in store.changes(since) if row.op == "delete"}
        assert deletes == removed


class TestLoadAndDeadlines:
    def test_load_caps_hold_against_a_loopback_server(self, tmp_path: Path) -> None:
        world = World.generate(1, 2, 6, seed=6, hidden_fraction=0.0)
        api = SimulatorApi(world, SimulatorOptions(api="orgs", latency=0.03))
        cap = 10.0
        with start_server(api) as server:
            incremental = replace(
                IncrementalConfig(),
                chunk_size=6,
                max_concurrent_requests=2,
                max_requests_per_second=cap,
            )
            config = Config(
                openchoreo=OpenChoreoConfig(base_url=server.url, incremental=incremental),
                providers=(PROVIDER,),
            )
            state_path = tmp_path / "state.db"
            for _ in range(10):
                result = run_once(config, state_path, SystemClock(), force=True)
                if result.providers[0].cycle_completed:
                    break
        assert result.providers[0].cycle_completed
        stats = api.stats
        assert stats.total_requests >= 16
        assert stats.max_in_flight == 2
        assert stats.max_requests_per_second <= cap
        assert {ref_of(body) for body in iter_export(state_path)} == expected_refs(world)

    def test_burst_stops_at_its_deadline_and_the_next_resumes(self, simulated) -> None:
        world = World.generate(2, 2, 4, seed=9, hidden_fraction=0.0)
        # 0.6 s per component page: a third page would start at 1.2 s and end past the 1.5 s
        # deadline, so the burst ends after two and the next burst reads it.
        latency, burst_length = 0.2, 1.5
        sim = simulated(
            world,
            incremental={
                "chunk_size": 2,
                "burst_length": burst_length,
                "max_concurrent_requests": 1,
            },
            latency=latency,
        )

        outcomes = sim.run_cycle()

        assert len(outcomes) >= 4
        assert all(outcome.pages > 0 for outcome in outcomes)
        *paused, last = sim.burst_seconds
        slack = 1e-9  # float sums of fake seconds
        longest = burst_length + latency + slack  # the request in flight at the deadline ends
        page = 3 * latency  # a list call and two detail calls, one at a time
        assert all(burst_length - page - slack <= took <= longest for took in paused), paused
        assert last <= longest
        assert_catalog_is_exactly(sim, world)


class TestCliAgainstLoopbackServer:
    @pytest.fixture
    def serve(self) -> Iterator[Callable[..., str]]:
        """`serve(world, **options) -> base URL` of a simulator on a loopback port."""
        servers = []

        def start(world: World, **options: Any) -> str:
            options = {"api": "orgs", **options}
            server = start_server(SimulatorApi(world, SimulatorOptions(**options)))
            servers.append(server)
            return server.url

        yield start
        for server in servers:
            server.stop()

    def test_server_without_cursor_pagination_is_refused(self, tmp_path: Path, serve) -> None:
        url = serve(World.generate(2, 1, 1), no_cursor_support=True)
        config = write_config(tmp_path / "config.yaml", url)

        done = run_cli("run", "--config", config, "--db", tmp_path / "state.db", cwd=tmp_path)

        assert done.returncode == 3, done.stderr
        assert "does not support cursor pagination" in done.stderr
        assert done.stdout == ""

    @pytest.mark.parametrize("configured", ["wrong-token-4b1d9e", None], ids=["wrong", "missing"])
    def test_a_rejected_token_and_missing_credentials_exit_2_and_neither_is_shown(
        self, tmp_path: Path, serve, configured: str | None
    ) -> None:
        server_token = "server-token-7c2a5f"
        url = serve(World.generate(1, 1, 1), token=server_token)
        metrics = tmp_path / "metrics.prom"
        token = {"token": "${OPENCHOREO_TOKEN}"} if configured else {}
        config = write_config(
            tmp_path / "config.yaml", url, metrics={"textfile": str(metrics)}, **token
        )
        env = {"OPENCHOREO_TOKEN": configured} if configured else {}
        db = tmp_path / "state.db"

        ran = run_cli("-vv", "run", "--json", "--config", config, "--db", db, cwd=tmp_path, env=env)
        status = run_cli("status", "--json", "--config", config, "--db", db, cwd=tmp_path, env=env)

        advice = "check openchoreo.token" if configured else "set openchoreo.auth"
        assert ran.returncode == 2, ran.stderr  # a setting to mend either way
        assert advice in ran.stderr
        assert json.loads(ran.stdout)["outcome"] == "failed"
        [provider] = json.loads(status.stdout)["providers"]
        assert provider["state"] == "backing_off"
        assert advice in provider["lastError"]
        shown = ran.stdout + ran.stderr + status.stdout + status.stderr + metrics.read_text()
        for secret in filter(None, (configured, server_token)):
            assert secret not in shown

    def test_an_https_url_on_a_port_that_never_finishes_the_handshake_names_the_url(
        self, tmp_path: Path
    ) -> None:
        """A port that takes the connection and never answers (a plain HTTP server's, asked
        for TLS): the burst runs out while connecting. Its advice names the URL to check,
        not burstLength or chunkSize, which would not help."""
        with socket.create_server(("127.0.0.1", 0)) as silent:
            url = f"https://127.0.0.1:{silent.getsockname()[1]}"
            config = write_config(
                tmp_path / "config.yaml", url, token="t", incremental={"burstLength": 2}
            )

            done = run_cli("run", "--config", config, "--db", tmp_path / "state.db", cwd=tmp_path)

        assert done.returncode == 3, done.stderr
        said = plain(done.stderr).splitlines()
        [error] = [line for line in said if line.startswith("choreo-ingest: error: ")]
        assert "connecting timed out" in error
        assert f"check the scheme and port of openchoreo.baseUrl {url}" in error
        assert "burstLength" not in done.stderr


def test_resources_being_deleted_stay_annotated_until_they_are_gone(tmp_path: Path) -> None:
    world = World.generate(1, 2, 3, seed=5, hidden_fraction=0.0)
    clock = FakeClock()
    state_path = tmp_path / "state.db"
    ingest_world(state_path, world, clock)
    org = next(iter(world.orgs()))["name"]
    first, second = (project["name"] for project in world.projects(org))
    component = next(iter(world.components(org, first)))["name"]
    world.update_component(org, first, component, {"deletionTimestamp": "2026-11-29T00:00:00Z"})
    world.update_project(org, second, {"deletionTimestamp": "2026-11-29T00:00:00Z"})

    ingest_world(state_path, world, clock, force=True)

    bodies = {ref_of(body): body for body in iter_export(state_path)}
    for ref in (f"component:{org}/{component}", f"system:{org}/{second}"):
        annotations = bodies[ref]["metadata"]["annotations"]
        assert annotations["openchoreo.io/deletion-timestamp"] == "2026-11-29T00:00:00Z"
    assert (
        "openchoreo.io/deletion-timestamp"
        not in (bodies[f"system:{org}/{first}"]["metadata"]["annotations"])
    )

    world.delete_component(org, first, component)
    ingest_world(state_path, world, clock, force=True)
    assert f"component:{org}/{component}" not in {ref_of(b) for b in iter_export(state_path)}
