"""Two hosts, one PostgreSQL state: `run` called in a loop by two processes through a whole
cycle never bursts twice at once, and when the one bursting is SIGKILLed the other carries on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo_ingest.simulator.api import SimulatorApi
from choreo_ingest.simulator.options import SimulatorOptions
from choreo_ingest.simulator.server import RunningServer, start_server
from choreo_ingest.simulator.world import World

from sim_support import expected_catalog, ref_of, run_cli, write_config

pytestmark = pytest.mark.slow

MAX_CONCURRENT = 1
DEADLINE_SECONDS = 240.0


@pytest.fixture
def world() -> World:
    return World.generate(2, 3, 10, seed=5)


@pytest.fixture
def simulator(world: World) -> Iterator[RunningServer]:
    options = SimulatorOptions(api="v1", latency=0.1, token="openchoreo-token")
    with start_server(SimulatorApi(world, options)) as server:
        yield server


def run_process(tmp_path: Path) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CHOREO_INGEST")}
    return subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", "run"],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def cycle_completed(tmp_path: Path) -> bool:
    done = run_cli("status", "--json", cwd=tmp_path)
    if done.returncode != 0:
        return False
    providers = json.loads(done.stdout)["providers"]
    return bool(providers) and providers[0]["lastCompletedAt"] is not None


def test_two_processes_never_burst_together_and_one_takes_over_from_a_killed_one(
    tmp_path: Path, pg_url: str, simulator: RunningServer, world: World
) -> None:
    write_config(
        tmp_path / "choreo-ingest.yaml",
        simulator.url,
        token="openchoreo-token",
        state={"url": pg_url},
        incremental={
            "burstLength": 2,
            "burstInterval": 0.1,
            "restLength": 600,
            "chunkSize": 3,
            "backoff": [0.5],
            "maxConcurrentRequests": MAX_CONCURRENT,
        },
    )
    codes: list[int] = []
    errors: list[str] = []
    alive: dict[int, subprocess.Popen[str]] = {}
    killed: list[int] = []
    finished = threading.Event()
    lock = threading.Lock()

    def loop(host: int) -> None:
        while not finished.is_set():
            process = run_process(tmp_path)
            with lock:
                alive[host] = process
            _, err = process.communicate(timeout=60)
            with lock:
                alive.pop(host, None)
                codes.append(process.returncode)
                if process.returncode not in (0, 75, -signal.SIGKILL):
                    errors.append(err)

    hosts = [threading.Thread(target=loop, args=(host,), daemon=True) for host in (1, 2)]
    for host in hosts:
        host.start()
    started = time.monotonic()
    try:
        while not cycle_completed(tmp_path):
            assert time.monotonic() - started < DEADLINE_SECONDS, (
                f"no cycle completed in time; exits {codes}, errors {errors}"
            )
            if not killed and codes.count(0) >= 1:
                with lock:  # the one that has run longest is the one bursting
                    running = list(alive.values())
                for process in running:
                    if process.poll() is None:
                        process.send_signal(signal.SIGKILL)
                        killed.append(process.pid)
                        break
            time.sleep(0.2)
    finally:
        finished.set()
        for host in hosts:
            host.join(timeout=60)

    assert errors == []
    assert killed, "a process was killed mid-cycle"
    assert set(codes) <= {0, 75, -signal.SIGKILL}
    assert simulator.api.stats.max_in_flight <= MAX_CONCURRENT
    exported = run_cli("export", cwd=tmp_path).stdout.splitlines()
    refs = [ref_of(json.loads(line)) for line in exported]
    assert len(refs) == len(set(refs))
    assert set(refs) == set(expected_catalog(world))
