"""Events that wait alone: one object whose re-read keeps failing while the API answers.

A transient failure of an event's re-read (a 5xx, a timeout) usually says the API is unwell, and
then every event waits a backoff step (`eventsHeldUntil`). But one object can fail on its own (a
resource the server cannot convert answers 500 each time): held so, it held the whole inbox for
every backoff step of its attempts, about half an hour with the default `backoff`. So the drain
asks the next event that re-reads (a `created` or `updated` one: an org-era `deleted` event makes
no request), or with none after it the provider's probe (`ProbingProvider`: `serve` drains each
event as it comes), before it decides: when that read answers, the failure was the object's own, and
that event alone waits its backoff step (`eventRetries`, a fact of `object: until`) while the
others apply; once shown to fail alone it keeps waiting alone. A 429 or a token endpoint in
trouble always holds every event: the next read succeeding says nothing of them.

The wait is the object's, not its event's, as the attempts are (`store.inbox`): a newer event
about it takes over the wait and the attempts of the one it replaces, so an object whose re-read
keeps failing is not re-read at each change, and is parked in the end.

Only `created` and `updated` events wait alone: they re-read the object when retried, so applying
them after newer events cannot undo those. A failed `deleted` event still stops the drain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from choreo_ingest.clock import parsed_time, rfc3339
from choreo_ingest.config import IncrementalConfig
from choreo_ingest.errors import DeadlineExceeded, RetryAfter, TokenUnavailable, TransientError
from choreo_ingest.models import EVENT_RETRIES_FACT, JSON
from choreo_ingest.schedule import events_held_at


def may_fail_alone(error: Exception, body: JSON) -> bool:
    """Whether `error`, met re-reading the event `body`, may be its object's own failure (the
    drain then asks the next event that re-reads): a transient failure of a `created` or
    `updated` event, not a 429 or `Retry-After`, nor the token's, nor the burst's time."""
    if not isinstance(error, TransientError):
        return False
    if isinstance(error, (RetryAfter, TokenUnavailable, DeadlineExceeded)):
        return False
    return rereads(body)


def rereads(body: JSON) -> bool:
    """Whether the event `body` re-reads its object whenever it is applied (so that applying it
    made a request, and applying it late undoes nothing): a `created` or `updated` one. An
    org-era `deleted` event applies without a request; a v1 one re-reads, but is not counted
    on."""
    return isinstance(body, Mapping) and body.get("action") in ("created", "updated")


def event_key(body: JSON) -> str:
    """What makes two events about the same object, as the inbox coalesces them (kind, namespace
    or none for an empty one, name, project)."""
    if not isinstance(body, Mapping):
        return "null"
    namespace = body.get("namespace") or None
    return json.dumps([body.get("kind"), namespace, body.get("name"), body.get("project")])


def _fields(key: str) -> tuple[str | None, str | None, str | None, str | None] | None:
    """The kind, namespace, name and project an `event_key` holds; None for other text."""
    try:
        fields = json.loads(key)
    except ValueError:
        return None
    if not isinstance(fields, list) or len(fields) != 4:
        return None
    if not all(field is None or isinstance(field, str) for field in fields):
        return None
    return fields[0], fields[1], fields[2], fields[3]


class EventRetries:
    """When the objects whose events failed alone may be tried again (`eventRetries`:
    `{"<event_key>": time}`)."""

    def __init__(self, until: Mapping[str, float]) -> None:
        self._until = dict(until)
        self.changed = False

    @classmethod
    def from_facts(cls, facts: Mapping[str, str]) -> EventRetries:
        """The provider's stored retries; a damaged fact is none (each event is asked again)."""
        stored_text = facts.get(EVENT_RETRIES_FACT)
        try:
            stored = json.loads(stored_text or "{}")
        except ValueError:
            stored = None
        until: dict[str, float] = {}
        for key, text in stored.items() if isinstance(stored, dict) else ():
            moment = parsed_time(text) if isinstance(text, str) else None
            if moment is not None and _fields(key) is not None:
                until[key] = moment
        retries = cls(until)
        retries.changed = stored_text is not None and (
            not until or not isinstance(stored, dict) or len(until) != len(stored)
        )
        return retries

    def shown_alone(self, body: JSON) -> bool:
        """Whether the object of event `body` was shown to fail alone (it waits alone again if
        its re-read fails)."""
        return bool(self._until) and event_key(body) in self._until

    def waiting(self, body: JSON, now: float, config: IncrementalConfig) -> bool:
        """Whether event `body` still waits at `now`: a `created` or `updated` one whose object
        waits (a clock set back does not make it wait longer than the longest backoff step). A
        `deleted` one never waits: applied after newer events, it could undo them."""
        if not self._until or not rereads(body):  # none waits: no key to make (each drain)
            return False
        return events_held_at(self._until.get(event_key(body)), now, config)

    def wait_alone(self, body: JSON, until: float) -> None:
        self._until[event_key(body)] = until
        self.changed = True

    def forget(self, body: JSON) -> None:
        """Event `body` applied or was parked: its object no longer waits, nor counts as shown
        to fail alone (a later failure asks the API again)."""
        if self._until and self._until.pop(event_key(body), None) is not None:
            self.changed = True

    def keep_only(self, pending: Iterable[JSON], *, all_read: bool) -> None:
        """Forget the objects no event is pending about (applied, parked, dropped): those no
        event of `pending` (the bodies read) is about, when they were `all_read` (not stopped
        at a limit, past which others may wait)."""
        if not all_read or not self._until:
            return
        keys = {event_key(body) for body in pending}
        kept = {key: until for key, until in self._until.items() if key in keys}
        if len(kept) != len(self._until):
            self._until = kept
            self.changed = True

    def waits(self, now: float, config: IncrementalConfig) -> list[dict[str, str | None]]:
        """The objects that wait at `now`, soonest first, as `status --json` shows them: kind,
        namespace, name (and an org-era event's project), and until when."""
        shown: list[dict[str, str | None]] = []
        for key, until in sorted(self._until.items(), key=lambda item: item[1]):
            fields = _fields(key)
            if fields is None or not events_held_at(until, now, config):
                continue
            kind, namespace, name, project = fields
            shown.append({"kind": kind, "namespace": namespace, "name": name})
            shown[-1].update({"project": project} if project is not None else {})
            shown[-1]["until"] = rfc3339(until)
        return shown

    def fact(self) -> str | None:
        """The fact's value (None: remove it)."""
        if not self._until:
            return None
        return json.dumps({key: rfc3339(until) for key, until in sorted(self._until.items())})


def object_path(wait: Mapping[str, str | None]) -> str:
    """Where an object `waits` shows is: `namespace/name`, `org/project/name` in the org era."""
    return "/".join(part for part in (wait["namespace"], wait.get("project"), wait["name"]) if part)
