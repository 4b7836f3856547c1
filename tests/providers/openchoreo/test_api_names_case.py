"""v1 API names keep their case (`web-cart-httpApi`, as OpenChoreo's own provider writes them),
while names that Backstage would take for one entity (they differ only in case) stay apart; and
a state written when capitals meant a hashed name upgrades to that."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from choreo_ingest.config import (
    AuthConfig,
    Config,
    IncrementalConfig,
    OAuthConfig,
    OpenChoreoConfig,
)
from choreo_ingest.event_input import parse_events
from choreo_ingest.event_intake import stored_events
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.openchoreo import OpenChoreoProvider, resources_v1
from choreo_ingest.providers.openchoreo.api_names import (
    CLAIMS,
    ApiClaim,
    Pending,
    claim_key,
    resolve_api_names,
)
from choreo_ingest.providers.openchoreo.naming import hashed_entity_name, is_valid_entity_name
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import IN_PROCESS_URL, simulator_transport, unresolved_refs

PROVIDER = "openchoreo"
CLIENT_ID, CLIENT_SECRET = "catalog-client", "s3cret-for-tests"
SCHEMA = {"type": "HTTP", "port": 80, "schema": {"content": "openapi: 3.0.0"}}


def config_for(state_path: Path, chunk_size: int, rest_length: float = 1800.0) -> Config:
    oauth = OAuthConfig(
        token_url="http://openchoreo.test/oauth2/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    settings = replace(IncrementalConfig(), chunk_size=chunk_size, rest_length=rest_length)
    return Config(
        openchoreo=OpenChoreoConfig(
            base_url=IN_PROCESS_URL, auth=AuthConfig(oauth=oauth), incremental=settings
        ),
        state_path=state_path,
        providers=(PROVIDER,),
    )


def world_with(components: dict[tuple[str, str], list[str]]) -> tuple[World, str]:
    """One namespace; each (project, component) with an API endpoint of each name."""
    world = World.generate(1, 1, 0, seed=11)
    ns = next(world.v1_namespaces())["metadata"]["name"]
    for project in sorted({project for project, _ in components}):
        world.add_project(ns, project)
    for (project, component), endpoints in components.items():
        world.add_component(ns, project, component, endpoints=dict.fromkeys(endpoints, SCHEMA))
    return world, ns


def cycle(
    state_path: Path, world: World, clock: FakeClock, chunk_size: int = 100, rest: float = 1800.0
) -> RunResult:
    """One whole cycle (the world is small enough for one burst)."""
    config = config_for(state_path, chunk_size, rest)
    options = SimulatorOptions(
        api="v1", oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET
    )
    api = SimulatorApi(world, options, clock)
    provider = OpenChoreoProvider(config, transport=simulator_transport(api))
    result = run_once(config, state_path, clock, force=True, providers={PROVIDER: provider})
    [outcome] = result.providers
    assert outcome.cycle_completed, outcome.error
    clock.advance(3600.0)
    return result


def apis(state_path: Path) -> dict[tuple[str, str], str]:
    """(component, endpoint) -> the name of its API entity."""
    with Store.open(state_path, readonly=True) as store:
        bodies = list(store.iter_entities())
    assert unresolved_refs(bodies) == []
    return {
        (
            body["metadata"]["annotations"]["openchoreo.io/component"],
            body["metadata"]["annotations"]["openchoreo.io/endpoint-name"],
        ): body["metadata"]["name"]
        for body in bodies
        if body["kind"] == "API"
    }


def claims(state_path: Path) -> dict[str, dict[str, Any]]:
    """The stored claims on API names, by key."""
    with closing(sqlite3.connect(state_path)) as db:
        rows = db.execute("SELECT key, value FROM provider_index WHERE tbl = ?", [CLAIMS])
        return {key: json.loads(value) for key, value in rows}


def hashed(project: str, component: str, endpoint: str) -> str:
    """The name an endpoint gets when another one holds its plain name."""
    joined = f"{project}-{component}-{endpoint}"
    return hashed_entity_name(joined, f"{project}/{component}/{endpoint}")


def old_v1_api_entity_name(project: str, component: str, endpoint: str) -> str:
    """The naming of releases before v1 names kept their case: capitals meant a hashed name."""
    joined = f"{project}-{component}-{endpoint}"
    if is_valid_entity_name(joined) and joined == joined.lower():
        return joined
    return hashed_entity_name(joined, json.dumps([project, component, endpoint]))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_an_endpoint_with_capitals_maps_to_its_plain_name(tmp_path: Path, clock: FakeClock) -> None:
    world, ns = world_with({("web", "cart"): ["httpApi"]})

    cycle(tmp_path / "state.db", world, clock)

    assert apis(tmp_path / "state.db") == {("cart", "httpApi"): "web-cart-httpApi"}
    assert claims(tmp_path / "state.db") == {
        f"{ns}/web-cart-httpapi|web/cart/httpApi": {
            "owner": ["web", "cart"],
            "endpoint": "httpApi",
            "holds": True,
            "cased": True,
        }
    }


@pytest.mark.parametrize(
    "components",
    [
        {("web", "cart"): ["httpApi", "httpapi"]},
        {("web", "cart"): ["HTTPAPI", "httpApi", "httpapi"]},
        {("web", "cart-http"): ["Api"], ("web", "cart"): ["http-api"]},
        {("web", "cart"): ["http-Api"], ("web", "cart-http"): ["api"]},
    ],
    ids=["one-component", "three-cases", "two-components", "two-components-cased-first"],
)
@pytest.mark.parametrize("chunk_size", [100, 1], ids=["one-page", "a-component-a-page"])
def test_names_that_differ_only_in_case_never_meet(
    tmp_path: Path,
    clock: FakeClock,
    components: dict[tuple[str, str], list[str]],
    chunk_size: int,
) -> None:
    """The one without capitals keeps its plain name, every other gets a hashed one, whichever
    page comes first."""
    world, _ = world_with(components)

    cycle(tmp_path / "state.db", world, clock, chunk_size)

    found = apis(tmp_path / "state.db")
    assert len({name.lower() for name in found.values()}) == len(found)
    expected = {
        (component, endpoint): (
            f"{project}-{component}-{endpoint}"
            if endpoint == endpoint.lower()
            else hashed(project, component, endpoint)
        )
        for (project, component), endpoints in components.items()
        for endpoint in endpoints
    }
    assert found == expected


class TestUpgradeFromHashedCapitals:
    """A state written when a name with capitals was hashed: its claim is in the group of the
    hashed name, and its API has that name."""

    def old_cycle(
        self, state: Path, world: World, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with monkeypatch.context() as old:
            old.setattr(resources_v1, "v1_api_entity_name", old_v1_api_entity_name)
            cycle(state, world, clock)

    def test_an_api_with_capitals_is_renamed_once_to_its_plain_name(
        self, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        world, ns = world_with({("web", "cart"): ["httpApi"]})
        state = tmp_path / "state.db"
        self.old_cycle(state, world, clock, monkeypatch)
        old_name = old_v1_api_entity_name("web", "cart", "httpApi")
        assert apis(state) == {("cart", "httpApi"): old_name}
        with Store.open(state, readonly=True) as store:
            since = store.last_change_seq()

        cycle(state, world, clock)

        assert apis(state) == {("cart", "httpApi"): "web-cart-httpApi"}
        with Store.open(state, readonly=True) as store:
            changes = [(row.op, row.ref) for row in store.changes(since) if "api:" in row.ref]
        assert sorted(changes) == [
            ("delete", f"api:{ns}/{old_name}"),
            ("upsert", f"api:{ns}/web-cart-httpApi"),
        ]
        assert list(claims(state)) == [f"{ns}/web-cart-httpapi|web/cart/httpApi"]

    def test_the_old_holder_of_the_lower_case_name_keeps_it(
        self, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        world, ns = world_with({("web", "cart"): ["httpApi", "httpapi"]})
        state = tmp_path / "state.db"
        self.old_cycle(state, world, clock, monkeypatch)
        assert apis(state)[("cart", "httpapi")] == "web-cart-httpapi"

        cycle(state, world, clock)

        assert apis(state) == {
            ("cart", "httpapi"): "web-cart-httpapi",
            ("cart", "httpApi"): hashed("web", "cart", "httpApi"),
        }
        stored = claims(state)
        assert {key: value["holds"] for key, value in stored.items()} == {
            f"{ns}/web-cart-httpapi|web/cart/httpApi": False,
            f"{ns}/web-cart-httpapi|web/cart/httpapi": True,
        }


def test_an_endpoint_renamed_only_in_case_ends_on_an_upsert_of_its_new_spelling(
    tmp_path: Path, clock: FakeClock
) -> None:
    world, ns = world_with({("web", "cart"): ["httpApi"]})
    state = tmp_path / "state.db"
    cycle(state, world, clock)
    [load] = world.v1_workloads(ns, "cart")
    world.update_workload(ns, load["metadata"]["name"], {"endpoints": {"httpapi": SCHEMA}})
    with Store.open(state, readonly=True) as store:
        since = store.last_change_seq()

    cycle(state, world, clock)

    assert apis(state) == {("cart", "httpapi"): "web-cart-httpapi"}
    with Store.open(state, readonly=True) as store:
        folded = [row.op for row in store.changes(since) if row.ref.lower().startswith("api:")]
    assert folded[-1] == "upsert"


def test_a_name_freed_by_the_other_spelling_of_the_same_component_is_taken_in_that_cycle(
    tmp_path: Path, clock: FakeClock
) -> None:
    """`httpApi` beside `httpapi` has a hashed name; once `httpapi` is gone, the next cycle gives
    `httpApi` its plain name, as a fresh state would: the gone endpoint's claim is released when
    its component is read, not left to decide until that cycle's end."""
    world, ns = world_with({("web", "cart"): ["httpApi", "httpapi"]})
    state = tmp_path / "state.db"
    cycle(state, world, clock)
    assert apis(state)[("cart", "httpApi")] == hashed("web", "cart", "httpApi")
    [load] = world.v1_workloads(ns, "cart")
    world.update_workload(ns, load["metadata"]["name"], {"endpoints": {"httpApi": SCHEMA}})

    cycle(state, world, clock)

    assert apis(state) == {("cart", "httpApi"): "web-cart-httpApi"}
    assert {key: value["holds"] for key, value in claims(state).items()} == {
        f"{ns}/web-cart-httpapi|web/cart/httpApi": True,
    }


@pytest.mark.parametrize("chunk_size", [1, 100], ids=["consumer-first", "one-page"])
def test_a_consumer_read_before_the_api_it_names_refers_to_its_new_name(
    tmp_path: Path, clock: FakeClock, chunk_size: int
) -> None:
    """`alpha` depends on cart's `httpApi`, which takes its plain name in the cycle its other
    spelling goes; read first (one component a page), `alpha` names it as cart's page will, not
    by the gone spelling's stale claim."""
    world, ns = world_with({("web", "alpha"): [], ("web", "cart"): ["httpApi", "httpapi"]})
    [alpha] = world.v1_workloads(ns, "alpha")
    dependency = {"project": "web", "component": "cart", "name": "httpApi"}
    world.update_workload(
        ns, alpha["metadata"]["name"], {"dependencies": {"endpoints": [dependency]}}
    )
    state = tmp_path / "state.db"
    cycle(state, world, clock, chunk_size)
    [cart] = world.v1_workloads(ns, "cart")
    world.update_workload(ns, cart["metadata"]["name"], {"endpoints": {"httpApi": SCHEMA}})

    cycle(state, world, clock, chunk_size)

    assert apis(state) == {("cart", "httpApi"): "web-cart-httpApi"}  # no ref left unresolved
    with Store.open(state, readonly=True) as store:
        [consumer] = [body for body in store.iter_entities() if body["metadata"]["name"] == "alpha"]
    assert consumer["spec"]["consumesApis"] == [f"api:{ns}/web-cart-httpApi"]


class TestStaleClaims:
    """`resolve_api_names` with `whole` claims (each owner's every API endpoint)."""

    def test_a_gone_endpoints_claim_decides_nothing_stored_or_pending_in_the_page(self) -> None:
        gone = ApiClaim("acme", ("web", "cart"), "httpapi", "web-cart-httpapi")
        live = ApiClaim("acme", ("web", "cart"), "httpApi", "web-cart-httpApi")
        index = RowsIndex()
        index.apply(resolve_api_names(IndexOnly(index), [gone, live], hashed_name)[1].index)
        pending: Pending = {}
        resolve_api_names(IndexOnly(RowsIndex()), [gone], hashed_name, pending)  # in the page

        names, harvest, displaced, lost = resolve_api_names(
            IndexOnly(index), [live], hashed_name, pending, whole=True
        )

        assert names == {("web", "cart", "httpApi"): "web-cart-httpApi"}
        released = [row.key for row in harvest.index if row.value is None]
        assert released == ["acme/web-cart-httpapi|web/cart/httpapi"]
        # the released claim held the name: its API leaves with the page (one name but for
        # case, two refs otherwise); the live one had its hashed name, which leaves too
        assert (displaced, lost) == ([], [(gone.sort_key, live.sort_key)])
        assert harvest.removals == [f"api:acme/{hashed('web', 'cart', 'httpApi')}"]

    def test_without_whole_claims_a_stored_one_still_decides(self) -> None:
        gone = ApiClaim("acme", ("web", "cart"), "httpapi", "web-cart-httpapi")
        live = ApiClaim("acme", ("web", "cart"), "httpApi", "web-cart-httpApi")
        index = RowsIndex()
        index.apply(resolve_api_names(IndexOnly(index), [gone, live], hashed_name)[1].index)

        names, _, _, _ = resolve_api_names(IndexOnly(index), [live], hashed_name)

        assert names == {("web", "cart", "httpApi"): hashed("web", "cart", "httpApi")}


class TestLostNames:
    """Which claims lost the plain name they held: their entities under it are to go."""

    CASED = ApiClaim("acme", ("p", "c"), "x-Api", "p-c-x-Api")
    NEWCOMER = ApiClaim("acme", ("p", "c-x"), "api", "p-c-x-api")

    def held_by_cased(self) -> RowsIndex:
        index = RowsIndex()
        index.apply(resolve_api_names(IndexOnly(index), [self.CASED], hashed_name)[1].index)
        return index

    def test_a_holder_outside_the_claims_is_displaced_and_loses_its_name(self) -> None:
        _, _, displaced, lost = resolve_api_names(
            IndexOnly(self.held_by_cased()), [self.NEWCOMER], hashed_name, whole=True
        )

        assert (displaced, lost) == ([("p", "c")], [(("p", "c", "x-Api"), ("p", "c-x", "api"))])

    def test_a_holder_among_the_claims_loses_its_name_and_is_not_read_again(self) -> None:
        names, _, displaced, lost = resolve_api_names(
            IndexOnly(self.held_by_cased()), [self.CASED, self.NEWCOMER], hashed_name, whole=True
        )

        assert names[("p", "c-x", "api")] == "p-c-x-api"
        assert (displaced, lost) == ([], [(("p", "c", "x-Api"), ("p", "c-x", "api"))])

    def test_a_lost_name_that_is_the_holders_own_is_not_removed(self) -> None:
        """(`a-b`, `c`, `e`) and (`a`, `b-c`, `e`) are both `a-b-c-e`: the holder's entity has
        the lost name's ref, and a stale claim that still says it holds (its owner's re-read
        found it gone) must not take the holder's entity with it."""
        stale = ApiClaim("shop", ("a-b", "c"), "e", "a-b-c-e")
        holder = ApiClaim("shop", ("a", "b-c"), "e", "a-b-c-e")
        newcomer = ApiClaim("shop", ("a", "b"), "c-E", "a-b-c-E")
        index = RowsIndex()
        index.apply(resolve_api_names(IndexOnly(index), [stale], hashed_name)[1].index)
        index.apply(resolve_api_names(IndexOnly(index), [holder], hashed_name)[1].index)
        index.apply([_holding(stale)])  # its owner's re-read found nothing: never rewritten

        _, _, _, lost = resolve_api_names(IndexOnly(index), [newcomer], hashed_name, whole=True)

        assert lost == [(stale.sort_key, holder.sort_key)]
        assert resources_v1.lost_api_refs("shop", lost) == []

    def test_a_holder_that_keeps_its_name_loses_nothing(self) -> None:
        _, harvest, displaced, lost = resolve_api_names(
            IndexOnly(self.held_by_cased()), [self.CASED], hashed_name, whole=True
        )

        assert (displaced, lost, harvest.removals) == ([], [], [])

    def test_a_claim_that_takes_the_name_it_waited_on_removes_its_hashed_api(self) -> None:
        """`c`'s `x-Api` waits with a hashed name while `c-x`'s `api` holds; `c-x` mapped
        without it, `c`'s API takes the plain name, and its entity under the hashed name leaves
        in the same page (one endpoint, one API), as the holder's under the plain name does."""
        index = self.held_by_cased()
        pending: Pending = {}
        for claim in (self.NEWCOMER, self.CASED):  # the holder displaced, read again
            made = resolve_api_names(IndexOnly(index), [claim], hashed_name, pending)
            index.apply(made[1].index)
        other = ApiClaim("acme", ("p", "c-x"), "web", "p-c-x-web")

        names, harvest, _, lost = resolve_api_names(
            IndexOnly(index), [other, self.CASED], hashed_name, whole=True
        )

        assert names[self.CASED.sort_key] == "p-c-x-Api"
        assert lost == [(self.NEWCOMER.sort_key, self.CASED.sort_key)]
        assert harvest.removals == [f"api:acme/{hashed('p', 'c', 'x-Api')}"]


def _holding(claim: ApiClaim) -> IndexEntry:
    """The claim's row as one that holds its plain name."""
    value = {"owner": list(claim.owner), "endpoint": claim.endpoint, "holds": True}
    return IndexEntry(CLAIMS, claim_key(claim), claim.group, value)


class RowsIndex:
    """Index rows in memory, read by group, as the store's lookup index keeps them."""

    def __init__(self) -> None:
        self.rows: dict[str, IndexEntry] = {}

    def apply(self, entries: list[IndexEntry]) -> None:
        for entry in entries:
            if entry.value is None:
                self.rows.pop(entry.key, None)
            else:
                self.rows[entry.key] = entry

    def by_group(self, table: str, groups: list[str]) -> dict[str, list[IndexEntry]]:
        return {
            group: sorted(
                (row for row in self.rows.values() if row.group == group),
                key=lambda row: row.key,
            )
            for group in groups
        }


@dataclass(frozen=True)
class IndexOnly:
    """What `resolve_api_names` reads of a walk: its index."""

    index: RowsIndex


def hashed_name(owner: tuple[str, ...], endpoint: str) -> str:
    return hashed(*owner, endpoint)


class TestANewcomerDisplacingACasedName:
    """Component `c-x`'s endpoint `api` and component `c`'s `x-Api` meet on one name up to
    case, `p-c-x-api`; the newcomer without capitals takes it, and `c`'s API moves to its
    hashed name. Its old entity leaves at once, and before the newcomer's is written: a reader
    that folds case (Backstage) would otherwise take the later delete of `p-c-x-Api` for the
    live `p-c-x-api`, and the export would hold both until then."""

    EXPECTED: ClassVar = {("c", "x-Api"): hashed("p", "c", "x-Api"), ("c-x", "api"): "p-c-x-api"}

    def start(
        self, state: Path, clock: FakeClock, chunk_size: int, rest: float = 1800.0
    ) -> tuple[World, str, int]:
        world, ns = world_with({("p", "c"): ["x-Api"]})
        cycle(state, world, clock, chunk_size, rest)
        assert apis(state) == {("c", "x-Api"): "p-c-x-Api"}
        world.add_component(ns, "p", "c-x", endpoints={"api": SCHEMA})
        with Store.open(state, readonly=True) as store:
            return world, ns, store.last_change_seq()

    def assert_no_twin(self, state: Path, ns: str, since: int) -> None:
        assert apis(state) == self.EXPECTED
        with Store.open(state, readonly=True) as store:
            refs = [body["metadata"]["name"] for body in store.iter_entities()]
            folded = {row.ref.lower(): row.op for row in store.changes(since)}
        assert len({ref.lower() for ref in refs}) == len(refs)
        assert folded[f"api:{ns}/p-c-x-api"] == "upsert"

    @pytest.mark.parametrize("chunk_size", [1, 100], ids=["a-component-a-page", "one-page"])
    def test_in_a_cycle(self, tmp_path: Path, clock: FakeClock, chunk_size: int) -> None:
        state = tmp_path / "state.db"
        world, ns, since = self.start(state, clock, chunk_size)

        cycle(state, world, clock, chunk_size)

        self.assert_no_twin(state, ns, since)

    def test_by_an_event(self, tmp_path: Path, clock: FakeClock) -> None:
        state = tmp_path / "state.db"
        world, ns, since = self.start(state, clock, 100, rest=86_400.0)
        config = config_for(state, 100, rest_length=86_400.0)
        provider = OpenChoreoProvider(config)
        body = {"kind": "Component", "name": "c-x", "namespace": ns, "action": "created"}
        parsed = parse_events(json.dumps([body]), provider)
        stored_events(state, PROVIDER, parsed.valid, clock)
        options = SimulatorOptions(
            api="v1", oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET
        )
        transport = simulator_transport(SimulatorApi(world, options, clock))
        providers = {PROVIDER: OpenChoreoProvider(config, transport=transport)}

        result = run_once(config, state, clock, providers=providers)

        assert (result.events.applied, result.providers[0].action.value) == (1, "waiting")
        self.assert_no_twin(state, ns, since)
