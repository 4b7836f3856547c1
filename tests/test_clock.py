"""The system clock: which clocks it reads."""

from __future__ import annotations

import time

import pytest

from choreo_ingest.clock import SystemClock, rfc3339_due


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux's CLOCK_BOOTTIME only")
def test_durations_count_a_suspend(monkeypatch: pytest.MonkeyPatch) -> None:
    """`time.monotonic` stops while the machine sleeps: a burst across a laptop's night was
    dated back to its start, its rest skipped and `health` red for a cycle just completed."""
    asleep = 8 * 3600.0
    monotonic = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: monotonic)
    real_gettime = time.clock_gettime

    def gettime(clock: int) -> float:
        slept = asleep if clock == time.CLOCK_BOOTTIME else 0.0
        return real_gettime(clock) + slept

    monkeypatch.setattr(time, "clock_gettime", gettime)

    assert SystemClock().monotonic() >= monotonic + asleep


@pytest.mark.parametrize(
    ("due", "said"),
    [
        (1796650086.0, "2026-12-07T13:28:06Z"),
        (1796650086.7689, "2026-12-07T13:28:07Z"),
        (None, None),
    ],
    ids=["whole-second", "within-a-second", "none"],
)
def test_a_due_time_is_said_rounded_up(due: float | None, said: str | None) -> None:
    """Truncated, `status` said 13:28:06 and a `run` at 13:28:06.5 still waited."""
    assert rfc3339_due(due) == said
