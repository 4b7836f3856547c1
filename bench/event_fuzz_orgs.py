"""Differential fuzzing of org-era events: the catalog events leave against a fresh walk's.

`event_fuzz.py`'s loop for the organization-era API (`openchoreo.api: orgs`). Each seed builds
a small simulated world (one organization, clash-prone project, component and endpoint names:
component `a` with endpoint `b-c` and component `a-b` with endpoint `c` both give the API name
`a-b-c`), mirrors it with one completed cycle, then plays rounds: a few random changes
(components made, deleted, moved between projects and renamed; endpoints with and without
schemas; owners, display names, deletion marks; projects made, made again, deleted; orgs made
and deleted), the events the forwarder would post for them, delivered in the seed's mode, then
one `run` that applies them while the provider rests. After every round the stored catalog
(every entity's metadata and spec) is compared with what a fresh full cycle of the same world
writes; the first difference ends the seed.

Modes (seed n takes mode n mod the number of modes): `plain` (in order), `shuffle` (an order
that keeps one object's events, and a `deleted` and the events at or below its object, in
theirs), `lose_deleted` (most `deleted` events followed by another event of the same object are
lost), `dup` (about half the events twice, shuffled so), `noproj` (about half the Component
events without their optional `project`). A third of the rounds drain their events one at a
time.

    python bench/event_fuzz_orgs.py                       # seeds 0-39, 12 rounds each
    python bench/event_fuzz_orgs.py --seeds 1000:1300 --seconds 900
    python bench/event_fuzz_orgs.py --seeds 17:18 --shrink  # the shortest sequence that differs

Exits 1 if any seed ends with a difference or an exception.
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
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from event_fuzz import Bodies, Outcome, Round, bodies, differences, run
from event_fuzz_orgs_world import (
    Change,
    Changes,
    events_between,
    in_mode,
    same_object,
    snapshot,
)

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.event_input import parse_events
from choreo_ingest.events import SETTLE_SECONDS, stored_events
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.simulator import Hidden, NotFound, SimulatorApi, SimulatorOptions, World
from choreo_ingest.testing import FakeClock

from sim_support import IN_PROCESS_URL

PROVIDER = "openchoreo"
MODES = ("plain", "shuffle", "lose_deleted", "dup", "noproj")
CYCLE_EVERY = 300.0
"""Simulated seconds between full cycles: events then land on a catalog a cycle refreshed."""


def config_for(state: Path) -> Config:
    settings = replace(IncrementalConfig(), chunk_size=100)
    return Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="orgs", incremental=settings),
        state_path=state,
        providers=(PROVIDER,),
    )


def simulator(world: World, clock: FakeClock) -> SimulatorApi:
    return SimulatorApi(world, SimulatorOptions(api="orgs", cursor_ttl=None), clock)


def shown(e: dict[str, Any]) -> tuple[str, ...]:
    """An event as the report shows it: (kind, name, project if it names one, action)."""
    project = (e["project"],) if "project" in e else ()
    return (e["kind"], e["name"], *project, e["action"])


class Fuzz:
    """One seed's world (with two clash-prone projects made through events), state file and
    clock; `play` runs a round and returns the differences it leaves."""

    def __init__(self, seed: int, tmp: Path, mode: str) -> None:
        self.rng = random.Random(seed)
        self.mode, self.tmp = mode, tmp
        self.clock = FakeClock()
        self.world = World.generate(1, 2, 3, seed=seed)
        self.api = simulator(self.world, self.clock)
        self.config = config_for(tmp / "state.db")
        self.org = next(self.world.orgs())["name"]
        self.changes = Changes(self.rng, self.world, self.org)
        self.trace: list[Round] = []
        self.cycle()
        made: list[Change] = [
            (f"add_project({p!r})", lambda w, p=p: w.add_project(self.org, p)) for p in ("p", "p-a")
        ]
        self.deliver(self.apply(made)[1], apart=False)

    def cycle(self) -> None:
        self.clock.advance(1)
        assert run(self.config, self.api, self.clock, force=True).providers[0].cycle_completed
        self.last_cycle = self.clock.now()

    def apply(self, changes: list[Change]) -> tuple[list[Change], list[dict[str, Any]]]:
        """The changes that changed the world (the simulator refuses one that does not apply),
        and the events the forwarder posts for them."""
        done, posted = [], []
        for text, fn in changes:
            before = snapshot(self.world)
            with contextlib.suppress(ValueError, NotFound, Hidden):
                fn(self.world)
            if made := events_between(before, snapshot(self.world)):
                done.append((text, fn))
                posted += made
        return done, posted

    def deliver(self, posted: list[dict[str, Any]], *, apart: bool) -> None:
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

    def walked(self) -> Bodies:
        fresh = self.tmp / f"fresh-{len(self.trace)}.db"
        api = simulator(self.world, self.clock)
        assert run(config_for(fresh), api, self.clock, force=True).providers[0].cycle_completed
        found = bodies(fresh)
        for path in self.tmp.glob(f"{fresh.name}*"):
            path.unlink()
        return found

    def compare(self) -> list[str]:
        assert self.config.state_path is not None
        return differences(bodies(self.config.state_path), self.walked())

    def play(self) -> list[str]:
        if self.clock.now() - self.last_cycle > CYCLE_EVERY:
            self.cycle()
        wanted = self.rng.randint(1, 4)
        picked: list[Change] = []
        posted: list[dict[str, Any]] = []
        for _ in range(wanted * 4):
            if len(picked) == wanted:
                break
            if (change := self.changes.pick()) is not None:
                done, made = self.apply([change])
                picked, posted = picked + done, posted + made
        posted = in_mode(self.rng, self.mode, posted)
        apart = self.rng.random() < 0.3
        self.trace.append(Round(picked, posted, apart))
        self.deliver(posted, apart=apart)
        return self.compare()


def replay(seed: int, trace: list[Round], tmp: Path) -> tuple[list[str], list[Round]]:
    """The differences left by the first round of `trace` that leaves any, replayed on a fresh
    world of the same seed, and the rounds as delivered: each round's recorded events of the
    objects its changes still touch, to the same end (`_ends_alike`; as recorded: lost,
    doubled, without `project`, in that order), then the changes' own events about objects
    none of those name. No differences if none is left or a change no longer applies."""
    fuzz, delivered = Fuzz(seed, tmp, "plain"), []
    for step in trace:
        if fuzz.clock.now() - fuzz.last_cycle > CYCLE_EVERY:
            fuzz.cycle()
        done, posted = fuzz.apply(step.changes)
        if len(done) != len(step.changes):
            return [], delivered
        kept = [e for e in step.events if _ends_alike(e, step.events, posted)]
        kept += [e for e in posted if not any(same_object(e, o) for o in kept)]
        delivered.append(Round(step.changes, kept, step.apart))
        fuzz.deliver(kept, apart=step.apart)
        if problems := fuzz.compare():
            return problems, delivered
    return [], delivered


def _ends_alike(
    e: dict[str, Any], recorded: list[dict[str, Any]], posted: list[dict[str, Any]]
) -> bool:
    """Whether the changes, played again, still post events about `e`'s object and whether
    they end in its deletion as the recorded ones do (a recorded `deleted` of an object a change
    no longer deletes would differ for want of an event, not for a defect)."""
    last = [
        [o["action"] for o in events if same_object(o, e)][-1:] for events in (recorded, posted)
    ]
    return bool(last[1]) and (last[0] == ["deleted"]) == (last[1] == ["deleted"])


def droppable(events: list[dict[str, Any]], j: int) -> bool:
    """Whether leaving event j out keeps a delivery the fuzzer makes: one of two equal events,
    or a `deleted` with a later event about its object (lost)."""
    e = events[j]
    if any(o == e for k, o in enumerate(events) if k != j):
        return True
    return e["action"] == "deleted" and any(same_object(o, e) for o in events[j + 1 :])


def kinds(problems: list[str]) -> set[tuple[str, ...]]:
    """What differs, by kind: ("missing", "API"), ("differs", "Component"), ..."""
    return {tuple(problem.partition(":")[0].split(" ")[:2]) for problem in problems}


def shrink(seed: int, trace: list[Round], tmp: Path) -> list[Round] | None:
    """Drops changes, then events a delivery may lose, while the replay still differs in the
    way its first difference does (a recorded event kept for a change that no longer makes it
    may differ otherwise: a `deleted` of an object that stays); the rounds of the shortest as
    delivered, or None if the whole trace does not differ when replayed."""
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
            return replay(seed, candidate, Path(scratch))

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


def play_seed(seed: int, rounds: int, modes: tuple[str, ...]) -> Outcome:
    mode = modes[seed % len(modes)]
    outcome = Outcome(seed, mode, 0, [])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fuzz = Fuzz(seed, Path(tmp), mode)
            outcome.trace = fuzz.trace
            while outcome.rounds < rounds:
                outcome.rounds += 1
                if problems := fuzz.play():
                    outcome.problems = problems
                    break
        except Exception:  # a crash is a finding like any difference
            outcome.problems = ["exception: " + traceback.format_exc(limit=8)]
    return outcome


def report(outcome: Outcome, *, shrinking: bool) -> None:
    print(f"seed {outcome.seed} ({outcome.mode}) differs after {outcome.rounds} rounds:")
    for step in outcome.trace:
        print(f"  changes: {[text for text, _ in step.changes]}")
        print(
            f"  events{' (one at a time)' if step.apart else ''}: {list(map(shown, step.events))}"
        )
    for problem in outcome.problems[:8]:
        print(f"  ! {problem[:600]}")
    if shrinking and not outcome.problems[0].startswith("exception"):
        with tempfile.TemporaryDirectory() as tmp:
            small = shrink(outcome.seed, outcome.trace, Path(tmp))
        if small is None:
            print("  shortest: none; replayed on a fresh world in order, it does not differ")
        else:
            print("  shortest:")
            for step in small:
                apart = " (one at a time)" if step.apart else ""
                print(f"    {[text for text, _ in step.changes]} then")
                print(f"      {list(map(shown, step.events))}{apart}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", default="0:40", help="FIRST:END, END excluded (0:40)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds a seed (12)")
    parser.add_argument("--modes", default=",".join(MODES), help="delivery modes to cycle through")
    parser.add_argument("--seconds", type=float, help="start no seed after this many seconds")
    parser.add_argument("--shrink", action="store_true", help="shrink each difference found")
    args = parser.parse_args()
    first, end = (int(part) for part in args.seeds.split(":"))
    modes = tuple(args.modes.split(","))
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(unknown)}; known: {', '.join(MODES)}")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    started = time.monotonic()
    seeds = rounds = 0
    failed = []
    for seed in range(first, end):
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            break
        outcome = play_seed(seed, args.rounds, modes)
        seeds, rounds = seeds + 1, rounds + outcome.rounds
        if outcome.problems:
            failed.append(seed)
            report(outcome, shrinking=args.shrink)
    elapsed = time.monotonic() - started
    print(
        f"{seeds} seeds, {rounds} rounds in {elapsed:.0f} s: {len(failed)} differ"
        + (f" (seeds {', '.join(map(str, failed))})" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
