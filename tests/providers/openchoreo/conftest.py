"""Fakes for the OpenChoreo client and traversal tests: configs, an engine that drives the
provider page by page (with its queues, lookup index and facts in memory), and a clock that only
moves when every worker thread is asleep."""

from __future__ import annotations

import heapq
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cli_support import isolate

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.models import (
    JSON,
    Entity,
    EntityIteratorResult,
    IndexEntry,
    QueuedItem,
    QueueItem,
)
from choreo_ingest.providers.base import BurstContext

from sim_support import simulator_transport

if TYPE_CHECKING:  # only the traversal tests need the simulator; keep the client tests apart
    from choreo_ingest.simulator.api import SimulatorApi

BASE_URL = "https://openchoreo.test/api/v1"
TOKEN = "tok-9f8e7d-very-secret"
USER_AGENT = "choreo-ingest/test"
MAX_CURSOR_BYTES = 512


def make_openchoreo_config(
    token: str | None = TOKEN, *, api: str = "auto", **incremental: Any
) -> OpenChoreoConfig:
    """A config for BASE_URL; `api` is `openchoreo.api` (`auto`, `v1` or `orgs`), and
    `incremental` overrides IncrementalConfig fields by name."""
    return OpenChoreoConfig(
        base_url=BASE_URL,
        token=token,
        api=api,
        incremental=replace(IncrementalConfig(), **incremental),
    )


def make_config(token: str | None = TOKEN, *, api: str = "auto", **incremental: Any) -> Config:
    return Config(openchoreo=make_openchoreo_config(token, api=api, **incremental))


class MemoryQueues:
    """The engine's durable queues in memory; a key queued this cycle is not pushed again."""

    def __init__(self) -> None:
        self.items: dict[str, list[QueuedItem]] = {}
        self._position = 0

    def push(self, item: QueueItem) -> None:
        queued = self.items.setdefault(item.queue, [])
        if any(existing.key == item.key for existing in queued):
            return
        self._position += 1
        queued.append(QueuedItem(position=self._position, key=item.key, value=item.value))

    def read(self, queue: str, after: int, limit: int) -> Sequence[QueuedItem]:
        return [item for item in self.items.get(queue, []) if item.position > after][:limit]

    def keys(self, queue: str) -> list[str]:
        return [item.key for item in self.items.get(queue, [])]


class MemoryIndex:
    """The provider's durable lookup index in memory: each page's rows applied after it, read
    back by key or by group (ordered by key); a completed cycle prunes the rows it did not write,
    as the store does."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[IndexEntry, int]] = {}
        self._cycle = 1
        self.entities: dict[str, Entity] = {}
        """The catalog whose scopes `entity_scopes` reads (FakeEngine's)."""

    def apply(self, entries: Sequence[IndexEntry]) -> None:
        for entry in entries:
            if entry.value is None:
                self._rows.pop((entry.table, entry.key), None)
            else:
                self._rows[(entry.table, entry.key)] = (entry, self._cycle)

    def complete_cycle(self) -> None:
        self._rows = {key: row for key, row in self._rows.items() if row[1] == self._cycle}
        self._cycle += 1

    def by_key(
        self, table: str, keys: Sequence[str], *, current_only: bool = False
    ) -> dict[str, IndexEntry]:
        found = (self._rows.get((table, key)) for key in keys)
        return {
            row[0].key: row[0]
            for row in found
            if row is not None and (not current_only or row[1] == self._cycle)
        }

    def by_group(
        self, table: str, groups: Sequence[str], *, current_only: bool = False
    ) -> dict[str, list[IndexEntry]]:
        found: dict[str, list[IndexEntry]] = {group: [] for group in groups}
        for (row_table, _), (entry, cycle) in sorted(self._rows.items()):
            if row_table != table or entry.group not in found:
                continue
            if current_only and cycle != self._cycle:
                continue
            found[entry.group].append(entry)
        return found

    def by_group_prefix(self, table: str, prefix: str) -> list[IndexEntry]:
        rows = [
            e for (t, _), (e, _) in self._rows.items() if t == table and e.group.startswith(prefix)
        ]
        return sorted(rows, key=lambda row: (row.group, row.key))

    def entity_scopes(self, refs: Sequence[str]) -> dict[str, str]:
        return {ref: self.entities[ref].scope for ref in refs if ref in self.entities}

    def values(self, table: str) -> dict[str, JSON]:
        """Every row of `table` as key -> value, for assertions."""
        return {
            key: entry.value
            for (row_table, key), (entry, _) in self._rows.items()
            if row_table == table
        }


@dataclass
class FakeEngine:
    """Drives a provider the way the engine does: one burst context, pages in order, the
    cursor passed back only after a JSON round trip, queue pushes, index rows and facts applied
    per page (and seen by the next burst)."""

    provider: Any
    clock: Any
    config: Config
    burst_seconds: float = 3600.0
    queues: MemoryQueues = field(default_factory=MemoryQueues)
    index: MemoryIndex = field(default_factory=MemoryIndex)
    facts: dict[str, str] = field(default_factory=dict)
    cursor: Any = None
    results: list[EntityIteratorResult] = field(default_factory=list)
    entities: dict[str, Entity] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index.entities = self.entities

    @property
    def burst(self) -> BurstContext:
        return BurstContext(
            config=self.config,
            clock=self.clock,
            deadline=self.clock.monotonic() + self.burst_seconds,
            queues=self.queues,
            cancelled=lambda: False,
            index=self.index,
            facts=dict(self.facts),
        )

    def page(self) -> EntityIteratorResult:
        """One `next()` call in a burst of its own."""
        with self.provider.around(self.burst) as context:
            return self._apply(self.provider.next(context, self.cursor))

    def run(
        self, *, max_pages: int = 500, between_pages: Callable[[int], None] | None = None
    ) -> list[EntityIteratorResult]:
        """Pages until done, all in one burst; `between_pages(n)` runs after the n-th page."""
        with self.provider.around(self.burst) as context:
            for number in range(1, max_pages + 1):
                result = self._apply(self.provider.next(context, self.cursor))
                if result.done:
                    return self.results
                if between_pages is not None:
                    between_pages(number)
        raise AssertionError(f"not done after {max_pages} pages")

    def pages(self, count: int) -> list[EntityIteratorResult]:
        """`count` pages in one burst (fewer if the walk is done first); an error propagates
        with the pages before it applied."""
        done: list[EntityIteratorResult] = []
        with self.provider.around(self.burst) as context:
            while len(done) < count and not (done and done[-1].done):
                done.append(self._apply(self.provider.next(context, self.cursor)))
        return done

    def _apply(self, result: EntityIteratorResult) -> EntityIteratorResult:
        encoded = json.dumps(result.cursor, separators=(",", ":"))
        assert len(encoded.encode()) <= MAX_CURSOR_BYTES, encoded
        assert json.loads(encoded) == result.cursor
        for item in result.queue_items:
            self.queues.push(item)
        for entity in result.entities:
            self.entities[entity.ref] = entity
        self.index.apply(result.index)
        for name, value in result.facts.items():
            if value is None:
                self.facts.pop(name, None)
            else:
                self.facts[name] = value
        if result.done:
            self.index.complete_cycle()
        for name, increment in result.counters.items():
            self.counters[name] = self.counters.get(name, 0) + increment
        self.cursor = json.loads(encoded)
        self.results.append(result)
        return result


class SteppingClock:
    """Virtual time for threaded tests: it moves only when every registered worker is asleep,
    to the earliest wake-up. What a thread does between two sleeps happens at one instant."""

    def __init__(self, workers: int, start: float = 1000.0) -> None:
        self._time = start
        self._active = workers
        self._wakeups: list[float] = []
        self._condition = threading.Condition()

    def now(self) -> float:
        return self.monotonic()

    def monotonic(self) -> float:
        with self._condition:
            return self._time

    def sleep(self, seconds: float) -> None:
        with self._condition:
            target = self._time + max(seconds, 0.0)
            heapq.heappush(self._wakeups, target)
            self._advance_if_all_asleep()
            if not self._condition.wait_for(lambda: self._time >= target, timeout=10):
                raise AssertionError("SteppingClock: a worker never slept or finished")

    def worker_finished(self) -> None:
        with self._condition:
            self._active -= 1
            self._advance_if_all_asleep()

    def _advance_if_all_asleep(self) -> None:
        if self._wakeups and len(self._wakeups) >= self._active:
            self._time = max(self._time, self._wakeups[0])
            while self._wakeups and self._wakeups[0] <= self._time:
                heapq.heappop(self._wakeups)
            self._condition.notify_all()


@pytest.fixture
def transport_for() -> Callable[[SimulatorApi], httpx.MockTransport]:
    return simulator_transport


@pytest.fixture
def base_url() -> str:
    return BASE_URL


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def config_for() -> Callable[..., Config]:
    """`config_for(token=..., chunk_size=2, ...)`: a Config for BASE_URL."""
    return make_config


@pytest.fixture
def fake_engine() -> Callable[..., FakeEngine]:
    return FakeEngine


@pytest.fixture
def stepping_clock() -> Callable[[int], SteppingClock]:
    return SteppingClock


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The clean-room v1 tests' working directory: the test's own, with no config or state file
    from the caller's environment (cli_support.isolate)."""
    isolate(tmp_path, monkeypatch)
    return tmp_path
