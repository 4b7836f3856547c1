"""Differential fuzzing of v1 events applied while a cycle is under way.

Each seed builds a small simulated world (one namespace; the clash-prone names and changes of
`event_fuzz_world.py`) and walks it in many short bursts: chunkSize 1-3, a burst ended after one
to three pages, or in the `latency` style by the simulator's 0.25 s a request against a
burstLength of 3-8 s. Between bursts the world changes and the events OpenChoreo's forwarder
posts are delivered in the seed's mode (`event_fuzz.py`'s, and `spread`: some held back for
later runs); in the `serve` style a change may come inside a listing request as well, its
events stored as `serve`'s webhook stores them and applied between the burst's pages. Listings
are served live, or from a snapshot of the world at their first page (`snapshot`, as
Kubernetes pages).

Checked after every run: no failed burst, no parked event, and `broken_invariant` (no case
twins, no two entities for one object, every ref resolves, the change log folds to the catalog,
the sweep deletes nothing the world has); and every entity's metadata and spec against a fresh
walk's whenever every change's events are applied: mid-cycle, at each cycle's end (the inbox
drained), after a last quiet cycle. A seed's first finding ends it, printed with whether it
heals (by the cycle's end, or one more cycle) and the steps that led to it; `--shrink` replays
ever fewer of them while the finding stays.

    python bench/event_fuzz_mid_cycle.py                     # seeds 0-39, 3 cycles (~1 minute)
    python bench/event_fuzz_mid_cycle.py --seeds 1000:1800 --seconds 900
    python bench/event_fuzz_mid_cycle.py --seeds 87:88 --shrink

Exits 1 if any seed differs, breaks an invariant or raises.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import event_fuzz
from event_fuzz import config_for, only_consumed_apis
from event_fuzz_core import PROVIDER, bodies, differences
from event_fuzz_mid_cycle_support import (
    Artefact,
    Finding,
    Listings,
    PausingProvider,
    RunStep,
    Step,
    broken_invariant,
    fresh_walk,
    inbox_counts,
    last_change_seq,
    parked_errors,
    shown_steps,
    shrink,
)
from event_fuzz_world import PROJECTS, Changes, Snapshot, events_between, project_adder, snapshot

from choreo_ingest.event_input import parse_events
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import SETTLE_SECONDS
from choreo_ingest.invocation import run_once
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.simulator import Hidden, NotFound, SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store
from choreo_ingest.testing import FakeClock

MODES = (*event_fuzz.MODES, "spread")
STYLES = ("pages", "latency", "serve")
LISTINGS = ("live", "snapshot")
MOST_RUNS = 300
"""Runs a cycle may take before it counts as never completing."""


@dataclass
class Outcome:
    seed: int
    settings: str
    counts: Counter[str]
    finding: Finding | None = None
    artefact: str | None = None
    healing: str = ""
    trace: list[Step] = field(default_factory=list)


class Fuzz:
    """One seed's world, clock and state file; `setup` walks a first cycle, `cycle` another
    with changes, and `replay` plays a recorded trace again on a fresh world of the seed."""

    def __init__(self, seed: int, tmp: Path, settings: tuple[str, str, str], deps: bool) -> None:
        self.seed, self.tmp = seed, tmp
        self.mode, self.style, listing = settings
        sizes = random.Random(seed)
        self.rng = random.Random(seed * 7919 + 1)
        self.clock = FakeClock()
        self.world = World.generate(1, sizes.randint(2, 3), sizes.randint(2, 4), seed=seed)
        self.ns = next(self.world.v1_namespaces())["metadata"]["name"]
        latency = 0.25 if self.style == "latency" else 0.0
        options = SimulatorOptions(
            api="v1", latency=latency, cursor_ttl=sizes.choice([None, 300.0, 120.0])
        )
        self.api = SimulatorApi(self.world, options, self.clock)
        self.state = tmp / "state.db"
        plain = config_for(self.state)
        incremental = replace(
            plain.incremental,
            chunk_size=sizes.randint(1, 3),
            max_concurrent_requests=1,
            reject_empty_source_collections=False,
            burst_length=sizes.choice([3.0, 5.0, 8.0]) if self.style == "latency" else 10.0,
            burst_interval=30.0,
        )
        self.config = replace(plain, openchoreo=replace(plain.openchoreo, incremental=incremental))
        self.transport = Listings(
            self.api, self.clock, self.at_listing, snapshots=listing == "snapshot"
        )
        self.arrived = threading.Event() if self.style == "serve" else None
        self.changes = Changes(self.rng, self.world, self.ns, deps)
        self.changes.kinds += ["move_workload"]  # a walk may index a moved one before its events
        self.deps, self.counts = deps, Counter[str]()
        self.trace: list[Step] = []
        self.sink = self.trace
        self.posted: list[dict[str, Any]] = []
        self.undelivered: list[dict[str, Any]] = []
        self.unsent_since: Snapshot | None = None
        self.uncovered: set[tuple[str, str]] = set()
        self.current: RunStep | None = None
        self.wanted: dict[int, list[Step]] | None = None
        self.listing_requests = self.changes_left = 0
        self.first_done = self.calm = False

    def setup(self) -> None:
        """A first cycle, no changes; then the clash-prone projects, made through events."""
        self.cycle(0.0, "first cycle")
        self.first_done = True
        self.trace.append(("mark", "first cycle done"))
        for name in PROJECTS[:2]:
            self.apply(f"add_project({name!r})", project_adder(name))
        self.deliver(now=True)
        self.settle()
        self.compare("setup")

    def replay(self, trace: list[Step]) -> None:
        for step in trace:
            self.play(step, check=True)
        if self.first_done and self.fair():
            self.compare("the replay's end")

    def play(self, step: Step, *, check: bool) -> None:
        kind = step[0]
        if kind == "mark":
            with Store.open(self.state, readonly=True) as store:
                self.first_done = store.last_cycle(PROVIDER, completed=True) is not None
            self.trace.append(step)
        elif kind == "do":
            self.apply(step[1], step[2])
        elif kind == "send":
            self.send(step[1], settled=step[2], covered=step[3])
        elif kind == "advance":
            self.advance(step[1])
        elif kind == "run":
            self.run(force=step[1].force, replaying=step[1])
            if check and self.first_done and self.fair():
                self.compare("a replayed run", mid=True)

    # -- driving -----------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.sink.append(("advance", seconds))
        self.clock.advance(seconds)

    def run(self, *, force: bool = False, replaying: RunStep | None = None) -> Any:
        if replaying is None:
            pause = self.rng.randint(1, 3) if self.style != "latency" else None
            self.wanted = None
        else:
            pause, self.wanted = replaying.pause, dict(replaying.mids)
        step = RunStep(force, pause)
        self.sink.append(("run", step))
        self.current, self.listing_requests = step, 0
        serve_changes = self.style == "serve" and not self.calm and self.rng.random() < 0.5
        self.changes_left = 1 if serve_changes else 0
        provider = PausingProvider(self.config, self.transport, self.clock, pause)
        seq_before = last_change_seq(self.state)
        try:
            result = run_once(
                self.config,
                self.state,
                self.clock,
                force=force,
                providers={PROVIDER: provider},
                rng=random.Random(self.seed),
                events_arrived=self.arrived,
            )
        finally:
            self.current = None
        [outcome] = result.providers
        self.counts["runs"] += 1
        step.result = (
            f"{outcome.action.value}, {outcome.pages} pages"
            + (", cycle completed" if outcome.cycle_completed else "")
            + f", {result.events.applied} events applied"
        )
        if outcome.action.value == "failed":
            raise Finding("a run", [f"burst failed: {outcome.error}"])
        if result.events.parked or inbox_counts(self.state).parked:
            errors = parked_errors(self.state)
            if all("do not fit in burstLength" in error for error in errors):
                raise Artefact(f"parked for burstLength: {errors}")
            raise Finding("a run", [f"event parked: {errors}"])
        swept = outcome.cycle_completed and outcome.entities_removed
        fair = self.fair()
        if problem := broken_invariant(
            self.state, fair=fair, swept_since=seq_before if swept else None, walked=self.fresh
        ):
            raise Finding("a run", [problem])
        return outcome

    def at_listing(self) -> None:
        """At each listing request of a run: in the `serve` style, maybe change the world and
        store the changes' events, as `serve` takes them in while its burst reads (the steps of
        a replayed run come back after the request of the same number)."""
        if self.current is None:
            return
        self.listing_requests += 1
        if self.wanted is not None:
            steps = self.wanted.get(self.listing_requests)
            if steps is None:
                return
        elif self.changes_left <= 0 or self.rng.random() < 0.6:
            return
        else:
            steps, self.changes_left = None, self.changes_left - 1
        made: list[Step] = []
        outer, self.sink = self.sink, made
        try:
            if steps is None:
                self.make_changes(self.rng.randint(1, 2))
                self.deliver(now=True, settled=False)
            else:
                for step in steps:
                    self.play(step, check=False)
            if self.arrived is not None:
                self.arrived.set()
        finally:
            self.sink = outer
        self.current.mids.append((self.listing_requests, made))

    def cycle(self, change_chance: float, label: str) -> None:
        outcome = self.run(force=True)
        runs = 1
        while not outcome.cycle_completed:
            if runs == MOST_RUNS:
                raise Finding(label, [f"the cycle does not complete in {MOST_RUNS} runs"])
            if self.rng.random() < change_chance:
                self.make_changes(self.rng.randint(1, 3))
                self.deliver(now=False)
            elif self.undelivered and self.rng.random() < 0.7:
                self.deliver(now=False)
            self.advance(self.config.incremental.burst_interval)
            outcome = self.run()
            runs += 1
            if self.first_done and self.fair():
                self.compare(f"{label}, mid-cycle (run {runs})", mid=True)
        self.counts["cycles"] += 1
        self.settle()
        if self.first_done:
            self.compare(f"{label}'s end")

    def settle(self) -> None:
        """Delivers what is left and drains the inbox (runs while resting burst nowhere)."""
        self.deliver(now=True)
        for _ in range(50):
            if inbox_counts(self.state).pending == 0:
                return
            self.advance(self.config.incremental.burst_interval)
            self.run()
        raise Finding("settling", ["the inbox never drains"])

    # -- changes and events ------------------------------------------------------------------

    def make_changes(self, wanted: int) -> None:
        made = 0
        for _ in range(wanted * 4):
            if made == wanted:
                return
            if (change := self.changes.pick()) is not None and self.apply(*change):
                made += 1

    def apply(self, text: str, change: Any) -> bool:
        """Whether the change changed the world (the simulator refuses one that does not
        apply); its events wait in `posted` for the next delivery."""
        before = snapshot(self.world, self.ns)
        with contextlib.suppress(ValueError, NotFound, Hidden):
            change(self.world, self.ns)
        posted = events_between(before, snapshot(self.world, self.ns), self.ns)
        if not posted:
            return False
        self.sink.append(("do", text, change))
        self.counts["changes"] += 1
        self.unsent_since = self.unsent_since or before
        self.uncovered |= {(e["kind"], e["name"]) for e in posted}
        self.posted += posted
        return True

    def deliver(self, *, now: bool, settled: bool = True) -> None:
        """Sends the events posted since the last delivery in the seed's mode; in `spread`,
        unless `now`, only some of them (the rest wait for a later delivery)."""
        posted, self.posted, self.undelivered = self.undelivered + self.posted, [], []
        if self.mode == "spread" and not now:
            cut = self.rng.randint(0, len(posted))
            posted, self.undelivered = posted[:cut], posted[cut:]
        if not posted:
            return
        changed, self.unsent_since = self.unsent_since or {}, None
        covered = {(e["kind"], e["name"]) for e in posted}
        # event_fuzz.Fuzz's delivery modes read only the rng, mode, world and namespace
        delivered = event_fuzz.Fuzz.in_mode(self, posted, changed)  # type: ignore[arg-type]
        self.send(delivered, settled=settled, covered=covered)

    def send(
        self, posted: list[dict[str, Any]], *, settled: bool, covered: set[tuple[str, str]]
    ) -> None:
        """Stores the events; `covered`: the objects whose changes they report (in the mode
        `comp_for_wl`, a workload's by its components' events)."""
        self.sink.append(("send", posted, settled, covered))
        self.uncovered -= covered
        self.counts["events"] += len(posted)
        parsed = parse_events(json.dumps(posted), OpenChoreoProvider(self.config))
        assert parsed.rejected == [], parsed.rejected
        stored_events(self.state, PROVIDER, parsed.valid, self.clock, ignored=parsed.ignored)
        if settled:
            self.clock.advance(SETTLE_SECONDS)

    # -- checks ------------------------------------------------------------------------------

    def fresh(self) -> dict[str, Any]:
        return fresh_walk(self.world, self.tmp, self.clock.now())

    def compare(self, where: str, *, mid: bool = False) -> None:
        problems = differences(bodies(self.state), self.fresh())
        self.counts["comparisons mid-cycle" if mid else "comparisons"] += 1
        if problems and self.deps and only_consumed_apis(problems):
            self.counts["consumesApis-only (documented)"] += 1
        elif problems:
            raise Finding(where, problems)

    def fair(self) -> bool:
        """Every change's events delivered and applied."""
        return not self.uncovered and inbox_counts(self.state).pending == 0


def healing(fuzz: Fuzz) -> str:
    """Whether the seed's catalog heals: once the cycle under way completes (no more changes,
    every event delivered and applied), or after one more full cycle."""
    fuzz.calm = True
    for label in ("when a cycle completes", "a cycle later"):
        fuzz.clock.advance(3600)
        outcome = fuzz.run(force=True)
        for _ in range(MOST_RUNS):
            if outcome.cycle_completed:
                break
            fuzz.clock.advance(30)
            outcome = fuzz.run()
        fuzz.settle()
        if not (left := differences(bodies(fuzz.state), fuzz.fresh())):
            return f"heals {label}"
    return f"stays: {left[0]}"


def replayed(seed: int, settings: tuple[str, str, str], trace: list[Step]) -> Finding | None:
    with tempfile.TemporaryDirectory() as tmp:
        fuzz = Fuzz(seed, Path(tmp), settings, deps=False)
        try:
            fuzz.replay(trace)
        except Finding as finding:
            return finding
        except Exception as error:  # a crash is a finding like any other
            return Finding("a replay", [f"exception: {error!r}"])
    return None


def play_seed(seed: int, settings: tuple[str, str, str], cycles: int, *, deps: bool) -> Outcome:
    outcome = Outcome(seed, ", ".join(settings), Counter())
    with tempfile.TemporaryDirectory() as tmp:
        fuzz = Fuzz(seed, Path(tmp), settings, deps)
        outcome.counts, outcome.trace = fuzz.counts, fuzz.trace
        try:
            fuzz.setup()
            for number in range(1, cycles + 1):
                fuzz.cycle(0.6, f"cycle {number}")
            fuzz.calm = True
            fuzz.cycle(0.0, "the quiet cycle")
        except Artefact as artefact:
            outcome.artefact = str(artefact)
        except Finding as finding:
            outcome.finding, outcome.trace = finding, list(fuzz.trace)
            try:
                outcome.healing = healing(fuzz)
            except (Finding, Artefact) as later:
                outcome.healing = f"while healing, {later}"
        except Exception:  # a crash is a finding like any other
            problem = "exception: " + traceback.format_exc(limit=8)
            outcome.finding, outcome.trace = Finding("a run", [problem]), list(fuzz.trace)
    return outcome


def report(outcome: Outcome, settings: tuple[str, str, str], *, last: int, shrinking: bool) -> None:
    if outcome.artefact:
        print(f"seed {outcome.seed} ({outcome.settings}): artefact, {outcome.artefact[:300]}")
        return
    assert outcome.finding is not None
    print(f"seed {outcome.seed} ({outcome.settings}) at {outcome.finding.where}:")
    for problem in outcome.finding.problems[:8]:
        print(f"  ! {problem}")
    print(f"  {outcome.healing}")
    if last:
        print(f"  the last {last} of {len(outcome.trace)} steps:")
        print("\n".join(shown_steps(outcome.trace[-last:], "    ")))
    if shrinking and not outcome.finding.problems[0].startswith("exception"):
        trace, found = outcome.trace, outcome.finding
        if (small := shrink(trace, found, partial(replayed, outcome.seed, settings))) is None:
            print("  shortest: none; replayed on a fresh world, the trace finds nothing")
        else:
            print(f"  shortest ({len(small)} steps):")
            print("\n".join(shown_steps(small, "    ")))
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:40", help="FIRST:END, END excluded (0:40)")
    parser.add_argument("--cycles", type=int, default=3, help="cycles with changes a seed (3)")
    parser.add_argument("--modes", default=",".join(MODES), help="delivery modes to cycle through")
    parser.add_argument("--styles", default=",".join(STYLES), help="burst styles to cycle through")
    parser.add_argument("--listings", default=",".join(LISTINGS), help="live, snapshot or both")
    parser.add_argument("--seconds", type=float, help="start no seed after this many seconds")
    parser.add_argument("--deps", action="store_true", help="change workload dependencies too")
    parser.add_argument("--shrink", action="store_true", help="shrink each finding")
    parser.add_argument("--last", type=int, default=12, help="steps printed before a finding")
    args = parser.parse_args()
    first, end = (int(part) for part in args.seeds.split(":"))
    chosen = [tuple(getattr(args, name).split(",")) for name in ("modes", "styles", "listings")]
    for name, known, picked in zip(
        ("modes", "styles", "listings"), (MODES, STYLES, LISTINGS), chosen, strict=True
    ):
        if unknown := set(picked) - set(known):
            parser.error(f"--{name}: unknown {sorted(unknown)}; known: {', '.join(known)}")
    modes, styles, listings = chosen
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    started = time.monotonic()
    totals: Counter[str] = Counter()
    failed: list[int] = []
    artefacts: list[int] = []
    for seed in range(first, end):
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            break
        settings = (
            modes[seed % len(modes)],
            styles[seed // len(modes) % len(styles)],
            listings[seed // (len(modes) * len(styles)) % len(listings)],
        )
        outcome = play_seed(seed, settings, args.cycles, deps=args.deps)
        totals += outcome.counts
        totals["seeds"] += 1
        if outcome.finding or outcome.artefact:
            (failed if outcome.finding else artefacts).append(seed)
            report(outcome, settings, last=args.last, shrinking=args.shrink)
    counted = ", ".join(f"{n} {what}" for what, n in totals.items() if what != "seeds")
    print(
        f"{totals['seeds']} seeds ({counted}) in {time.monotonic() - started:.0f} s:"
        f" {len(failed)} differ"
        + (f" (seeds {', '.join(map(str, failed))})" if failed else "")
        + (
            f"; {len(artefacts)} artefacts (seeds {', '.join(map(str, artefacts))})"
            if artefacts
            else ""
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
