"""Events applied while a listing is in progress, against a server that lists as Kubernetes
does: every page of a listing shows the platform as it stood at the listing's first page (the
simulator lists live, so it is wrapped here), through the real engine and state store."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import SETTLE_SECONDS
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.models import Delta, IndexEntry, ProviderState
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo.generation import Harvest
from choreo_ingest.providers.openchoreo.overtaken import EVENT_MARKS, LISTING, EventMarks
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store
from choreo_ingest.testing import make_entity

from fakes import FakeClock
from sim_support import PausingProvider, simulator_transport

URL = "http://openchoreo.test/api/v1"
REST = {"type": "HTTP", "port": 80, "schema": {"type": "openapi", "content": "openapi: 3.0.0\n"}}
LISTINGS = ("namespaces", "projects", "components", "workloads")


class SnapshotListings:
    """The simulator's answers, but a listing's pages all come from the snapshot its first page
    took (its cursor names the snapshot and the offset)."""

    def __init__(self, api: SimulatorApi) -> None:
        self._live = simulator_transport(api)
        self._snapshots: dict[int, list[Any]] = {}
        self._ids = itertools.count()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        listing = request.url.path.rstrip("/").rpartition("/")[2] in LISTINGS
        if not listing or "component" in query or "project" in query:
            return self._live.handle_request(request)
        limit = int(query.get("limit", 20))
        if "cursor" in query:
            snapshot, offset = map(int, query["cursor"].split(":"))
        else:
            snapshot, offset = next(self._ids), 0
            self._snapshots[snapshot] = self._everything(request)
        items = self._snapshots[snapshot]
        after = offset + limit
        pagination = {"nextCursor": f"{snapshot}:{after}"} if after < len(items) else {}
        return httpx.Response(200, json={"items": items[offset:after], "pagination": pagination})

    def _everything(self, request: httpx.Request) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = self._live.handle_request(
                httpx.Request("GET", request.url.copy_with(params=params))
            ).json()
            items += page["items"]
            cursor = page["pagination"].get("nextCursor")
            if not cursor:
                return items


class Platform:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.world = World.empty()
        self.world.add_org("acme")
        self.world.add_project("acme", "shop")
        for name in ("a1", "b2", "c3", "d4"):
            self.world.add_component("acme", "shop", name, endpoints={"rest": REST})
        api = SimulatorApi(self.world, SimulatorOptions(api="v1", cursor_ttl=None), self.clock)
        settings = IncrementalConfig(
            burst_length=10, burst_interval=1, rest_length=3600, chunk_size=1
        )
        self.config = Config(
            openchoreo=OpenChoreoConfig(base_url=URL, api="v1", incremental=settings),
            state_path=tmp_path / "state.db",
            providers=("openchoreo",),
        )
        transport = httpx.MockTransport(SnapshotListings(api))
        inner = OpenChoreoProvider(self.config, transport=transport)
        self.provider = PausingProvider(inner, self.clock, burst_length=10)

    def run(self, pause_after: str | None = None) -> RunResult:
        self.clock.advance(SETTLE_SECONDS)
        self.provider.pause_after = pause_after
        assert self.config.state_path is not None
        return run_once(
            self.config,
            self.config.state_path,
            self.clock,
            providers={"openchoreo": self.provider},
            rng=random.Random(0),
        )

    def event(self, name: str, action: str, kind: str = "Component") -> None:
        body = {"kind": kind, "name": name, "namespace": "acme", "action": action}
        assert self.config.state_path is not None
        stored_events(self.config.state_path, "openchoreo", [body], self.clock)

    def catalog(self) -> dict[str, Any]:
        assert self.config.state_path is not None
        with Store.open(self.config.state_path, readonly=True) as store:
            bodies = list(store.iter_entities())
        return {f"{b['kind'].lower()}:acme/{b['metadata']['name']}": b for b in bodies}

    def complete_cycle(self) -> None:
        """Runs until the cycle in progress completes (none, if it has). A wait begun on a
        clock since set back a minute holds that minute (`schedule.CLOCK_SKEW`)."""
        for _ in range(100):
            [outcome] = self.run().providers
            if outcome.cycle_completed or outcome.state is ProviderState.RESTING:
                return
        raise AssertionError("the cycle did not complete")


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    platform = Platform(tmp_path)
    platform.complete_cycle()
    platform.clock.advance(3600)  # the rest is over: the next run begins cycle 2
    platform.run(pause_after="component:acme/a1")  # cycle 2 stops inside the components listing
    return platform


def test_a_component_deleted_mid_listing_stays_out_and_its_cycle_keeps_it_out(
    platform: Platform,
) -> None:
    platform.world.delete_component("acme", "shop", "c3")
    platform.event("c3", "deleted")

    applied = platform.run().events.applied  # the event, then the listing's next pages
    platform.complete_cycle()

    assert applied == 1
    assert "component:acme/c3" not in platform.catalog()
    assert {"component:acme/a1", "component:acme/b2", "component:acme/d4"} <= set(
        platform.catalog()
    )


def test_a_component_changed_mid_listing_keeps_its_change(platform: Platform) -> None:
    owner = {"annotations": {"backstage.io/owner": "group:default/new-team"}}
    platform.world.update_component("acme", "shop", "d4", owner)
    platform.event("d4", "updated")

    platform.complete_cycle()

    assert platform.catalog()["component:acme/d4"]["spec"]["owner"] == "group:default/new-team"


def test_a_listing_begun_after_an_event_is_what_the_catalog_takes(platform: Platform) -> None:
    """The marks only hold back listings that began before the event: the next cycle's takes
    the platform as it is, whatever an earlier event wrote."""
    owner = {"annotations": {"backstage.io/owner": "group:default/new-team"}}
    platform.world.update_component("acme", "shop", "d4", owner)
    platform.event("d4", "updated")
    platform.complete_cycle()
    platform.world.update_component("acme", "shop", "d4", {"annotations": {}})

    platform.clock.advance(3600)
    platform.complete_cycle()

    assert platform.catalog()["component:acme/d4"]["spec"]["owner"] != "group:default/new-team"


def test_a_workload_deleted_mid_listing_does_not_bring_its_apis_back(tmp_path: Path) -> None:
    """The event re-reads the component without the workload and drops its index row; a later
    page of the workloads listing, as it stood before, must not write that row again (the
    components listing, begun after the event, would map the component with it)."""
    platform = Platform(tmp_path)
    platform.complete_cycle()
    platform.clock.advance(3600)
    [first, *_, last] = [w["metadata"]["name"] for w in platform.world.v1_workloads("acme")]
    platform.run(pause_after=f"acme/{first}")  # cycle 2 stops inside the workloads listing
    assert "api:acme/shop-d4-rest" in platform.catalog()

    platform.world.delete_workload("acme", last)
    platform.event(last, "deleted", kind="Workload")
    platform.complete_cycle()

    catalog = platform.catalog()
    assert "api:acme/shop-d4-rest" not in catalog
    assert not catalog["component:acme/d4"]["spec"].get("providesApis")
    assert "api:acme/shop-a1-rest" in catalog


class CountingIndex:
    """An index holding the marks given, counting the reads."""

    def __init__(self, *marks: IndexEntry) -> None:
        self.marks = list(marks)
        self.reads: list[str] = []
        self.groups_read: list[list[str]] = []

    def by_key(
        self, table: str, keys: Sequence[str], *, current_only: bool = False
    ) -> dict[str, IndexEntry]:
        self.reads.append("by_key")
        return {mark.key: mark for mark in self.marks if mark.key in keys}

    def by_group(
        self, table: str, groups: Sequence[str], *, current_only: bool = False
    ) -> dict[str, list[IndexEntry]]:
        self.reads.append("by_group")
        self.groups_read.append(list(groups))
        return {group: [mark for mark in self.marks if mark.group == group] for group in groups}


def test_a_page_looks_up_marks_only_when_an_event_came_after_its_listing_began() -> None:
    """The look-up per page cost the org era's 10k cycle a tenth of its CPU beyond the floor."""
    entity = make_entity("a")
    index = CountingIndex(IndexEntry(EVENT_MARKS, f"ref {entity.ref}", "", {"at": 100.0}))
    marks = EventMarks()

    later = [marks.without_overtaken(index, Harvest([entity]), 150.0, "p") for _ in range(3)]
    reads_after_later_pages = list(index.reads)
    earlier = marks.without_overtaken(index, Harvest([entity]), 50.0, "p").entities

    assert [harvest.entities for harvest in later] == [[entity]] * 3
    assert reads_after_later_pages == ["by_group"]  # once, then from memory
    assert earlier == []
    assert index.reads == ["by_group", "by_key"]


def test_a_page_keeps_a_ref_an_event_wrote_after_its_listing_began() -> None:
    """A page's removal (an API's old name, given up to a newcomer) of a ref an event wrote
    since: the event read later, and its entity stays."""
    entity, rewritten, stale = make_entity("a"), make_entity("b"), make_entity("c")
    index = CountingIndex(IndexEntry(EVENT_MARKS, f"ref {rewritten.ref}", "", {"at": 100.0}))
    page = Harvest([entity], removals=[rewritten.ref, stale.ref])

    kept = EventMarks().without_overtaken(index, page, 50.0, "p")

    assert (kept.entities, kept.removals) == ([entity], [stale.ref])


@pytest.mark.parametrize("stepped_back", [60, 3600], ids=["a minute", "an hour"])
def test_a_component_deleted_after_the_clock_was_set_back_stays_out(
    platform: Platform, stepped_back: int
) -> None:
    """NTP, or a VM restored from a snapshot, sets the wall clock back behind the listing's
    start: the event was still applied after it, and its page must not bring the component
    back."""
    platform.clock.step_wall(-stepped_back)
    platform.world.delete_component("acme", "shop", "c3")
    platform.event("c3", "deleted")

    applied = platform.run().events.applied
    platform.complete_cycle()

    assert applied == 1
    assert "component:acme/c3" not in platform.catalog()


def test_a_change_after_the_clock_was_set_back_is_kept(platform: Platform) -> None:
    platform.clock.step_wall(-3600)
    owner = {"annotations": {"backstage.io/owner": "group:default/new-team"}}
    platform.world.update_component("acme", "shop", "d4", owner)
    platform.event("d4", "updated")

    platform.complete_cycle()

    assert platform.catalog()["component:acme/d4"]["spec"]["owner"] == "group:default/new-team"


def test_a_listing_begun_after_an_event_takes_the_platform_though_the_clock_went_back(
    tmp_path: Path,
) -> None:
    """An event applied inside the workloads listing, then the clock set back before the
    components listing begins: that listing began after the event all the same, and the
    catalog takes what it lists."""
    platform = Platform(tmp_path)
    platform.complete_cycle()
    platform.clock.advance(3600)
    [first, second, *_] = [w["metadata"]["name"] for w in platform.world.v1_workloads("acme")]
    platform.run(pause_after=f"acme/{first}")  # cycle 2 stops inside the workloads listing
    owner = {"annotations": {"backstage.io/owner": "group:default/new-team"}}
    platform.world.update_component("acme", "shop", "d4", owner)
    platform.event("d4", "updated")
    platform.run(pause_after=f"acme/{second}")  # the event, then a page of workloads

    platform.clock.step_wall(-7200)
    platform.world.update_component("acme", "shop", "d4", {"annotations": {}})
    platform.complete_cycle()

    assert platform.catalog()["component:acme/d4"]["spec"]["owner"] != "group:default/new-team"


def test_a_listing_s_start_is_marked_once_with_its_next_page() -> None:
    marks, index = EventMarks(), CountingIndex()

    began = marks.listing_began(index, 100.0)
    pages = [marks.without_overtaken(index, Harvest([make_entity(n)]), began, "p") for n in "ab"]

    assert [row.value for row in pages[0].index] == [{"at": 100.0}]
    assert pages[1].index == []


def test_a_listing_begins_no_earlier_than_the_events_applied_before_it() -> None:
    index = CountingIndex(IndexEntry(EVENT_MARKS, "ref component:default/a", "", {"at": 500.0}))

    assert EventMarks().listing_began(index, 400.0) == 500.0
    assert EventMarks().listing_began(index, 600.0) == 600.0


def test_an_event_reads_only_the_listing_s_mark_not_the_cycle_s_marks() -> None:
    """`serve` drains events every few seconds: reading every mark of the cycle each time cost
    0.35 s a drain at 100,000 marks."""
    events = [IndexEntry(EVENT_MARKS, f"ref component:default/{n}", "", {"at": 90.0}) for n in "ab"]
    index = CountingIndex(*events, IndexEntry(EVENT_MARKS, LISTING, LISTING, {"at": 100.0}))
    marks = EventMarks()

    delta = marks.marked(index, Delta(upserts=[make_entity("c")]), 95.0)

    assert index.groups_read == [[LISTING]]
    [mark] = [row for row in delta.index if row.table == EVENT_MARKS]
    assert mark.value["at"] > 100.0  # read after the listing began, though the clock said not
