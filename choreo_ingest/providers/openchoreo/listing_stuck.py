"""A listing that cannot come to its end: its stored cursor expired between bursts again and
again (`note_stale_start`), or it restarted again and again before its end however caused
(`note_restart`, for OpenChoreo's cursors die together with its first page's revision); the
health problem that says so, and what clears it (`stale_starts_over`)."""

from __future__ import annotations

from choreo_ingest.errors import CursorExpired
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


def note_stale_start(
    state: TraversalCursor, phase: str, facts: dict[str, str | None], expired: CursorExpired
) -> str | None:
    """A burst began on a stored cursor of the `phase` listing that had expired; the problem,
    when this start is the one that makes it one (once a streak: for a log line cron mails)."""
    state.stale_starts += 1
    if state.stale_starts < STALE_STARTS_REPORTED:
        return None
    problem = stale_starts_problem(phase, state.stale_starts, expired)
    facts[PROBLEM_FACT] = problem
    return problem if state.stale_starts == STALE_STARTS_REPORTED else None


def stale_starts_over(
    state: TraversalCursor, facts: dict[str, str | None], *, ended: bool = False
) -> None:
    """A stored cursor worked, or (`ended`) a listing came to its end: its stale starts are
    over, and once it ended, its restarts."""
    if state.stale_starts >= STALE_STARTS_REPORTED or (
        ended and state.restarts >= STALE_STARTS_REPORTED
    ):
        facts[PROBLEM_FACT] = None
    state.stale_starts = 0
    if ended:
        state.restarts = 0


def note_restart(
    state: TraversalCursor, phase: str, facts: dict[str, str | None], age: float | None
) -> str | None:
    """The listing in progress restarts, `age` seconds after its first page, on a cursor that
    may have expired (a stored one, or one of a listing older than COMPACTION_SECONDS; a fresh
    cursor of a young listing is a page the server may fail to build: `step_over`); the
    problem when it has restarted so too often without coming to its end, once (for a log
    line cron mails). A stale start's own problem, when there is one, stands."""
    state.restarts += 1
    if state.restarts < STALE_STARTS_REPORTED or state.stale_starts >= STALE_STARTS_REPORTED:
        return None
    after = "" if age is None else f", the last time {age:.0f} s after its first page"
    problem = (
        f"the {phase} listing restarted {state.restarts} times without coming to its end"
        f"{after}: OpenChoreo's cursors are Kubernetes continue tokens, which die together "
        "when etcd compacts the revision of the listing's first page (every 5 minutes by "
        "default), so a listing must be walked to its end within about 5 minutes: lengthen "
        "openchoreo.incremental.burstLength, or burst more often (burstInterval, a timer below "
        "cron's minute, or serve)"
    )
    facts[PROBLEM_FACT] = problem
    return problem if state.restarts == STALE_STARTS_REPORTED else None


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
