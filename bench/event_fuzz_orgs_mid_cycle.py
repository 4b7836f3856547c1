"""Differential fuzzing of org-era events applied while a cycle is under way.

`event_fuzz_orgs.py`'s world, changes and delivery modes (`openchoreo.api: orgs`; endpoints set
and components made more often than there), played between the short bursts of a cycle rather
than while the provider rests. Each seed mirrors its world with one cycle, then plays cycles:
a forced run starts one, and its bursts are cut after one to three pages (chunkSize 1-3, so a
page holds one to three components). Between two bursts the world may change (up to two
changes), and the events the forwarder posts for the changes since the last delivery may be
delivered in the seed's mode and applied by a run while the provider waits for its next burst
(a third of the deliveries one event at a time); the cycle's last events are delivered once it
completes. Events thus meet components a burst's pages have or have not reached yet, and index
rows a page wrote since the change.

Checked: no burst fails and no event is parked; and after each delivery (every change's events
applied, mid-cycle) and at each cycle's end, every entity's metadata and spec against a fresh
walk's of the world as it is then. A seed's first finding (or exception) ends it, printed with
the last steps that led to it (changes, events as delivered, runs). There is no `--shrink`:
`event_fuzz_core`'s shrink replays whole-cycle rounds (changes, events, one run while the
provider rests) and cannot replay bursts and the points between them where events were
applied; a finding's steps are printed instead (`--last`), and `--seeds N:N+1` plays seed N
again alike (a fake clock; the world, changes and pages follow the seed).

    python bench/event_fuzz_orgs_mid_cycle.py                  # seeds 0-39, 4 cycles (~25 s)
    python bench/event_fuzz_orgs_mid_cycle.py --seeds 0:100 --cycles 6 --last 30
    python bench/event_fuzz_orgs_mid_cycle.py --seeds 1000:3000 --seconds 900

Exits 1 if any seed differs or raises.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import event_fuzz_core as core
from event_fuzz_mid_cycle_support import Finding
from event_fuzz_orgs import MODES
from event_fuzz_orgs import Fuzz as OrgFuzz
from event_fuzz_orgs_world import Changes

from choreo_ingest.invocation import run_once
from choreo_ingest.providers.openchoreo import OpenChoreoProvider

from sim_support import PausingProvider, simulator_transport

MORE_OFTEN = ("set_endpoints",) * 6 + ("add_component",) * 3
"""Kinds of change added to `event_fuzz_orgs_world.KINDS`'s, as its throwaway version had them:
endpoints changed and components made while a page may write their claims first."""
BURST_INTERVAL = 600.0
"""Longer than any delivery (two settling seconds an event): its run applies the events and
leaves the next burst to the fuzzer."""
MOST_RUNS = 300
"""Runs a cycle may take before it counts as never completing."""


@dataclass
class Outcome:
    seed: int
    mode: str
    cycles: int = 0
    where: str = ""
    problems: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class Fuzz(OrgFuzz):
    """One seed's org-era world, state file and clock (`event_fuzz_orgs.Fuzz`: its first cycle
    and clash-prone projects), with a cycle's bursts cut short and events between them."""

    def __init__(self, seed: int, tmp: Path, mode: str) -> None:
        super().__init__(seed, tmp, mode)
        sizes = random.Random(seed * 31 + 7)
        incremental = replace(
            self.config.incremental,
            chunk_size=sizes.randint(1, 3),
            burst_interval=BURST_INTERVAL,
            max_concurrent_requests=1,
            reject_empty_source_collections=False,
        )
        openchoreo = replace(self.config.openchoreo, incremental=incremental)
        self.config = replace(self.config, openchoreo=openchoreo)
        self.steps: list[str] = []
        self.pending: list[core.Event] = []
        self.counts = Counter[str]()
        self.label = "the first cycle"

    def random_changes(self) -> core.RandomChanges:
        changes = Changes(self.rng, self.world, self.org)
        changes.kinds += MORE_OFTEN
        return changes

    def burst(self, *, force: bool) -> Any:
        """One run whose burst ends after one to three pages (or the cycle's end)."""
        inner = OpenChoreoProvider(self.config, transport=simulator_transport(self.api))
        provider = PausingProvider(
            inner, self.clock, burst_length=self.config.incremental.burst_length
        )
        provider.pages_left = self.rng.randint(1, 3)
        assert self.config.state_path is not None
        result = run_once(
            self.config,
            self.config.state_path,
            self.clock,
            force=force,
            providers={core.PROVIDER: provider},
            rng=random.Random(0),
        )
        [outcome] = result.providers
        self.counts["runs"] += 1
        self.steps.append(
            f"run{' --force' if force else ''}: {outcome.action.value},"
            f" {outcome.pages} page{'' if outcome.pages == 1 else 's'}"
            + (", cycle completed" if outcome.cycle_completed else "")
        )
        if outcome.action.value == "failed":
            raise Finding(f"{self.label}, a run", [f"burst failed: {outcome.error}"])
        if result.events.parked:
            raise Finding(f"{self.label}, a run", [f"{result.events.parked} events parked"])
        return outcome

    def make_changes(self) -> None:
        """One or two changes; their events wait in `pending` in the seed's mode."""
        before = self.snapshot()
        picked: list[core.Change] = []
        posted: list[core.Event] = []
        for _ in range(self.rng.randint(1, 3) * 4):
            if len(picked) >= 2:
                break
            if (change := self.changes.pick()) is not None:
                done, made = self.apply([change])
                picked, posted = picked + done, posted + made
        self.counts["changes"] += len(picked)
        self.steps += [f"world.{text}" for text, _ in picked]
        self.pending += self.in_mode(posted, before)

    def deliver_pending(self) -> None:
        """Stores the pending events and has a run apply them (no burst is due)."""
        posted, self.pending = self.pending, []
        apart = self.rng.random() < 0.3
        self.counts["events"] += len(posted)
        if posted:
            self.steps.append(
                f"events{' (one at a time)' if apart else ''}: {list(map(core.shown, posted))}"
            )
        self.deliver(posted, apart=apart)

    def check(self, where: str) -> None:
        self.counts["comparisons"] += 1
        if problems := self.compare():
            raise Finding(where, problems)

    def play_cycle(self, label: str) -> None:
        self.label = label
        self.steps.append(f"-- {label}")
        self.clock.advance(3600)
        outcome = self.burst(force=True)
        runs = 1
        while not outcome.cycle_completed:
            if runs == MOST_RUNS:
                raise Finding(label, [f"the cycle does not complete in {MOST_RUNS} runs"])
            if self.rng.random() < 0.4:
                self.make_changes()
            if self.pending and self.rng.random() < 0.5:
                self.deliver_pending()
                self.check(f"{label}, mid-cycle (after run {runs})")
            self.clock.advance(BURST_INTERVAL + 1)
            outcome = self.burst(force=False)
            runs += 1
        self.deliver_pending()
        self.check(f"{label}'s end")


def play_seed(seed: int, cycles: int, modes: tuple[str, ...]) -> Outcome:
    outcome = Outcome(seed, modes[seed % len(modes)])
    with tempfile.TemporaryDirectory() as tmp:
        fuzz: Fuzz | None = None
        try:
            fuzz = Fuzz(seed, Path(tmp), outcome.mode)
            outcome.steps, outcome.counts = fuzz.steps, fuzz.counts
            while outcome.cycles < cycles:
                outcome.cycles += 1
                fuzz.play_cycle(f"cycle {outcome.cycles}")
        except Finding as finding:
            outcome.where, outcome.problems = finding.where, finding.problems
        except Exception:  # a crash is a finding like any difference
            outcome.where = f"cycle {outcome.cycles}" if fuzz is not None else "the setup"
            outcome.problems = ["exception: " + traceback.format_exc(limit=8)]
    return outcome


def report(outcome: Outcome, *, last: int) -> None:
    print(f"seed {outcome.seed} ({outcome.mode}) differs at {outcome.where}:")
    crashed = outcome.problems[0].startswith("exception")
    for problem in outcome.problems[:8]:
        print(f"  ! {problem if crashed else problem[:600]}")
    if last:
        print(f"  the last {min(last, len(outcome.steps))} of {len(outcome.steps)} steps:")
        for step in outcome.steps[-last:]:
            print(f"    {step}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", default="0:40", help="FIRST:END, END excluded (0:40)")
    parser.add_argument("--cycles", type=int, default=4, help="cycles with changes a seed (4)")
    parser.add_argument("--modes", default=",".join(MODES), help="delivery modes to cycle through")
    parser.add_argument("--seconds", type=float, help="start no seed after this many seconds")
    parser.add_argument("--last", type=int, default=20, help="steps printed before a finding")
    args = parser.parse_args()
    first, end = (int(part) for part in args.seeds.split(":"))
    modes = tuple(args.modes.split(","))
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(unknown)}; known: {', '.join(MODES)}")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    started = time.monotonic()
    totals = Counter[str]()
    failed = []
    for seed in range(first, end):
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            break
        outcome = play_seed(seed, args.cycles, modes)
        totals += outcome.counts
        totals["seeds"] += 1
        totals["cycles"] += outcome.cycles
        if outcome.problems:
            failed.append(seed)
            report(outcome, last=args.last)
    counted = ", ".join(f"{totals[what]} {what}" for what in ("runs", "changes", "events"))
    print(
        f"{totals['seeds']} seeds, {totals['cycles']} cycles ({counted},"
        f" {totals['comparisons']} comparisons) in {time.monotonic() - started:.0f} s:"
        f" {len(failed)} differ" + (f" (seeds {', '.join(map(str, failed))})" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
