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
import sys
from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import event_fuzz_core as core
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

from choreo_ingest.config import Config
from choreo_ingest.config_model import API_AUTO
from choreo_ingest.simulator import SimulatorOptions, World

MODES = ("plain", "shuffle", "lose_deleted", "dup", "comp_for_wl")


def config_for(state: Path) -> Config:
    """The config of a v1 catalog (`api: auto`, the server's answer picks v1)."""
    return core.config_for(state, API_AUTO)


def only_consumed_apis(problems: list[str]) -> bool:
    """Whether every difference is one entity's `spec.consumesApis` and nothing else of it."""
    return all(
        p.startswith("differs ")
        and p.partition(": ")[2].startswith("spec.consumesApis:")
        and "; spec." not in p
        for p in problems
    )


def owners(workload: str, snapshots: tuple[Snapshot, ...]) -> set[str]:
    """The components a workload belongs to in any of the snapshots."""
    return {
        item["spec"]["owner"]["componentName"]
        for snap in snapshots
        if (item := snap.get(("Workload", workload)))
    }


class Fuzz(core.Fuzz):
    """One seed's v1 world (one namespace, with two clash-prone projects made through events),
    state file and clock; with `deps`, workload dependencies change too."""

    modes = MODES
    config_api = API_AUTO
    simulator_options = SimulatorOptions(api="v1")
    options: ClassVar[dict[str, dict[str, Any]]] = {
        "--deps": {"action": "store_true", "help": "change workload dependencies too"}
    }

    def __init__(self, seed: int, tmp: Path, mode: str, *, deps: bool = False) -> None:
        self.deps = deps
        super().__init__(seed, tmp, mode)

    @cached_property
    def ns(self) -> str:
        return str(next(self.world.v1_namespaces())["metadata"]["name"])

    def random_changes(self) -> core.RandomChanges:
        return Changes(self.rng, self.world, self.ns, self.deps)

    def first_changes(self) -> list[Change]:
        return [(f"add_project({p!r})", project_adder(p)) for p in PROJECTS[:2]]

    def change(self, fn: Callable[[World, str], Any]) -> None:
        fn(self.world, self.ns)

    def snapshot(self) -> Snapshot:
        return snapshot(self.world, self.ns)

    def posted_between(self, before: Snapshot, after: Snapshot) -> list[core.Event]:
        return events_between(before, after, self.ns)

    def in_mode(self, posted: list[core.Event], changed: Snapshot) -> list[core.Event]:
        """`event_fuzz_mid_cycle.py` calls it on a fuzzer of its own: it reads only the rng,
        mode, world and namespace."""
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
                belongs = owners(e["name"], (changed, snapshot(self.world, self.ns)))
                replaced += [event("Component", c, self.ns, "updated") for c in sorted(belongs)]
            posted = replaced
        return posted

    def redelivered(
        self, recorded: list[core.Event], posted: list[core.Event], changed: Snapshot
    ) -> list[core.Event]:
        """The round's recorded events that the changes, played again, still post (the same
        object and action, in any order: a v1 event re-reads its object whatever its action
        says, and `shuffle` reorders one object's events), and the `updated` events of the
        components that the workloads the changes still touch belong to, before or after (as
        `comp_for_wl` has them stand in for a workload's); then the changes' own events about
        objects none of those name, but for a workload each of whose components has one."""
        belongs = {
            e["name"]: owners(e["name"], (changed, self.snapshot()))
            for e in posted
            if e["kind"] == "Workload"
        }
        standing_for = set().union(*belongs.values())

        def standing_in(e: core.Event) -> bool:
            stands = e["kind"] == "Component" and e["action"] == "updated"
            return stands and e["name"] in standing_for

        kept = [
            e
            for e in recorded
            if standing_in(e)
            or any(core.same_object(o, e) and o["action"] == e["action"] for o in posted)
        ]
        stand_ins = {e["name"] for e in kept if standing_in(e)}
        stood_in_for = {w for w, components in belongs.items() if components <= stand_ins}
        return kept + [
            e
            for e in posted
            if not any(core.same_object(e, o) for o in kept)
            and not (e["kind"] == "Workload" and e["name"] in stood_in_for)
        ]

    def documented(self, problems: list[str]) -> bool:
        return self.deps and only_consumed_apis(problems)

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> core.FuzzFactory:
        return partial(cls, deps=args.deps)

    @classmethod
    def summary_tail(cls, args: argparse.Namespace, documented: int) -> str:
        return f"; {documented} consumesApis-only (documented)" if args.deps else ""


def play_seed(seed: int, rounds: int, modes: tuple[str, ...], *, deps: bool) -> core.Outcome:
    return core.play_seed(partial(Fuzz, deps=deps), seed, rounds, modes)


def report(outcome: core.Outcome, *, shrinking: bool) -> None:
    core.report(Fuzz, outcome, shrinking=shrinking)


if __name__ == "__main__":
    sys.exit(core.main(Fuzz, __doc__ or ""))
