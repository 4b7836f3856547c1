"""Events through the OpenChoreo provider and the in-process simulator: re-reads, scoped
removals, and every ordering of an event against the cycle's traversal."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import MAX_EVENT_ATTEMPTS
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.models import ProviderState, RunOutcome
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.reporting import status_report
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import (
    IN_PROCESS_URL,
    PROVIDER,
    PausingProvider,
    expected_refs,
    ref_of,
    simulator_transport,
)

BURST_LENGTH = 10.0
BURST_INTERVAL = 1.0
REST_LENGTH = 3600.0
REST = {"type": "REST", "port": 8080}


class SwitchableTransport(httpx.BaseTransport):
    """The simulator in-process; while `down`, every request answers 503 INTERNAL_ERROR."""

    def __init__(self, api: SimulatorApi) -> None:
        self._simulator = simulator_transport(api)
        self.down = False
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        if self.down:
            body = {"success": False, "error": "unavailable", "code": "INTERNAL_ERROR"}
            return httpx.Response(503, json=body)
        return self._simulator.handle_request(request)


class Platform:
    """A small simulated OpenChoreo, the provider that mirrors it, and its state file.

    acme:   shop (cart, checkout, pay; each with a `rest` endpoint), web (frontend)
    globex: ops (monitor)
    With one item per page, a cycle's pages hold: acme, globex | shop, web, ops |
    cart, checkout, pay, frontend, monitor (each component with its APIs).
    """

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.world = World.empty()
        self.world.add_org("acme")
        self.world.add_org("globex")
        self.world.add_project("acme", "shop")
        self.world.add_project("acme", "web")
        self.world.add_project("globex", "ops")
        for name in ("cart", "checkout", "pay"):
            self.world.add_component("acme", "shop", name, endpoints={"rest": REST})
        self.world.add_component("acme", "web", "frontend")
        self.world.add_component("globex", "ops", "monitor", endpoints={"metrics": REST})
        api = SimulatorApi(self.world, SimulatorOptions(api="orgs", cursor_ttl=None), self.clock)
        self.transport = SwitchableTransport(api)
        settings = IncrementalConfig(
            burst_length=BURST_LENGTH,
            burst_interval=BURST_INTERVAL,
            rest_length=REST_LENGTH,
            chunk_size=1,
            max_concurrent_requests=1,
        )
        self.config = Config(
            openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, incremental=settings),
            state_path=tmp_path / "state.db",
            providers=(PROVIDER,),
        )
        inner = OpenChoreoProvider(self.config, transport=self.transport)
        self.provider = PausingProvider(inner, self.clock, burst_length=BURST_LENGTH)

    @property
    def state_path(self) -> Path:
        assert self.config.state_path is not None
        return self.config.state_path

    def run(self, *, pause_after: str | None = None, pages: int | None = None) -> RunResult:
        """The next cron call, once the burst interval is over (a rest is not); its burst, if
        any, ends after the page holding `pause_after` or after `pages` pages."""
        self.clock.advance(BURST_INTERVAL + 1)
        self.provider.pause_after, self.provider.pages_left = pause_after, pages
        result = run_once(
            self.config,
            self.state_path,
            self.clock,
            providers={PROVIDER: self.provider},
            rng=random.Random(0),
        )
        assert self.provider.pause_after is None, f"the traversal never reached {pause_after}"
        return result

    def complete_cycle(self) -> None:
        self.run()
        assert self.state() is ProviderState.RESTING

    def end_rest(self) -> None:
        self.clock.advance(REST_LENGTH)

    def feed(self, kind: str, name: str, action: str, **scope: str) -> None:
        body = {"kind": kind, "name": name, "action": action, **scope}
        stored_events(self.state_path, PROVIDER, [body], self.clock)

    def feed_component(self, name: str, action: str, project: str = "shop") -> None:
        self.feed("Component", name, action, namespace="acme", project=project)

    def state(self) -> ProviderState:
        with Store.open(self.state_path, readonly=True) as store:
            return store.load_provider(PROVIDER).state

    def cycle_id(self) -> int:
        with Store.open(self.state_path, readonly=True) as store:
            return store.load_provider(PROVIDER).cycle_id

    def refs(self) -> set[str]:
        with Store.open(self.state_path, readonly=True) as store:
            return {ref_of(body) for body in store.iter_entities()}

    def body(self, ref: str) -> dict[str, Any] | None:
        with Store.open(self.state_path, readonly=True) as store:
            return store.entity_body(ref)

    def provided(self, component: str) -> list[str]:
        """The APIs org `acme`'s `component` provides, sorted."""
        body = self.body(f"component:acme/{component}")
        assert body is not None
        return sorted(body["spec"]["providesApis"])

    def last_change(self) -> int:
        with Store.open(self.state_path, readonly=True) as store:
            return store.last_change_seq()

    def changes_since(self, seq: int) -> list[tuple[str, str]]:
        with Store.open(self.state_path, readonly=True) as store:
            return [(row.op, row.ref) for row in store.changes(seq)]

    def inbox(self) -> list[tuple[str, int]]:
        with Store.open(self.state_path, readonly=True) as store:
            return [(item.body["name"], item.attempts) for item in store.pending_events(PROVIDER)]


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    platform = Platform(tmp_path)
    platform.complete_cycle()
    assert platform.refs() == expected_refs(platform.world)
    return platform


CHECKOUT = {"component:acme/checkout", "api:acme/checkout-rest"}
GRPC = {"type": "gRPC", "port": 9090}
BASKET = {"component:acme/basket", "api:acme/basket-rest"}


class TestAcceptance:
    def test_events_update_the_catalog_while_the_provider_rests(self, platform: Platform) -> None:
        since = platform.last_change()
        platform.world.delete_component("acme", "shop", "checkout")
        platform.feed_component("checkout", "deleted")

        deleted = platform.run()

        assert [outcome.action for outcome in deleted.providers] == ["waiting"]
        assert (platform.state(), platform.cycle_id()) == (ProviderState.RESTING, 1)
        assert CHECKOUT.isdisjoint(platform.refs())
        assert platform.changes_since(since) == [
            ("delete", "api:acme/checkout-rest"),
            ("delete", "component:acme/checkout"),
        ]

        since = platform.last_change()
        platform.world.add_component("acme", "shop", "basket", endpoints={"rest": REST})
        platform.feed_component("basket", "created")

        created = platform.run()

        assert [outcome.action for outcome in created.providers] == ["waiting"]
        assert (platform.state(), platform.cycle_id()) == (ProviderState.RESTING, 1)
        assert sorted(platform.changes_since(since)) == [
            ("upsert", "api:acme/basket-rest"),
            ("upsert", "component:acme/basket"),
        ]
        assert platform.refs() == expected_refs(platform.world)
        component = platform.body("component:acme/basket")
        assert component is not None
        assert component["spec"]["providesApis"] == ["api:acme/basket-rest"]
        assert (created.events.applied, created.events.upserted) == (1, 2)


def add_basket(platform: Platform) -> None:
    platform.world.add_component("acme", "shop", "basket", endpoints={"rest": REST})
    platform.feed_component("basket", "created")


def delete_checkout(platform: Platform) -> None:
    platform.world.delete_component("acme", "shop", "checkout")
    platform.feed_component("checkout", "deleted")


Step = Callable[[Platform], None]
PAUSES = {"mid-cycle-not-reached": "system:globex/ops", "mid-cycle-passed": "api:acme/pay-rest"}
"""Where cycle 2 stands when the change comes: every project listed and no component yet, or
shop's components all walked while web's and ops' are still to come."""


def change_at(platform: Platform, timing: str, change: Step, right_after: Step) -> None:
    """Make `change` (world and event) at `timing` relative to cycle 2, call `right_after` once
    the run that drains the event has walked at most one page, then let cycle 2 complete."""
    platform.end_rest()
    if timing == "after-cycle":
        platform.complete_cycle()
    platform.provider.traversed.clear()
    if timing in PAUSES:
        platform.run(pause_after=PAUSES[timing])
        assert platform.state() is ProviderState.INTERSTITIAL
        passed_shop = "component:acme/pay" in platform.provider.traversed
        assert passed_shop is (timing == "mid-cycle-passed")
    change(platform)
    platform.run(pages=1)
    right_after(platform)
    platform.complete_cycle()
    assert platform.cycle_id() == 2


def basket_is_in(platform: Platform) -> None:
    assert platform.refs() >= BASKET


def checkout_is_out(platform: Platform) -> None:
    assert CHECKOUT.isdisjoint(platform.refs())


TIMINGS = ["before-cycle", "mid-cycle-not-reached", "mid-cycle-passed", "after-cycle"]


class TestEventAgainstTheTraversal:
    @pytest.mark.parametrize(
        ("timing", "traversal_sees_it"),
        [
            ("before-cycle", True),
            ("mid-cycle-not-reached", True),
            ("mid-cycle-passed", False),  # only the event keeps it through the sweep
            ("after-cycle", False),
        ],
        ids=TIMINGS,
    )
    def test_created_component_is_present_and_survives_the_sweep(
        self, platform: Platform, timing: str, traversal_sees_it: bool
    ) -> None:
        change_at(platform, timing, add_basket, right_after=basket_is_in)

        assert platform.refs() == expected_refs(platform.world)
        assert platform.refs() >= BASKET
        assert ("component:acme/basket" in platform.provider.traversed) is traversal_sees_it
        platform.end_rest()
        platform.complete_cycle()
        assert platform.refs() == expected_refs(platform.world)

    @pytest.mark.parametrize("timing", TIMINGS, ids=TIMINGS)
    def test_deleted_component_is_absent_and_does_not_come_back(
        self, platform: Platform, timing: str
    ) -> None:
        since = platform.last_change()

        change_at(platform, timing, delete_checkout, right_after=checkout_is_out)

        checkout_is_out(platform)
        assert platform.refs() == expected_refs(platform.world)
        platform.end_rest()
        platform.complete_cycle()
        checkout_is_out(platform)
        changes = [(op, ref) for op, ref in platform.changes_since(since) if ref in CHECKOUT]
        assert sorted(changes) == [("delete", ref) for ref in sorted(CHECKOUT)]


class TestReRead:
    def test_updated_component_gains_and_loses_apis(self, platform: Platform) -> None:
        since = platform.last_change()
        platform.world.set_endpoints("acme", "shop", "cart", {"grpc": {"type": "gRPC", "port": 9}})
        platform.feed_component("cart", "updated")

        platform.run()

        assert {"api:acme/cart-grpc", "component:acme/cart"} <= platform.refs()
        assert "api:acme/cart-rest" not in platform.refs()
        assert sorted(platform.changes_since(since)) == [
            ("delete", "api:acme/cart-rest"),
            ("upsert", "api:acme/cart-grpc"),
            ("upsert", "component:acme/cart"),
        ]

    def test_component_of_a_project_no_cycle_listed_brings_its_system(
        self, platform: Platform
    ) -> None:
        platform.world.add_project("acme", "mobile")
        platform.world.add_component("acme", "mobile", "app", endpoints={"rest": REST})
        platform.feed_component("app", "created", project="mobile")

        platform.run()

        assert {"system:acme/mobile", "component:acme/app", "api:acme/app-rest"} <= (
            platform.refs()
        )
        assert platform.refs() == expected_refs(platform.world)

    def test_unchanged_component_writes_nothing(self, platform: Platform) -> None:
        since = platform.last_change()
        platform.feed_component("cart", "updated")

        result = platform.run()

        assert result.events.applied == 1
        assert platform.changes_since(since) == []

    @pytest.mark.parametrize("action", ["created", "updated"], ids=["created", "updated"])
    def test_not_found_on_re_read_removes_the_component(
        self, platform: Platform, action: str
    ) -> None:
        platform.world.delete_component("acme", "shop", "checkout")
        platform.feed_component("checkout", action)

        result = platform.run()

        assert CHECKOUT.isdisjoint(platform.refs())
        assert result.events.removed == 2

    def test_updated_project_rewrites_only_its_system(self, platform: Platform) -> None:
        since = platform.last_change()
        platform.world.update_project("acme", "shop", {"displayName": "The Shop"})
        platform.feed("Project", "shop", "updated", namespace="acme")

        platform.run()

        assert platform.changes_since(since) == [("upsert", "system:acme/shop")]
        system = platform.body("system:acme/shop")
        assert system is not None
        assert system["metadata"]["title"] == "The Shop"

    def test_updated_organization_rewrites_only_its_domain(self, platform: Platform) -> None:
        since = platform.last_change()
        platform.world.update_org("globex", {"displayName": "Globex Corp"})
        platform.feed("Organization", "globex", "updated")

        platform.run()

        assert platform.changes_since(since) == [("upsert", "domain:default/globex")]

    @pytest.mark.parametrize(
        ("kind", "name", "scope", "gone"),
        [
            (
                "Project",
                "shop",
                {"namespace": "acme"},
                {
                    "system:acme/shop",
                    "component:acme/cart",
                    "api:acme/cart-rest",
                    "component:acme/pay",
                    "api:acme/pay-rest",
                    *CHECKOUT,
                },
            ),
            (
                "Organization",
                "globex",
                {},
                {
                    "domain:default/globex",
                    "system:globex/ops",
                    "component:globex/monitor",
                    "api:globex/monitor-metrics",
                },
            ),
        ],
        ids=["project", "organization"],
    )
    @pytest.mark.parametrize("action", ["deleted", "updated"], ids=["deleted", "404-on-re-read"])
    def test_removal_takes_everything_below_and_nothing_else(
        self,
        platform: Platform,
        kind: str,
        name: str,
        scope: dict[str, str],
        gone: set[str],
        action: str,
    ) -> None:
        before = platform.refs()
        if kind == "Project":
            platform.world.delete_project("acme", name)
        else:
            platform.world.delete_org(name)
        platform.feed(kind, name, action, **scope)

        platform.run()

        assert gone <= before
        assert platform.refs() == before - gone == expected_refs(platform.world)
        assert platform.state() is ProviderState.RESTING


def park_during_an_outage(platform: Platform, names: Sequence[str]) -> None:
    """An outage that lasts until events about `names` are parked (a run a second, as cron's
    every minute does with `backoff: [1]`)."""
    platform.transport.down = True
    for name in names:
        platform.feed_component(name, "updated")
    for _ in range(MAX_EVENT_ATTEMPTS * len(names)):
        platform.run()
    assert platform.inbox() == []
    platform.transport.down = False


def parked_count(platform: Platform) -> int:
    """`events.parked` of `status --json`."""
    report = status_report(platform.state_path, platform.config, platform.clock.now())
    return int(report.to_json()["events"]["parked"])


class TestReReadFailures:
    def test_event_waits_out_an_outage_then_applies(self, platform: Platform) -> None:
        add_basket(platform)
        platform.transport.down = True

        failed = platform.run()
        held = platform.run()

        # The drain that met the outage fails the run (exit 3), as a burst would; the runs
        # that wait out its backoff step do nothing, and exit 0.
        assert (failed.outcome, failed.events.retried) == (RunOutcome.FAILED, 1)
        [inbox_held] = failed.events.held
        assert inbox_held.provider == PROVIDER
        assert "503" in inbox_held.error
        assert (held.outcome, held.events.retried, held.events.held) == (RunOutcome.WAITING, 0, [])
        assert platform.inbox() == [("basket", 1)]
        assert BASKET.isdisjoint(platform.refs())

        platform.transport.down = False
        platform.clock.advance(platform.config.incremental.backoff[0])  # the events wait so long
        after = platform.run()

        assert (after.outcome, after.events.applied) == (RunOutcome.WAITING, 1)
        assert platform.inbox() == []
        assert platform.refs() >= BASKET

    def test_outages_park_each_object_once_and_a_cycle_begun_later_forgets_them(
        self, platform: Platform
    ) -> None:
        """The audit's repro: the same events parked by three outages are one parked event per
        object (not one per outage), counted by `status --json` until a cycle that began after
        they arrived completes; a cycle already under way when they arrived keeps them."""
        shop = ("cart", "checkout", "pay")
        platform.config = replace(
            platform.config,
            openchoreo=replace(
                platform.config.openchoreo,
                incremental=replace(platform.config.incremental, backoff=(1.0,)),
            ),
        )
        platform.end_rest()
        platform.run(pages=2)  # cycle 2 begins: it walks on after the outages
        assert (platform.cycle_id(), platform.state()) == (2, ProviderState.INTERSTITIAL)
        for _ in range(3):
            park_during_an_outage(platform, shop)
        assert parked_count(platform) == 3

        platform.complete_cycle()  # cycle 2, begun before the events arrived
        assert platform.cycle_id() == 2
        assert parked_count(platform) == 3

        platform.end_rest()
        platform.complete_cycle()  # cycle 3, begun after

        assert parked_count(platform) == 0
        assert platform.refs() == expected_refs(platform.world)

    def test_deleted_event_needs_no_api_call(self, platform: Platform) -> None:
        platform.transport.down = True
        platform.transport.requests.clear()
        delete_checkout(platform)

        result = platform.run()

        assert platform.transport.requests == []
        assert result.events.applied == 1
        assert CHECKOUT.isdisjoint(platform.refs())


class TestComponentEventsWithoutProject:
    """The document's events carry `project` optionally; a component's name is unique in its
    org, so each of the org's projects is asked until one has it."""

    def test_a_new_component_is_found_in_its_project(self, platform: Platform) -> None:
        platform.world.add_component("acme", "web", "basket", endpoints={"rest": REST})
        platform.feed("Component", "basket", "created", namespace="acme")

        result = platform.run()

        assert result.events.applied == 1
        assert platform.refs() == expected_refs(platform.world)
        assert platform.refs() >= BASKET

    @pytest.mark.parametrize("action", ["deleted", "updated"])
    def test_a_component_gone_from_every_project_leaves_with_its_apis(
        self, platform: Platform, action: str
    ) -> None:
        platform.world.delete_component("acme", "shop", "checkout")
        platform.feed("Component", "checkout", action, namespace="acme")

        result = platform.run()

        assert result.events.applied == 1
        assert CHECKOUT.isdisjoint(platform.refs())
        assert platform.refs() == expected_refs(platform.world)


def test_under_auto_an_org_era_servers_events_never_go_through_v1_routes(
    platform: Platform,
) -> None:
    """v1 takes a `Namespace` event, but read through v1's routes at an org-era server it would
    answer 404 and take the org's Domain and everything under it with it."""
    before = platform.refs()
    platform.transport.requests.clear()
    platform.feed("Namespace", "acme", "updated", namespace="")

    result = platform.run()

    assert result.events.applied == 0
    assert platform.refs() == before
    assert not [path for path in platform.transport.requests if "/namespaces" in path]


def test_an_event_the_servers_api_does_not_have_is_parked_at_its_first_attempt(
    platform: Platform,
) -> None:
    """It can never apply: retried, it would warn at each of the next runs before being parked."""
    platform.feed("Namespace", "acme", "updated", namespace="")

    first = platform.run()
    second = platform.run()

    assert (first.events.parked, first.events.retried) == (1, 0)
    assert (second.events.parked, second.events.retried) == (0, 0)
    assert parked_count(platform) == 1


class TestComponentMovedToAnotherProject:
    """A component's name is unique in its org, so one made again in another project is the
    same Component entity: its event maps it there, and the APIs it had in the project it left
    go with that event too, even when the `deleted` about the old project never applies (the
    inbox keeps only the newest of two events without `project`, and an event can be lost)."""

    def move_cart_to_web(self, platform: Platform) -> None:
        platform.world.delete_component("acme", "shop", "cart")
        platform.world.add_component("acme", "web", "cart", endpoints={"grpc": GRPC})

    def test_deleted_and_created_without_project_leave_no_api_behind(
        self, platform: Platform
    ) -> None:
        self.move_cart_to_web(platform)
        platform.feed("Component", "cart", "deleted", namespace="acme")
        platform.feed("Component", "cart", "created", namespace="acme")

        platform.run()

        assert "api:acme/cart-rest" not in platform.refs()
        assert platform.refs() == expected_refs(platform.world)
        component = platform.body("component:acme/cart")
        assert component is not None
        assert component["spec"]["system"] == "web"
        assert component["spec"]["providesApis"] == ["api:acme/cart-grpc"]

    def test_created_in_its_new_project_alone_leaves_no_api_behind(
        self, platform: Platform
    ) -> None:
        self.move_cart_to_web(platform)
        platform.feed_component("cart", "created", project="web")

        platform.run()

        assert "api:acme/cart-rest" not in platform.refs()
        assert platform.refs() == expected_refs(platform.world)

    def test_an_api_it_keeps_moves_with_it(self, platform: Platform) -> None:
        platform.world.delete_component("acme", "shop", "cart")
        platform.world.add_component("acme", "web", "cart", endpoints={"rest": REST})
        platform.feed_component("cart", "created", project="web")

        platform.run()

        assert platform.refs() == expected_refs(platform.world)
        api = platform.body("api:acme/cart-rest")
        assert api is not None
        assert api["spec"]["system"] == "web"
        platform.end_rest()
        platform.complete_cycle()
        assert platform.refs() == expected_refs(platform.world)

    def test_deleted_then_created_keeps_the_name_of_an_api_it_keeps(
        self, platform: Platform
    ) -> None:
        """Both events, in order: the claim it made on `cart-rest` as a member of `shop`
        (which sorts before `web`) does not keep the name from it as a member of `web`."""
        platform.world.delete_component("acme", "shop", "cart")
        platform.world.add_component("acme", "web", "cart", endpoints={"rest": REST})
        platform.feed_component("cart", "deleted", project="shop")
        platform.feed_component("cart", "created", project="web")

        platform.run()

        assert platform.refs() == expected_refs(platform.world)
        component = platform.body("component:acme/cart")
        assert component is not None
        assert component["spec"]["providesApis"] == ["api:acme/cart-rest"]

    def test_a_cycle_alone_moves_it_with_the_names_of_its_apis(self, platform: Platform) -> None:
        platform.world.delete_component("acme", "shop", "cart")
        platform.world.add_component("acme", "web", "cart", endpoints={"rest": REST})

        platform.end_rest()
        platform.complete_cycle()

        assert platform.refs() == expected_refs(platform.world)

    def test_moved_then_deleted_goes_on_the_404_of_its_new_project(
        self, platform: Platform
    ) -> None:
        """The `deleted` about `shop` was lost; `created` in `web` answers 404 (deleted since)."""
        self.move_cart_to_web(platform)
        platform.world.delete_component("acme", "web", "cart")
        platform.feed_component("cart", "created", project="web")

        platform.run()

        assert {"component:acme/cart", "api:acme/cart-rest"}.isdisjoint(platform.refs())
        assert platform.refs() == expected_refs(platform.world)

    def test_a_404_in_another_project_leaves_it_where_it_is(self, platform: Platform) -> None:
        """An event naming a project the component is not in changes nothing of it."""
        before = platform.refs()
        platform.feed_component("cart", "updated", project="web")

        platform.run()

        assert platform.refs() == before == expected_refs(platform.world)

    def test_moved_then_deleted_goes_on_the_deleted_about_its_new_project(
        self, platform: Platform
    ) -> None:
        """The `deleted` about `shop` was lost; the inbox keeps only the newest of `created` and
        `deleted` about `web`, and a `deleted` reads nothing where the catalog holds it."""
        self.move_cart_to_web(platform)
        platform.world.delete_component("acme", "web", "cart")
        platform.feed_component("cart", "created", project="web")
        platform.feed_component("cart", "deleted", project="web")

        platform.run()

        assert {"component:acme/cart", "api:acme/cart-rest"}.isdisjoint(platform.refs())
        assert platform.refs() == expected_refs(platform.world)

    def test_a_deleted_about_a_project_it_left_leaves_it_where_it_is(
        self, platform: Platform
    ) -> None:
        """Moved back to `shop` after the catalog had it in `web`: a late `deleted` about `web`
        reads it in `shop` and keeps it."""
        before = platform.refs()
        platform.feed_component("cart", "deleted", project="web")

        platform.run()

        assert platform.refs() == before == expected_refs(platform.world)


class TestFreedApiNameHandedOn:
    """Component `a`'s endpoint `b-c` and component `a-b`'s endpoint `c` both give the API name
    `a-b-c`: `(shop, a, b-c)` sorts first and holds it, `a-b`'s API has a hashed name. The event
    that frees the name (its holder gone, or without the endpoint) maps `a-b` again, which
    takes it, as a walk names it (v1 events alike), not a cycle or two later."""

    def clash(self, platform: Platform, *, by_events: bool = False) -> None:
        platform.world.add_component("acme", "shop", "a", endpoints={"b-c": REST})
        platform.world.add_component("acme", "shop", "a-b", endpoints={"c": REST})
        if by_events:
            platform.feed_component("a", "created")
            platform.feed_component("a-b", "created")
            platform.run()
        else:
            platform.end_rest()
            platform.complete_cycle()
        assert platform.provided("a") == ["api:acme/a-b-c"]
        assert platform.provided("a-b") != ["api:acme/a-b-c"]

    def assert_handed_on(self, platform: Platform, hashed: list[str]) -> None:
        assert platform.provided("a-b") == ["api:acme/a-b-c"]
        assert hashed[0] not in platform.refs()
        body = platform.body("api:acme/a-b-c")
        assert body is not None
        assert body["metadata"]["annotations"]["openchoreo.io/component"] == "a-b"

    def test_a_deleted_holder_hands_it_on(self, platform: Platform) -> None:
        self.clash(platform)
        hashed = platform.provided("a-b")
        platform.world.delete_component("acme", "shop", "a")
        platform.feed_component("a", "deleted")

        platform.run()

        assert "component:acme/a" not in platform.refs()
        self.assert_handed_on(platform, hashed)

    def test_a_holder_gone_from_every_project_hands_it_on(self, platform: Platform) -> None:
        """An `updated` without `project`, read in each project: a 404 in all of them."""
        self.clash(platform)
        hashed = platform.provided("a-b")
        platform.world.delete_component("acme", "shop", "a")
        platform.feed("Component", "a", "updated", namespace="acme")

        platform.run()

        self.assert_handed_on(platform, hashed)

    def test_a_holder_without_the_endpoint_hands_it_on(self, platform: Platform) -> None:
        self.clash(platform, by_events=True)
        hashed = platform.provided("a-b")
        platform.world.set_endpoints("acme", "shop", "a", {"d": REST})
        platform.feed_component("a", "updated")

        platform.run()

        assert platform.provided("a") == ["api:acme/a-d"]
        self.assert_handed_on(platform, hashed)

    def test_a_holder_moved_to_a_project_that_sorts_after_hands_it_on(
        self, platform: Platform
    ) -> None:
        """Made again in `web` with its endpoint: `(shop, a-b, c)` sorts first now."""
        self.clash(platform)
        hashed = platform.provided("a-b")
        platform.world.delete_component("acme", "shop", "a")
        platform.world.add_component("acme", "web", "a", endpoints={"b-c": REST})
        platform.feed_component("a", "created", project="web")

        platform.run()

        self.assert_handed_on(platform, hashed)
        [moved] = platform.provided("a")
        assert moved.startswith("api:acme/a-b-c-"), moved  # hashed, as a walk names it
        platform.end_rest()
        platform.complete_cycle()
        assert platform.provided("a") == [moved]
        assert platform.provided("a-b") == ["api:acme/a-b-c"]
