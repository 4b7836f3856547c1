"""Two `serve` replicas on one PostgreSQL state: one bursts at a time, both take events into the
shared inbox, both answer reads, and the cycle completes with the world's catalog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ports import free_port

from choreo_ingest.simulator.api import SimulatorApi
from choreo_ingest.simulator.options import SimulatorOptions
from choreo_ingest.simulator.server import RunningServer, start_server
from choreo_ingest.simulator.world import World

from sim_support import expected_catalog, ref_of, run_cli, wait_until, write_config

pytestmark = pytest.mark.slow

NAMESPACE, PROJECT = "org-00-umbrella", "proj-00-search"


@pytest.fixture
def world() -> World:
    return World.generate(2, 2, 6, seed=12)


@pytest.fixture
def simulator(world: World) -> Iterator[RunningServer]:
    options = SimulatorOptions(api="v1", control=True, latency=0.05, token="openchoreo-token")
    with start_server(SimulatorApi(world, options)) as server:
        yield server


def replica(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CHOREO_INGEST")}
    return subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_two_replicas_share_one_state_one_bursting_at_a_time(
    tmp_path: Path, pg_url: str, simulator: RunningServer, world: World
) -> None:
    write_config(
        tmp_path / "choreo-ingest.yaml",
        simulator.url,
        token="openchoreo-token",
        state={"url": pg_url},
        incremental={
            "burstLength": 1,
            "burstInterval": 0.2,
            "restLength": 600,
            "chunkSize": 3,
            "maxConcurrentRequests": 1,
        },
    )
    ports = [free_port(), free_port()]
    replicas = [replica(tmp_path, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_until(lambda url=url: answers(url), 30, f"{url} to be ready")
        added = httpx.post(
            simulator.root_url
            + f"/_control/add_component?namespace={NAMESPACE}&project={PROJECT}&name=fresh",
            headers={"Authorization": "Bearer openchoreo-token"},
            timeout=10,
        )
        assert added.json()["success"], added.text
        event = {"kind": "Component", "name": "fresh", "namespace": NAMESPACE}
        receipts = [
            httpx.post(url + "/events/openchoreo", json={**event, "action": action}, timeout=10)
            for url, action in zip(urls, ("created", "updated"), strict=True)
        ]
        assert [receipt.status_code for receipt in receipts] == [202, 202]

        def completed() -> bool:
            status = httpx.get(urls[1] + "/status", timeout=10).json()
            provider = status["providers"][0] if status["providers"] else {}
            return bool(provider.get("lastCompletedAt")) and status["events"]["pending"] == 0

        wait_until(completed, 90, "a cycle and the inbox to be done")
        documents = [httpx.get(url + "/status", timeout=10).json() for url in urls]
    finally:
        codes, errors = [], []
        for process in replicas:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
            codes.append(process.returncode)
            errors.append(err)

    assert codes == [0, 0], errors
    assert simulator.api.stats.max_in_flight <= 1  # never two bursts at once
    for document in documents:
        document.pop("running")
    assert documents[0]["providers"][0]["cycleId"] == documents[1]["providers"][0]["cycleId"]
    exported = run_cli("export", "--db", pg_url, cwd=tmp_path).stdout.splitlines()
    refs = {ref_of(json.loads(line)) for line in exported}
    assert refs == set(expected_catalog(world))
    assert f"component:{NAMESPACE}/fresh" in refs
