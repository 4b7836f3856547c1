"""What the differential fuzzers of events share, whichever API generation they play:
`event_fuzz.py` (v1) and `event_fuzz_orgs.py` (org era) each subclass `Fuzz` with their world's
changes, snapshots, forwarder events and delivery modes, and hand it to `main`.

A seed's `Fuzz` mirrors its world with one cycle, then plays rounds: random changes, the events
the forwarder posts for them in the seed's delivery mode, one `run` that applies them, and a
comparison of every entity's metadata and spec with a fresh walk's. `replay` plays a recorded
trace again on a fresh world of the seed, and `shrink` drops changes and events from it while
the replay still differs in the way its first difference does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import structlog

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.event_input import parse_events
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import SETTLE_SECONDS
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.simulator import Hidden, NotFound, SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store
from choreo_ingest.testing import FakeClock

from sim_support import IN_PROCESS_URL, simulator_transport

PROVIDER = "openchoreo"
CYCLE_EVERY = 300.0
"""Simulated seconds between full cycles: events then land on a catalog a cycle refreshed."""

Bodies = dict[str, Any]
Event = dict[str, Any]
Change = tuple[str, Callable[..., Any]]
"""A world change: its text for the report, and the function that makes it."""


class RandomChanges(Protocol):
    def pick(self) -> Change | None:
        """One change that may apply to the world as it is, or None for a kind that does not."""


@dataclass
class Round:
    changes: list[Change]
    events: list[Event]
    apart: bool


@dataclass
class Outcome:
    seed: int
    mode: str
    rounds: int
    problems: list[str]
    documented: int = 0
    trace: list[Round] = field(default_factory=list)


def config_for(state: Path, api: str) -> Config:
    settings = replace(IncrementalConfig(), chunk_size=100)
    return Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api=api, incremental=settings),
        state_path=state,
        providers=(PROVIDER,),
    )


def run(config: Config, api: SimulatorApi, clock: FakeClock, *, force: bool) -> RunResult:
    assert config.state_path is not None
    provider = OpenChoreoProvider(config, transport=simulator_transport(api))
    return run_once(config, config.state_path, clock, force=force, providers={PROVIDER: provider})


def bodies(state: Path) -> Bodies:
    with Store.open(state, readonly=True) as store:
        return {
            f"{b['kind']}:{b['metadata']['namespace']}/{b['metadata']['name']}": {
                "metadata": b["metadata"],
                "spec": b["spec"],
            }
            for b in store.iter_entities()
        }


def differences(stored: Bodies, walked: Bodies) -> list[str]:
    found = []
    for ref in sorted(set(stored) | set(walked)):
        if ref not in stored:
            found.append(f"missing {ref}")
        elif ref not in walked:
            found.append(f"extra {ref}")
        elif stored[ref] != walked[ref]:
            fields = [
                f"{part}.{key}: {json.dumps(stored[ref][part].get(key))}"
                f" != walk {json.dumps(walked[ref][part].get(key))}"
                for part in ("metadata", "spec")
                for key in sorted(set(stored[ref][part]) | set(walked[ref][part]))
                if stored[ref][part].get(key) != walked[ref][part].get(key)
            ]
            found.append(f"differs {ref}: " + "; ".join(fields))
    return found


def same_object(a: Event, b: Event) -> bool:
    return (a["kind"], a.get("namespace"), a["name"]) == (b["kind"], b.get("namespace"), b["name"])


def droppable(events: list[Event], j: int) -> bool:
    """Whether leaving event j out keeps a delivery the fuzzer makes: one of two equal events,
    or a `deleted` with a later event about its object (lost)."""
    e = events[j]
    if any(o == e for k, o in enumerate(events) if k != j):
        return True
    return e["action"] == "deleted" and any(same_object(o, e) for o in events[j + 1 :])


def kinds(problems: list[str]) -> set[tuple[str, ...]]:
    """What differs, by kind: ("missing", "API"), ("differs", "Component"), ..."""
    return {tuple(problem.partition(":")[0].split(" ")[:2]) for problem in problems}


def shown(e: Event) -> tuple[str, ...]:
    """An event as the report shows it: (kind, name, project if it names one, action)."""
    project = (e["project"],) if "project" in e else ()
    return (e["kind"], e["name"], *project, e["action"])


class Fuzz(ABC):
    """One seed's world, state file and clock, for one API generation: a subclass says how
    its world is changed, seen and told of (`random_changes`, `first_changes`, `change`,
    `snapshot`, `posted_between`, `in_mode`) and what a replayed round delivers
    (`redelivered`); `play` runs a round and returns the differences it leaves."""

    modes: ClassVar[tuple[str, ...]]
    """The delivery modes it knows."""
    config_api: ClassVar[str]
    """The config's `openchoreo.api`."""
    simulator_options: ClassVar[SimulatorOptions]
    options: ClassVar[dict[str, dict[str, Any]]] = {}
    """The generation's own command-line options: flag -> `add_argument`'s keywords."""

    def __init__(self, seed: int, tmp: Path, mode: str) -> None:
        self.rng = random.Random(seed)
        self.mode, self.tmp = mode, tmp
        self.clock = FakeClock()
        self.world = World.generate(1, 2, 3, seed=seed)
        self.api = SimulatorApi(self.world, self.simulator_options, self.clock)
        self.config = config_for(tmp / "state.db", self.config_api)
        self.changes = self.random_changes()
        self.trace: list[Round] = []
        self.cycle()
        self.deliver(self.apply(self.first_changes())[1], apart=False)

    @abstractmethod
    def random_changes(self) -> RandomChanges:
        """What picks a round's changes."""

    @abstractmethod
    def first_changes(self) -> list[Change]:
        """The changes made through events before the first round (clash-prone projects)."""

    @abstractmethod
    def change(self, fn: Callable[..., Any]) -> None:
        """Makes a change's function change the world."""

    @abstractmethod
    def snapshot(self) -> Any:
        """The objects the forwarder watches, as the API shows them now."""

    @abstractmethod
    def posted_between(self, before: Any, after: Any) -> list[Event]:
        """The events the forwarder posts for what changed between two snapshots."""

    @abstractmethod
    def in_mode(self, posted: list[Event], changed: Any) -> list[Event]:
        """The round's events as the seed's delivery mode hands them over (`changed`: the
        snapshot before the round's changes)."""

    @abstractmethod
    def redelivered(self, recorded: list[Event], posted: list[Event], changed: Any) -> list[Event]:
        """What a replayed round delivers: its recorded events (`recorded`) that still fit
        the events its changes post now (`posted`; `changed`: the snapshot before them), then
        those of the changes' own events that the kept ones leave out."""

    def documented(self, problems: list[str]) -> bool:
        """Whether the differences are documented ones, counted apart (the next cycle mends
        them)."""
        return False

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> FuzzFactory:
        """What makes a seed's `Fuzz` (seed, scratch directory, mode) under those options."""
        return cls

    @classmethod
    def summary_tail(cls, args: argparse.Namespace, documented: int) -> str:
        """What the summary line says after the seeds that differ."""
        return ""

    def cycle(self) -> None:
        self.clock.advance(1)
        assert run(self.config, self.api, self.clock, force=True).providers[0].cycle_completed
        self.last_cycle = self.clock.now()

    def cycle_if_due(self) -> None:
        if self.clock.now() - self.last_cycle > CYCLE_EVERY:
            self.cycle()

    def apply(self, changes: list[Change]) -> tuple[list[Change], list[Event]]:
        """The changes that changed the world (the simulator refuses one that does not apply),
        and the events the forwarder posts for them."""
        done, posted = [], []
        for text, fn in changes:
            before = self.snapshot()
            with contextlib.suppress(ValueError, NotFound, Hidden):
                self.change(fn)
            if made := self.posted_between(before, self.snapshot()):
                done.append((text, fn))
                posted += made
        return done, posted

    def deliver(self, posted: list[Event], *, apart: bool) -> None:
        assert self.config.state_path is not None
        for batch in [[e] for e in posted] if apart else [posted]:
            if not batch:
                continue
            parsed = parse_events(json.dumps(batch), OpenChoreoProvider(self.config))
            assert parsed.rejected == [], parsed.rejected
            stored_events(
                self.config.state_path, PROVIDER, parsed.valid, self.clock, ignored=parsed.ignored
            )
            self.clock.advance(SETTLE_SECONDS)
            result = run(self.config, self.api, self.clock, force=False)
            assert result.events.parked == 0, result.events
            [outcome] = result.providers
            assert outcome.action == "waiting" or outcome.cycle_completed, outcome

    def compare(self) -> list[str]:
        """The differences between the stored catalog and a fresh walk's of the world."""
        fresh = self.tmp / f"fresh-{len(self.trace)}.db"
        api = SimulatorApi(self.world, self.simulator_options, self.clock)
        walk = run(config_for(fresh, self.config_api), api, self.clock, force=True)
        assert walk.providers[0].cycle_completed
        walked = bodies(fresh)
        for path in self.tmp.glob(f"{fresh.name}*"):
            path.unlink()
        assert self.config.state_path is not None
        return differences(bodies(self.config.state_path), walked)

    def play(self) -> list[str]:
        self.cycle_if_due()
        before = self.snapshot()
        wanted = self.rng.randint(1, 4)
        picked: list[Change] = []
        posted: list[Event] = []
        for _ in range(wanted * 4):
            if len(picked) == wanted:
                break
            if (change := self.changes.pick()) is not None:
                done, made = self.apply([change])
                picked, posted = picked + done, posted + made
        posted = self.in_mode(posted, before)
        apart = self.rng.random() < 0.3
        self.trace.append(Round(picked, posted, apart))
        self.deliver(posted, apart=apart)
        return self.compare()


FuzzFactory = Callable[[int, Path, str], Fuzz]
"""What makes a seed's `Fuzz`: (seed, scratch directory, mode)."""


def replay(
    new_fuzz: FuzzFactory, seed: int, trace: list[Round], tmp: Path
) -> tuple[list[str], list[Round]]:
    """The differences left by the first round of `trace` that leaves any, replayed on a fresh
    world of the same seed, and the rounds as delivered (`Fuzz.redelivered`). No differences
    if none is left or a change no longer applies."""
    fuzz, delivered = new_fuzz(seed, tmp, "plain"), list[Round]()
    for step in trace:
        fuzz.cycle_if_due()
        changed = fuzz.snapshot()
        done, posted = fuzz.apply(step.changes)
        if len(done) != len(step.changes):
            return [], delivered
        kept = fuzz.redelivered(step.events, posted, changed)
        delivered.append(Round(step.changes, kept, step.apart))
        fuzz.deliver(kept, apart=step.apart)
        if problems := fuzz.compare():
            return problems, delivered
    return [], delivered


def shrink(new_fuzz: FuzzFactory, seed: int, trace: list[Round], tmp: Path) -> list[Round] | None:
    """Drops changes, then events a delivery may lose, then a round's one-at-a-time delivery,
    while the replay still differs in the way its first difference does (a recorded event kept
    for a change that no longer makes it may differ otherwise: a `deleted` of an object that
    stays); the rounds of the shortest as delivered, or None if the whole trace does not differ
    when replayed."""
    rounds = [Round(list(r.changes), list(r.events), r.apart) for r in trace]

    def smaller() -> Iterator[list[Round]]:
        for i, step in enumerate(rounds):
            for j in range(len(step.changes)):
                changes = step.changes[:j] + step.changes[j + 1 :]
                kept = [Round(changes, step.events, step.apart)] if changes else []
                yield [*rounds[:i], *kept, *rounds[i + 1 :]]
        for i, step in enumerate(rounds):
            for j in range(len(step.events)):
                if droppable(step.events, j):
                    events = step.events[:j] + step.events[j + 1 :]
                    yield [*rounds[:i], Round(step.changes, events, step.apart), *rounds[i + 1 :]]
        for i, step in enumerate(rounds):
            if step.apart:
                yield [*rounds[:i], Round(step.changes, step.events, False), *rounds[i + 1 :]]

    def replayed(candidate: list[Round]) -> tuple[list[str], list[Round]]:
        with tempfile.TemporaryDirectory(dir=tmp) as scratch:
            return replay(new_fuzz, seed, candidate, Path(scratch))

    problems, shortest = replayed(rounds)
    if not problems:
        return None
    target = kinds(problems[:1])
    shrunk = True
    while shrunk:
        shrunk = False
        for candidate in smaller():
            problems, delivered = replayed(candidate)
            if problems and target <= kinds(problems):
                rounds, shortest, shrunk = candidate, delivered, True
                break
    return shortest


def play_seed(new_fuzz: FuzzFactory, seed: int, rounds: int, modes: tuple[str, ...]) -> Outcome:
    mode = modes[seed % len(modes)]
    outcome = Outcome(seed, mode, 0, [])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fuzz = new_fuzz(seed, Path(tmp), mode)
            outcome.trace = fuzz.trace
            while outcome.rounds < rounds:
                outcome.rounds += 1
                problems = fuzz.play()
                if problems and fuzz.documented(problems):
                    outcome.documented += 1
                    fuzz.cycle()
                elif problems:
                    outcome.problems = problems
                    break
        except Exception:  # a crash is a finding like any difference
            outcome.problems = ["exception: " + traceback.format_exc(limit=8)]
    return outcome


def report(new_fuzz: FuzzFactory, outcome: Outcome, *, shrinking: bool) -> None:
    print(f"seed {outcome.seed} ({outcome.mode}) differs after {outcome.rounds} rounds:")
    for step in outcome.trace:
        print(f"  changes: {[text for text, _ in step.changes]}")
        print(
            f"  events{' (one at a time)' if step.apart else ''}: {list(map(shown, step.events))}"
        )
    crashed = outcome.problems[0].startswith("exception")
    for problem in outcome.problems[:8]:
        print(f"  ! {problem if crashed else problem[:600]}")
    if shrinking and not crashed:
        with tempfile.TemporaryDirectory() as tmp:
            small = shrink(new_fuzz, outcome.seed, outcome.trace, Path(tmp))
        if small is None:
            print("  shortest: none; replayed on a fresh world in order, it does not differ")
        else:
            print("  shortest:")
            for step in small:
                apart = " (one at a time)" if step.apart else ""
                print(f"    {[text for text, _ in step.changes]} then")
                print(f"      {list(map(shown, step.events))}{apart}")
    sys.stdout.flush()


def main(fuzz: type[Fuzz], description: str) -> int:
    """The command line of a generation's fuzzer: plays the seeds, reports each that differs,
    prints the summary line; 1 if any seed differs."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--seeds", default="0:40", help="FIRST:END, END excluded (0:40)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds a seed (12)")
    known = fuzz.modes
    parser.add_argument("--modes", default=",".join(known), help="delivery modes to cycle through")
    parser.add_argument("--seconds", type=float, help="start no seed after this many seconds")
    for flag, settings in fuzz.options.items():
        parser.add_argument(flag, **settings)
    parser.add_argument("--shrink", action="store_true", help="shrink each difference found")
    args = parser.parse_args()
    first, end = (int(part) for part in args.seeds.split(":"))
    modes = tuple(args.modes.split(","))
    if unknown := set(modes) - set(known):
        parser.error(f"--modes: unknown {sorted(unknown)}; known: {', '.join(known)}")
    new_fuzz = fuzz.from_options(args)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    started = time.monotonic()
    seeds = rounds = documented = 0
    failed = []
    for seed in range(first, end):
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            break
        outcome = play_seed(new_fuzz, seed, args.rounds, modes)
        seeds, rounds = seeds + 1, rounds + outcome.rounds
        documented += outcome.documented
        if outcome.problems:
            failed.append(seed)
            report(new_fuzz, outcome, shrinking=args.shrink)
    elapsed = time.monotonic() - started
    print(
        f"{seeds} seeds, {rounds} rounds in {elapsed:.0f} s: {len(failed)} differ"
        + (f" (seeds {', '.join(map(str, failed))})" if failed else "")
        + fuzz.summary_tail(args, documented)
    )
    return 1 if failed else 0
