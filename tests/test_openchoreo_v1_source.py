"""`openchoreo.baseUrl` pointed at another OpenChoreo in the middle of a cycle, through the command
line: the cycle begins again on the new server, and once it completes the catalog is that
server's alone (before, the cycle went on with the first server's queued namespaces, which the
second answered with empty lists, and swept most of the first catalog, adding nothing)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.simulator import SimulatorApi, World

from sim_support import expected_catalog, plain, ref_of, run_cli, write_config

pytestmark = pytest.mark.slow


def configure(tmp_path: Path, api: SimulatorApi) -> Path:
    url: str = api.url  # type: ignore[attr-defined]
    incremental = {"burstLength": 0.3, "burstInterval": 1, "chunkSize": 5}
    return write_config(
        tmp_path / "config.yaml",
        url,
        incremental=incremental,
        state={"path": str(tmp_path / "state.db")},
    )


def status(config: Path, tmp_path: Path) -> dict[str, Any]:
    done = run_cli("status", "--json", "--config", config, cwd=tmp_path)
    provider: dict[str, Any] = json.loads(done.stdout)["providers"][0]
    return provider


def run(config: Path, tmp_path: Path) -> tuple[dict[str, Any], str]:
    done = run_cli("run", "--force", "--json", "--config", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [provider] = json.loads(done.stdout)["providers"]
    return provider, plain(done.stderr)


def test_a_cycle_begun_on_one_server_begins_again_on_the_next(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    first_world, next_world = World.generate(3, 4, 10, seed=1), World.generate(3, 4, 10, seed=2)
    assert not set(expected_catalog(first_world)) & set(expected_catalog(next_world))
    first = serve(first_world, api="v1", latency=0.02)
    following = serve(next_world, api="v1", latency=0.02)
    config = configure(tmp_path, first)
    begun, _ = run(config, tmp_path)
    assert not begun["cycleCompleted"]
    cycle = status(config, tmp_path)["cycleId"]

    configure(tmp_path, following)
    switched, said = run(config, tmp_path)
    cycle_switched = status(config, tmp_path)["cycleId"]
    calls = 1
    provider = switched
    while not provider["cycleCompleted"]:
        provider, _ = run(config, tmp_path)
        calls += 1
        assert calls < 200, "no cycle completed"

    assert cycle_switched == cycle + 1
    [line] = [line for line in said.splitlines() if "source_changed" in line]
    assert "openchoreo.baseUrl" in line
    assert "cycle_begun_again=True" in line or '"cycle_begun_again": true' in line
    exported = run_cli("export", "--config", config, cwd=tmp_path).stdout.splitlines()
    assert {ref_of(json.loads(body)) for body in exported} == set(expected_catalog(next_world))
    url: str = following.url  # type: ignore[attr-defined]
    assert status(config, tmp_path)["source"] == url.rstrip("/").removesuffix("/api/v1") + "/api/v1"
