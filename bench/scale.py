"""Benchmark 3: the sweep and `status` at scale, on a state file built through the Store API.

- Cycle 1 commits `active + stale` entities (pages of 10k, bodies of about 1 KiB like real
  Component and API entities); cycle 2 sees only `active` of them; the time of its
  `complete_cycle` (the sweep of `stale` refs, their entities and change-log rows, in one
  transaction) is measured.
- Cycle 3 then commits small entities until the active set holds 1M refs, and `status --json`
  is timed twice: `status_report()` in process (the target), and the whole CLI process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from common import PROVIDER, Result, ingest, scratch

from choreo_ingest.config import Config
from choreo_ingest.models import Entity, EntityIteratorResult, ProviderRecord, ProviderState
from choreo_ingest.reporting import status_report
from choreo_ingest.store import Store, SweepGuards

PAGE = 10_000
SWEEP_TARGET = 2.0
STATUS_TARGET = 0.3
PADDING = "x" * 900
GUARDS = SweepGuards(reject_empty_source_collections=True, reject_removals_above_percentage=None)


def entities(start: int, stop: int, *, padded: bool) -> Iterator[Entity]:
    for index in range(start, stop):
        kind = "API" if index % 3 == 2 else "Component"
        name = f"cmp-{index:07d}" if kind == "Component" else f"cmp-{index:07d}-http"
        metadata = {"name": name, "namespace": "org-00", "annotations": {"n": str(index)}}
        if padded:
            metadata["description"] = PADDING
        body = {"apiVersion": "backstage.io/v1alpha1", "kind": kind, "metadata": metadata}
        yield Entity(kind, "org-00", name, body, f"org-00/proj-{index // 100:05d}/{name}")


def commit_range(store: Store, record: ProviderRecord, start: int, stop: int, padded: bool) -> None:
    for first in range(start, stop, PAGE):
        page = list(entities(first, min(first + PAGE, stop), padded=padded))
        result = EntityIteratorResult(done=False, entities=page, cursor={"page": first})
        store.commit_page(PROVIDER, record.cycle_id, result, f'{{"page":{first}}}', time.time())


def start_cycle(store: Store) -> ProviderRecord:
    record = store.load_provider(PROVIDER)
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    record.cycle_started_at = record.last_burst_at = time.time()
    store.start_cycle(record, time.time())
    return record


def complete_cycle(store: Store, record: ProviderRecord) -> tuple[float, int]:
    """(seconds, refs removed) of the store's cycle completion with its sweep."""
    now = time.time()
    record.state = ProviderState.RESTING
    record.cursor = None
    record.last_completed_at = now
    record.last_cycle_duration = now - (record.cycle_started_at or now)
    record.next_action_at = now + 1800
    started = time.perf_counter()
    sweep = store.complete_cycle(record, GUARDS, now)
    return time.perf_counter() - started, sweep.removed


def run(active: int, stale: int, status_refs: int) -> list[Result]:
    with scratch("scale") as directory:
        state_path = directory / "state.db"
        with Store.open(state_path) as store:
            store.migrate()
            record = start_cycle(store)
            commit_range(store, record, 0, active + stale, padded=True)
            complete_cycle(store, record)
            record = start_cycle(store)
            commit_range(store, record, 0, active, padded=True)
            sweep_seconds, removed = complete_cycle(store, record)
            if removed != stale:
                raise RuntimeError(f"the sweep removed {removed}, expected {stale}")
            record = start_cycle(store)
            first_new = active + stale
            commit_range(store, record, first_new, first_new + status_refs - active, padded=False)
            refs = store.active_count(PROVIDER)
        in_process, cli_process = time_status(directory, state_path)
    return [
        Result(
            "3 scale: sweep (complete_cycle)",
            f"< {SWEEP_TARGET:g} s",
            f"{sweep_seconds:.2f} s for {stale:,} stale of {active + stale:,} refs",
            sweep_seconds < SWEEP_TARGET,
        ),
        Result(
            "3 scale: status_report()",
            f"< {STATUS_TARGET:g} s",
            f"{in_process:.3f} s with {refs:,} refs (in process, best of 3)",
            in_process < STATUS_TARGET,
        ),
        Result(
            "3 scale: `status --json` CLI process",
            "-",
            f"{cli_process:.2f} s wall with {refs:,} refs (includes interpreter and imports)",
            None,
        ),
    ]


def time_status(directory: Path, state_path: Path) -> tuple[float, float]:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        report = status_report(state_path, Config(), time.time())
        timings.append(time.perf_counter() - started)
        assert report.providers[0].active_entities > 0
    config = directory / "choreo-ingest.yaml"
    config.write_text(f"state:\n  path: {state_path}\n")
    process = ingest(config, "status", "--json").check()
    return min(timings), process.wall
