"""Warnings about what the platform holds (an owner annotation Backstage cannot use, a component
that names no project), said once while they last.

The mapping meets such an object at every cycle, and a cron job mails every warning line: a
platform with one bad annotation would mail the same line every `restLength`. So a page's (or
an event's) mapping collects its warnings; a warning is logged as a WARNING when the provider's
index holds no row for it, else at INFO, and its row is written (again) with the page. A row not
written again in a completed cycle is pruned at its end, so a problem mended and later met again
is a WARNING again. Outside a collection (a caller that maps on its own) a warning is logged
as it comes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

from choreo_ingest.logs import get_logger
from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.base import IndexReader

DATA_WARNINGS = "warned"
"""The index table of the warnings said; a row's key is the warning's event and subject."""

log = get_logger("choreo_ingest.providers.openchoreo")


class DataWarning(NamedTuple):
    event: str
    subject: str
    """What the warning is about (`Component acme/orders`): one warning per event and subject."""
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.event} {self.subject}"


_collected: ContextVar[list[DataWarning] | None] = ContextVar("data_warnings", default=None)


FIELD_CHARS = 200
"""The most characters of a field's value a warning shows (an annotation may hold 256 KB)."""


def data_warning(event: str, subject: str, **fields: Any) -> None:
    """Warn about `subject`, once while it lasts when a collection is open. A field holding text
    longer than FIELD_CHARS (or a list, a mapping) is shown cut to that length."""
    fields = {name: _shown(value) for name, value in fields.items()}
    collected = _collected.get()
    if collected is None:
        log.warning(event, **fields)
    else:
        collected.append(DataWarning(event, subject, fields))


def _shown(value: object) -> object:
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= FIELD_CHARS:
        return value
    return f"{text[: FIELD_CHARS - 3]}... ({len(text):,} characters)"


@contextmanager
def collecting() -> Iterator[list[DataWarning]]:
    """Collect the warnings of the mapping run inside; `said` logs them and gives their rows."""
    collected: list[DataWarning] = []
    token = _collected.set(collected)
    try:
        yield collected
    finally:
        _collected.reset(token)


def said(index: IndexReader, collected: list[DataWarning]) -> list[IndexEntry]:
    """Log `collected` (a WARNING when the index holds no row for it, else INFO) and return the
    rows that remember them; nothing is read when nothing was collected."""
    if not collected:
        return []
    unique = {warning.key: warning for warning in collected}
    known = index.by_key(DATA_WARNINGS, list(unique))
    for key, warning in unique.items():
        if key in known:
            log.info(warning.event, **warning.fields, warned_before=True)
        else:
            log.warning(warning.event, **warning.fields)
    return [IndexEntry(DATA_WARNINGS, key, "", {"event": w.event}) for key, w in unique.items()]
