"""Differential fuzzing of org-era events: the catalog events leave against a fresh walk's.

`event_fuzz.py`'s rounds (`event_fuzz_core.py`) for the organization-era API (`openchoreo.api:
orgs`). Each seed builds a small simulated world (one organization, clash-prone project,
component and endpoint names: component `a` with endpoint `b-c` and component `a-b` with
endpoint `c` both give the API name `a-b-c`), mirrors it with one completed cycle, then plays
rounds: a few random changes (components made, deleted, moved between projects and renamed;
endpoints with and without schemas; owners, display names, deletion marks; projects made, made
again, deleted; orgs made and deleted), the events the forwarder would post for them, delivered
in the seed's mode, then one `run` that applies them while the provider rests. After every round
the stored catalog (every entity's metadata and spec) is compared with what a fresh full cycle
of the same world writes; the first difference ends the seed.

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

import sys
from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import event_fuzz_core as core
from event_fuzz_orgs_world import Change, Changes, Snapshot, events_between, in_mode, snapshot

from choreo_ingest.simulator import SimulatorOptions, World

MODES = ("plain", "shuffle", "lose_deleted", "dup", "noproj")


class Fuzz(core.Fuzz):
    """One seed's org-era world (with two clash-prone projects made through events), state
    file and clock."""

    modes = MODES
    config_api = "orgs"
    simulator_options = SimulatorOptions(api="orgs", cursor_ttl=None)

    @cached_property
    def org(self) -> str:
        return str(next(self.world.orgs())["name"])

    def random_changes(self) -> core.RandomChanges:
        return Changes(self.rng, self.world, self.org)

    def first_changes(self) -> list[Change]:
        return [
            (f"add_project({p!r})", partial(World.add_project, org=self.org, name=p))
            for p in ("p", "p-a")
        ]

    def change(self, fn: Callable[[World], Any]) -> None:
        fn(self.world)

    def snapshot(self) -> Snapshot:
        return snapshot(self.world)

    def posted_between(self, before: Snapshot, after: Snapshot) -> list[core.Event]:
        return events_between(before, after)

    def in_mode(self, posted: list[core.Event], changed: Snapshot) -> list[core.Event]:
        return in_mode(self.rng, self.mode, posted)

    def redelivered(
        self, recorded: list[core.Event], posted: list[core.Event], changed: Snapshot
    ) -> list[core.Event]:
        """The round's recorded events of the objects its changes still touch, to the same end
        (`_ends_alike`; as recorded: lost, doubled, without `project`, in that order), then the
        changes' own events about objects none of those name."""
        kept = [e for e in recorded if _ends_alike(e, recorded, posted)]
        return kept + [e for e in posted if not any(core.same_object(e, o) for o in kept)]


def _ends_alike(e: core.Event, recorded: list[core.Event], posted: list[core.Event]) -> bool:
    """Whether the changes, played again, still post events about `e`'s object and whether
    they end in its deletion as the recorded ones do (a recorded `deleted` of an object a change
    no longer deletes would differ for want of an event, not for a defect)."""
    last = [
        [o["action"] for o in events if core.same_object(o, e)][-1:]
        for events in (recorded, posted)
    ]
    return bool(last[1]) and (last[0] == ["deleted"]) == (last[1] == ["deleted"])


def play_seed(seed: int, rounds: int, modes: tuple[str, ...]) -> core.Outcome:
    return core.play_seed(Fuzz, seed, rounds, modes)


def report(outcome: core.Outcome, *, shrinking: bool) -> None:
    core.report(Fuzz, outcome, shrinking=shrinking)


if __name__ == "__main__":
    sys.exit(core.main(Fuzz, __doc__ or ""))
