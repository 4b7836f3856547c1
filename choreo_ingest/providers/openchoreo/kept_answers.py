"""The answers an event drain read ahead (`OpenChoreoClient.read_ahead`), kept for the asks
its events will make: a request given n times is sent once and answers n asks (copies, each
event may make what it reads its own; the last ask gets the answer itself, let go of).

It knows nothing of HTTP: the client sends the requests and hands the answers over.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from choreo_ingest.errors import TransientError
from choreo_ingest.providers.openchoreo.many_reads import NOT_SENT, Failed, Gone, Params

Key = tuple[str, tuple[tuple[str, str], ...]]
MISSING: Any = object()
"""`take`'s answer when nothing is kept for the request."""


def request_key(path: str, params: Params | None) -> Key:
    return path, tuple(sorted((name, str(value)) for name, value in (params or {}).items()))


class KeptAnswers:
    """One read-ahead's answers (and those of the calls that add to it), its deadline and its
    stop, for one client."""

    def __init__(self) -> None:
        self._answers: dict[Key, list[Any]] = {}
        self.read_at: float | None = None
        """When the answers kept began to be read (wall clock), if any are."""
        self.until: float | None = None
        """The read-ahead's own deadline (monotonic): half the time left when it began."""
        self.stopped = threading.Event()
        """Set by the first failure for want of a server: nothing more is sent."""

    def begin(self, read_at: float, until: float | None) -> None:
        """A new read-ahead: what the last one kept is let go of."""
        self._answers, self.read_at, self.until = {}, read_at, until
        self.stopped = threading.Event()

    def to_send(self, requests: Sequence[tuple[str, Params]]) -> tuple[list[Any], dict[Key, int]]:
        """The requests to send, each once, and how many asks each answers; a request kept
        already (by the call this one adds to) answers one more ask, and is not sent again."""
        uses: dict[Key, int] = {}
        unique: list[tuple[str, Params]] = []
        for path, params in requests:
            key = request_key(path, params)
            if key in self._answers:
                self._answers[key][1] += 1
                continue
            if key not in uses:
                unique.append((path, params))
            uses[key] = uses.get(key, 0) + 1
        return unique, uses

    def keep(self, uses: dict[Key, int], answers: Sequence[Any]) -> dict[Key, Any]:
        """Keep what was read (`uses` in the order sent): not what was not sent, nor what failed
        for want of a server (its event sends it again, with retries). The answers by key."""
        answered = dict(zip(uses, answers, strict=True))
        for key, answer in answered.items():
            failed = isinstance(answer, Failed) and isinstance(answer.error, TransientError)
            if answer is not NOT_SENT and not failed:
                self._answers[key] = [answer, uses[key]]
        return answered

    def take(self, path: str, params: Params | None) -> Any:
        """The kept answer for one more ask (a refusal raised again, as a copy), or MISSING."""
        if not self._answers:
            return MISSING
        key = request_key(path, params)
        kept = self._answers.get(key)
        if kept is None:
            return MISSING
        answer, kept[1] = kept[0], kept[1] - 1
        if kept[1] <= 0:
            del self._answers[key]
        if isinstance(answer, Gone) and answer.error is not None:
            raise copy.copy(answer.error)
        if isinstance(answer, Failed):
            raise copy.copy(answer.error)
        return copy.deepcopy(answer) if kept[1] > 0 else answer
