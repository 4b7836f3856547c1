"""Benchmark 7: the state store on PostgreSQL (issue 12), on a throwaway local server.

    PYTHONPATH=. python bench/postgres.py [--quick] [--only cpu,sweep,status] [--analyze-first]

The server is `tests/pg_support.py`'s `throwaway_cluster()` (initdb + pg_ctl on a free loopback
port, `fsync=off`; as root through `runuser -u postgres`), reached over loopback TCP. Everything
else runs in this process:

1. Client CPU of one full v1 cycle: the OpenChoreo provider against the in-process simulator
   (`simulator_transport`, as tests/sim_support.py wires it), `chunkSize` 100, on a `FakeClock`
   that does not move, so one `run_once` is the whole cycle. This process's CPU time
   (`time.process_time`: every thread, the simulator's handler included) for the call, on a
   fresh SQLite file and on a fresh PostgreSQL database, alternating; median of the runs.
   Target: PostgreSQL / SQLite <= 1.3. The simulator's share and the server's own CPU are
   reported apart (info), never subtracted.
2. The sweep: cycle 1 (`run_once` with a `FakeProvider`, pages of 10,000) writes N entities;
   cycle 2 sees none of them (removal guards off) and its sweep removes all N. The figure is
   the time of the store's `complete_cycle` inside cycle 2's `run_once` (timed by wrapping
   `Store.complete_cycle` in this process). Target: < 2 s at 200,000. For cycle 2's sessions
   the server logs statements of 100 ms or more with their plans (auto_explain), autovacuum
   and checkpoints, and the bench prints those lines: where the time went.
   `--analyze-first` (a diagnosis, not what the product does) ANALYZEs before cycle 2.
3. `status_report(location, config, now)` in process, with 1,000,000 active refs written
   through the store's own write path (`Store.commit_page` in pages of 20,000, then
   `complete_cycle`): median of 5. Target: < 0.3 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import structlog
from common import Result, compile_package, machine, summarize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.invocation import run_once
from choreo_ingest.logs import configure_logging
from choreo_ingest.models import (
    Entity,
    EntityIteratorResult,
    ProviderRecord,
    ProviderState,
)
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.reporting import status_report
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.store import Store, SweepGuards
from choreo_ingest.store.location import PostgresLocation, SqliteLocation
from choreo_ingest.testing import FakeClock, FakeProvider, make_entity

from pg_support import PgCluster, throwaway_cluster

CPU_TARGET = 1.3
SWEEP_TARGET = 2.0
STATUS_TARGET = 0.3
IN_PROCESS_URL = "http://openchoreo.test/api/v1"
CHUNK_SIZE = 100
SWEEP_PAGE = 10_000
STATUS_PAGE = 20_000
NO_GUARDS = SweepGuards(
    reject_empty_source_collections=False, reject_removals_above_percentage=None
)


@dataclass(frozen=True)
class Sizes:
    world: tuple[int, int, int]
    """namespaces x projects x components per project."""
    cycle_runs: int
    stale: int
    status_refs: int
    status_runs: int


FULL = Sizes(world=(5, 10, 200), cycle_runs=3, stale=200_000, status_refs=1_000_000, status_runs=5)
QUICK = Sizes(world=(5, 10, 40), cycle_runs=1, stale=20_000, status_refs=100_000, status_runs=5)


# -- the server ---------------------------------------------------------------------------------


def server_cpu(cluster: PgCluster) -> float:
    """CPU seconds of the postmaster and of its children that have exited (backends whose
    session closed): utime + stime + cutime + cstime of /proc/<postmaster>/stat."""
    pid = int((cluster.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / _clock_ticks()


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def server_version(cluster: PgCluster) -> str:
    with cluster.admin() as conn:
        return str(conn.execute("SELECT version()").fetchone()[0])


def settle_backends(cluster: PgCluster, database: str) -> None:
    """Wait until no session but ours is connected to `database` (closed backends exit, and
    their CPU then shows in the postmaster's cutime/cstime)."""
    with cluster.admin() as conn:
        for _ in range(200):
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                [database],
            ).fetchone()[0]
            if not left:
                return
            time.sleep(0.01)


# -- 1. client CPU per cycle -----------------------------------------------------------------------


@dataclass
class CycleCost:
    cpu: float
    wall: float
    simulator_cpu: float
    server_cpu: float | None
    entities: int


class TimedHandler:
    """The simulator's pure handler as an httpx transport, adding up the CPU time its calls take
    on the threads that make them (`time.thread_time`)."""

    def __init__(self, api: SimulatorApi) -> None:
        self.api = api
        self.cpu = 0.0
        self._lock = threading.Lock()

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            began = time.thread_time()
            answer = self.api.handle(
                request.method,
                request.url.path,
                request.url.query.decode(),
                dict(request.headers),
                request.read(),
            )
            response = httpx.Response(answer.status, headers=answer.headers, content=answer.body)
            spent = time.thread_time() - began
            with self._lock:
                self.cpu += spent
            return response

        return httpx.MockTransport(handle)


def one_cycle(world: World, location: Any, on_server: Callable[[], float] | None) -> CycleCost:
    clock = FakeClock()
    config = Config(
        openchoreo=OpenChoreoConfig(
            base_url=IN_PROCESS_URL,
            api="v1",
            incremental=IncrementalConfig(chunk_size=CHUNK_SIZE),
        ),
        providers=("openchoreo",),
    )
    handler = TimedHandler(SimulatorApi(world, SimulatorOptions(api="v1"), clock))
    provider = OpenChoreoProvider(config, transport=handler.transport())
    server_before = on_server() if on_server else 0.0
    wall_began, cpu_began = time.perf_counter(), time.process_time()
    result = run_once(config, location, clock, force=True, providers={"openchoreo": provider})
    cpu, wall = time.process_time() - cpu_began, time.perf_counter() - wall_began
    server = on_server() - server_before if on_server else None
    [outcome] = result.providers
    if not outcome.cycle_completed:
        raise RuntimeError(f"the cycle did not complete in one call: {outcome}")
    return CycleCost(cpu, wall, handler.cpu, server, outcome.entities_upserted)


def cycle_cpu(cluster: PgCluster, sizes: Sizes) -> list[Result]:
    world = World.generate(*sizes.world, seed=0)
    components = sizes.world[0] * sizes.world[1] * sizes.world[2]
    sqlite: list[CycleCost] = []
    postgres: list[CycleCost] = []
    for _ in range(sizes.cycle_runs):
        with tempfile.TemporaryDirectory(prefix="choreo-bench-pg-") as directory:
            sqlite.append(one_cycle(world, SqliteLocation(Path(directory) / "state.db"), None))
        url = cluster.fresh_database()
        database = url.rsplit("/", 1)[1]

        def on_server(database: str = database) -> float:
            settle_backends(cluster, database)
            return server_cpu(cluster)

        try:
            postgres.append(one_cycle(world, PostgresLocation(url), on_server))
        finally:
            cluster.drop_database(url)
        print(
            f"  cycle: SQLite {sqlite[-1].cpu:.2f} s CPU, PostgreSQL {postgres[-1].cpu:.2f} s CPU",
            flush=True,
        )
    if len({cost.entities for cost in sqlite + postgres}) != 1:
        raise RuntimeError("the cycles upserted different entity counts")
    lite_cpu = statistics.median(cost.cpu for cost in sqlite)
    pg_cpu = statistics.median(cost.cpu for cost in postgres)
    ratio = pg_cpu / lite_cpu
    runs = f"median of {sizes.cycle_runs}" if sizes.cycle_runs > 1 else "1 run"
    entities = sqlite[0].entities
    all_lite = ", ".join(f"{cost.cpu:.2f}" for cost in sqlite)
    all_pg = ", ".join(f"{cost.cpu:.2f}" for cost in postgres)
    server = statistics.median(cost.server_cpu or 0.0 for cost in postgres)
    return [
        Result(
            "7 postgres: client CPU per cycle",
            f"PostgreSQL/SQLite <= {CPU_TARGET}",
            f"{ratio:.2f}: PostgreSQL {pg_cpu:.2f} s vs SQLite {lite_cpu:.2f} s of process CPU "
            f"({runs}; all: {all_pg} vs {all_lite}); {components:,} components, "
            f"{entities:,} entities, v1, chunkSize {CHUNK_SIZE}",
            ratio <= CPU_TARGET,
        ),
        Result(
            "7 postgres: the cycle, more (info)",
            "-",
            f"wall PostgreSQL {statistics.median(c.wall for c in postgres):.2f} s, SQLite "
            f"{statistics.median(c.wall for c in sqlite):.2f} s; of the CPU, the in-process "
            f"simulator's handler: {statistics.median(c.simulator_cpu for c in postgres):.2f} s "
            f"/ {statistics.median(c.simulator_cpu for c in sqlite):.2f} s; the PostgreSQL "
            f"server's own CPU (not in the ratio): {server:.2f} s",
            None,
        ),
    ]


# -- 2. the sweep --------------------------------------------------------------------------------


class CompleteCycleTimer:
    """Wraps `Store.complete_cycle` for the duration of a `with`, recording each call's seconds."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._original = Store.complete_cycle

    def __enter__(self) -> CompleteCycleTimer:
        original = self._original
        timings = self.seconds

        def timed(store: Store, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(store, *args, **kwargs)
            finally:
                timings.append(time.perf_counter() - began)

        Store.complete_cycle = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc_info: object) -> None:
        Store.complete_cycle = self._original  # type: ignore[method-assign]


def sweep(cluster: PgCluster, stale: int, *, analyze_first: bool = False) -> list[Result]:
    url = cluster.fresh_database()
    location = PostgresLocation(url)
    incremental = replace(
        IncrementalConfig(),
        chunk_size=SWEEP_PAGE,
        reject_removals_above_percentage=None,
        reject_empty_source_collections=False,
    )
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, incremental=incremental),
        providers=("fake",),
    )
    clock = FakeClock()
    try:
        everything = [make_entity(f"cmp-{index:07d}") for index in range(stale)]
        began = time.perf_counter()
        first = FakeProvider(everything, page_size=SWEEP_PAGE)
        [built] = run_once(config, location, clock, force=True, providers={"fake": first}).providers
        build_seconds = time.perf_counter() - began
        if not built.cycle_completed or built.entities_upserted != stale:
            raise RuntimeError(f"cycle 1 did not write {stale} entities: {built}")
        clock.advance(3600)
        if analyze_first:
            with cluster.admin(url.rsplit("/", 1)[1]) as conn:
                conn.execute("ANALYZE")
        log_from = start_profile(cluster, url)
        with CompleteCycleTimer() as timer:
            began = time.perf_counter()
            second = FakeProvider([], page_size=SWEEP_PAGE)
            [swept] = run_once(
                config, location, clock, force=True, providers={"fake": second}
            ).providers
            whole = time.perf_counter() - began
        if swept.entities_removed != stale:
            raise RuntimeError(f"the sweep removed {swept.entities_removed}, expected {stale}")
        [seconds] = timer.seconds
        slow = server_log_since(cluster, log_from)
    finally:
        cluster.drop_database(url)
    print(f"  sweep: {seconds:.2f} s; what the server logged meanwhile (>= {SLOW_MS} ms):")
    for line in slow or ["  (nothing)"]:
        print(f"    {line}")
    return [
        Result(
            "7 postgres: sweep (complete_cycle)",
            f"< {SWEEP_TARGET:g} s",
            f"{seconds:.2f} s removing {stale:,} stale refs "
            f"{'(after a manual ANALYZE) ' if analyze_first else ''}(cycle 2 saw none; its whole "
            f"run_once {whole:.2f} s; cycle 1 wrote them in {build_seconds:.1f} s)",
            seconds < SWEEP_TARGET,
        )
    ]


SLOW_MS = 100
SERVER_EVENTS = ("duration:", "checkpoint", "automatic vacuum", "automatic analyze", "plan:")


def start_profile(cluster: PgCluster, url: str) -> int:
    """Have the server log, for the sessions opened from now on in `url`'s database, every
    statement of SLOW_MS or more with its plan (auto_explain, no ANALYZE), and every autovacuum
    and checkpoint: where the sweep's time goes, should it miss. Returns the log's size."""
    database = url.rsplit("/", 1)[1]
    with cluster.admin() as conn:
        for name, value in (
            ("log_min_duration_statement", str(SLOW_MS)),
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", str(SLOW_MS)),
        ):
            conn.execute(f"ALTER DATABASE \"{database}\" SET {name} = '{value}'")
        conn.execute("ALTER SYSTEM SET log_autovacuum_min_duration = 0")
        conn.execute("SELECT pg_reload_conf()")
    return server_log(cluster).stat().st_size


def server_log(cluster: PgCluster) -> Path:
    return cluster.data_dir.parent / "server.log"


def server_log_since(cluster: PgCluster, offset: int) -> list[str]:
    """The server's log lines about slow statements, plans, autovacuum and checkpoints since
    `offset`, each shortened to one line."""
    with server_log(cluster).open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    entries: list[str] = []
    for line in text.splitlines():
        if line[:1].isspace() and entries:
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    found = [entry for entry in entries if any(event in entry for event in SERVER_EVENTS)]
    return [" ".join(entry.split())[:900] for entry in found]


# -- 3. status_report at 1M refs ------------------------------------------------------------------


def small_entities(start: int, stop: int) -> Iterator[Entity]:
    for index in range(start, stop):
        kind = "API" if index % 3 == 2 else "Component"
        name = f"cmp-{index:07d}" if kind == "Component" else f"cmp-{index:07d}-http"
        metadata = {"name": name, "namespace": "ns-00", "annotations": {"n": str(index)}}
        body = {"apiVersion": "backstage.io/v1alpha1", "kind": kind, "metadata": metadata}
        yield Entity(kind, "ns-00", name, body, f"ns-00/proj-{index // 100:05d}/{name}")


def build_active_set(store: Store, refs: int) -> float:
    """Cycle 1 of provider `openchoreo` commits `refs` entities and completes: (seconds)."""
    began = time.perf_counter()
    now = time.time()
    record: ProviderRecord = store.load_provider("openchoreo")
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    record.cycle_started_at = record.last_burst_at = now
    store.start_cycle(record, now)
    for first in range(0, refs, STATUS_PAGE):
        page = list(small_entities(first, min(first + STATUS_PAGE, refs)))
        result = EntityIteratorResult(done=False, entities=page, cursor={"page": first})
        store.commit_page("openchoreo", record.cycle_id, result, f'{{"page":{first}}}', now)
    record.state = ProviderState.RESTING
    record.cursor = None
    record.last_completed_at = now
    record.last_cycle_duration = 1.0
    record.next_action_at = now + 1800
    store.complete_cycle(record, NO_GUARDS, now)
    return time.perf_counter() - began


def status(cluster: PgCluster, refs: int, runs: int) -> list[Result]:
    url = cluster.fresh_database()
    location = PostgresLocation(url)
    try:
        with location.open() as store:
            store.migrate()
            build_seconds = build_active_set(store, refs)
            active = store.active_count("openchoreo")
        if active != refs:
            raise RuntimeError(f"the active set holds {active}, expected {refs}")
        timings = []
        config = Config()
        for _ in range(runs):
            now = time.time()
            began = time.perf_counter()
            report = status_report(location, config, now)
            timings.append(time.perf_counter() - began)
            if report.providers[0].active_entities != refs:
                raise RuntimeError(f"status_report saw {report.providers[0].active_entities}")
    finally:
        cluster.drop_database(url)
    seconds = statistics.median(timings)
    return [
        Result(
            "7 postgres: status_report()",
            f"< {STATUS_TARGET:g} s",
            f"{seconds:.3f} s with {refs:,} active refs (in process, median of {runs}; "
            f"all: {', '.join(f'{t:.3f}' for t in timings)}; state built through "
            f"Store.commit_page in {build_seconds:.0f} s)",
            seconds < STATUS_TARGET,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a fast check")
    parser.add_argument("--only", default="cpu,sweep,status", help="comma-separated subset")
    parser.add_argument(
        "--analyze-first",
        action="store_true",
        help="diagnosis: ANALYZE the database before the sweep (the product does not)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    only = set(args.only.split(","))
    # as `run` logs off a terminal (cron, a container): warnings and errors only
    configure_logging(json=True)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"machine: {machine()}", flush=True)
    compile_package()
    started = time.perf_counter()
    results: list[Result] = []
    with throwaway_cluster() as cluster:
        print(f"server: {server_version(cluster)} (loopback TCP, fsync=off)", flush=True)
        if "cpu" in only:
            results += cycle_cpu(cluster, sizes)
        if "sweep" in only:
            results += sweep(cluster, sizes.stale, analyze_first=args.analyze_first)
            print(f"  sweep done, {time.perf_counter() - started:.0f} s", flush=True)
        if "status" in only:
            results += status(cluster, sizes.status_refs, sizes.status_runs)
    return summarize(results, started)


if __name__ == "__main__":
    sys.exit(main())
