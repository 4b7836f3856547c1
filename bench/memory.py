"""Benchmark 2: constant memory.

- Peak RSS (`ru_maxrss` of the `choreo-ingest run --force` process, one burst for the whole
  cycle, chunkSize 50) at a small and at a 10-20x larger platform, next to the peak RSS of the
  floor walk (bench/floor_walk.py) of the same worlds: what the HTTP stack alone does.
- `cursorBytes` from `status --json` mid-cycle, in the components phase, at 10 and at 10k
  projects. The two worlds are shaped so the walk reaches identical points: one org, and
  components numbered with the same width, so the first project's components have the same
  names in both. The cycle is stopped after exactly k component pages (k = 1, 2, 3) through
  the engine's own stop signal, and `status --json` is read each time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import structlog
from common import (
    PROVIDER,
    Result,
    SimulatorProcess,
    World,
    ingest,
    scratch,
    status,
    write_config,
)
from overhead import API, floor_walk

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import load_config
from choreo_ingest.engine import StopSignal
from choreo_ingest.invocation import run_once
from choreo_ingest.models import JSON, EntityIteratorResult
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.providers.openchoreo import OpenChoreoProvider

RSS_TOLERANCE = 0.10
CURSOR_POINTS = 3
CURSOR_NOISE_BYTES = 3
"""The API's continue token carries its issue time rounded to 1 ms; printed as a JSON float
it is 1-3 characters shorter when the last digits are zeros (1764384301.12): at most 3 bytes
of base64, whatever the platform's size."""


@dataclass(frozen=True)
class Peak:
    cycle_kib: int
    floor_kib: int
    entities: int
    wall: float


def peak_rss(shape: World) -> Peak:
    """Peak RSS of one full cycle in one process, and of the floor walk of the same world."""
    with (
        SimulatorProcess(shape.namespaces, shape.projects, shape.components, api=API) as simulator,
        scratch("rss") as directory,
    ):
        config = write_config(directory, simulator.url, api=API, burstLength=86_400, chunkSize=50)
        cycle = ingest(config, "run", "--force", "--json").check()
        outcome = cycle.json()["providers"][0]
        if not outcome["cycleCompleted"]:
            raise RuntimeError(f"the cycle did not complete in one burst: {outcome}")
        floor = floor_walk(simulator.url)
        return Peak(
            cycle.maxrss_kib, floor.maxrss_kib, int(outcome["entitiesUpserted"]), cycle.wall
        )


class StopAfterComponentPages:
    """The real provider, with the engine's stop signal raised after `pages` component pages."""

    def __init__(self, inner: OpenChoreoProvider, stop: StopSignal, pages: int) -> None:
        self._inner = inner
        self._stop = stop
        self._left = pages

    @property
    def name(self) -> str:
        return self._inner.name

    def around(self, burst: BurstContext) -> AbstractContextManager[Any]:
        return self._inner.around(burst)

    def next(self, context: Any, cursor: JSON) -> EntityIteratorResult:
        page = self._inner.next(context, cursor)
        if isinstance(page.cursor, dict) and page.cursor.get("phase") == "components":
            self._left -= 1
            if self._left <= 0:
                self._stop.set()
        return page


def cursor_bytes_by_page(projects: int, components: int) -> list[int]:
    """cursorBytes after 1..CURSOR_POINTS component pages of one org's walk."""
    found = []
    with (
        SimulatorProcess(1, projects, components, api=API) as simulator,
        scratch("cursor") as directory,
    ):
        config_path = write_config(
            directory, simulator.url, api=API, burstLength=86_400, chunkSize=50
        )
        config = load_config(config_path)
        state_path = directory / "state.db"
        for _ in range(CURSOR_POINTS):
            stop = StopSignal()
            provider = StopAfterComponentPages(OpenChoreoProvider(config), stop, pages=1)
            with _quiet():
                run_once(
                    config,
                    state_path,
                    SystemClock(),
                    force=True,
                    providers={PROVIDER: provider},
                    stop=stop,
                )
            found.append(int(status(config_path)["cursorBytes"]))
    return found


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """structlog prints info lines by default; a benchmark table wants none."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40), cache_logger_on_first_use=False
    )
    try:
        yield
    finally:
        structlog.reset_defaults()


def run(small_shape: World, large_shape: World) -> list[Result]:
    small, large = peak_rss(small_shape), peak_rss(large_shape)
    growth = large.cycle_kib / small.cycle_kib - 1
    floor_growth = large.floor_kib / small.floor_kib - 1
    # 3M components either way: the first project's component names match (see module doc).
    few = cursor_bytes_by_page(projects=10, components=300_000)
    many = cursor_bytes_by_page(projects=10_000, components=300)
    worst = max(abs(a - b) for a, b in zip(few, many, strict=True))
    return [
        Result(
            "2 memory: peak RSS, full cycle",
            f"within {RSS_TOLERANCE:.0%}",
            f"{small_shape}: {_mib(small.cycle_kib)} ({small.entities:,} entities, "
            f"{small.wall:.0f} s); {large_shape}: {_mib(large.cycle_kib)} "
            f"({large.entities:,} entities, {large.wall:.0f} s); {growth:+.1%}",
            abs(growth) <= RSS_TOLERANCE,
        ),
        Result(
            "2 memory: peak RSS of the floor walk",
            "-",
            f"{_mib(small.floor_kib)} -> {_mib(large.floor_kib)} ({floor_growth:+.1%}): "
            "a bare httpx walk's growth (glibc keeps what it frees; it never trims)",
            None,
        ),
        Result(
            "2 memory: cursorBytes mid-cycle",
            f"equal (+-{CURSOR_NOISE_BYTES} B token time)",
            f"after 1/2/3 component pages: 10 projects {'/'.join(map(str, few))} B, "
            f"10k projects {'/'.join(map(str, many))} B",
            worst <= CURSOR_NOISE_BYTES,
        ),
    ]


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"
