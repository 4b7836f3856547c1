"""Test doubles for provider authors: test a provider the way choreo-ingest tests its own.

- `FakeClock`: wall and monotonic time that move only when told (`advance`, `sleep`, `tick`).
  The engine reads the burst deadline and every timestamp from it: no sleeping, no patching.
- `FakeProvider`: pages from a list of entities, with failures injected by page.
- `run_provider(provider, state_path, clock)`: one `choreo-ingest run` of one provider through
  the real engine, against a real SQLite state file; `catalog(state_path)`: what it holds.
- `burst_context(clock)`: what `around()` and `next()` receive, to call them without the engine.

    from choreo_ingest.testing import FakeClock, catalog, run_provider

    def test_reads_every_row(tmp_path):
        state = tmp_path / "state.db"
        outcome = run_provider(MyProvider(...), state, FakeClock())
        assert outcome.cycle_completed
        assert {e["metadata"]["name"] for e in catalog(state)} == {"a", "b"}

On a clock that does not move, a burst never reaches its deadline, so one run is a whole cycle;
`FakeClock(tick=...)` (or a provider that sleeps on `context.clock`) makes pages take time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.engine import ProviderOutcome
from choreo_ingest.errors import ProviderError
from choreo_ingest.invocation import run_once
from choreo_ingest.models import Entity, EntityIteratorResult, IndexEntry, QueuedItem, QueueItem
from choreo_ingest.providers.base import BurstContext, IncrementalEntityProvider
from choreo_ingest.reporting import iter_export

__all__ = [
    "FakeClock",
    "FakeProvider",
    "burst_context",
    "catalog",
    "make_entity",
    "run_provider",
]

JITTER_SEED = 0
"""`run_provider` draws backoff jitter from a generator seeded with this: runs repeat exactly."""


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

    def step_wall(self, seconds: float) -> None:
        """Set the wall clock on (or, negative, back) as NTP or an operator steps it; monotonic
        time does not move."""
        self._now += seconds


def make_entity(name: str, kind: str = "Component", namespace: str = "default") -> Entity:
    """A minimal valid Backstage entity (a `service` owned by `group:default/guests`)."""
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

    Each error is raised once (the entry is removed), so the retry of that page succeeds. The
    cursor is `{"offset": n}`; every page also pushes its names onto the `seen` queue.
    """

    entities: Sequence[Entity]
    page_size: int = 2
    name: str = "fake"
    fail_at: dict[int, ProviderError] = field(default_factory=dict)
    calls: list[Any] = field(default_factory=list)
    """The cursor of every `next()` call, in order."""
    page_cost: float = 0.0
    """Seconds of clock time each page takes (slept on the burst's clock)."""
    index_table: str | None = None
    """When set, every page also writes one lookup-index row per entity and a fact."""
    removals: dict[int, list[str]] = field(default_factory=dict)
    """Refs a page (by index) removes (`EntityIteratorResult.removals`)."""
    kept: dict[int, list[str]] = field(default_factory=dict)
    """Scopes a page (by index) keeps (`EntityIteratorResult.kept_scopes`)."""

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
            removals=self.removals.get(page_index, ()),
            kept_scopes=self.kept.get(page_index, ()),
        )


def run_provider(
    provider: IncrementalEntityProvider,
    state_path: Path,
    clock: Clock,
    config: Config | None = None,
    *,
    force: bool = False,
) -> ProviderOutcome:
    """One `choreo-ingest run` of `provider` alone, through the real engine: the run lock, the
    state file's migrations, the provider's event inbox (if it handles events), at most one
    burst, and at a cycle's end the sweep behind its guards, all in the SQLite file `state_path`
    (made if missing).

    `config` holds the settings (default: the built-in ones): `openchoreo.incremental` (the
    burst length on `clock`, intervals, backoff, guards), `provider_options`, and the optional
    metrics textfile and YAML mirror. Its `providers` list is replaced by `provider.name`.
    `force` ignores the burst interval, the rest or a backoff, as `run --force` does; otherwise a
    provider that is not due waits (advance `clock` to make it due). A failed burst is an
    outcome (`error` says why, `next_action_at` when it is retried), not an exception; an output
    the config names that cannot be written (the metrics textfile, the mirror) raises its error.
    """
    settings = replace(config or Config(), providers=(provider.name,), state_path=state_path)
    result = run_once(
        settings,
        state_path,
        clock,
        force=force,
        providers={provider.name: provider},
        rng=random.Random(JITTER_SEED),
    )
    if result.error is not None:  # the metrics textfile or the YAML mirror, as `run` exits 2
        raise result.error
    [outcome] = result.providers
    return outcome


def catalog(state_path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The entity bodies in the catalog of `state_path` (of one `kind`, if given), as `export`
    prints them."""
    return list(iter_export(state_path, kind))


class _NoQueues:
    def read(self, queue: str, after: int, limit: int) -> list[QueuedItem]:
        return []


def burst_context(
    clock: Clock, config: Config | None = None, *, seconds: float = 10.0
) -> BurstContext:
    """A burst's context for calling `around()` or `next()` directly: `seconds` to its deadline
    on `clock`, empty queues and index, never cancelled (`run_provider` gives the real ones)."""
    return BurstContext(
        config=config or Config(),
        clock=clock,
        deadline=clock.monotonic() + seconds,
        queues=_NoQueues(),
        cancelled=lambda: False,
    )
