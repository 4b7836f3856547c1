"""The pure scheduler: decide(), the state machine, the record after each trigger, backoff and
health, with no clock and no DB."""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from choreo_ingest.config import IncrementalConfig
from choreo_ingest.errors import IllegalTransition
from choreo_ingest.models import ProviderRecord, ProviderState
from choreo_ingest.schedule import (
    CLOCK_SKEW,
    CRASHED,
    JITTER,
    Burst,
    BurstResult,
    Trigger,
    Wait,
    after_burst,
    after_refresh,
    after_reset,
    after_unavailable,
    backoff_delay,
    before_burst,
    decide,
    events_held_at,
    health_problems,
    refresh_waits,
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

    YEAR = 365 * 86400.0
    # (fields of the record, expected): the stored time kept to what the configuration allows
    # (SETTINGS: restLength 600 s, burstInterval 30 s, backoff 10, 20, 40 s).
    BOUNDED: ClassVar = [
        (
            "resting-after-restlength-was-shortened",
            {"state": S.RESTING, "next_action_at": NOW + 86400, "last_completed_at": NOW - 700},
            ("burst", True),
        ),
        (
            "resting-within-the-new-rest",
            {"state": S.RESTING, "next_action_at": NOW + 86400, "last_completed_at": NOW - 100},
            ("wait", NOW + 500),
        ),
        (
            "resting-completed-in-the-future-the-clock-was-set-back",
            {"state": S.RESTING, "next_action_at": NOW + YEAR, "last_completed_at": NOW + YEAR},
            ("burst", True),
        ),
        (
            "interstitial-held-at-most-a-retry-after-of-a-rest",
            {
                "state": S.INTERSTITIAL,
                "next_action_at": NOW + YEAR,
                "last_burst_at": NOW - 100,
                "last_burst_duration": 5.0,
            },
            ("wait", NOW - 95 + 600),
        ),
        (
            "backing-off-held-at-most-the-longest-wait",
            {"state": S.BACKING_OFF, "next_action_at": NOW + YEAR, "last_burst_at": NOW - 700},
            ("burst", False),
        ),
        (
            "crashed-burst-resumes-after-the-first-step",
            {"state": S.BURSTING, "last_burst_at": NOW - 15},
            ("burst", False),
        ),
        (
            "crashed-burst-waits-out-the-first-step",
            {"state": S.BURSTING, "last_burst_at": NOW - 5},
            ("wait", NOW + 5),
        ),
        (
            "crashed-again-waits-out-a-later-step",
            {"state": S.BURSTING, "last_burst_at": NOW - 15, "attempts": 2},
            ("wait", NOW + 25),
        ),
        (
            "crashed-burst-begun-in-the-future-resumes",
            {"state": S.BURSTING, "last_burst_at": NOW + YEAR, "attempts": 2},
            ("burst", False),
        ),
        # Another host's clock a little ahead (a state in PostgreSQL): its waits hold here.
        (
            "resting-completed-on-a-clock-ahead-rests",
            {"state": S.RESTING, "next_action_at": NOW + 780, "last_completed_at": NOW + 180},
            ("wait", NOW + 780),
        ),
        (
            "backing-off-begun-on-a-clock-ahead-backs-off",
            {
                "state": S.BACKING_OFF,
                "next_action_at": NOW + 190,
                "last_burst_at": NOW + 170,
                "last_burst_duration": 10.0,
            },
            ("wait", NOW + 190),
        ),
        (
            "crashed-burst-begun-on-a-clock-ahead-waits-out-the-first-step",
            {"state": S.BURSTING, "last_burst_at": NOW + 180},
            ("wait", NOW + 190),
        ),
        (
            "resting-completed-past-the-skew-the-clock-was-set-back",
            {
                "state": S.RESTING,
                "next_action_at": NOW + CLOCK_SKEW + 601,
                "last_completed_at": NOW + CLOCK_SKEW + 1,
            },
            ("burst", True),
        ),
    ]

    @pytest.mark.parametrize(
        ("fields", "expected"), [case[1:] for case in BOUNDED], ids=[case[0] for case in BOUNDED]
    )
    def test_a_wait_is_no_longer_than_the_configuration_allows(
        self, fields: dict[str, Any], expected: tuple[str, object]
    ) -> None:
        state, due = fields.pop("state"), fields.pop("next_action_at", None)
        decision = decide(record(state, due, **fields), SETTINGS, NOW)

        kind, detail = expected
        if kind == "burst":
            assert decision == Burst(new_cycle=bool(detail), reason=decision.reason)
        else:
            assert decision == Wait(until=float(str(detail)), reason=decision.reason)

    # (record before the refresh, expected decision right after it): the operator's refresh
    # makes a provider due now whatever it waits for; SETTINGS' crash backoff is 10, 20, 40 s.
    REFRESHED: ClassVar = [
        (
            "crashed-first-time-within-its-backoff",
            {"state": S.BURSTING, "last_burst_at": NOW - 5},
            ("burst", False),
        ),
        (
            "crashed-again-within-a-later-step",
            {"state": S.BURSTING, "last_burst_at": NOW - 15, "attempts": 2},
            ("burst", False),
        ),
        (
            "backing-off",
            {"state": S.BACKING_OFF, "next_action_at": LATER, "last_burst_at": NOW - 5},
            ("burst", False),
        ),
        (
            "interstitial",
            {"state": S.INTERSTITIAL, "next_action_at": LATER, "last_burst_at": NOW - 5},
            ("burst", False),
        ),
        ("resting", {"state": S.RESTING, "next_action_at": LATER}, ("burst", True)),
        ("idle", {"state": S.IDLE}, ("burst", True)),
    ]

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [case[1:] for case in REFRESHED],
        ids=[case[0] for case in REFRESHED],
    )
    def test_a_refreshed_provider_is_due_at_once(
        self, fields: dict[str, Any], expected: tuple[str, bool]
    ) -> None:
        state, due = fields.pop("state"), fields.pop("next_action_at", None)
        refreshed = after_refresh(record(state, due, **fields), NOW)

        decision = decide(refreshed, SETTINGS, NOW)

        assert decision == Burst(new_cycle=expected[1], reason=decision.reason)

    EARLY = "due before restLength has passed (a refresh, or a shorter restLength then)"
    # (last_completed_at, next_action_at, reason) of a resting provider due now; rest is 600 s
    REST_ENDED: ClassVar = [
        ("rest-over", NOW - 600, NOW, "rest is over"),
        ("rest-over-long-ago", NOW - 5_000, NOW - 4_400, "rest is over"),
        ("refreshed-mid-rest", NOW - 30, NOW, EARLY),
        ("refreshed-earlier-mid-rest", NOW - 30, NOW - 10, EARLY),
        # stored when restLength was 300 s, raised to 600 s since
        ("stored-under-a-shorter-rest", NOW - 300, NOW, EARLY),
        ("clock-set-back-past-completion", NOW + CLOCK_SKEW + 1, NOW + 700, "rest is over"),
        ("no-completed-cycle", None, NOW, "rest is over"),
    ]

    @pytest.mark.parametrize(
        ("completed", "due", "reason"),
        [case[1:] for case in REST_ENDED],
        ids=[case[0] for case in REST_ENDED],
    )
    def test_a_due_rest_says_whether_it_ended_or_a_refresh_cut_it_short(
        self, completed: float | None, due: float, reason: str
    ) -> None:
        resting = record(S.RESTING, due, last_completed_at=completed)

        assert decide(resting, SETTINGS, NOW) == Burst(new_cycle=True, reason=reason)

    def test_a_refresh_mid_rest_is_the_reason_given(self) -> None:
        resting = record(S.RESTING, NOW + 500, last_completed_at=NOW - 100)

        decision = decide(after_refresh(resting, NOW), SETTINGS, NOW)

        assert decision == Burst(new_cycle=True, reason=self.EARLY)

    def test_forced_burst_says_it_was_forced(self) -> None:
        decision = decide(record(S.RESTING, LATER), SETTINGS, NOW, force=True)
        assert decision == Burst(new_cycle=True, reason="forced")


# The legal moves, as DESIGN.md's state table describes them; every other pair must raise.
LEGAL: dict[tuple[ProviderState, Trigger], ProviderState] = {
    **{(state, Trigger.RESET): S.IDLE for state in S},
    (S.IDLE, Trigger.CYCLE_STARTED): S.BURSTING,
    (S.RESTING, Trigger.CYCLE_STARTED): S.BURSTING,
    (S.INTERSTITIAL, Trigger.BURST_STARTED): S.BURSTING,
    (S.BACKING_OFF, Trigger.BURST_STARTED): S.BURSTING,
    (S.BURSTING, Trigger.BURST_STARTED): S.BURSTING,  # resuming a crashed burst
    (S.BURSTING, Trigger.BURST_ENDED_WITH_WORK_LEFT): S.INTERSTITIAL,
    (S.BURSTING, Trigger.CYCLE_COMPLETED): S.RESTING,
    (S.BURSTING, Trigger.BURST_FAILED): S.BACKING_OFF,
    # refresh only moves next_action_at, but a crashed burst is the failure it was
    **{(state, Trigger.REFRESHED): state for state in S if state is not S.BURSTING},
    (S.BURSTING, Trigger.REFRESHED): S.BACKING_OFF,
    # a refresh standing in for events gives up the cycle in progress
    (S.INTERSTITIAL, Trigger.CYCLE_ABANDONED): S.RESTING,
    (S.BACKING_OFF, Trigger.CYCLE_ABANDONED): S.RESTING,
    (S.BURSTING, Trigger.CYCLE_ABANDONED): S.RESTING,
}
ALL_PAIRS = list(itertools.product(S, Trigger))


class TestTransition:
    @pytest.mark.parametrize(
        ("state", "trigger"),
        [pair for pair in ALL_PAIRS if pair in LEGAL],
        ids=[f"{s.value}-{t.value}" for s, t in ALL_PAIRS if (s, t) in LEGAL],
    )
    def test_legal_move(self, state: ProviderState, trigger: Trigger) -> None:
        assert transition(state, trigger) is LEGAL[(state, trigger)]

    @pytest.mark.parametrize(
        ("state", "trigger"),
        [pair for pair in ALL_PAIRS if pair not in LEGAL],
        ids=[f"{s.value}-{t.value}" for s, t in ALL_PAIRS if (s, t) not in LEGAL],
    )
    def test_illegal_move_raises(self, state: ProviderState, trigger: Trigger) -> None:
        with pytest.raises(IllegalTransition, match=f"{trigger.value}.*{state.value}"):
            transition(state, trigger)

    def test_walk_reaches_every_state_and_every_state_can_be_left(self) -> None:
        reached, edges = {S.IDLE}, set()
        frontier = deque([S.IDLE])
        while frontier:
            state = frontier.popleft()
            for trigger in Trigger:
                try:
                    target = transition(state, trigger)
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
        endings = {
            transition(S.BURSTING, trigger) for trigger in Trigger if (S.BURSTING, trigger) in LEGAL
        }
        assert {S.INTERSTITIAL, S.RESTING, S.BACKING_OFF, S.IDLE} <= endings


CURSOR = {"offset": 20}
STARTED = NOW - 300.0  # when the cycle in progress started


def running(state: ProviderState = S.BURSTING, **fields: Any) -> ProviderRecord:
    """A provider four cycles in, with a cursor and a cycle start stored."""
    defaults: dict[str, Any] = {"cycle_id": 4, "cursor": CURSOR, "cycle_started_at": STARTED}
    return record(state, LATER, **(defaults | fields))


def changed(before: ProviderRecord, after: ProviderRecord) -> dict[str, object]:
    """The fields `after` differs in from `before`, with their new values."""
    return {name: value for name, value in vars(after).items() if getattr(before, name) != value}


class TestBeforeBurst:
    # (state, new_cycle, expected changes)
    CASES: ClassVar = [
        (
            "idle-starts-a-cycle",
            S.IDLE,
            True,
            {"state": S.BURSTING, "cycle_id": 5, "cursor": None, "cycle_started_at": NOW},
        ),
        (
            "resting-starts-a-cycle-without-the-old-cursor",
            S.RESTING,
            True,
            {"state": S.BURSTING, "cycle_id": 5, "cursor": None, "cycle_started_at": NOW},
        ),
        ("interstitial-resumes-at-the-cursor", S.INTERSTITIAL, False, {"state": S.BURSTING}),
        ("backing-off-resumes-at-the-cursor", S.BACKING_OFF, False, {"state": S.BURSTING}),
        (
            "crashed-burst-resumes-at-the-cursor-counting-a-failure",
            S.BURSTING,
            False,
            {"attempts": 1, "last_error": CRASHED},
        ),
    ]

    @pytest.mark.parametrize(
        ("state", "new_cycle", "expected"),
        [case[1:] for case in CASES],
        ids=[case[0] for case in CASES],
    )
    def test_record_as_the_burst_begins(
        self, state: ProviderState, new_cycle: bool, expected: dict[str, object]
    ) -> None:
        before = running(state)
        after = before_burst(before, Burst(new_cycle=new_cycle, reason="test"), NOW)
        assert changed(before, after) == {**expected, "last_burst_at": NOW}
        assert before == running(state), "the record passed in is left alone"

    @pytest.mark.parametrize(
        ("state", "new_cycle"),
        [(S.INTERSTITIAL, True), (S.BACKING_OFF, True), (S.BURSTING, True), (S.IDLE, False)],
        ids=[
            "interstitial-new-cycle",
            "backing-off-new-cycle",
            "bursting-new-cycle",
            "idle-resume",
        ],
    )
    def test_a_burst_decide_never_chooses_raises(
        self, state: ProviderState, new_cycle: bool
    ) -> None:
        with pytest.raises(IllegalTransition):
            before_burst(running(state), Burst(new_cycle=new_cycle, reason="test"), NOW)


class TestAfterBurst:
    """SETTINGS: backoff 10, 20, 40 s (+-20 %), restLength 600 s, burstInterval 30 s."""

    NEXT_CURSOR: ClassVar = {"offset": 30}
    # (fields of the bursting record, BurstResult fields, expected changes, due between)
    CASES: ClassVar = [
        (
            "done-rests-for-rest-length",
            {},
            {"done": True},
            {
                "state": S.RESTING,
                "cursor": None,
                "last_completed_at": NOW,
                "last_cycle_duration": NOW - STARTED,
            },
            (NOW + 600, NOW + 600),
        ),
        (
            "done-forgets-earlier-failures",
            {"attempts": 2, "last_error": "boom"},
            {"done": True},
            {
                "state": S.RESTING,
                "cursor": None,
                "attempts": 0,
                "last_error": None,
                "last_completed_at": NOW,
                "last_cycle_duration": NOW - STARTED,
            },
            (NOW + 600, NOW + 600),
        ),
        (
            "done-when-interrupted-still-completes",
            {},
            {"done": True, "interrupted": True},
            {
                "state": S.RESTING,
                "cursor": None,
                "last_completed_at": NOW,
                "last_cycle_duration": NOW - STARTED,
            },
            (NOW + 600, NOW + 600),
        ),
        (
            "done-after-the-clock-was-set-back-took-no-time",
            {"cycle_started_at": NOW + 3 * 3600},
            {"done": True},
            {
                "state": S.RESTING,
                "cursor": None,
                "last_completed_at": NOW,
                "last_cycle_duration": 0.0,
            },
            (NOW + 600, NOW + 600),
        ),
        (
            "work-left-waits-the-burst-interval",
            {},
            {},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW + 30, NOW + 30),
        ),
        (
            "work-left-forgets-earlier-failures",
            {"attempts": 4, "last_error": "boom"},
            {},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR, "attempts": 0, "last_error": None},
            (NOW + 30, NOW + 30),
        ),
        (
            "work-left-longer-retry-after-wins",
            {},
            {"retry_after": 90.0},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW + 90, NOW + 90),
        ),
        (
            "work-left-shorter-retry-after-loses-to-the-interval",
            {},
            {"retry_after": 5.0},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW + 30, NOW + 30),
        ),
        (
            "interrupted-is-due-at-once",
            {},
            {"interrupted": True},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW, NOW),
        ),
        (
            "interrupted-after-a-page-forgets-earlier-failures",
            {"attempts": 2, "last_error": "boom"},
            {"interrupted": True, "pages": 1},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR, "attempts": 0, "last_error": None},
            (NOW, NOW),
        ),
        (
            "interrupted-before-any-page-keeps-earlier-failures",
            {"attempts": 2, "last_error": "boom"},
            {"interrupted": True, "pages": 0},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW, NOW),
        ),
        (
            "interrupted-before-any-page-counts-no-failure",
            {},
            {"interrupted": True, "pages": 0},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW, NOW),
        ),
        (
            "interrupted-still-waits-out-a-retry-after",
            {},
            {"interrupted": True, "retry_after": 90.0},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW + 90, NOW + 90),
        ),
        (
            "work-left-a-year-long-retry-after-is-cut-to-the-rest-length",
            {},
            {"retry_after": 365 * 86400.0},
            {"state": S.INTERSTITIAL, "cursor": NEXT_CURSOR},
            (NOW + 600, NOW + 600),
        ),
        (
            "failed-a-year-long-retry-after-is-cut-to-the-rest-length",
            {},
            {"error": "429", "retry_after": 365 * 86400.0},
            {"state": S.BACKING_OFF, "cursor": NEXT_CURSOR, "attempts": 1, "last_error": "429"},
            (NOW + 600, NOW + 600),
        ),
        (
            "failed-first-time-first-step",
            {},
            {"error": "boom"},
            {"state": S.BACKING_OFF, "cursor": NEXT_CURSOR, "attempts": 1, "last_error": "boom"},
            (NOW + 8, NOW + 12),
        ),
        (
            "failed-again-next-step",
            {"attempts": 1, "last_error": "old"},
            {"error": "boom"},
            {"state": S.BACKING_OFF, "cursor": NEXT_CURSOR, "attempts": 2, "last_error": "boom"},
            (NOW + 16, NOW + 24),
        ),
        (
            "failed-past-the-last-step-stays-there",
            {"attempts": 7},
            {"error": "boom"},
            {"state": S.BACKING_OFF, "cursor": NEXT_CURSOR, "attempts": 8, "last_error": "boom"},
            (NOW + 32, NOW + 48),
        ),
        (
            "failed-longer-retry-after-wins",
            {},
            {"error": "429", "retry_after": 500.0},
            {"state": S.BACKING_OFF, "cursor": NEXT_CURSOR, "attempts": 1, "last_error": "429"},
            (NOW + 500, NOW + 500),
        ),
        (
            "failed-wins-over-done-and-interrupted",
            {},
            {"error": "boom", "done": True, "interrupted": True},
            {"state": S.BACKING_OFF, "cursor": NEXT_CURSOR, "attempts": 1, "last_error": "boom"},
            (NOW + 8, NOW + 12),
        ),
    ]

    @pytest.mark.parametrize(
        ("fields", "ending", "expected", "due"),
        [case[1:] for case in CASES],
        ids=[case[0] for case in CASES],
    )
    def test_record_after_the_burst(
        self,
        fields: dict[str, Any],
        ending: dict[str, Any],
        expected: dict[str, object],
        due: tuple[float, float],
    ) -> None:
        before = running(**fields)
        result = BurstResult(cursor=self.NEXT_CURSOR, duration=7.5, **ending)
        after = after_burst(before, result, SETTINGS, NOW, random.Random(0))
        differences = changed(before, after)
        next_action_at = differences.pop("next_action_at")
        assert differences == {**expected, "last_burst_duration": 7.5}
        assert isinstance(next_action_at, float)
        assert due[0] <= next_action_at <= due[1]
        assert before == running(**fields), "the record passed in is left alone"

    @pytest.mark.parametrize(
        ("ending", "state", "wait"),
        [
            ({}, S.INTERSTITIAL, 30.0),
            ({"error": "boom"}, S.BACKING_OFF, 12.0),
            ({"done": True}, S.RESTING, 600.0),
        ],
        ids=["interval", "backoff", "rest"],
    )
    def test_a_clock_stepped_during_the_burst_and_set_right_again_does_not_hold_the_provider(
        self, ending: dict[str, Any], state: ProviderState, wait: float
    ) -> None:
        """The burst began at NOW and took 7.5 s; the wall clock read 3 days on as it ended and
        was set right before the next call: the wait is as long as it would have been (it was
        capped at the longest wait the configuration allows, a whole rest for an interval)."""
        stepped = NOW + 3 * 86400.0
        result = BurstResult(cursor=self.NEXT_CURSOR, duration=7.5, **ending)

        after = after_burst(running(last_burst_at=NOW), result, SETTINGS, stepped, random.Random(0))

        due = after.next_action_at
        assert after.state is state
        assert due is not None
        assert NOW + 7.5 < due <= NOW + 7.5 + wait
        assert isinstance(decide(after, SETTINGS, due - 0.5), Wait)
        assert isinstance(decide(after, SETTINGS, due + 0.5), Burst)

    def test_backoff_uses_the_random_source(self) -> None:
        """Same seed, same retry time: no hidden randomness."""
        result = BurstResult(cursor=None, duration=1.0, error="boom")

        def retry_at(seed: int) -> float | None:
            return after_burst(running(), result, SETTINGS, NOW, random.Random(seed)).next_action_at

        assert retry_at(3) == retry_at(3)

    def test_first_cycle_without_a_start_time_took_no_time(self) -> None:
        result = BurstResult(cursor=None, duration=1.0, done=True)
        after = after_burst(running(cycle_started_at=None), result, SETTINGS, NOW, random.Random(0))
        assert after.last_cycle_duration == 0.0

    @pytest.mark.parametrize(
        "state", [state for state in S if state is not S.BURSTING], ids=lambda state: state.value
    )
    def test_only_a_bursting_provider_ends_a_burst(self, state: ProviderState) -> None:
        for ending in ({"done": True}, {}, {"error": "boom"}):
            result = BurstResult(cursor=None, duration=1.0, **ending)
            with pytest.raises(IllegalTransition):
                after_burst(running(state), result, SETTINGS, NOW, random.Random(0))


class TestOperatorCommands:
    @pytest.mark.parametrize("state", list(S), ids=lambda state: state.value)
    def test_reset_forgets_cursor_schedule_failures_and_blocked_removals(
        self, state: ProviderState
    ) -> None:
        before = running(state, attempts=3, last_error="boom", blocked_removals=12)
        after = after_reset(before)
        assert changed(before, after) == {
            "cursor": None,
            "next_action_at": None,
            "attempts": 0,
            "last_error": None,
            "blocked_removals": 0,
        } | ({"state": S.IDLE} if state is not S.IDLE else {})
        assert after.cycle_id == before.cycle_id, "the next cycle still gets a new id"

    @pytest.mark.parametrize(
        "state", [state for state in S if state is not S.BURSTING], ids=lambda state: state.value
    )
    def test_refresh_makes_due_now_and_keeps_the_rest(self, state: ProviderState) -> None:
        before = running(state, attempts=3, last_error="boom")
        assert changed(before, after_refresh(before, NOW)) == {"next_action_at": NOW}

    def test_refresh_of_a_crashed_burst_counts_its_failure_and_ends_its_backoff(self) -> None:
        before = running(S.BURSTING, attempts=2, last_error="boom", last_burst_at=NOW - 1)
        assert changed(before, after_refresh(before, NOW)) == {
            "state": S.BACKING_OFF,
            "attempts": 3,
            "last_error": CRASHED,
            "next_action_at": NOW,
        }

    # (state, expected changes) of a refresh that stands in for dropped or refused events
    NEW_CYCLE: ClassVar = [
        ("idle", S.IDLE, {}),
        ("resting", S.RESTING, {}),
        ("interstitial", S.INTERSTITIAL, {"state": S.RESTING, "cursor": None}),
        ("backing-off", S.BACKING_OFF, {"state": S.RESTING, "cursor": None}),
        (
            "crashed-burst",
            S.BURSTING,
            {"state": S.RESTING, "cursor": None, "attempts": 4, "last_error": CRASHED},
        ),
    ]

    @pytest.mark.parametrize(
        ("state", "expected"),
        [case[1:] for case in NEW_CYCLE],
        ids=[case[0] for case in NEW_CYCLE],
    )
    def test_refresh_for_events_abandons_the_cycle_in_progress(
        self, state: ProviderState, expected: dict[str, object]
    ) -> None:
        before = running(state, attempts=3, last_error="boom")

        after = after_refresh(before, NOW, new_cycle=True)

        assert changed(before, after) == {**expected, "next_action_at": NOW}
        decision = decide(after, SETTINGS, NOW)
        assert decision == Burst(new_cycle=True, reason=decision.reason)
        begun = before_burst(after, decision, NOW)
        assert (begun.cycle_id, begun.cursor) == (before.cycle_id + 1, None)
        assert begun.attempts == after.attempts, "no failure counted twice"

    @pytest.mark.parametrize(
        ("state", "completed_before", "waits"),
        [
            (S.INTERSTITIAL, False, True),
            (S.BACKING_OFF, False, True),
            (S.BURSTING, False, True),
            (S.IDLE, False, False),
            (S.INTERSTITIAL, True, False),
            (S.BACKING_OFF, True, False),
            (S.RESTING, True, False),
        ],
        ids=[
            "first-cycle-between-bursts",
            "first-cycle-backing-off",
            "first-cycle-crashed",
            "idle-no-cycle-under-way",
            "later-cycle",
            "later-cycle-backing-off",
            "resting",
        ],
    )
    def test_a_refresh_waits_for_the_first_cycle_only(
        self, state: ProviderState, completed_before: bool, waits: bool
    ) -> None:
        """Giving the first cycle up would keep the catalog empty for longer; a later one is
        given up (`after_refresh(new_cycle=True)`), and an idle provider starts one anyway."""
        before = running(state, last_completed_at=STARTED - 60 if completed_before else None)

        assert refresh_waits(before) is waits

    @pytest.mark.parametrize(
        ("attempts", "state"),
        [(0, S.IDLE), (2, S.RESTING), (5, S.BACKING_OFF)],
        ids=["first-failure", "after-a-completed-cycle", "past-max-attempts"],
    )
    def test_an_unavailable_provider_counts_a_failure_and_keeps_its_schedule(
        self, attempts: int, state: ProviderState
    ) -> None:
        before = running(state, attempts=attempts)
        after = after_unavailable(before, "no module named x")
        assert changed(before, after) == {
            "attempts": attempts + 1,
            "last_error": "no module named x",
        }


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
    # rest 600 s, last cycle 5 s -> a completed cycle is overdue after 3 x (600 + 60 + 5) =
    # 1995 s (rest, burstInterval or cron's minute: a call may come that long after the rest,
    # last cycle); bursts
    # stopped after 3 x (600 + 30 + 10) = 1920 s (rest, burstInterval, burstLength)
    CASES: ClassVar = [
        ("never-run", {}, 0, []),
        ("just-completed", {"last_completed_at": NOW - 10, "last_cycle_duration": 60.0}, 0, []),
        ("failures-below-max", {"attempts": 2}, 0, []),
        ("failures-at-max", {"attempts": 3}, 0, ["maxAttempts 3"]),
        ("failures-past-max", {"attempts": 9}, 0, ["9 consecutive failed bursts"]),
        ("removals-blocked", {}, 4, ["4 removals blocked"]),
        (
            "completion-overdue",
            {
                "last_completed_at": NOW - 1996,
                "last_cycle_duration": 5.0,
                "last_burst_at": NOW - 1901,
            },
            0,
            ["no completed cycle in 1996s"],
        ),
        (
            "completion-just-in-time",
            {
                "last_completed_at": NOW - 1995,
                "last_cycle_duration": 5.0,
                "last_burst_at": NOW - 1900,
            },
            0,
            [],
        ),
        # a cycle that took a day (an outage, or a machine suspended in its middle) allows days
        # without a completed cycle; bursts that stop say so all the same
        (
            "bursts-stopped-after-a-day-long-cycle",
            {
                "last_completed_at": NOW - 1911,
                "last_cycle_duration": 86_400.0,
                "last_burst_at": NOW - 1921,
            },
            0,
            ["no burst in 1921s (allowed 3 x (restLength or the longest backoff step"],
        ),
        (
            "bursting-again-after-a-day-long-cycle",
            {
                "last_completed_at": NOW - 1910,
                "last_cycle_duration": 86_400.0,
                "last_burst_at": NOW - 1920,
            },
            0,
            [],
        ),
        # the first cycle: 3 x (600 + 30 + 10) = 1920 s without a burst
        ("first-cycle-never-bursts", {"cycle_started_at": NOW - 1921}, 0, ["no burst in 1921s"]),
        ("first-cycle-still-young", {"cycle_started_at": NOW - 100}, 0, []),
        (
            "first-cycle-long-and-still-bursting",
            {"cycle_started_at": NOW - 86_400, "last_burst_at": NOW - 1920},
            0,
            [],
        ),
        (
            "first-cycle-whose-bursts-stopped",
            {"cycle_started_at": NOW - 86_400, "last_burst_at": NOW - 1921},
            0,
            ["the first cycle has had no burst in 1921s (allowed 3 x (restLength or the longest"],
        ),
        (
            "just-completed-a-cycle-that-stored-a-negative-duration",
            {"last_completed_at": NOW, "last_cycle_duration": -10_791.0},
            0,
            [],
        ),
        (
            "overdue-with-a-negative-duration-counts-it-as-none",
            {"last_completed_at": NOW - 1981, "last_cycle_duration": -10_791.0},
            0,
            [
                "allowed 3 x (restLength + burstInterval, at least cron's minute, + last cycle) "
                "= 1980s"
            ],
        ),
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

    def test_failed_bursts_say_the_last_error(self) -> None:
        failing = record(S.BACKING_OFF, attempts=3, last_error="GET /namespaces: HTTP 503")

        [problem] = health_problems(failing, SETTINGS, NOW, blocked_removals=0)

        assert problem == (
            "3 consecutive failed bursts (maxAttempts 3); the last: GET /namespaces: HTTP 503"
        )

    def test_a_first_cycle_backing_off_for_its_longest_step_is_well(self) -> None:
        """restLength 300 s, a backoff step of 1,800 s: the gap between bursts is the step."""
        settings = replace(SETTINGS, rest_length=300.0, backoff=(30.0, 1800.0))
        backing_off = record(S.BACKING_OFF, cycle_started_at=NOW - 4000, last_burst_at=NOW - 2700)

        assert health_problems(backing_off, settings, NOW, blocked_removals=0) == []

    @pytest.mark.parametrize(("owned", "unhealthy"), [(0, True), (1, False), (None, False)])
    def test_a_completed_cycle_that_left_nothing_is_a_problem(
        self, owned: int | None, unhealthy: bool
    ) -> None:
        """OpenChoreo always serves a namespace (`default`): a catalog left empty is a client
        that may see nothing, which `run` met with exit 0 and nothing in a cron mail."""
        rested = record(S.RESTING, last_completed_at=NOW - 10, last_burst_at=NOW - 15)

        problems = health_problems(rested, SETTINGS, NOW, blocked_removals=0, owned=owned)

        assert bool(problems) is unhealthy
        if unhealthy:
            assert problems[0].startswith("its last completed cycle left it no entities")

    def test_a_first_cycle_under_way_that_owns_nothing_yet_is_well(self) -> None:
        walking = record(S.INTERSTITIAL, cycle_started_at=NOW - 100, last_burst_at=NOW - 20)

        assert health_problems(walking, SETTINGS, NOW, blocked_removals=0, owned=0) == []


@pytest.mark.parametrize(
    ("until", "held"),
    [
        (None, False),  # a stored fact that is not a time
        (NOW - 1, False),  # passed: the next drain clears it
        (NOW, False),
        (NOW + 1, True),
        (NOW + 3600, True),  # the longest backoff step below
        (NOW + 3601, False),  # a clock set back: it does not hold the events for longer
    ],
    ids=["not-a-time", "passed", "now", "soon", "longest-step", "beyond-the-longest-step"],
)
def test_events_held_at(until: float | None, held: bool) -> None:
    config = IncrementalConfig(backoff=(30.0, 3600.0))
    assert events_held_at(until, NOW, config) is held
