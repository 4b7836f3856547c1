"""A lock another session holds on the state's tables past `lock_timeout` (a DBA's `LOCK TABLE`
left open in psql): the lean entry's calls (`status --json`, `health`, `export`, the idle `run`)
report it the first time they meet it. Before, they handed the call to the full command, which
waited out `lock_timeout` a second time before it said the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from choreo_ingest.cli import run_flow
from choreo_ingest.cli.lean import lean_main
from choreo_ingest.store import state_location

from pg_support import PgCluster
from sim_support import write_config

LOCKED_TABLES = "choreo_ingest.openchoreo_incremental_ingestion_state, choreo_ingest.entities"


@contextmanager
def table_locked(pg_cluster: PgCluster, url: str) -> Iterator[None]:
    """The providers' and the entities' tables locked by another session until the block ends."""
    with pg_cluster.admin(url.rsplit("/", 1)[1]) as admin:
        admin.execute("BEGIN")
        admin.execute(f"LOCK TABLE {LOCKED_TABLES} IN ACCESS EXCLUSIVE MODE")
        yield
        admin.execute("ROLLBACK")


@pytest.mark.parametrize(
    "command",
    [["status", "--json"], ["health", "--json"], ["export"], ["run"]],
    ids=["status", "health", "export", "idle-run"],
)
def test_the_lean_entry_reports_a_lock_wait_past_lock_timeout_itself(
    tmp_path: Path,
    pg_cluster: PgCluster,
    pg_url: str,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full_run(*args: object, **kwargs: object) -> int:
        raise AssertionError("the full run was reached: it waits out lock_timeout again")

    monkeypatch.setattr(run_flow, "run_and_report", full_run)
    waiting = f"{pg_url}?options={quote('-c lock_timeout=300ms')}"
    with state_location(waiting).open() as store:
        store.migrate()
    config = write_config(
        tmp_path / "choreo-ingest.yaml",
        "http://127.0.0.1:9",
        state={"url": waiting},
        providers=["openchoreo"],
    )
    capsys.readouterr()

    with table_locked(pg_cluster, pg_url):
        code = lean_main(["--config", str(config), *command])  # None: left to the full command

    out, err = capsys.readouterr()
    assert code == 4
    [line] = err.splitlines()
    assert "past lock_timeout" in line
    assert "SQLSTATE 55P03" in line
    if "--json" in command:
        assert json.loads(out)["exitCode"] == 4
    else:
        assert out == ""
