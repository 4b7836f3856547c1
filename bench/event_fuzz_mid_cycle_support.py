"""What `event_fuzz_mid_cycle.py` plays with, checks and reports.

`Listings` serves the simulator to the provider and calls back at every listing request (where
the fuzzer may change the world, as it changes between the pages of `serve`'s bursts); with
`snapshots` it serves every page of a listing from the world as it stood at the listing's first
page, as Kubernetes does. `PausingProvider` ends its burst after a few pages.
`broken_invariant` says what must hold after any run, whichever events were delivered. A seed's
steps (`Step`) are kept to print (`shown_steps`) and to replay: `shrink` replays ever fewer.
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from event_fuzz import config_for
from event_fuzz_core import PROVIDER, bodies, run

from choreo_ingest.config import Config
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import InboxCounts, Store
from choreo_ingest.testing import FakeClock

from sim_support import simulator_transport

LISTED = ("namespaces", "projects", "components", "workloads")
LARGEST_PAGE = 100
V1_DEFAULT_PAGE = 20
IDENTITY = {
    "API": ("namespace", "project", "component", "endpoint-name"),
    "Component": ("namespace", "component"),
}
"""The `openchoreo.io/` annotations that name the one OpenChoreo object an entity maps."""
SHRINK_TRIES = 400

Step = tuple[Any, ...]
"""("do", text, change), ("send", events, settled, objects covered), ("advance", seconds),
("mark", text) or ("run", RunStep): what a seed did, in order, to print and to replay."""


@dataclass
class RunStep:
    force: bool
    pause: int | None
    """Pages before the burst ends (None: its burstLength ends it)."""
    mids: list[tuple[int, list[Step]]] = field(default_factory=list)
    """The steps made inside the run, each after the listing request of its number."""
    result: str = ""


class Finding(Exception):
    """A difference from a fresh walk, a broken invariant, a failed burst or a parked event."""

    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(f"{where}: {problems[0]}")
        self.where, self.problems = where, problems


class Artefact(Exception):
    """An event parked because its re-reads do not fit in the fuzzer's burstLength."""


class Listings(httpx.BaseTransport):
    """The simulator in process; `on_listing()` is called before each listing request is
    answered. With `snapshots`, a listing's pages come from the items it had at its first page
    (cursors `snapshot:<listing>:<offset>`, never expiring; the latency once a request)."""

    def __init__(
        self,
        api: SimulatorApi,
        clock: FakeClock,
        on_listing: Callable[[], None],
        *,
        snapshots: bool,
    ) -> None:
        self.live = simulator_transport(api)
        self.latency = api.options.latency
        self.clock, self.on_listing = clock, on_listing
        unhurried = SimulatorApi(api.world, SimulatorOptions(api="v1", cursor_ttl=None), clock)
        self.reader = simulator_transport(unhurried) if snapshots else None
        self.listings: list[list[Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rstrip("/")
        if not (path.startswith("/api/v1/") and path.rpartition("/")[2] in LISTED):
            return self.live.handle_request(request)
        self.on_listing()
        if self.reader is None:
            return self.live.handle_request(request)
        self.clock.sleep(self.latency)
        query = dict(request.url.params)
        if "cursor" in query:
            _, listed, offset = query.pop("cursor").split(":")
            listing, start = int(listed), int(offset)
        else:
            first = self._read(request, query, None)
            if first.status_code != 200:
                return first
            listing, start = len(self.listings), 0
            self.listings.append(self._every_item(request, query, first.json()))
        items = self.listings[listing]
        end = start + min(int(query.get("limit", V1_DEFAULT_PAGE)), LARGEST_PAGE)
        more = {"nextCursor": f"snapshot:{listing}:{end}"} if end < len(items) else {}
        return httpx.Response(200, json={"items": items[start:end], "pagination": more})

    def _read(
        self, request: httpx.Request, query: dict[str, str], cursor: str | None
    ) -> httpx.Response:
        params = {k: v for k, v in query.items() if k != "limit"} | {"limit": LARGEST_PAGE}
        if cursor is not None:
            params["cursor"] = cursor
        assert self.reader is not None
        read: httpx.Response = self.reader.handle_request(
            httpx.Request("GET", request.url.copy_with(params=params), headers=request.headers)
        )
        return read

    def _every_item(self, request: httpx.Request, query: dict[str, str], page: Any) -> list[Any]:
        items = list(page["items"])
        while cursor := page["pagination"].get("nextCursor"):
            page = self._read(request, query, cursor).json()
            items += page["items"]
        return copy.deepcopy(items)


class PausingProvider(OpenChoreoProvider):
    """Ends its burst after `pages` pages (None: never): the clock moves past burstLength."""

    def __init__(
        self, config: Config, transport: httpx.BaseTransport, clock: FakeClock, pages: int | None
    ) -> None:
        super().__init__(config, transport=transport)
        self.clock, self.pages_left = clock, pages
        self.burst_length = config.incremental.burst_length

    def next(self, context: Any, cursor: Any) -> Any:
        page = super().next(context, cursor)
        if self.pages_left is not None:
            self.pages_left -= 1
            if self.pages_left <= 0:
                self.pages_left = None
                self.clock.advance(self.burst_length + 1)
        return page


def fresh_walk(world: World, tmp: Path, now: float) -> dict[str, Any]:
    """What a fresh walk of the world as it is now writes (on a clock of its own)."""
    path = tmp / "fresh.db"
    clock = FakeClock(start=now)
    api = SimulatorApi(world, SimulatorOptions(api="v1"), clock)
    assert run(config_for(path), api, clock, force=True).providers[0].cycle_completed
    walked = bodies(path)
    for leftover in tmp.glob("fresh.db*"):
        leftover.unlink()
    return walked


def inbox_counts(state: Path) -> InboxCounts:
    with Store.open(state, readonly=True) as store:
        return store.inbox_counts(PROVIDER)


def last_change_seq(state: Path) -> int:
    if not state.exists():
        return 0
    with Store.open(state, readonly=True) as store:
        return store.last_change_seq()


def parked_errors(state: Path) -> list[str]:
    """The last error of each parked event (the store reads no more of them than a count)."""
    with closing(sqlite3.connect(state)) as conn:  # `with` alone leaves it open
        rows = conn.execute("SELECT last_error FROM event_inbox WHERE parked = 1").fetchall()
    return [row[0] or "" for row in rows]


def broken_invariant(
    state: Path, *, fair: bool, swept_since: int | None, walked: Callable[[], dict[str, Any]]
) -> str | None:
    """What breaks an invariant in the catalog of `state`, or None. `fair`: every change's
    events were delivered and applied (only then is a walk's own leftover a fault: the old
    spelling of a renamed API waits for the sweep by design). `swept_since`: the change-log
    seq a completing run that removed entities began after (the sweep must delete nothing
    the world has: `walked()`, a fresh walk's bodies)."""
    with Store.open(state, readonly=True) as store:
        entities = list(store.iter_entities())
        pruned, _ = store.change_bounds()
        changes = store.changes(0) if pruned == 0 else None
    refs = {
        f"{b['kind'].lower()}:{b['metadata']['namespace']}/{b['metadata']['name']}"
        for b in entities
    }
    folded: dict[str, str] = {}
    for ref in sorted(refs):
        if ref.lower() in folded and fair:
            return f"two refs for one name: {ref} and {folded[ref.lower()]}"
        folded[ref.lower()] = ref
    objects: dict[tuple[str, ...], str] = {}
    for body in entities:
        ref = f"{body['kind']}:{body['metadata']['namespace']}/{body['metadata']['name']}"
        if body["kind"] not in IDENTITY:
            continue
        annotations = body["metadata"].get("annotations", {})
        key = (
            body["kind"],
            *(annotations.get(f"openchoreo.io/{a}", "") for a in IDENTITY[body["kind"]]),
        )
        if key in objects and fair:
            return f"one object, two entities: {key}: {objects[key]} and {ref}"
        objects[key] = ref
    for body in entities:
        spec, ns = body["spec"], body["metadata"]["namespace"]
        wanted = [
            f"api:{ns}/{api}" if ":" not in api else api for api in spec.get("providesApis", [])
        ]
        if body["kind"] in ("Component", "API") and spec.get("system"):
            wanted.append(f"system:{ns}/{spec['system']}")
        if body["kind"] == "System" and spec.get("domain"):
            wanted.append(f"domain:{spec['domain']}")
        for ref in wanted:
            if ref.lower() not in folded:
                return f"unresolved ref {ref} in {body['kind']}:{ns}/{body['metadata']['name']}"
    if changes is None:
        return None
    last_op = {row.ref: row.op for row in changes}
    logged = {ref for ref, op in last_op.items() if op != "delete"}
    if logged != refs:
        return (
            f"change log != catalog: log only {sorted(logged - refs)[:5]},"
            f" catalog only {sorted(refs - logged)[:5]}"
        )
    if swept_since is not None:
        there = {ref.partition(":")[0].lower() + ":" + ref.partition(":")[2] for ref in walked()}
        deleted = {row.ref for row in changes if row.seq > swept_since and row.op == "delete"}
        if wrongly := sorted(deleted & there - refs):
            return f"the cycle's end deleted what the world has: {wrongly[:5]}"
    return None


def shown_steps(steps: list[Step], indent: str) -> list[str]:
    shown = []
    for kind, *rest in steps:
        if kind == "do":
            shown.append(f"{indent}world.{rest[0]}")
        elif kind == "send":
            events = [(e["kind"], e["name"], e["action"]) for e in rest[0]]
            shown.append(f"{indent}events{'' if rest[1] else ' (not settled)'}: {events}")
        elif kind == "advance":
            shown.append(f"{indent}advance {rest[0]:g} s")
        elif kind == "mark":
            shown.append(f"{indent}-- {rest[0]}")
        else:
            run: RunStep = rest[0]
            pages = "" if run.pause is None else f", ended after {run.pause} pages"
            shown.append(f"{indent}run{' --force' if run.force else ''}{pages}: {run.result}")
            for number, made in run.mids:
                shown.append(f"{indent}  at its listing request {number}:")
                shown += shown_steps(made, indent + "    ")
    return shown


def same_finding(original: Finding, found: Finding | None) -> bool:
    """Whether `found` shows what `original` did: one line of a difference from the walk
    alike, or else a problem of the same kind (its text up to the first colon)."""
    if found is None:
        return False
    if set(original.problems) & set(found.problems):
        return True
    walk = ("missing ", "extra ", "differs ")
    first, again = original.problems[0], found.problems[0]
    return not first.startswith(walk) and first.partition(":")[0] == again.partition(":")[0]


def shrink(
    trace: list[Step], finding: Finding, replayed: Callable[[list[Step]], Finding | None]
) -> list[Step] | None:
    """Drops stretches of top-level steps (halving their length), then the steps made inside
    runs, while `replayed` still finds what the seed found; None if the whole trace does not."""
    tries = 0

    def still(candidate: list[Step]) -> bool:
        nonlocal tries
        tries += 1
        return same_finding(finding, replayed(candidate))

    if not still(trace):
        return None
    shrunk = True
    while shrunk and tries < SHRINK_TRIES:
        shrunk = False
        size = max(1, len(trace) // 2)
        while size >= 1 and tries < SHRINK_TRIES:
            start = 0
            while start < len(trace) and tries < SHRINK_TRIES:
                if still(candidate := trace[:start] + trace[start + size :]):
                    trace, shrunk = candidate, True
                else:
                    start += size
            size //= 2
        for candidate in _without_one_mid_step(trace):
            if tries >= SHRINK_TRIES:
                break
            if still(candidate):
                trace, shrunk = candidate, True
                break
    return trace


def _without_one_mid_step(trace: list[Step]) -> Iterator[list[Step]]:
    """The trace with one listing request's steps left out of a run, or one step of them."""
    for i, (kind, *rest) in enumerate(trace):
        if kind != "run":
            continue
        run: RunStep = rest[0]
        for j, (number, steps) in enumerate(run.mids):
            fewer = [run.mids[:j] + run.mids[j + 1 :]]
            fewer += [
                [*run.mids[:j], (number, steps[:k] + steps[k + 1 :]), *run.mids[j + 1 :]]
                for k in range(len(steps))
            ]
            for mids in fewer:
                yield [*trace[:i], ("run", replace(run, mids=mids)), *trace[i + 1 :]]
