"""Pure scheduling: what a provider should do now, and which state follows which.

Nothing here reads a clock or touches storage; `now` and the random source are arguments.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from choreo_ingest.config import IncrementalConfig
from choreo_ingest.errors import IllegalTransition
from choreo_ingest.models import ProviderRecord, ProviderState

JITTER = 0.2
"""Backoff steps are stretched or shrunk by up to this fraction, so retries do not align."""


@dataclass(frozen=True)
class Burst:
    new_cycle: bool
    reason: str


@dataclass(frozen=True)
class Wait:
    until: float | None
    reason: str


Decision = Burst | Wait


def decide(
    record: ProviderRecord, config: IncrementalConfig, now: float, *, force: bool = False
) -> Decision:
    """Burst (maybe starting a cycle) or wait, from the stored state alone."""
    del config  # the stored next_action_at already encodes every configured interval
    state, due = record.state, record.next_action_at
    if state is ProviderState.IDLE:
        return Burst(new_cycle=True, reason="no cycle yet")
    if state is ProviderState.BURSTING:
        return Burst(new_cycle=False, reason="resuming a burst that did not finish")
    is_due = due is None or now >= due
    if state is ProviderState.RESTING:
        if is_due or force:
            return Burst(new_cycle=True, reason="forced" if not is_due else "rest is over")
        return Wait(until=due, reason="resting after a completed cycle")
    waiting = {
        ProviderState.INTERSTITIAL: ("interval is over", "waiting out the burst interval"),
        ProviderState.BACKING_OFF: ("backoff is over", "backing off after a failed burst"),
    }
    go, hold = waiting[state]
    if is_due or force:
        return Burst(new_cycle=False, reason=go if is_due else "forced")
    return Wait(until=due, reason=hold)


def backoff_delay(
    attempts: int,
    config: IncrementalConfig,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after the `attempts`-th consecutive failure (1-based)."""
    steps = config.backoff
    step = steps[min(max(attempts, 1) - 1, len(steps) - 1)]
    delay = step * (1 + rng.uniform(-JITTER, JITTER))
    if retry_after is not None and retry_after > delay:
        return retry_after
    return delay


class Event(enum.Enum):
    CYCLE_STARTED = "cycle_started"
    BURST_STARTED = "burst_started"
    BURST_ENDED_WITH_WORK_LEFT = "burst_ended_with_work_left"
    CYCLE_COMPLETED = "cycle_completed"
    BURST_FAILED = "burst_failed"
    RESET = "reset"
    REFRESHED = "refreshed"


_S = ProviderState
_TRANSITIONS: dict[tuple[ProviderState, Event], ProviderState] = {
    **{(state, Event.RESET): _S.IDLE for state in _S},
    **{(state, Event.CYCLE_STARTED): _S.BURSTING for state in (_S.IDLE, _S.RESTING)},
    **{
        (state, Event.BURST_STARTED): _S.BURSTING
        for state in (_S.INTERSTITIAL, _S.BACKING_OFF, _S.BURSTING)
    },
    (_S.BURSTING, Event.BURST_ENDED_WITH_WORK_LEFT): _S.INTERSTITIAL,
    (_S.BURSTING, Event.CYCLE_COMPLETED): _S.RESTING,
    (_S.BURSTING, Event.BURST_FAILED): _S.BACKING_OFF,
    (_S.RESTING, Event.REFRESHED): _S.RESTING,
    (_S.BACKING_OFF, Event.REFRESHED): _S.BACKING_OFF,
    (_S.INTERSTITIAL, Event.REFRESHED): _S.INTERSTITIAL,
    (_S.IDLE, Event.REFRESHED): _S.IDLE,
    (_S.BURSTING, Event.REFRESHED): _S.BURSTING,  # a crashed burst: already due
}


def transition(state: ProviderState, event: Event) -> ProviderState:
    """The state after `event`; raises IllegalTransition for a move the design does not allow."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed in state {state.value}") from None


def health_problems(
    record: ProviderRecord, config: IncrementalConfig, now: float, *, blocked_removals: int
) -> list[str]:
    """Why this provider is unhealthy; an empty list means healthy."""
    problems = []
    if record.attempts >= config.max_attempts:
        problems.append(
            f"{record.attempts} consecutive failed bursts (maxAttempts {config.max_attempts})"
        )
    if blocked_removals:
        problems.append(f"{blocked_removals} removals blocked; see `choreo-ingest removals`")
    cycle_time = record.last_cycle_duration or 0.0
    allowed = 3 * (config.rest_length + cycle_time)
    since = record.last_completed_at
    if since is None:
        since = record.cycle_started_at
    if since is not None and now - since > allowed:
        problems.append(
            f"no completed cycle in {now - since:.0f}s (allowed 3 x (restLength + last cycle) "
            f"= {allowed:.0f}s)"
        )
    return problems
