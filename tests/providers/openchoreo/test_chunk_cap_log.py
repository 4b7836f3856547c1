"""A `chunkSize` above what the v1 API serves is capped: a configured condition, said as a
config warning is (INFO, which a terminal, `-v` and `check` show), never a WARNING that cron
mails at every burst."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server

from sim_support import run_cli, write_config


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    api = SimulatorApi(World.generate(1, 1, 5, seed=3), SimulatorOptions(api="v1"))
    with start_server(api) as server:
        yield write_config(
            tmp_path / "config.yaml",
            server.url,
            incremental={"chunkSize": 500},
            state={"path": "state.db"},
        )


def test_the_cap_is_not_mailed_by_cron_at_every_burst(tmp_path: Path, config_file: Path) -> None:
    bursts = [run_cli("run", "--force", "--config", config_file, cwd=tmp_path) for _ in "ab"]

    assert [(done.returncode, done.stderr) for done in bursts] == [(0, "")] * 2


def test_the_cap_is_said_with_v_and_by_check(tmp_path: Path, config_file: Path) -> None:
    verbose = run_cli("-v", "run", "--force", "--config", config_file, cwd=tmp_path)
    check = run_cli("check", "--json", "--config", config_file, cwd=tmp_path)

    assert verbose.returncode == 0, verbose.stderr
    [line] = [
        json.loads(line) for line in verbose.stderr.splitlines() if "chunk_size_capped" in line
    ]
    assert line["level"] == "info"
    assert line["message"] == (
        "openchoreo.incremental.chunkSize: 500, but the OpenChoreo v1 API serves at most 100 "
        "items a page; using 100"
    )
    checks = {item["name"]: item for item in json.loads(check.stdout)["checks"]}
    assert checks["openchoreo.incremental.chunkSize"]["detail"].startswith(
        "500, but the OpenChoreo v1 API serves at most 100"
    )  # said after its key: `openchoreo.incremental.chunkSize: 500, but ...`
