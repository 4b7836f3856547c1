"""Benchmarks 8 and 9 (issue 13): cheap when idle, lean when busy.

    python bench/lean.py [--quick] [--only idle,floor] [--api orgs,v1]

8 `idle`: a SQLite state of at least 50,000 entities, built by one real v1 cycle against the
  simulator, the provider resting (`restLength` of a year) and `metrics.textfile` set. Each of
  `python -c pass`, `choreo-ingest run` (nothing due) deciding afresh (its kept answer removed
  first, as any change to what it reads would), the same `run` again (answered from what the
  first kept: cron's 59 calls an hour), `status --json` and `health --json` runs 7 times,
  interleaved; medians of wall, CPU (user+sys) and peak RSS. The target is the kept answer's;
  the deciding run's figure is shown beside it. The idle runs must have done nothing: exit 0,
  the state's content unchanged (a digest of every table's rows), no request to the simulator,
  the metrics textfile rewritten with a newer `choreo_ingest_last_run_timestamp_seconds` after
  every run, and an answer kept.

9 `floor`: one full cycle (`run --force`, one burst long enough for all of it, fresh state file,
  `chunkSize` 50, default `maxConcurrentRequests`) against bench/floor_seq.py, a sequential bare
  httpx walk (one connection, no threads) making the same API requests, checked route by route
  with the simulator's counters. Both API generations at 1k, 10k and 50k components
  (5 x 10 x 20, 200, 1000): the org era with `--endpoints-max 1` (each component has 0 or 1
  endpoint with equal odds: endpoint ratio 0.5), v1 with the simulator's default workload and
  schema mix and OAuth2 client credentials (the cycle gets its token itself, as configured in
  every OpenChoreo install; the floor's token is fetched by the benchmark before the floor
  process starts). Floor and cycle alternate, `repeats` runs each; the median of each side is
  compared and the spread (min-max) shown.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sqlite3
import statistics
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    Measured,
    Result,
    SimulatorProcess,
    World,
    cli,
    compile_package,
    fetch_token,
    ingest,
    machine,
    metric_value,
    run_measured,
    scratch,
    summarize,
    write_config,
)

CHUNK_SIZE = 50
OAUTH_CLIENT = "choreo-ingest-bench"
OAUTH_SECRET = "bench-client-secret"  # noqa: S105 (a loopback simulator's, made up here)
ORGS_ENDPOINTS_MAX = 1
"""The org-era generator draws 0..endpoints_max endpoints per component: 1 gives ratio 0.5."""
REST_LENGTH = 525_600  # minutes: a year, the longest restLength
"""Minutes a provider rests after a cycle: a year, so nothing is due during the idle runs."""

IDLE_RUNS = 7
IDLE_RATIO_TARGET = 3.0
STATUS_WALL_TARGET = 0.2
IDLE_MIN_ENTITIES = 50_000

CPU_TARGET = 1.3
WALL_TARGET = 1.2
CPU_TARGET_1K = 1.5
RSS_GROWTH_TARGET = 0.10
LAST_RUN = "choreo_ingest_last_run_timestamp_seconds"


FLOOR_SIZES = (World(5, 10, 20), World(5, 10, 200), World(5, 10, 1000))
QUICK_FLOOR_SIZES = FLOOR_SIZES[:2]
IDLE_SIZE = World(5, 10, 740)
"""v1 at 37,000 components: about 52,000 entities (Component, API, System, Domain)."""
APIS = ("orgs", "v1")


# -- shared ----------------------------------------------------------------------------------


def simulator_for(api: str, size: World) -> SimulatorProcess:
    if api == "orgs":
        return SimulatorProcess(
            size.namespaces,
            size.projects,
            size.components,
            api="orgs",
            endpoints_max=ORGS_ENDPOINTS_MAX,
        )
    return SimulatorProcess(
        size.namespaces,
        size.projects,
        size.components,
        api="v1",
        oauth_client_id=OAUTH_CLIENT,
        oauth_client_secret=OAUTH_SECRET,
    )


def config_for(directory: Path, simulator: SimulatorProcess, **incremental: Any) -> Path:
    """The operator's config: org era named explicitly (`auto` would first ask for v1's namespace
    listing), v1 under the default `auto` with OAuth2 client credentials."""
    if simulator.api == "orgs":
        return write_config(directory, simulator.url, api="orgs", **incremental)
    oauth = {
        "tokenUrl": simulator.token_url,
        "clientId": OAUTH_CLIENT,
        "clientSecret": OAUTH_SECRET,
    }
    return write_config(directory, simulator.url, oauth=oauth, **incremental)


def full_cycle(simulator: SimulatorProcess, directory: Path, **incremental: Any) -> Measured:
    """One `run --force` with a burst long enough for the whole cycle."""
    config = config_for(
        directory, simulator, burstLength=86_400, chunkSize=CHUNK_SIZE, **incremental
    )
    run = ingest(config, "run", "--force", "--json").check()
    outcome = run.json()["providers"][0]
    if not outcome["cycleCompleted"]:
        raise RuntimeError(f"the cycle did not complete in one burst: {outcome}")
    return run


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], unit: str = " s", digits: int = 2) -> str:
    return f"{median(values):.{digits}f}{unit} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def mib(measured: Measured) -> float:
    return measured.maxrss_kib / 1024


# -- 6: the idle call ------------------------------------------------------------------------


def state_digest(database: Path) -> str:
    """A digest of every table's rows (the content, not the file: WAL checkpoints move bytes)."""
    digest = hashlib.sha256()
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        for (table,) in tables:
            digest.update(table.encode())
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                digest.update(repr(row).encode())
    finally:
        connection.close()
    return digest.hexdigest()


def kept_answer(config: Path) -> Path:
    """Where an idle `run` of `config` keeps its answer (`choreo_ingest.idle_answer`)."""
    from choreo_ingest.cache_files import ANSWER_SUFFIX, absolute_path, kept_file

    found = kept_file(absolute_path(str(config)), ANSWER_SUFFIX, os.environ)
    if found is None:
        raise RuntimeError("no cache directory: set XDG_CACHE_HOME or HOME")
    return Path(found)


def entry_script_check(name: str) -> Result:
    """The measured entry script must call what pyproject.toml names: pip writes the script at
    install time, so a changed `[project.scripts]` target needs `pip install --no-deps -e .`."""
    pyproject = BENCH_DIR.parent / "pyproject.toml"
    wanted = tomllib.loads(pyproject.read_text())["project"]["scripts"]["choreo-ingest"]
    command = cli()
    if len(command) != 1:
        return Result(f"{name}: entry script", "-", f"none found; measuring {command}", None)
    script = Path(command[0])
    found = re.search(r"^from (\S+) import (\S+)", script.read_text(errors="replace"), re.M)
    installed = f"{found[1]}:{found[2]}" if found else "?"
    return Result(
        f"{name}: entry script",
        "calls pyproject's target",
        f"{script} -> {installed} (pyproject: {wanted})"
        + ("" if installed == wanted else "; stale: run `pip install --no-deps -e .`"),
        installed == wanted if found else None,
    )


def run_idle(size: World = IDLE_SIZE, runs: int = IDLE_RUNS) -> list[Result]:
    name = "8 idle"
    script = entry_script_check(name)
    with simulator_for("v1", size) as simulator, scratch("idle") as directory:
        began = time.perf_counter()
        build = full_cycle(simulator, directory, restLength=REST_LENGTH)
        built_in = time.perf_counter() - began
        config = directory / "choreo-ingest.yaml"
        textfile = directory / "metrics.prom"
        database = directory / "state.db"
        entities = int(
            ingest(config, "status", "--json").check().json()["providers"][0]["activeEntities"]
        )
        before = state_digest(database)
        last_run = metric_value(textfile, LAST_RUN) or 0.0
        simulator.reset_stats()
        bare: list[Measured] = []
        idle: list[Measured] = []
        deciding: list[Measured] = []
        given_db: list[Measured] = []
        status: list[Measured] = []
        health: list[Measured] = []
        problems: list[str] = []
        answer = kept_answer(config)
        for _ in range(runs):
            bare.append(run_measured([sys.executable, "-c", "pass"]).check())
            db = ("--db", str(database))  # the state given apart, as some crontabs do
            calls: list[tuple[list[Measured], bool, tuple[str, ...]]] = [
                (deciding, True, ()),
                (idle, False, ()),
                ([], True, db),
                (given_db, False, db),
            ]
            for measured, forget, more in calls:
                if forget:  # as after any change: the run decides, and keeps its answer again
                    answer.unlink(missing_ok=True)
                kept_before = answer.stat().st_mtime_ns if answer.exists() else None
                idle_run = ingest(config, "run", *more)
                if not forget and answer.stat().st_mtime_ns != kept_before:
                    problems.append("the second run decided afresh: the kept answer was not taken")
                measured.append(idle_run)
                if idle_run.returncode != 0:
                    problems.append(f"run exited {idle_run.returncode}: {idle_run.stderr[-300:]}")
                stamp = metric_value(textfile, LAST_RUN) if textfile.exists() else None
                if stamp is None or stamp <= last_run:
                    problems.append(f"{LAST_RUN} not newer ({stamp} after {last_run})")
                last_run = stamp or last_run
            if not answer.exists():
                problems.append(f"no answer kept at {answer}")
            status.append(ingest(config, "status", "--json").check())
            health.append(ingest(config, "health", "--json").check())
        requests = simulator.stats()["total_requests"]
        if requests:
            problems.append(f"{requests} request(s) to the simulator")
        if state_digest(database) != before:
            problems.append("the state's content changed")
        textfile_entities = sum(
            float(line.rsplit(" ", 1)[1])
            for line in textfile.read_text().splitlines()
            if line.startswith("choreo_ingest_entities{")
        )
    bare_wall = median([m.wall for m in bare])
    bare_cpu = median([m.cpu for m in bare])
    idle_wall = median([m.wall for m in idle])
    idle_cpu = median([m.cpu for m in idle])
    deciding_wall = median([m.wall for m in deciding])

    def figures(measured: list[Measured]) -> str:
        return (
            f"wall {spread([m.wall for m in measured], digits=3)}, "
            f"CPU {spread([m.cpu for m in measured], digits=3)}, "
            f"peak RSS {median([mib(m) for m in measured]):.1f} MiB"
        )

    where = (
        f"{entities:,} entities ({size}, v1, built by one cycle: {build.cpu:.1f} s CPU, "
        f"{built_in:.0f} s), median [min-max] of {runs}"
    )
    status_wall = median([m.wall for m in status])
    health_wall = median([m.wall for m in health])
    return [
        script,
        Result(
            f"{name}: state",
            f">= {IDLE_MIN_ENTITIES:,} entities",
            where,
            entities >= IDLE_MIN_ENTITIES,
        ),
        Result(f"{name}: python -c pass", "-", figures(bare), None),
        Result(
            f"{name}: `run`, nothing due, wall",
            f"<= {IDLE_RATIO_TARGET:g}x python -c pass",
            f"{idle_wall / bare_wall:.1f}x ({figures(idle)})",
            idle_wall <= IDLE_RATIO_TARGET * bare_wall,
        ),
        Result(
            f"{name}: `run`, nothing due, CPU ratio",
            "-",
            f"{idle_cpu / bare_cpu:.1f}x python -c pass ({idle_cpu:.3f} vs {bare_cpu:.3f} s)",
            None,
        ),
        Result(
            f"{name}: `run`, nothing due, deciding afresh",
            "-",
            f"{deciding_wall / bare_wall:.1f}x, the first call after a change "
            f"({figures(deciding)})",
            None,
        ),
        Result(
            f"{name}: `run --db STATE`, nothing due, wall",
            f"<= {IDLE_RATIO_TARGET:g}x python -c pass",
            f"{median([m.wall for m in given_db]) / bare_wall:.1f}x ({figures(given_db)})",
            median([m.wall for m in given_db]) <= IDLE_RATIO_TARGET * bare_wall,
        ),
        Result(
            f"{name}: `run` did nothing",
            "exit 0, state unchanged, 0 requests, textfile rewritten, answer kept and taken",
            "; ".join(problems)
            or f"yes ({4 * runs} runs, each deciding one keeping an answer the next took; "
            f"the textfile's entities sum to {textfile_entities:,.0f})",
            not problems,
        ),
        Result(
            f"{name}: `status --json` wall",
            f"<= {STATUS_WALL_TARGET} s",
            figures(status),
            status_wall <= STATUS_WALL_TARGET,
        ),
        Result(
            f"{name}: `health --json` wall",
            f"<= {STATUS_WALL_TARGET} s",
            figures(health),
            health_wall <= STATUS_WALL_TARGET,
        ),
    ]


# -- 7: the floor ratio ----------------------------------------------------------------------


@dataclass
class Pair:
    """What one size measured: runs of each side, the requests and the entities."""

    api: str
    size: World
    floors: list[Measured]
    cycles: list[Measured]
    requests: int
    routes: dict[str, int]
    entities: int
    write_floor: dict[str, Any]
    """bench/write_floor.py on the last cycle's state file: what storing its entities costs."""

    @property
    def cycle_rss(self) -> float:
        return median([mib(m) for m in self.cycles])


def floor_walk(simulator: SimulatorProcess, token: str | None) -> Measured:
    argv = [sys.executable, str(BENCH_DIR / "floor_seq.py"), simulator.url]
    argv += ["--api", simulator.api, "--limit", str(CHUNK_SIZE)]
    if token is not None:
        argv += ["--token", token]
    return run_measured(argv).check()


def api_routes(stats: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in stats["requests_by_route"].items() if k != "token"}


def measure_pair(api: str, size: World, repeats: int) -> Pair:
    floors: list[Measured] = []
    cycles: list[Measured] = []
    entities = 0
    stored: dict[str, Any] = {}
    with simulator_for(api, size) as simulator:
        token = fetch_token(simulator, OAUTH_CLIENT, OAUTH_SECRET) if api == "v1" else None
        floor_walk(simulator, token)  # warm the simulator's caches for both sides
        for attempt in range(repeats):
            simulator.reset_stats()
            floors.append(floor_walk(simulator, token))
            floor_stats = simulator.stats()
            simulator.reset_stats()
            with scratch(f"floor-{api}-{attempt}") as directory:
                cycle = full_cycle(simulator, directory)
                entities = int(cycle.json()["providers"][0]["entitiesUpserted"])
                if attempt == repeats - 1:
                    stored = store_again(directory / "state.db", entities, size)
            cycles.append(cycle)
            cycle_stats = simulator.stats()
            if api_routes(floor_stats) != api_routes(cycle_stats) or floor_stats["token_requests"]:
                raise RuntimeError(
                    f"{api} {size}: not the same requests: floor {floor_stats['requests_by_route']}"
                    f", cycle {cycle_stats['requests_by_route']}"
                )
            if api == "orgs" and floor_stats["total_requests"] != cycle_stats["total_requests"]:
                raise RuntimeError(f"{api} {size}: total_requests differ")
    return Pair(
        api,
        size,
        floors,
        cycles,
        int(floor_stats["api_requests"]),
        api_routes(floor_stats),
        entities,
        stored,
    )


def store_again(state: Path, entities: int, size: World) -> dict[str, Any]:
    """bench/write_floor.py on a cycle's state file, a transaction per component page's worth
    of entities (its Component and API entities, with the System and Domain ones spread over)."""
    per_page = max(1, round(entities / size.total * CHUNK_SIZE))
    argv = [sys.executable, str(BENCH_DIR / "write_floor.py"), str(state)]
    measured = run_measured([*argv, "--per-page", str(per_page), "--json"]).check()
    document: dict[str, Any] = measured.json()
    return document


def pair_results(pair: Pair, reference: Pair | None) -> list[Result]:
    name = f"9 floor {pair.api} {pair.size.label}"
    small = pair.size.total < 10_000
    cpu_target = CPU_TARGET_1K if small else CPU_TARGET
    floor_cpu = [m.cpu for m in pair.floors]
    cycle_cpu = [m.cpu for m in pair.cycles]
    floor_wall = [m.wall for m in pair.floors]
    cycle_wall = [m.wall for m in pair.cycles]
    cpu_ratio = median(cycle_cpu) / median(floor_cpu)
    wall_ratio = median(cycle_wall) / median(floor_wall)
    cpu_pairs = [c / f for c, f in zip(cycle_cpu, floor_cpu, strict=True)]
    wall_pairs = [c / f for c, f in zip(cycle_wall, floor_wall, strict=True)]
    routes = ", ".join(f"{count:,} {route}" for route, count in sorted(pair.routes.items()))
    tokens = "; the cycle's 1 token request apart" if pair.api == "v1" else ""
    runs = len(pair.cycles)
    results = [
        Result(
            f"{name}: world",
            "-",
            f"{pair.size}, {pair.requests:,} API requests each side ({routes}){tokens}, "
            f"{pair.entities:,} entities; median [min-max] of {runs}",
            None,
        ),
        Result(
            f"{name}: CPU ratio",
            f"<= {cpu_target}",
            f"{cpu_ratio:.2f} (cycle {spread(cycle_cpu)}, floor {spread(floor_cpu)}; "
            f"per pair {min(cpu_pairs):.2f}-{max(cpu_pairs):.2f})",
            cpu_ratio <= cpu_target,
        ),
        Result(
            f"{name}: wall ratio",
            "-" if small else f"<= {WALL_TARGET}",
            f"{wall_ratio:.2f} (cycle {spread(cycle_wall)}, floor {spread(floor_wall)}; "
            f"per pair {min(wall_pairs):.2f}-{max(wall_pairs):.2f})",
            None if small else wall_ratio <= WALL_TARGET,
        ),
    ]
    if not small:
        results.append(write_floor_result(pair, cpu_target))
    rss = (
        f"cycle {spread([mib(m) for m in pair.cycles], ' MiB', 1)}, "
        f"floor {spread([mib(m) for m in pair.floors], ' MiB', 1)}"
    )
    if reference is None:
        results.append(Result(f"{name}: peak RSS", "-", rss, None))
    else:
        growth = pair.cycle_rss / reference.cycle_rss - 1
        results.append(
            Result(
                f"{name}: peak RSS vs {reference.size.label}",
                f"within {RSS_GROWTH_TARGET:.0%}",
                f"{growth:+.1%} ({rss}; {reference.size.label}: cycle "
                f"{reference.cycle_rss:.1f} MiB)",
                abs(growth) <= RSS_GROWTH_TARGET,
            )
        )
    return results


def write_floor_result(pair: Pair, cpu_target: float) -> Result:
    """The CPU the target leaves beyond the floor, against what storing the cycle's entities
    costs by itself (bench/write_floor.py): a bound, not a measurement of the cycle."""
    floor_cpu = median([m.cpu for m in pair.floors])
    budget = (cpu_target - 1) * floor_cpu
    stored = pair.write_floor
    each = 1e6 / stored["entities"]
    rows, encoded, in_sql = stored["rows_cpu"], stored["entities_cpu"], stored["sql_cpu"]
    return Result(
        f"9 floor {pair.api} {pair.size.label}: storing the entities alone (info)",
        "-",
        f"{rows:.2f} s for their rows ({rows * each:.0f} us an entity), "
        f"{encoded:.2f} s with canonical JSON and hashes ({encoded * each:.0f} us), "
        f"{in_sql:.2f} s for the rows written by SQLite from JSON ({in_sql * each:.0f} us), "
        f"{stored['entities']:,} entities in "
        f"{stored['transactions']} transactions; the target leaves {budget:.2f} s "
        f"({cpu_target - 1:.1f} x floor {floor_cpu:.2f} s) for all the cycle does beyond the floor",
        None,
    )


def run_floor(
    sizes: Sequence[World] = FLOOR_SIZES, repeats: int = 3, apis: Sequence[str] = APIS
) -> list[Result]:
    results: list[Result] = []
    for api in apis:
        measured: dict[int, Pair] = {}
        for size in sizes:
            began = time.perf_counter()
            pair = measure_pair(api, size, repeats)
            measured[size.total] = pair
            reference = measured.get(10_000) if size.total == 50_000 else None
            results += pair_results(pair, reference)
            print(f"  floor {api} {size.label}: {time.perf_counter() - began:.0f} s", flush=True)
    return results


BENCHMARKS: dict[str, Callable[[argparse.Namespace], list[Result]]] = {
    "idle": lambda args: run_idle(IDLE_SIZE, IDLE_RUNS),
    "floor": lambda args: run_floor(
        QUICK_FLOOR_SIZES if args.quick else FLOOR_SIZES,
        3,
        [api.strip() for api in args.api.split(",") if api.strip()],
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="floor at 1k and 10k only")
    parser.add_argument("--only", default="idle,floor", help="comma-separated: idle,floor")
    parser.add_argument("--api", default=",".join(APIS), help="floor: orgs,v1")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    print(f"machine: {machine()}; {'--quick' if args.quick else 'full'} run", flush=True)
    compile_package()
    started = time.perf_counter()
    results: list[Result] = []
    for name in chosen:
        results += BENCHMARKS[name](args)
    return summarize(results, started)


if __name__ == "__main__":
    sys.exit(main())
