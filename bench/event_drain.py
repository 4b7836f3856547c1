"""How fast a `run` applies a backlog of v1 events (the event forwarder's, re-read one by one).

    python bench/event_drain.py                       # 200 events, 50 ms a request
    python bench/event_drain.py --events 400 --latency 0.1

The v1 simulator runs as its own process (`--latency` added to every request, as a server some
distance away), 1 namespace x 4 projects x 100 components. One `run --force` mirrors it; then
as many events as asked, half Component and half Workload (`updated`, each naming another
object), are queued with `choreo-ingest event -`, and one `run` (the provider resting: it
applies the inbox and bursts nowhere) is timed. Each event re-reads what it names: a Component
its object and its workloads, a Workload its object and then its component's two. Printed: the
run's wall time, events a second, and the requests the simulator served by route. No target:
the figure is for bench/README.md ("Events: the drain").
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import time
from contextlib import closing

from common import SimulatorProcess, cli, machine, scratch, write_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    simulator = SimulatorProcess(1, 4, 100, api="v1", latency=args.latency).start()
    try:
        with scratch("event-drain") as directory:
            config = write_config(directory, simulator.url, burstLength=600, chunkSize=100)
            subprocess.run([*cli(), "--config", str(config), "run", "--force"], check=True)
            events = _events(directory / "state.db", args.events)
            queued = "\n".join(json.dumps(event) for event in events).encode()
            subprocess.run(
                [*cli(), "--config", str(config), "event", "-"], input=queued, check=True
            )
            time.sleep(2.5)  # an `updated` event settles 2 s before it is applied
            simulator.reset_stats()
            started = time.perf_counter()
            ran = subprocess.run(
                [*cli(), "--config", str(config), "run", "--json"], capture_output=True, check=True
            )
            seconds = time.perf_counter() - started
            applied = json.loads(ran.stdout)["events"]["applied"]
            stats = simulator.stats()
    finally:
        simulator.stop()
    print(machine())
    print(
        f"{applied} of {len(events)} events applied in {seconds:.2f} s, one run "
        f"({applied / seconds:.1f} a second), {args.latency * 1000:.0f} ms a request"
    )
    print(
        f"requests by route: {json.dumps(stats['requests_by_route'], sort_keys=True)}; "
        f"most in flight at once: {stats['max_in_flight']}"
    )
    return 0 if applied == len(events) else 1


def _events(state: object, count: int) -> list[dict[str, str]]:
    """`updated` events for the first components and workloads the state holds, alternately."""
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as connection:
        annotated = [
            (kind, *row)
            for kind, key in (("Component", "component"), ("Workload", "workload"))
            for row in connection.execute(
                "SELECT DISTINCT json_extract(body, '$.metadata.annotations.\"openchoreo.io/"
                f"{key}\"'), json_extract(body, '$.metadata.namespace') FROM entities "
                "WHERE kind = 'Component' ORDER BY 1"
            )
            if row[0]
        ]
    components = [item for item in annotated if item[0] == "Component"]
    workloads = [item for item in annotated if item[0] == "Workload"]
    mixed = [item for pair in zip(components, workloads, strict=False) for item in pair]
    return [
        {"kind": kind, "name": name, "namespace": namespace, "action": "updated"}
        for kind, name, namespace in mixed[:count]
    ]


if __name__ == "__main__":
    raise SystemExit(main())
