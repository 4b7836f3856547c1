"""Differential fuzzing of v1 events: the catalog events leave against a fresh walk's.

Each seed builds a small simulated world (one namespace, clash-prone project, component,
endpoint and workload names), mirrors it with one completed cycle, then plays rounds: a few
random changes to the world (components made, deleted and moved between projects, workloads
made, changed, deleted and made again for another component, endpoints, owners, projects,
namespace labels), the events the event forwarder would post for them, delivered in the seed's
mode, then one `run` that applies them while the provider rests. After every round the stored
catalog (every entity's metadata and spec) is compared with what a fresh full cycle of the same
world writes; the first difference ends the seed.

Modes (seed n takes mode n mod the number of modes): `plain` (in order), `shuffle`,
`lose_deleted` (most `deleted` events followed by another event of the same object are lost),
`dup` (about half the events twice, shuffled), `comp_for_wl` (most Workload events replaced by
Component events for the components the workload belonged to before and after). A third of the
rounds drain their events one at a time.

    python bench/event_fuzz.py                       # seeds 0-39, 12 rounds each (~2 minutes)
    python bench/event_fuzz.py --seeds 5000:5200 --seconds 1800
    python bench/event_fuzz.py --seeds 17:18 --shrink  # the shortest sequence that still differs
    python bench/event_fuzz.py --deps                # workload dependencies change too

With `--deps`, a difference in `spec.consumesApis` alone is counted apart as documented (a
consumer gets no event when only its provider changes; the next cycle mends it). Exits 1 if any
seed ends with another difference or an exception.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from event_fuzz_world import (
    PROJECTS,
    Change,
    Changes,
    Snapshot,
    event,
    events_between,
    project_adder,
    snapshot,
)

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.event_input import parse_events
from choreo_ingest.events import SETTLE_SECONDS, stored_events
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.simulator import Hidden, NotFound, SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store
from choreo_ingest.testing import FakeClock

from sim_support import IN_PROCESS_URL, simulator_transport

PROVIDER = "openchoreo"
MODES = ("plain", "shuffle", "lose_deleted", "dup", "comp_for_wl")
CYCLE_EVERY = 300.0
"""Simulated seconds between full cycles: events then land on a catalog a cycle refreshed."""

Bodies = dict[str, Any]


@dataclass
class Round:
    changes: list[Change]
    events: list[dict[str, Any]]
    apart: bool


@dataclass
class Outcome:
    seed: int
    mode: str
    rounds: int
    problems: list[str]
    documented: int = 0
    trace: list[Round] = field(default_factory=list)


def config_for(state: Path) -> Config:
    settings = replace(IncrementalConfig(), chunk_size=100)
    return Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, incremental=settings),
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


def only_consumed_apis(problems: list[str]) -> bool:
    """Whether every difference is one entity's `spec.consumesApis` and nothing else of it."""
    return all(
        p.startswith("differs ")
        and p.partition(": ")[2].startswith("spec.consumesApis:")
        and "; spec." not in p
        for p in problems
    )


class Fuzz:
    """One seed's world (with two clash-prone projects made through events), state file and
    clock; `play` runs a round and returns the differences it leaves."""

    def __init__(self, seed: int, tmp: Path, mode: str, *, deps: bool = False) -> None:
        self.rng = random.Random(seed)
        self.mode, self.tmp = mode, tmp
        self.clock = FakeClock()
        self.world = World.generate(1, 2, 3, seed=seed)
        self.api = SimulatorApi(self.world, SimulatorOptions(api="v1"), self.clock)
        self.config = config_for(tmp / "state.db")
        self.ns = next(self.world.v1_namespaces())["metadata"]["name"]
        self.changes = Changes(self.rng, self.world, self.ns, deps)
        self.trace: list[Round] = []
        self.cycle()
        made = [(f"add_project({p!r})", project_adder(p)) for p in PROJECTS[:2]]
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
            before = snapshot(self.world, self.ns)
            with contextlib.suppress(ValueError, NotFound, Hidden):
                fn(self.world, self.ns)
            made = events_between(before, snapshot(self.world, self.ns), self.ns)
            if made:
                done.append((text, fn))
                posted += made
        return done, posted

    def in_mode(self, posted: list[dict[str, Any]], changed: Snapshot) -> list[dict[str, Any]]:
        r, mode = self.rng, self.mode
        if mode == "shuffle":
            r.shuffle(posted)
        elif mode == "lose_deleted":
            posted = [
                e
                for i, e in enumerate(posted)
                if e["action"] != "deleted"
                or not any(
                    (o["kind"], o["name"]) == (e["kind"], e["name"]) for o in posted[i + 1 :]
                )
                or r.random() >= 0.7
            ]
        elif mode == "dup":
            posted = posted + [dict(e) for e in posted if r.random() < 0.5]
            r.shuffle(posted)
        elif mode == "comp_for_wl":
            replaced = []
            for e in posted:
                if e["kind"] != "Workload" or r.random() >= 0.6:
                    replaced.append(e)
                    continue
                owners = {
                    item["spec"]["owner"]["componentName"]
                    for snap in (changed, snapshot(self.world, self.ns))
                    if (item := snap.get(("Workload", e["name"])))
                }
                replaced += [event("Component", c, self.ns, "updated") for c in sorted(owners)]
            posted = replaced
        return posted

    def deliver(self, posted: list[dict[str, Any]], *, apart: bool) -> None:
        for batch in [[e] for e in posted] if apart else [posted]:
            if not batch:
                continue
            provider = OpenChoreoProvider(self.config)
            parsed = parse_events(json.dumps(batch), provider)
            assert parsed.rejected == [], parsed.rejected
            assert self.config.state_path is not None
            stored_events(
                self.config.state_path, PROVIDER, parsed.valid, self.clock, ignored=parsed.ignored
            )
            self.clock.advance(SETTLE_SECONDS)
            result = run(self.config, self.api, self.clock, force=False)
            assert result.events.parked == 0, result.events
            [outcome] = result.providers
            assert outcome.action == "waiting" or outcome.cycle_completed, outcome

    def compare(self) -> list[str]:
        fresh = self.tmp / f"fresh-{len(self.trace)}.db"
        api = SimulatorApi(self.world, SimulatorOptions(api="v1"), self.clock)
        assert run(config_for(fresh), api, self.clock, force=True).providers[0].cycle_completed
        walked = bodies(fresh)
        for path in self.tmp.glob(f"{fresh.name}*"):
            path.unlink()
        assert self.config.state_path is not None
        return differences(bodies(self.config.state_path), walked)

    def play(self) -> list[str]:
        if self.clock.now() - self.last_cycle > CYCLE_EVERY:
            self.cycle()
        before = snapshot(self.world, self.ns)
        wanted = self.rng.randint(1, 4)
        picked: list[Change] = []
        posted: list[dict[str, Any]] = []
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


def replay(seed: int, trace: list[Round], tmp: Path) -> tuple[list[str], list[Round]]:
    """The differences left by the first round of `trace` that leaves any, replayed on a fresh
    world of the same seed, and the rounds as delivered: each round's recorded events of the
    objects its changes still touch (and its Component events, which stand in for Workload
    events), then any the changes now make that none of those name. No differences if none
    is left or a change no longer applies."""
    fuzz, delivered = Fuzz(seed, tmp, "plain"), []
    for step in trace:
        if fuzz.clock.now() - fuzz.last_cycle > CYCLE_EVERY:
            fuzz.cycle()
        done, posted = fuzz.apply(step.changes)
        if len(done) != len(step.changes):
            return [], delivered
        touched = {(e["kind"], e["name"]) for e in posted}
        kept = [
            e for e in step.events if (e["kind"], e["name"]) in touched or e["kind"] == "Component"
        ]
        named = {(e["kind"], e["name"]) for e in kept}
        kept += [e for e in posted if (e["kind"], e["name"]) not in named]
        delivered.append(Round(step.changes, kept, step.apart))
        fuzz.deliver(kept, apart=step.apart)
        if problems := fuzz.compare():
            return problems, delivered
    return [], delivered


def shrink(seed: int, trace: list[Round], tmp: Path) -> list[Round] | None:
    """Drops changes, then single events, while the replay still differs; the rounds of the
    shortest as delivered, or None if the whole trace does not differ when replayed."""
    rounds = [Round(list(r.changes), list(r.events), r.apart) for r in trace]

    def smaller() -> Iterator[list[Round]]:
        for i, step in enumerate(rounds):
            for j in range(len(step.changes)):
                changes = step.changes[:j] + step.changes[j + 1 :]
                kept = [Round(changes, step.events, step.apart)] if changes else []
                yield [*rounds[:i], *kept, *rounds[i + 1 :]]
        for i, step in enumerate(rounds):
            for j in range(len(step.events)):
                events = step.events[:j] + step.events[j + 1 :]
                yield [*rounds[:i], Round(step.changes, events, step.apart), *rounds[i + 1 :]]

    def differs(candidate: list[Round]) -> list[Round] | None:
        with tempfile.TemporaryDirectory(dir=tmp) as scratch:
            problems, delivered = replay(seed, candidate, Path(scratch))
        return delivered if problems else None

    if (shortest := differs(rounds)) is None:
        return None
    shrunk = True
    while shrunk:
        shrunk = False
        for candidate in smaller():
            if (delivered := differs(candidate)) is not None:
                rounds, shortest, shrunk = candidate, delivered, True
                break
    return shortest


def play_seed(seed: int, rounds: int, modes: tuple[str, ...], *, deps: bool) -> Outcome:
    mode = modes[seed % len(modes)]
    outcome = Outcome(seed, mode, 0, [])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fuzz = Fuzz(seed, Path(tmp), mode, deps=deps)
            outcome.trace = fuzz.trace
            while outcome.rounds < rounds:
                outcome.rounds += 1
                problems = fuzz.play()
                if deps and problems and only_consumed_apis(problems):
                    outcome.documented += 1
                    fuzz.cycle()
                elif problems:
                    outcome.problems = problems
                    break
        except Exception:  # a crash is a finding like any difference
            outcome.problems = ["exception: " + traceback.format_exc(limit=8)]
    return outcome


def report(outcome: Outcome, *, shrinking: bool) -> None:
    print(f"seed {outcome.seed} ({outcome.mode}) differs after {outcome.rounds} rounds:")
    for step in outcome.trace:
        print(f"  changes: {[text for text, _ in step.changes]}")
        events = [(e["kind"], e["name"], e["action"]) for e in step.events]
        print(f"  events{' (one at a time)' if step.apart else ''}: {events}")
    for problem in outcome.problems[:8]:
        print(f"  ! {problem}")
    if shrinking and not outcome.problems[0].startswith("exception"):
        with tempfile.TemporaryDirectory() as tmp:
            small = shrink(outcome.seed, outcome.trace, Path(tmp))
        if small is None:
            print("  shortest: none; replayed on a fresh world in order, it does not differ")
        else:
            print("  shortest:")
            for step in small:
                events = [(e["kind"], e["name"], e["action"]) for e in step.events]
                print(f"    {[text for text, _ in step.changes]} then {events}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:40", help="FIRST:END, END excluded (0:40)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds a seed (12)")
    parser.add_argument("--modes", default=",".join(MODES), help="delivery modes to cycle through")
    parser.add_argument("--seconds", type=float, help="start no seed after this many seconds")
    parser.add_argument("--deps", action="store_true", help="change workload dependencies too")
    parser.add_argument("--shrink", action="store_true", help="shrink each difference found")
    args = parser.parse_args()
    first, end = (int(part) for part in args.seeds.split(":"))
    modes = tuple(args.modes.split(","))
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(unknown)}; known: {', '.join(MODES)}")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    started = time.monotonic()
    seeds = rounds = documented = 0
    failed = []
    for seed in range(first, end):
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            break
        outcome = play_seed(seed, args.rounds, modes, deps=args.deps)
        seeds, rounds, documented = (
            seeds + 1,
            rounds + outcome.rounds,
            documented + outcome.documented,
        )
        if outcome.problems:
            failed.append(seed)
            report(outcome, shrinking=args.shrink)
    elapsed = time.monotonic() - started
    print(
        f"{seeds} seeds, {rounds} rounds in {elapsed:.0f} s: {len(failed)} differ"
        + (f" (seeds {', '.join(map(str, failed))})" if failed else "")
        + (f"; {documented} consumesApis-only (documented)" if args.deps else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
