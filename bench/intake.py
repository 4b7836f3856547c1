"""How fast `serve` takes event posts, with the state in SQLite and in PostgreSQL.

    python bench/intake.py [--events 3000] [--threads 8] [--stores sqlite,postgres] [--json]

For each store: the v1 simulator (2 x 4 x 25 components) as its own process, `serve` as its own
process with the state there, its first cycle completed; then the simulator is stopped, so that
the events wait in the inbox (the first drain fails and holds them for the backoff step) and what
is measured is the intake alone, as in an outage or a forwarder's start, when it matters most.
`--threads` clients, each with its own keep-alive connection as the forwarder's workers have,
POST `--events` `updated` Component events of distinct names, one an HTTP request, to
`/api/events/http/openchoreo` (`openchoreo.events.maxPending` past their number, so that the
backlog is not dropped for a walk). Figures: posts a second over the whole run, each post's latency
(p50, p99), `serve`'s CPU a post (user + system from /proc/<pid>/stat, before and after) and, for
PostgreSQL, the server's (the postmaster and its backends, `postgres.server_cpu`). Every answer
must be 202 and the inbox must hold every event afterwards, else the benchmark stops.

PostgreSQL is `tests/pg_support.py`'s throwaway cluster (`fsync=off`, loopback, trust): a
connection costs less there than over TLS with a password, so what keeping sessions saves is
larger in production than here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from common import SimulatorProcess, cli, scratch, write_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ports import free_port
from postgres import server_cpu

from choreo_ingest.store.location import PostgresLocation, SqliteLocation, StateLocation

from pg_support import PgCluster, throwaway_cluster

PROVIDER = "openchoreo"
EVENTS_PATH = f"/api/events/http/{PROVIDER}"
START_SECONDS = 120


@dataclass(frozen=True)
class Figures:
    store: str
    events: int
    threads: int
    seconds: float
    p50_ms: float
    p99_ms: float
    serve_cpu_ms: float
    """serve's CPU a post."""
    server_cpu_ms: float | None
    """PostgreSQL's CPU a post (None for SQLite)."""

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    def line(self) -> str:
        server = "" if self.server_cpu_ms is None else f", PostgreSQL {self.server_cpu_ms:.2f} ms"
        return (
            f"{self.store}: {self.events:,} posts over {self.threads} connections in "
            f"{self.seconds:.2f} s, {self.per_second:.0f} a second; latency p50 "
            f"{self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms; CPU a post: serve "
            f"{self.serve_cpu_ms:.2f} ms{server}"
        )


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event(number: int) -> dict[str, str]:
    return {"kind": "Component", "namespace": "ns-0", "name": f"c-{number}", "action": "updated"}


@contextmanager
def serving(config: Path, directory: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`serve` on a free port until its first cycle completed; stopped (SIGTERM) on exit."""
    port = free_port()
    argv = [*cli(), "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"]
    stderr = directory / "serve.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink)
    base = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + START_SECONDS
        while not resting(base):
            if process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"serve did not complete a cycle: {stderr.read_text()[-2000:]}")
            time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        process.wait(30)


def resting(base: str) -> bool:
    try:
        providers = httpx.get(f"{base}/status", timeout=5).json()["providers"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return bool(providers) and providers[0].get("state") == "resting"


def post_all(base: str, events: int, threads: int) -> tuple[float, list[float]]:
    """Wall seconds for all posts, and each post's latency."""
    numbers = iter(range(events))
    taken = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while True:
                with taken:
                    number = next(numbers, None)
                if number is None:
                    return
                started = time.perf_counter()
                answer = http.post(EVENTS_PATH, json=event(number))
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 202:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} posts not taken, the first: {failures[0]}")
    return seconds, latencies


def measure(store: str, events: int, threads: int, cluster: PgCluster | None) -> Figures:
    with scratch(f"intake-{store}") as directory, SimulatorProcess(2, 4, 25) as simulator:
        config = write_config(directory, simulator.url, burstLength=10, restLength=86_400)
        location: StateLocation = SqliteLocation(directory / "state.db")
        document = yaml.safe_load(config.read_text())
        document["openchoreo"]["events"] = {"maxPending": 10 * events}  # none dropped for a walk
        if cluster is not None:
            location = PostgresLocation(cluster.fresh_database())
            document["state"] = {"url": location.url}
        config.write_text(yaml.safe_dump(document))
        with serving(config, directory) as (base, serve):
            simulator.stop()  # the API down: the events wait, the intake alone is measured
            serve_before = process_cpu(serve.pid)
            server_before = server_cpu(cluster) if cluster is not None else 0.0
            seconds, latencies = post_all(base, events, threads)
            serve_ms = (process_cpu(serve.pid) - serve_before) / events * 1000
            server_ms = None
            if cluster is not None:
                server_ms = (server_cpu(cluster) - server_before) / events * 1000
        with location.open(readonly=True) as stored:
            waiting = stored.pending_event_count(PROVIDER)
        if waiting != events:
            raise RuntimeError(f"{store}: {waiting} events in the inbox, {events} posted")
    quantiles = statistics.quantiles(latencies, n=100)
    return Figures(
        store, events, threads, seconds, quantiles[49] * 1000, quantiles[98] * 1000,
        serve_ms, server_ms,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    options = parser.parse_args(argv)
    stores = options.stores.split(",")
    results: list[Figures] = []
    cluster_context = throwaway_cluster() if "postgres" in stores else nullcontext()
    with cluster_context as cluster:
        for store in stores:
            if store not in ("sqlite", "postgres"):
                parser.error(f"--stores: {store!r} is neither sqlite nor postgres")
            pg = cluster if store == "postgres" else None
            results.append(measure(store, options.events, options.threads, pg))
            if not options.json:
                print(results[-1].line(), flush=True)
    if options.json:
        document = [dict(vars(figures), per_second=figures.per_second) for figures in results]
        json.dump(document, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
