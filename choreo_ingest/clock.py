"""The only place that reads the wall clock or sleeps; everything else takes a `Clock`."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock, for stored timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines and durations)."""
        ...

    def sleep(self, seconds: float) -> None: ...


_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)
"""Linux's monotonic clock that also counts a suspend, which `time.monotonic` leaves out: a
burst across a laptop's night would be dated back to the evening (its rest skipped, `health`
red for a cycle that just completed)."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        if _BOOT_CLOCK is not None:
            return time.clock_gettime(_BOOT_CLOCK)
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def rfc3339(timestamp: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC string (`2026-11-29T02:24:16Z`), None stays None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def log_timestamp(timestamp: float) -> str:
    """Epoch seconds as a log record's `timestamp` (structlog's ISO UTC stamp, to the
    microsecond): `2026-11-29T02:24:16.123456Z`."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """An RFC 3339 / ISO 8601 time as epoch seconds (naive times are taken as UTC)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parsed_time(text: str) -> float | None:
    """`parse_rfc3339`, or None for text that is not such a time (a damaged stored fact)."""
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def rfc3339_due(timestamp: float | None) -> str | None:
    """When something is due, as `rfc3339` says a time, rounded up to the second: a `run`
    at the time shown finds it due (truncated, one a moment after it still waited)."""
    return rfc3339(None if timestamp is None else math.ceil(timestamp))
