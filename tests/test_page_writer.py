"""Pages commit on the writer thread, in order, while the next page is fetched; progress is what
is committed, never a page in flight."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.engine import BurstEngine
from choreo_ingest.models import EntityIteratorResult, ProviderState
from choreo_ingest.page_writer import PageWriter
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.store import Store, StoreIndexReader, StoreQueueReader

from fakes import FakeClock, FakeProvider, make_config, make_entity

TEN = [make_entity(f"e{i}") for i in range(10)]


def page(offset: int, size: int = 2, *, done: bool = False) -> EntityIteratorResult:
    return EntityIteratorResult(
        done=done,
        entities=TEN[offset : offset + size],
        cursor=None if done else {"offset": offset + size},
    )


@dataclass
class FailingBegin:
    """A tracer that fails the `fail_at`-th BEGIN it sees with a disk error."""

    fail_at: int
    begins: int = 0

    def __call__(self, sql: str, params: Any) -> None:
        if sql.strip().upper().startswith("BEGIN"):
            self.begins += 1
            if self.begins == self.fail_at:
                raise sqlite3.OperationalError("disk I/O error")


@pytest.fixture
def store(state_path: Path) -> Iterator[Store]:
    with Store.open(state_path) as opened:
        opened.migrate()
        yield opened


def refs(state_path: Path) -> set[str]:
    with Store.open(state_path, readonly=True) as store:
        return {change.ref for change in store.changes()}


class TestPageWriter:
    def test_pages_commit_in_order_and_progress_counts_committed_pages(
        self, store: Store, state_path: Path
    ) -> None:
        with PageWriter(store, "fake", 1, None) as writer:
            writer.submit(page(0), '{"offset":2}', 1.0)
            writer.submit(page(2), '{"offset":4}', 2.0)
            writer.wait()
            assert (writer.pages, writer.upserted, writer.cursor) == (2, 4, {"offset": 4})
            writer.submit(page(4), '{"offset":6}', 3.0)

        assert (writer.pages, writer.cursor) == (3, {"offset": 6})
        with Store.open(state_path, readonly=True) as reader:
            assert [change.ref for change in reader.changes()] == [e.ref for e in TEN[:6]]

    def test_failed_commit_is_raised_and_progress_stays_at_the_last_committed_page(
        self, tmp_path: Path
    ) -> None:
        state_path = tmp_path / "state.db"
        with Store.open(state_path) as fresh:
            fresh.migrate()
        with Store.open(state_path, tracer=FailingBegin(fail_at=2)) as store:
            writer = PageWriter(store, "fake", 1, None)
            writer.submit(page(0), '{"offset":2}', 1.0)
            writer.submit(page(2), '{"offset":4}', 2.0)
            with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
                writer.__exit__(None, None, None)

        assert (writer.pages, writer.cursor) == (1, {"offset": 2})
        assert refs(state_path) == {e.ref for e in TEN[:2]}

    def test_queue_read_through_the_barrier_sees_the_page_in_flight(self, store: Store) -> None:
        pushed = FakeProvider(TEN).next(_context(), None)
        with PageWriter(store, "fake", 1, None) as writer:
            queues = StoreQueueReader(store, "fake", before_read=writer.wait)
            writer.submit(pushed, '{"offset":2}', 1.0)

            assert [item.key for item in queues.read("seen", after=0, limit=5)] == ["e0", "e1"]
            assert writer.pages == 1

    def test_index_lookup_through_the_barrier_sees_the_page_in_flight(self, store: Store) -> None:
        """A v1 components page finds the workloads of the page just before it, even while that
        page is still being committed."""
        indexed = FakeProvider(TEN, index_table="workload").next(_context(), None)
        with PageWriter(store, "fake", 1, None) as writer:
            index = StoreIndexReader(store, "fake", 1, before_read=writer.wait)
            writer.submit(indexed, '{"offset":2}', 1.0)

            found = index.by_group("workload", ["all"], current_only=True)["all"]
            assert [row.key for row in found] == ["e0", "e1"]
            assert writer.pages == 1


@dataclass
class OverlapProbe:
    """A tracer that holds the first page's COMMIT until the provider is asked for the second
    page (or 10 s pass): records whether the engine fetched while it committed."""

    armed: bool = False
    second_page_requested: threading.Event = field(default_factory=threading.Event)
    overlapped: bool | None = None

    def __call__(self, sql: str, params: Any) -> None:
        if self.armed and self.overlapped is None and sql.strip().upper() == "COMMIT":
            self.overlapped = self.second_page_requested.wait(timeout=10)


@dataclass
class ProbedProvider(FakeProvider):
    probe: OverlapProbe | None = None

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        assert self.probe is not None
        if cursor is None:
            self.probe.armed = True
        else:
            self.probe.second_page_requested.set()
        return super().next(context, cursor)


class TestEngineWithWriter:
    def test_next_page_is_fetched_while_the_previous_one_commits(self, tmp_path: Path) -> None:
        probe = OverlapProbe()
        config = make_config(tmp_path)
        with Store.open(tmp_path / "state.db", tracer=probe) as store:
            store.migrate()
            outcome = BurstEngine(config, store, FakeClock()).run_provider(
                ProbedProvider(TEN, probe=probe), force=True
            )

        assert probe.overlapped is True
        assert outcome.cycle_completed
        assert outcome.pages == 5

    def test_failed_commit_fails_the_burst_at_the_last_committed_cursor(
        self, tmp_path: Path
    ) -> None:
        config, clock, state_path = make_config(tmp_path), FakeClock(), tmp_path / "state.db"
        provider = FakeProvider(TEN)
        # BEGINs the tracer sees: start_cycle, page 1, page 2, page 3 <- fails
        with Store.open(state_path, tracer=FailingBegin(fail_at=4)) as store:
            store.migrate()
            engine = BurstEngine(config, store, clock)
            with pytest.raises(sqlite3.OperationalError):
                engine.run_provider(provider, force=True)
            record = store.load_provider("fake")

        assert (record.state, record.cursor, record.attempts) == (
            ProviderState.BACKING_OFF,
            {"offset": 4},
            1,
        )
        assert refs(state_path) == {e.ref for e in TEN[:4]}

        with Store.open(state_path) as store:
            resumed = BurstEngine(config, store, clock).run_provider(provider, force=True)
            changes = [change.ref for change in store.changes()]

        assert resumed.cycle_completed
        assert provider.calls[-3:] == [{"offset": 4}, {"offset": 6}, {"offset": 8}]
        assert changes == [e.ref for e in TEN]


def _context() -> BurstContext:
    return BurstContext(
        config=make_config(Path("/nonexistent")),
        clock=FakeClock(),
        deadline=0.0,
        queues=_NoQueues(),
        cancelled=lambda: False,
    )


class _NoQueues:
    def read(self, queue: str, after: int, limit: int) -> list[Any]:
        return []
