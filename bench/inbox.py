"""What storing one event costs while many wait in the inbox (`serve`'s intake, `event`).

    python bench/inbox.py [--waiting 0,1000,10000,100000] [--events 50] [--json]

Fills a fresh SQLite state file's inbox with `updated` Component events of distinct names, and
at each size in `--waiting` stores `--events` more, one call each as `serve` stores a POST
(`Store.add_events`: the insert, the coalescing with older events about the same object, the
capacity check, the commit), measuring this thread's CPU (`time.thread_time`) and wall time per
event. Every tenth event names an object already waiting, so the coalescing replaces one.

The inbox fills while events cannot be applied: the API down (a drain holds them), or a
forwarder's start before a run drops them. Without an index on the events' names
(migration 0007) each event stored read every event waiting: about 10 ms at 10,000 waiting and 0.1 s
at 100,000, so the intake slowed to a few events a second when it mattered.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from choreo_ingest.store import Store

PROVIDER = "openchoreo"
FILL_BATCH = 5_000


def event(name: str) -> dict[str, str]:
    return {"kind": "Component", "namespace": "shop", "name": name, "action": "updated"}


def measure(sizes: list[int], events: int) -> list[dict[str, float]]:
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="choreo-bench-inbox-") as directory,
        Store.open(Path(directory) / "state.db") as store,
    ):
        store.migrate()
        waiting = 0
        for size in sorted(sizes):
            while waiting < size:
                names = range(waiting, min(size, waiting + FILL_BATCH))
                batch = [event(f"w{n}") for n in names]
                store.add_events(PROVIDER, batch, 1.0, capacity=size + events)
                waiting += len(batch)
            cpu, wall = time.thread_time(), time.perf_counter()
            for n in range(events):
                name = f"w{n * 7}" if n % 10 == 0 and waiting else f"new-{size}-{n}"
                store.add_events(PROVIDER, [event(name)], 2.0, capacity=size + events)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            waiting = store.inbox_counts(PROVIDER).pending
            rows.append(
                {"waiting": size, "cpuMs": cpu / events * 1e3, "wallMs": wall / events * 1e3}
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", default="0,1000,10000,100000")
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    sizes = [int(size) for size in options.waiting.split(",")]
    rows = measure(sizes, options.events)
    if options.json:
        print(json.dumps({"events": options.events, "rows": rows}))
        return 0
    print(f"one event stored ({options.events} each, SQLite): CPU and wall per event")
    for row in rows:
        print(f"  {row['waiting']:>7,} waiting: {row['cpuMs']:6.2f} ms CPU {row['wallMs']:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
