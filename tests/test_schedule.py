"""The pure scheduler: decide(), the state machine, backoff and health, with no clock and no DB."""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from choreo_ingest.config import IncrementalConfig
from choreo_ingest.models import ProviderRecord, ProviderState
from choreo_ingest.schedule import (
    JITTER,
    Burst,
    Event,
    IllegalTransition,
    Wait,
    backoff_delay,
    decide,
    health_problems,
    transition,
)

NOW = 1_800_000_000.0
LATER = NOW + 60.0
S = ProviderState
SETTINGS = IncrementalConfig(backoff=(10.0, 20.0, 40.0), max_attempts=3, rest_length=600.0)


def record(
    state: ProviderState, next_action_at: float | None = None, **fields: Any
) -> ProviderRecord:
    return replace(
        ProviderRecord(name="fake", state=state, next_action_at=next_action_at), **fields
    )


class TestDecide:
    # (state, next_action_at, force, expected): expected is ("burst", new_cycle) or ("wait", until)
    CASES: ClassVar = [
        ("idle-never-run", S.IDLE, None, False, ("burst", True)),
        ("idle-after-reset-with-stale-time", S.IDLE, LATER, False, ("burst", True)),
        ("idle-forced", S.IDLE, None, True, ("burst", True)),
        ("bursting-crashed-due", S.BURSTING, NOW - 1, False, ("burst", False)),
        ("bursting-crashed-not-due", S.BURSTING, LATER, False, ("burst", False)),
        ("bursting-forced", S.BURSTING, LATER, True, ("burst", False)),
        ("interstitial-due", S.INTERSTITIAL, NOW - 1, False, ("burst", False)),
        ("interstitial-due-exactly-now", S.INTERSTITIAL, NOW, False, ("burst", False)),
        ("interstitial-not-due", S.INTERSTITIAL, LATER, False, ("wait", LATER)),
        ("interstitial-forced", S.INTERSTITIAL, LATER, True, ("burst", False)),
        ("resting-due", S.RESTING, NOW - 1, False, ("burst", True)),
        ("resting-due-exactly-now", S.RESTING, NOW, False, ("burst", True)),
        ("resting-not-due", S.RESTING, LATER, False, ("wait", LATER)),
        ("resting-forced", S.RESTING, LATER, True, ("burst", True)),
        ("resting-no-time-stored", S.RESTING, None, False, ("burst", True)),
        ("backing-off-due", S.BACKING_OFF, NOW - 1, False, ("burst", False)),
        ("backing-off-not-due", S.BACKING_OFF, LATER, False, ("wait", LATER)),
        ("backing-off-forced", S.BACKING_OFF, LATER, True, ("burst", False)),
    ]

    @pytest.mark.parametrize(
        ("state", "due", "force", "expected"),
        [case[1:] for case in CASES],
        ids=[case[0] for case in CASES],
    )
    def test_decision(
        self,
        state: ProviderState,
        due: float | None,
        force: bool,
        expected: tuple[str, object],
    ) -> None:
        decision = decide(record(state, due), SETTINGS, NOW, force=force)
        kind, detail = expected
        if kind == "burst":
            assert isinstance(decision, Burst), decision
            assert decision.new_cycle is detail
        else:
            assert isinstance(decision, Wait), decision
            assert decision.until == detail
        assert decision.reason

    def test_every_state_is_covered_by_the_table(self) -> None:
        assert {case[1] for case in self.CASES} == set(ProviderState)

    def test_forced_burst_says_it_was_forced(self) -> None:
        decision = decide(record(S.RESTING, LATER), SETTINGS, NOW, force=True)
        assert decision == Burst(new_cycle=True, reason="forced")


# The legal moves, as DESIGN.md's state table describes them; every other pair must raise.
LEGAL: dict[tuple[ProviderState, Event], ProviderState] = {
    **{(state, Event.RESET): S.IDLE for state in S},
    (S.IDLE, Event.CYCLE_STARTED): S.BURSTING,
    (S.RESTING, Event.CYCLE_STARTED): S.BURSTING,
    (S.INTERSTITIAL, Event.BURST_STARTED): S.BURSTING,
    (S.BACKING_OFF, Event.BURST_STARTED): S.BURSTING,
    (S.BURSTING, Event.BURST_STARTED): S.BURSTING,  # resuming a crashed burst
    (S.BURSTING, Event.BURST_ENDED_WITH_WORK_LEFT): S.INTERSTITIAL,
    (S.BURSTING, Event.CYCLE_COMPLETED): S.RESTING,
    (S.BURSTING, Event.BURST_FAILED): S.BACKING_OFF,
    **{(state, Event.REFRESHED): state for state in S},  # refresh only moves next_action_at
}
ALL_PAIRS = list(itertools.product(S, Event))


class TestTransition:
    @pytest.mark.parametrize(
        ("state", "event"),
        [pair for pair in ALL_PAIRS if pair in LEGAL],
        ids=[f"{s.value}-{e.value}" for s, e in ALL_PAIRS if (s, e) in LEGAL],
    )
    def test_legal_move(self, state: ProviderState, event: Event) -> None:
        assert transition(state, event) is LEGAL[(state, event)]

    @pytest.mark.parametrize(
        ("state", "event"),
        [pair for pair in ALL_PAIRS if pair not in LEGAL],
        ids=[f"{s.value}-{e.value}" for s, e in ALL_PAIRS if (s, e) not in LEGAL],
    )
    def test_illegal_move_raises(self, state: ProviderState, event: Event) -> None:
        with pytest.raises(IllegalTransition, match=f"{event.value}.*{state.value}"):
            transition(state, event)

    def test_walk_reaches_every_state_and_every_state_can_be_left(self) -> None:
        reached, edges = {S.IDLE}, set()
        frontier = deque([S.IDLE])
        while frontier:
            state = frontier.popleft()
            for event in Event:
                try:
                    target = transition(state, event)
                except IllegalTransition:
                    continue
                edges.add((state, target))
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        assert reached == set(ProviderState)
        for state in ProviderState:
            exits = {target for source, target in edges if source is state and target is not state}
            assert exits, f"{state.value} has no way out"
            # and from every state the normal run loop gets back to bursting
            assert S.BURSTING in exits or state is S.BURSTING

    def test_bursting_ends_in_each_outcome_state(self) -> None:
        endings = {transition(S.BURSTING, event) for event in Event if (S.BURSTING, event) in LEGAL}
        assert {S.INTERSTITIAL, S.RESTING, S.BACKING_OFF, S.IDLE} <= endings


class TestBackoffDelay:
    @pytest.mark.parametrize(
        ("attempts", "step"),
        [(0, 10.0), (1, 10.0), (2, 20.0), (3, 40.0), (4, 40.0), (50, 40.0)],
        ids=["zero-counts-as-first", "first", "second", "third", "capped-at-last", "far-past-last"],
    )
    def test_step_with_jitter_bounds(self, attempts: int, step: float) -> None:
        delays = [backoff_delay(attempts, SETTINGS, random.Random(seed)) for seed in range(300)]
        assert all(step * (1 - JITTER) <= delay <= step * (1 + JITTER) for delay in delays)
        # the jitter really spreads retries across the band
        assert min(delays) < step * (1 - JITTER / 2)
        assert max(delays) > step * (1 + JITTER / 2)

    def test_same_seed_gives_same_delay(self) -> None:
        first = backoff_delay(2, SETTINGS, random.Random(7))
        assert backoff_delay(2, SETTINGS, random.Random(7)) == first

    def test_longer_retry_after_wins(self) -> None:
        assert backoff_delay(1, SETTINGS, random.Random(1), retry_after=500.0) == 500.0

    def test_shorter_retry_after_loses_to_the_step(self) -> None:
        delay = backoff_delay(3, SETTINGS, random.Random(1), retry_after=1.0)
        assert 40.0 * (1 - JITTER) <= delay <= 40.0 * (1 + JITTER)

    def test_single_step_list_is_always_that_step(self) -> None:
        settings = replace(SETTINGS, backoff=(5.0,))
        for attempts in (1, 2, 9):
            assert 4.0 <= backoff_delay(attempts, settings, random.Random(attempts)) <= 6.0


class TestHealthProblems:
    # rest 600 s, last cycle 60 s -> a completed cycle is overdue after 3 x 660 = 1980 s
    CASES: ClassVar = [
        ("never-run", {}, 0, []),
        ("just-completed", {"last_completed_at": NOW - 10, "last_cycle_duration": 60.0}, 0, []),
        ("failures-below-max", {"attempts": 2}, 0, []),
        ("failures-at-max", {"attempts": 3}, 0, ["maxAttempts 3"]),
        ("failures-past-max", {"attempts": 9}, 0, ["9 consecutive failed bursts"]),
        ("removals-blocked", {}, 4, ["4 removals blocked"]),
        (
            "completion-overdue",
            {"last_completed_at": NOW - 1981, "last_cycle_duration": 60.0},
            0,
            ["no completed cycle in 1981s"],
        ),
        (
            "completion-just-in-time",
            {"last_completed_at": NOW - 1980, "last_cycle_duration": 60.0},
            0,
            [],
        ),
        ("first-cycle-never-completes", {"cycle_started_at": NOW - 1801}, 0, ["no completed"]),
        ("first-cycle-still-young", {"cycle_started_at": NOW - 100}, 0, []),
        (
            "everything-wrong",
            {"attempts": 5, "last_completed_at": NOW - 10_000},
            1,
            ["consecutive failed", "removals blocked", "no completed"],
        ),
    ]

    @pytest.mark.parametrize(
        ("fields", "blocked", "expected"),
        [case[1:] for case in CASES],
        ids=[case[0] for case in CASES],
    )
    def test_problems(self, fields: dict[str, float], blocked: int, expected: list[str]) -> None:
        problems = health_problems(
            record(S.RESTING, **fields), SETTINGS, NOW, blocked_removals=blocked
        )
        assert len(problems) == len(expected), problems
        for problem, fragment in zip(problems, expected, strict=True):
            assert fragment in problem
