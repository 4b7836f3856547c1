"""Fakes shared by the whole suite.

A clock that only moves when told, a provider with pages in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.errors import ProviderError
from choreo_ingest.models import Entity, EntityIteratorResult, IndexEntry, QueueItem
from choreo_ingest.providers.base import BurstContext


class FakeClock:
    """Wall and monotonic time that advance only through `advance()`, `sleep()` or `tick`."""

    def __init__(self, start: float = 1_800_000_000.0, tick: float = 0.0) -> None:
        self._now = start
        self._mono = 1000.0
        self.tick = tick
        """Seconds each monotonic() read advances the clock by (simulates work taking time)."""

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        self._now += self.tick
        self._mono += self.tick
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


def make_entity(name: str, kind: str = "Component", namespace: str = "default") -> Entity:
    body = {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "service", "lifecycle": "production", "owner": "group:default/guests"},
    }
    return Entity(kind=kind, namespace=namespace, name=name, body=body, scope=name)


@dataclass
class FakeProvider:
    """Serves `entities` in pages of `page_size`; `fail_at` maps a page index to an error to raise.

    The cursor is `{"offset": n}`; every page also pushes its names onto the `seen` queue.
    """

    entities: Sequence[Entity]
    page_size: int = 2
    name: str = "fake"
    fail_at: dict[int, ProviderError] = field(default_factory=dict)
    calls: list[Any] = field(default_factory=list)
    page_cost: float = 0.0
    """Seconds of fake-clock time each page takes."""
    index_table: str | None = None
    """When set, every page also writes one lookup-index row per entity and a fact."""

    @contextmanager
    def around(self, burst: BurstContext) -> Iterator[BurstContext]:
        yield burst

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        offset = 0 if cursor is None else int(cursor["offset"])
        page_index = offset // self.page_size
        self.calls.append(cursor)
        if self.page_cost:
            context.clock.sleep(self.page_cost)
        error = self.fail_at.pop(page_index, None)
        if error is not None:
            raise error
        page = list(self.entities[offset : offset + self.page_size])
        end = offset + len(page)
        index, facts = [], {}
        if self.index_table is not None:
            index = [IndexEntry(self.index_table, e.name, "all", e.body["metadata"]) for e in page]
            facts = {"lastPage": str(page_index)}
        return EntityIteratorResult(
            done=end >= len(self.entities),
            entities=page,
            cursor={"offset": end},
            queue_items=[QueueItem("seen", e.name, {"name": e.name}) for e in page],
            index=index,
            facts=facts,
        )


def make_config(tmp_path: Path, **incremental: Any) -> Config:
    settings = replace(IncrementalConfig(), **incremental)
    return Config(
        openchoreo=OpenChoreoConfig(base_url="http://openchoreo.test/api/v1", incremental=settings),
        state_path=tmp_path / "state.db",
        metrics_textfile=tmp_path / "metrics.prom",
        providers=("fake",),
    )
