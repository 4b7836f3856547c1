"""A listing that cannot come to its end: its stored cursor expired between bursts again and
again (`note_stale_start`), or it restarted again and again before its end on cursors that may
have expired (`note_restart`: OpenChoreo's die together with its first page's revision); the
health problem that says so, and what clears it (`stale_starts_over`)."""

from __future__ import annotations

from choreo_ingest.errors import CursorExpired, CursorRejected
from choreo_ingest.models import PROBLEM_FACT
from choreo_ingest.providers.openchoreo.traversal_cursor import (
    TraversalCursor,
    may_be_server_fault,
)

STALE_STARTS_REPORTED = 3
"""Bursts in a row whose stored cursor had expired before the listing is reported as stuck;
also restarts of one listing on cursors that may have expired, before it came to its end."""
COMPACTION_SECONDS = 300.0
"""Kubernetes compacts etcd every 5 minutes by default, and every continue token of a listing
(an OpenChoreo v1 cursor wraps one) dies with the revision of the listing's first page: a
listing younger than this cannot have lost its cursors that way."""


def listing_age(state: TraversalCursor, now: float) -> float | None:
    """Seconds since the listing in progress asked for its first page; None when a cursor of an
    older release does not say, or the clock was set back since."""
    began = state.listed_at
    return None if began is None or began > now else now - began


def young(age: float | None) -> bool:
    """Whether a listing `age` seconds old (None: not known) is too young to have lost its
    cursors to compaction: a fresh cursor of it that fails is no expiry."""
    return age is None or age < COMPACTION_SECONDS


def note_expiry(
    state: TraversalCursor,
    phase: str,
    facts: dict[str, str | None],
    expired: CursorExpired,
    *,
    stored: bool,
    age: float | None,
) -> bool:
    """The `phase` listing restarts, its cursor having failed with `expired` (`stored`: one a
    burst before handed out); counted when an expiry may explain it (not a rejected cursor,
    nor a fresh one of a young listing). Whether the listing became stuck with it."""
    was_stuck = stuck(state)
    if (stored or not young(age)) and not isinstance(expired, CursorRejected):
        if stored:
            note_stale_start(state, phase, facts, expired)
        note_restart(state, phase, facts, age)
    return stuck(state) and not was_stuck


def stuck(state: TraversalCursor) -> bool:
    """Whether the listing in progress is reported as one that may never come to its end."""
    return max(state.stale_starts, state.restarts) >= STALE_STARTS_REPORTED


def note_stale_start(
    state: TraversalCursor, phase: str, facts: dict[str, str | None], expired: CursorExpired
) -> None:
    """A burst began on a stored cursor of the `phase` listing that had expired: after
    STALE_STARTS_REPORTED in a row, the problem says so."""
    state.stale_starts += 1
    if state.stale_starts >= STALE_STARTS_REPORTED:
        facts[PROBLEM_FACT] = stale_starts_problem(phase, state.stale_starts, expired)


def note_restart(
    state: TraversalCursor, phase: str, facts: dict[str, str | None], age: float | None
) -> None:
    """The listing in progress restarts, `age` seconds after its first page, on a cursor that
    may have expired (a stored one, or one of a listing older than COMPACTION_SECONDS; a fresh
    cursor of a young listing is a page the server may fail to build: `step_over`): after
    STALE_STARTS_REPORTED without coming to its end, the problem says so, unless a stale
    start's own problem does."""
    state.restarts += 1
    if state.restarts < STALE_STARTS_REPORTED or state.stale_starts >= STALE_STARTS_REPORTED:
        return
    after = "" if age is None else f", the last time {age:.0f} s after its first page"
    facts[PROBLEM_FACT] = (
        f"the {phase} listing restarted {state.restarts} times without coming to its end"
        f"{after}: OpenChoreo's cursors are Kubernetes continue tokens, which die together "
        "when etcd compacts the revision of the listing's first page (every 5 minutes by "
        "default), so a listing must be walked to its end within about 5 minutes: lengthen "
        "openchoreo.incremental.burstLength, or burst more often (burstInterval, a timer below "
        "cron's minute, or serve)"
    )


def stale_starts_over(
    state: TraversalCursor, facts: dict[str, str | None], *, ended: bool = False
) -> None:
    """A stored cursor worked, or (`ended`) a listing came to its end: its stale starts are
    over, and once it ended, its restarts; the problem goes with the last of them (a listing
    still restarting keeps it, to be said in its own words at its next restart)."""
    was_stuck = stuck(state)
    state.stale_starts = 0
    if ended:
        state.restarts = 0
    if was_stuck and not stuck(state):
        facts[PROBLEM_FACT] = None


def stale_starts_problem(phase: str, stale_starts: int, expired: CursorExpired) -> str:
    """The problem a listing whose stored cursor expired between `stale_starts` bursts in a row
    is (`expired`: the last expiry)."""
    fault = (
        " (or, as the answer was HTTP 5xx, the server fails on a resource of the page "
        "it leads to: see the openchoreo-api logs)"
        if may_be_server_fault(expired)
        else ""
    )
    where = f" (GET {expired.path})" if expired.path else ""
    return (
        f"the {phase} listing's cursor{where} expired between the last {stale_starts} "
        f"bursts{fault}, so the listing restarts every burst and may never complete: "
        "burst more often than a cursor lives (openchoreo.incremental.burstInterval, and a "
        "timer below cron's minute, or serve) or lengthen openchoreo.incremental.burstLength"
    )
