"""Pure scheduling: what a provider should do now, which state follows which, and when it is due.

`decide` chooses; `transition` is the state machine; `before_burst`, `after_burst`,
`after_reset`, `after_refresh` and `after_unavailable` are the only places that change a
record's state, `next_action_at` and `attempts`: each returns a new record and leaves storing
it to the caller. Nothing here reads a clock or touches storage; `now` and the random source
are arguments.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace

from choreo_ingest.config import IncrementalConfig
from choreo_ingest.errors import IllegalTransition
from choreo_ingest.models import JSON, ProviderRecord, ProviderState

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
    """Burst (maybe starting a cycle) or wait, from the stored state alone.

    The stored `next_action_at` is kept to no later than the configuration allows from when the
    wait began (`latest_due`): a shorter `restLength` configured since, or a clock set back,
    does not hold a provider for the old time. A burst that did not finish (the process was killed)
    counts as a failure: it resumes once the backoff step for it has passed since it began, so
    a burst that kills its process every time backs off instead of running every minute.
    """
    state = record.state
    if state is ProviderState.IDLE:
        return Burst(new_cycle=True, reason="no cycle yet")
    if state is ProviderState.BURSTING:
        began = record.last_burst_at
        if began is not None and began <= now + CLOCK_SKEW and not force:
            resume_at = began + crash_backoff(record.attempts, config)
            if now < resume_at:
                return Wait(until=resume_at, reason="backing off after a burst that did not finish")
        return Burst(new_cycle=False, reason="resuming a burst that did not finish")
    due = latest_due(record, config, now)
    is_due = due is None or now >= due
    if state is ProviderState.RESTING:
        if is_due or force:
            return Burst(
                new_cycle=True, reason=_rest_ended(record, config, now) if is_due else "forced"
            )
        return Wait(until=due, reason="resting after a completed cycle")
    waiting = {
        ProviderState.INTERSTITIAL: ("interval is over", "waiting out the burst interval"),
        ProviderState.BACKING_OFF: ("backoff is over", "backing off after a failed burst"),
    }
    go, hold = waiting[state]
    if is_due or force:
        return Burst(new_cycle=False, reason=go if is_due else "forced")
    return Wait(until=due, reason=hold)


def _rest_ended(record: ProviderRecord, config: IncrementalConfig, now: float) -> str:
    """Why a resting provider is due: its rest is over, or it was made due sooner (a refresh,
    which leaves no other trace in the record, or a time stored under a shorter restLength)."""
    began = record.last_completed_at
    if began is None or began > now + CLOCK_SKEW or now >= began + config.rest_length:
        return "rest is over"
    return "due before restLength has passed (a refresh, or a shorter restLength then)"


def next_action_time(
    record: ProviderRecord, config: IncrementalConfig, now: float, *, running: bool
) -> float | None:
    """When a `run` bursts for this provider next, as `status` and the metrics say it: the end
    of the wait `decide` chooses now (a `restLength` shortened since the wait began, a crashed
    burst's backoff); when it is due already, the time it became due (never a time ahead: a
    rest shortened past its end is due at once, whatever time was stored); None while a burst
    runs."""
    if record.state is ProviderState.BURSTING and running:
        return None
    decision = decide(record, config, now)
    if isinstance(decision, Wait):
        return decision.until
    if record.state is ProviderState.BURSTING:  # did not finish: the next run resumes it
        return now
    due = latest_due(record, config, now)
    return due if due is None or due <= now else now


CLOCK_SKEW = 300.0
"""How far ahead of `now` a stored time may lie and be taken for another host's clock a little
ahead of this one's (a state in PostgreSQL, shared), whose waits hold here too: further ahead,
this host's clock was set back, and a wait it began ends at once."""


def latest_due(record: ProviderRecord, config: IncrementalConfig, now: float) -> float | None:
    """When a resting, interstitial or backing-off provider is due: its stored time, but no
    later than the longest wait the configuration allows after the event that began it (a
    completed cycle, the end of a burst); at once when that event lies further ahead of `now`
    than `CLOCK_SKEW` (the clock was set back)."""
    due = record.next_action_at
    if record.state is ProviderState.RESTING:
        began, longest = record.last_completed_at, config.rest_length
    elif record.last_burst_at is None:
        return due
    else:
        began = record.last_burst_at + (record.last_burst_duration or 0.0)
        longest = (
            longest_wait(config)
            if record.state is ProviderState.BACKING_OFF
            else max(config.burst_interval, longest_retry_after(config))
        )
    if due is None or began is None:
        return due
    if began > now + CLOCK_SKEW:
        return now
    return min(due, began + longest)


def longest_retry_after(config: IncrementalConfig) -> float:
    """The longest a server's Retry-After may hold a provider: a whole rest or the longest
    backoff step, whichever is longer (a year-long Retry-After is a server's mistake)."""
    return max(config.rest_length, max(config.backoff))


def longest_wait(config: IncrementalConfig) -> float:
    """The longest a failed burst may wait: the last backoff step with its jitter, or the
    longest Retry-After honoured."""
    return max(max(config.backoff) * (1 + JITTER), longest_retry_after(config))


def crash_backoff(attempts: int, config: IncrementalConfig) -> float:
    """Seconds after a burst that did not finish began before it resumes: the backoff step of
    the failure it counts as, without jitter (the decision is made from the stored state
    alone): the first one, `backoff`'s first step (the next cron call, by default)."""
    return backoff_step(attempts + 1, config)


def backoff_step(failures: int, config: IncrementalConfig) -> float:
    """The configured step after `failures` consecutive failures (1-based; the last step
    repeats)."""
    steps = config.backoff
    return steps[min(max(failures, 1) - 1, len(steps) - 1)]


def backoff_delay(
    attempts: int,
    config: IncrementalConfig,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after the `attempts`-th consecutive failure (1-based); a longer
    `retry_after` wins, up to `longest_retry_after`."""
    delay = backoff_step(attempts, config) * (1 + rng.uniform(-JITTER, JITTER))
    if retry_after is not None and retry_after > delay:
        return min(retry_after, longest_retry_after(config))
    return delay


class Trigger(enum.Enum):
    """What happened to a provider: the input of the state machine (`transition`).

    Not `Event`: that is `models.Event`, an OpenChoreo change notification.
    """

    CYCLE_STARTED = "cycle_started"
    BURST_STARTED = "burst_started"
    BURST_ENDED_WITH_WORK_LEFT = "burst_ended_with_work_left"
    CYCLE_COMPLETED = "cycle_completed"
    BURST_FAILED = "burst_failed"
    RESET = "reset"
    REFRESHED = "refreshed"
    CYCLE_ABANDONED = "cycle_abandoned"


_S = ProviderState
_TRANSITIONS: dict[tuple[ProviderState, Trigger], ProviderState] = {
    **{(state, Trigger.RESET): _S.IDLE for state in _S},
    **{(state, Trigger.CYCLE_STARTED): _S.BURSTING for state in (_S.IDLE, _S.RESTING)},
    **{
        (state, Trigger.BURST_STARTED): _S.BURSTING
        for state in (_S.INTERSTITIAL, _S.BACKING_OFF, _S.BURSTING)
    },
    (_S.BURSTING, Trigger.BURST_ENDED_WITH_WORK_LEFT): _S.INTERSTITIAL,
    (_S.BURSTING, Trigger.CYCLE_COMPLETED): _S.RESTING,
    (_S.BURSTING, Trigger.BURST_FAILED): _S.BACKING_OFF,
    (_S.RESTING, Trigger.REFRESHED): _S.RESTING,
    (_S.BACKING_OFF, Trigger.REFRESHED): _S.BACKING_OFF,
    (_S.INTERSTITIAL, Trigger.REFRESHED): _S.INTERSTITIAL,
    (_S.IDLE, Trigger.REFRESHED): _S.IDLE,
    # A crashed burst (`bursting` under the run lock): the failure it was, its backoff over.
    (_S.BURSTING, Trigger.REFRESHED): _S.BACKING_OFF,
    # A cycle in progress given up for a new one; between cycles, as after a completed one.
    **{
        (state, Trigger.CYCLE_ABANDONED): _S.RESTING
        for state in (_S.INTERSTITIAL, _S.BACKING_OFF, _S.BURSTING)
    },
}


def transition(state: ProviderState, trigger: Trigger) -> ProviderState:
    """The state after `trigger`; raises IllegalTransition for a move the design does not allow."""
    try:
        return _TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(f"{trigger.value} is not allowed in state {state.value}") from None


def before_burst(record: ProviderRecord, burst: Burst, now: float) -> ProviderRecord:
    """The record as the burst `decide` chose begins: a new cycle starts from no cursor; any other
    burst resumes from the stored one."""
    if burst.new_cycle:
        return replace(
            record,
            state=transition(record.state, Trigger.CYCLE_STARTED),
            cycle_id=record.cycle_id + 1,
            cursor=None,
            cycle_started_at=now,
            last_burst_at=now,
        )
    record = crash_counted(record)
    return replace(record, state=transition(record.state, Trigger.BURST_STARTED), last_burst_at=now)


CRASHED = (
    "the burst before this one did not finish (the process was killed or crashed, or the state "
    "store failed under it: a full disk, say)"
)


def crash_counted(record: ProviderRecord) -> ProviderRecord:
    """A `bursting` record found by a caller that holds the run lock (or found while nobody
    does) is a burst that did not finish: one more failure, counted once, by whatever moves it
    on first, and so reported before that."""
    if record.state is not ProviderState.BURSTING:
        return record
    return replace(record, attempts=record.attempts + 1, last_error=CRASHED)


@dataclass(frozen=True)
class BurstResult:
    """How a burst ended, as the engine saw it: the input of `after_burst`."""

    cursor: JSON
    """The cursor after the last committed page (the one the burst began with, if none was)."""
    duration: float
    """Seconds the burst ran."""
    done: bool = False
    """The provider finished the cycle."""
    error: str | None = None
    """Why the burst failed (set, it wins over `done`): a backoff follows."""
    retry_after: float | None = None
    """The source asked for at least this many seconds before the next request (a 429)."""
    interrupted: bool = False
    """SIGTERM/SIGINT ended the burst: due again at once, unless failed or done."""
    pages: int = 0
    """Pages the burst committed. An interrupted burst that committed none says nothing about
    the source: the failures counted before it stand."""


def after_burst(
    record: ProviderRecord,
    result: BurstResult,
    config: IncrementalConfig,
    now: float,
    rng: random.Random,
) -> ProviderRecord:
    """The record after a burst of a `bursting` provider ended at `now`.

    - failed: backing off for `backoff_delay` (at least `retry_after`), one more attempt;
    - done: resting for `restLength`, the cycle's cursor dropped, the failures forgotten;
    - otherwise: interstitial for `burstInterval` (at least `retry_after`; no wait when
      interrupted), the cursor kept, the failures forgotten (unless it was interrupted before
      its first page).

    A cycle's duration is never negative: a wall clock set back during the cycle counts as no
    time, not as time owed. The burst ended no later than its (monotonic) duration after its
    start: a wall clock stepped on during the burst and set right before the next call does not
    date the wait from the step.
    """
    if record.last_burst_at is not None:
        now = min(now, record.last_burst_at + result.duration)
    ended = replace(record, cursor=result.cursor, last_burst_duration=result.duration)
    if result.error is not None:
        attempts = record.attempts + 1
        delay = backoff_delay(attempts, config, rng, result.retry_after)
        return replace(
            ended,
            state=transition(record.state, Trigger.BURST_FAILED),
            attempts=attempts,
            last_error=result.error,
            next_action_at=now + delay,
        )
    if result.done:
        return replace(
            ended,
            state=transition(record.state, Trigger.CYCLE_COMPLETED),
            cursor=None,
            attempts=0,
            last_error=None,
            last_completed_at=now,
            last_cycle_duration=max(now - (record.cycle_started_at or now), 0.0),
            next_action_at=now + config.rest_length,
        )
    retry_after = min(result.retry_after or 0.0, longest_retry_after(config))
    wait = max(retry_after, 0.0 if result.interrupted else config.burst_interval)
    proved_nothing = result.interrupted and not result.pages
    return replace(
        ended,
        state=transition(record.state, Trigger.BURST_ENDED_WITH_WORK_LEFT),
        attempts=record.attempts if proved_nothing else 0,
        last_error=record.last_error if proved_nothing else None,
        next_action_at=now + wait,
    )


def after_reset(record: ProviderRecord) -> ProviderRecord:
    """Back to idle, forgetting the cursor, the failures and the blocked removals: the next run
    starts a fresh cycle."""
    return replace(
        record,
        state=transition(record.state, Trigger.RESET),
        cursor=None,
        next_action_at=None,
        attempts=0,
        last_error=None,
        blocked_removals=0,
    )


def in_cycle(record: ProviderRecord) -> bool:
    """Whether a cycle is in progress (walking, between its bursts, or backing off)."""
    return (record.state, Trigger.CYCLE_ABANDONED) in _TRANSITIONS


def refresh_waits(record: ProviderRecord) -> bool:
    """Whether a refresh asked for now waits: the provider's first cycle is under way. Walking
    from the start again would keep the catalog empty for longer than events could make it
    stale; the request is applied once that cycle completes, and the second begins at once."""
    return in_cycle(record) and record.last_completed_at is None


def after_refresh(record: ProviderRecord, now: float, *, new_cycle: bool = False) -> ProviderRecord:
    """Due at `now`, whatever the provider waits for; its cursor stays, so a cycle in progress
    goes on where it stopped. A crashed burst (the caller holds the run lock, so a `bursting`
    record is one) counts as the failure it was, as `before_burst` would count it, and waits
    out no crash backoff: backing off, due now.

    `new_cycle` (a refresh standing in for events that were dropped or refused): a cycle in
    progress is abandoned, so that the next burst starts a new cycle, whose walk begins after
    those events; resuming would go on past the listings they were about. The abandoned cycle
    is never swept (it walked part of the platform only), and the refs it marked seen count as
    unseen in the new cycle, so its sweep removes what the events would have.
    """
    record = crash_counted(record)
    if new_cycle and in_cycle(record):
        return replace(
            record,
            state=transition(record.state, Trigger.CYCLE_ABANDONED),
            cursor=None,
            next_action_at=now,
        )
    return replace(record, state=transition(record.state, Trigger.REFRESHED), next_action_at=now)


def after_unavailable(record: ProviderRecord, problem: str) -> ProviderRecord:
    """A configured provider that could not be loaded: one more failure, counted towards
    `maxAttempts`; its state and schedule stay, so it goes on as they say once it loads."""
    return replace(record, attempts=record.attempts + 1, last_error=problem)


def after_loaded(record: ProviderRecord) -> ProviderRecord:
    """A provider that could not be loaded loads again: the failures counted are forgotten
    (its bursts, if they fail again, count afresh), so `health` does not stay red for them."""
    return replace(record, attempts=0, last_error=None)


def health_problems(
    record: ProviderRecord,
    config: IncrementalConfig,
    now: float,
    *,
    blocked_removals: int,
    owned: int | None = None,
) -> list[str]:
    """Why this provider is unhealthy; an empty list means healthy. `owned`: the entities it
    owns, given for a provider that names its source (OpenChoreo's, whose every install serves a
    namespace: owning none after a cycle is a client that may see nothing); None: no matter."""
    problems = []
    if record.attempts >= config.max_attempts:
        problems.append(
            f"{record.attempts} consecutive failed bursts (maxAttempts {config.max_attempts})"
            + failures_cause(record.last_error)
        )
    if blocked_removals:
        problems.append(f"{blocked_removals} removals blocked; see `choreo-ingest removals`")
    longest = max(config.rest_length, *config.backoff)
    gap = 3 * (longest + config.burst_interval + config.burst_length)
    if record.last_completed_at is not None:
        if owned == 0 and record.state is not ProviderState.IDLE:  # idle: reset, not walked yet
            problems.append(
                "its last completed cycle left it no entities: a source that lists nothing, or "
                "a client that may see none of it (`choreo-ingest check` says what it lists)"
            )
        cycle_time = max(record.last_cycle_duration or 0.0, 0.0)  # an older version's, < 0
        call_gap = max(config.burst_interval, CRON_PERIOD)  # the next call may come that late
        allowed = 3 * (config.rest_length + call_gap + cycle_time)
        since = now - record.last_completed_at
        # A cycle's time counts an outage or a suspended machine in its middle (days): the
        # bursts' own rhythm says sooner that no run comes (cron stopped, a secret gone).
        quiet = now - (record.last_burst_at or record.last_completed_at)
        if since > allowed:
            problems.append(
                f"no completed cycle in {since:.0f}s (allowed 3 x (restLength + burstInterval, "
                f"at least cron's minute, + last cycle) = {allowed:.0f}s)"
            )
        elif quiet > gap:
            problems.append(f"no burst in {quiet:.0f}s {_allowed(gap)}")
        return problems
    # The first cycle's length is not known: it is well while its bursts go on (a failing
    # burst counts towards maxAttempts, a listing that keeps restarting is a problem of its own).
    last = record.last_burst_at if record.last_burst_at is not None else record.cycle_started_at
    if last is not None and now - last > gap:
        problems.append(f"the first cycle has had no burst in {now - last:.0f}s {_allowed(gap)}")
    return problems


def failures_cause(last_error: str | None) -> str:
    """How the problem of `maxAttempts` failed bursts in a row quotes the last error."""
    return f"; the last: {last_error}" if last_error else ""


CRON_PERIOD = 60.0
"""How far apart cron's calls come: a rest may end just after one."""


def _allowed(gap: float) -> str:
    return (
        f"(allowed 3 x (restLength or the longest backoff step, + burstInterval + burstLength) "
        f"= {gap:.0f}s): no run bursts (cron or serve stopped, or each run fails before it)"
    )


def events_held_at(until: float | None, now: float, config: IncrementalConfig) -> bool:
    """Whether events held until `until` (`eventsHeldUntil`; None: not a time) still wait at
    `now`: not past it, nor past the longest backoff step from now (a clock set back does not
    hold them for longer)."""
    return until is not None and now < until <= now + max(config.backoff)
