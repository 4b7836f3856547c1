"""A listing whose restarts run out: v1 answers 500 both for an expired cursor and for a page the
server fails to build (a resource its list conversion fails on), so the burst's error says which
it looks like: the same page every time, or cursors dying wherever the walk happened to be."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog

from choreo_ingest.errors import ProviderError, TransientError
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.testing import FakeClock

INTERNAL_ERROR = {"error": "Internal server error", "code": "INTERNAL_ERROR"}
BOTH_CAUSES = (
    "the server may be failing on a resource in that page (see the openchoreo-api logs), or its "
    "cursors expire faster than a page takes (lower openchoreo.incremental.chunkSize)"
)


class NamespaceServer:
    """A v1 server behind an httpx.MockTransport: `size` namespaces, each empty, and a request
    takes a second on `clock`. A cursor answers 500 INTERNAL_ERROR when its page holds
    the namespace the server fails to convert (`broken`), or when the server compacted since
    the cursor was issued (every `compact_every` seconds, as Kubernetes expires continue
    tokens)."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        size: int = 40,
        broken: str | None = None,
        compact_every: float | None = None,
    ) -> None:
        self.clock = clock
        self.names = [f"ns-{number:02d}" for number in range(1, size + 1)]
        self.broken = broken
        self.compact_every = compact_every

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.clock.advance(1.0)
        if request.url.path != "/api/v1/namespaces":
            return httpx.Response(200, json={"items": [], "pagination": {}})
        limit = int(request.url.params["limit"])
        offset, cursor = 0, request.url.params.get("cursor")
        if cursor is not None:
            start, issued = cursor.split("@")
            offset = int(start)
            if self._compacted_since(float(issued)) or self.broken in self.names[offset:][:limit]:
                return httpx.Response(500, json=INTERNAL_ERROR)
        items = [{"metadata": {"name": name}} for name in self.names[offset:][:limit]]
        pagination = {}
        if offset + limit < len(self.names):
            pagination = {"nextCursor": f"{offset + limit}@{self.clock.monotonic()}"}
        return httpx.Response(200, json={"items": items, "pagination": pagination})

    def _compacted_since(self, issued: float) -> bool:
        if self.compact_every is None:
            return False
        return self.clock.monotonic() // self.compact_every > issued // self.compact_every


@pytest.fixture
def engine_for(config_for, fake_engine):
    """`engine_for(server)`: a FakeEngine walking `server` in pages of two."""

    def build(server: NamespaceServer) -> Any:
        config = config_for(api="v1", chunk_size=2, max_concurrent_requests=1)
        return fake_engine(
            OpenChoreoProvider(config, transport=server.transport()), server.clock, config
        )

    return build


def restarted_at(logs: list[dict[str, Any]]) -> list[Any]:
    return [entry["page"] for entry in logs if entry["event"] == "listing_restarted"]


def test_a_page_that_always_fails_is_named_with_both_causes(engine_for, clock: FakeClock) -> None:
    server = NamespaceServer(clock, broken="ns-05")
    engine = engine_for(server)

    with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError) as caught:
        engine.run()

    assert not isinstance(caught.value, TransientError), "a failure, even after pages"
    assert str(caught.value) == (
        "GET /namespaces: the listing failed 4 times in one burst at its page 3 (after 4 items) "
        f"with HTTP 500 INTERNAL_ERROR; {BOTH_CAUSES}"
    )
    assert (caught.value.status, caught.value.code) == (500, "INTERNAL_ERROR")
    assert restarted_at(logs) == [3, 3, 3]
    assert engine.counters["cursor_resets"] == 3


def test_a_page_that_fails_after_a_stored_cursor_counts_only_the_failures_it_can_place(
    engine_for, clock: FakeClock
) -> None:
    """A burst that begins on a stored cursor cannot tell which page it leads to."""
    server = NamespaceServer(clock, broken="ns-05")
    engine = engine_for(server)
    engine.page()
    engine.page()  # a burst each: pages 1 and 2, the cursor to page 3 stored

    with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError) as caught:
        engine.run()

    assert str(caught.value) == (
        "GET /namespaces: the listing failed 4 times in one burst, the last 3 at its page 3 "
        f"(after 4 items) with HTTP 500 INTERNAL_ERROR; {BOTH_CAUSES}"
    )
    assert restarted_at(logs) == [None, 3, 3]


def test_cursors_that_expire_wherever_the_walk_is_are_reported_as_expiring(
    engine_for, clock: FakeClock
) -> None:
    """Compaction every 7.5 s with a second per request: each restart begins at another point
    of the compaction period, so its cursor dies on another page."""
    server = NamespaceServer(clock, compact_every=7.5)
    engine = engine_for(server)

    with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError) as caught:
        engine.run()

    assert str(caught.value) == (
        "GET /namespaces: the listing's cursor expired 4 times in one burst (last: HTTP 500 "
        "INTERNAL_ERROR); the API may not keep cursors long enough for a page (lower "
        "openchoreo.incremental.chunkSize)"
    )
    assert (caught.value.status, caught.value.code) == (500, "INTERNAL_ERROR")
    assert len(set(restarted_at(logs))) == 3


def test_a_listing_that_recovers_from_a_passing_fault_still_completes(
    engine_for, clock: FakeClock
) -> None:
    """A broken page that the server fixes (the resource deleted) after two restarts: the
    restarts cost pages, not the cycle."""
    server = NamespaceServer(clock, size=6, broken="ns-05")
    engine = engine_for(server)

    def fix_after_two_restarts(number: int) -> None:
        if engine.counters.get("cursor_resets", 0) == 2:
            server.broken = None

    with structlog.testing.capture_logs() as logs:
        engine.run(between_pages=fix_after_two_restarts)

    assert restarted_at(logs) == [3, 3]
    assert {f"domain:default/ns-0{n}" for n in range(1, 7)} <= set(engine.entities)
