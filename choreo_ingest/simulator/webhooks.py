"""OpenChoreo's event forwarder, simulated: the world's changes POSTed to webhook URLs.

As the forwarder does (shared/openchoreo-v1-api.md, "Events"): each event is the JSON object
`{"kind", "name", "namespace", "action"}` (`namespace` is `""` for a Namespace), POSTed with
`Content-Type: application/json` and no auth header to every configured URL, one attempt each
(any 2xx is success; a redirect is not followed), from one background thread behind a queue of
1024 events; an event that finds the queue full is dropped and counted. The forwarder's 1 s
debounce of `updated` events and its `created` replay at start are not simulated.

Only changes made through the `/_control/` routes are forwarded (see control.py); the counts
show in `/_control/stats` (`webhook_*`).
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

QUEUE_CAPACITY: Final = 1024
"""Events the forwarder holds before it drops new ones (OpenChoreo's default)."""
POST_TIMEOUT_SECONDS: Final = 5.0
USER_AGENT: Final = "openchoreo-simulator-event-forwarder"

Action = Literal["created", "updated", "deleted"]


@dataclass(frozen=True)
class ForwardedEvent:
    kind: str
    """`Namespace`, `Project`, `Component` or `Workload`."""
    name: str
    namespace: str
    """The resource's namespace; `""` for a Namespace."""
    action: Action

    def body(self) -> bytes:
        document = {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "action": self.action,
        }
        return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class WebhookCounts:
    webhook_events: int = 0
    """Events queued for posting."""
    webhook_dropped: int = 0
    """Events dropped unsent because the queue was full."""
    webhook_posts: int = 0
    """POSTs answered 2xx (one per event and URL at most)."""
    webhook_failures: int = 0
    """POSTs that failed: not 2xx, refused, timed out; never retried."""
    webhook_last_error: str | None = None


def check_webhook_url(url: str) -> None:
    """ValueError unless `url` is an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http:// or https:// with a host, got {url!r}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer (a failure), as for a client that does not follow redirects."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class EventForwarder:
    """Posts events to `urls` from a daemon thread; `forward` never blocks. `close()` stops it
    (events still queued are dropped); `wait_idle()` waits until everything queued was sent."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        capacity: int = QUEUE_CAPACITY,
        timeout: float = POST_TIMEOUT_SECONDS,
    ) -> None:
        for url in urls:
            check_webhook_url(url)
        if capacity < 1:
            raise ValueError("the webhook queue must hold at least one event")
        self.urls = tuple(urls)
        self._capacity = capacity
        self._timeout = timeout
        # no proxies from the environment, no redirects: one direct attempt per URL
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)
        self._queue: deque[ForwardedEvent] = deque()
        self._changed = threading.Condition()
        self._sending = False
        self._closing = False
        self._counts = WebhookCounts()
        self._thread = threading.Thread(
            target=self._run, name="openchoreo-simulator-webhooks", daemon=True
        )
        self._thread.start()

    def forward(self, events: Iterable[ForwardedEvent]) -> None:
        """Queue the events in order; those that find the queue full are dropped."""
        with self._changed:
            if self._closing:
                return
            queued = dropped = 0
            for event in events:
                if len(self._queue) >= self._capacity:
                    dropped += 1
                else:
                    self._queue.append(event)
                    queued += 1
            self._count(webhook_events=queued, webhook_dropped=dropped)
            self._changed.notify_all()

    def counts(self) -> WebhookCounts:
        with self._changed:
            return self._counts

    def reset_counts(self) -> None:
        with self._changed:
            self._counts = WebhookCounts()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Whether the queue emptied and the last post ended within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and not self._sending, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop posting: the post in flight ends (within the POST timeout), the rest is dropped."""
        with self._changed:
            self._closing = True
            self._queue.clear()
            self._changed.notify_all()
        self._thread.join(self._timeout + 1.0 if timeout is None else timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._sending = False
                self._changed.notify_all()
                self._changed.wait_for(lambda: bool(self._queue) or self._closing)
                if self._closing:
                    return
                event = self._queue.popleft()
                self._sending = True
            body = event.body()
            for url in self.urls:
                error = self._post(url, body)
                with self._changed:
                    if error is None:
                        self._count(webhook_posts=1)
                    else:
                        self._count(webhook_failures=1, webhook_last_error=f"{url}: {error}")

    def _post(self, url: str, body: bytes) -> str | None:
        """One attempt; None when answered 2xx, else what went wrong."""
        request = urllib.request.Request(  # noqa: S310 (the scheme was checked: http or https)
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read()
                status = int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            return f"HTTP {error.code}"
        except (OSError, http.client.HTTPException, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            return f"{type(error).__name__}: {reason}"
        return None if 200 <= status < 300 else f"HTTP {status}"

    def _count(self, **changes: Any) -> None:
        """Add to the counts (`webhook_last_error` is replaced); the caller holds the lock."""
        current = self._counts
        values = {
            key: (value if key == "webhook_last_error" else getattr(current, key) + value)
            for key, value in changes.items()
        }
        self._counts = WebhookCounts(**{**vars(current), **values})


def forwarded(kind: str, name: str, namespace: str, action: Action) -> ForwardedEvent:
    """The forwarder's event: a Namespace's `namespace` is always `""`."""
    return ForwardedEvent(kind, name, "" if kind == "Namespace" else namespace, action)
