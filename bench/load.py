"""Benchmark 4: load control, as the simulator process observes it.

- Caps: one long burst with `maxConcurrentRequests: 3` and `maxRequestsPerSecond: 50` against a
  simulator whose latency lets more than 3 requests overlap and more than 50 start per second;
  the simulator's own counters (`/_control/stats`: most requests in flight at once, most
  requests arriving within any sliding second) must stay within the caps.
- Burst bound: `burstLength: 2` with 0.3 s of latency per request and `requestTimeout: 1`;
  every burst's duration (`choreo_ingest_burst_duration_seconds` in the metrics textfile,
  written by each run) must stay within burstLength + one request timeout. Runs are a second
  apart, so that the rate window of one run never holds requests of the previous one.
"""

from __future__ import annotations

import time

from common import Result, SimulatorProcess, ingest, metric_value, scratch, write_config

API = "orgs"
"""These figures were first measured against the organization-era API; kept comparable."""
MAX_CONCURRENT = 3
MAX_PER_SECOND = 50
CAPS_LATENCY = 0.05
"""3 requests in flight at 50 ms each could start 60 per second: above the rate cap."""
BURST_LENGTH = 2.0
REQUEST_TIMEOUT = 1.0
BOUND_LATENCY = 0.3
BOUND_CHUNK_SIZE = 5
"""A page (1 list + 5 detail calls, 3 at a time) takes about 0.9 s: it fits a 2 s burst. A page
that does not fit can never be committed, and every burst of it fails at the deadline."""
BURST_METRIC = "choreo_ingest_burst_duration_seconds"


def caps(components: int) -> tuple[dict[str, int], float]:
    """The simulator's counters after one full cycle in one burst, and the cycle's wall time."""
    with (
        SimulatorProcess(1, 3, components // 3, latency=CAPS_LATENCY, api=API) as simulator,
        scratch("caps") as directory,
    ):
        config = write_config(
            directory,
            simulator.url,
            api=API,
            burstLength=3600,
            maxConcurrentRequests=MAX_CONCURRENT,
            maxRequestsPerSecond=MAX_PER_SECOND,
        )
        simulator.reset_stats()
        run = ingest(config, "run", "--force", "--json").check()
        if not run.json()["providers"][0]["cycleCompleted"]:
            raise RuntimeError("the capped cycle did not complete in one burst")
        return simulator.stats(), run.wall


def burst_durations(runs: int) -> tuple[list[float], dict[str, int]]:
    durations = []
    with (
        SimulatorProcess(1, 4, 100, latency=BOUND_LATENCY, api=API) as simulator,
        scratch("bound") as directory,
    ):
        config = write_config(
            directory,
            simulator.url,
            api=API,
            burstLength=BURST_LENGTH,
            chunkSize=BOUND_CHUNK_SIZE,
            requestTimeout=REQUEST_TIMEOUT,
            maxConcurrentRequests=MAX_CONCURRENT,
            maxRequestsPerSecond=MAX_PER_SECOND,
        )
        simulator.reset_stats()
        for _ in range(runs):
            ingest(config, "run", "--force").check()
            duration = metric_value(
                directory / "metrics.prom", "choreo_ingest_burst_duration_seconds"
            )
            if duration is None:
                raise RuntimeError("no choreo_ingest_burst_duration_seconds in the textfile")
            durations.append(duration)
            time.sleep(1.0)
        return durations, simulator.stats()


def run(components: int, bursts: int) -> list[Result]:
    stats, wall = caps(components)
    durations, bound_stats = burst_durations(bursts)
    in_flight = max(stats["max_in_flight"], bound_stats["max_in_flight"])
    per_second = max(stats["max_requests_per_second"], bound_stats["max_requests_per_second"])
    requests = stats["total_requests"] + bound_stats["total_requests"]
    limit = BURST_LENGTH + REQUEST_TIMEOUT
    return [
        Result(
            "4 load: max requests in flight",
            f"<= {MAX_CONCURRENT}",
            f"{in_flight} (simulator's count over {requests:,} requests)",
            in_flight <= MAX_CONCURRENT,
        ),
        Result(
            "4 load: max requests in any second",
            f"<= {MAX_PER_SECOND}",
            f"{per_second} (sliding 1 s window; capped cycle of "
            f"{stats['total_requests']:,} requests took {wall:.1f} s)",
            per_second <= MAX_PER_SECOND,
        ),
        Result(
            "4 load: longest burst",
            f"<= {limit:g} s",
            f"{max(durations):.2f} s over {len(durations)} bursts of burstLength "
            f"{BURST_LENGTH:g} s (latency {BOUND_LATENCY:g} s, requestTimeout "
            f"{REQUEST_TIMEOUT:g} s)",
            max(durations) <= limit,
        ),
    ]
