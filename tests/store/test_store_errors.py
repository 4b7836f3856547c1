"""Trouble with the state file itself (a full disk, corruption) is a StateError naming the file,
wherever SQLite reports it: a statement, a row, the commit of a page on the page writer's thread,
and through `choreo-ingest run` exit 4, with the metrics still written and the state intact.

A full disk is a small `PRAGMA max_page_count` on the writing connection: it fails a write with
SQLITE_FULL exactly as a full file system does, without touching any mount.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from choreo_ingest.errors import NotAStateFile, StateError
from choreo_ingest.models import Entity, EntityIteratorResult, ProviderState
from choreo_ingest.page_writer import PageWriter
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server
from choreo_ingest.store import Store, connection
from choreo_ingest.store.connection import Connection, state_error

from fakes import make_entity
from sim_support import expected_refs, plain, run_cli

T0 = 1_800_000_000.0
PADDING = "x" * 3000
"""Makes each entity take most of a 4 KiB page, so a page of them needs new pages."""

CAPPED_CLI = """
import sys

from choreo_ingest.store import connection

extra_pages = int(sys.argv.pop(1))
opened = connection.Connection.__init__


def capped(self, *args, **kwargs):
    opened(self, *args, **kwargs)
    if not self.readonly:
        pages = self.raw.execute("PRAGMA page_count").fetchone()[0]
        self.raw.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


connection.Connection.__init__ = capped
from choreo_ingest.cli import main

main(sys.argv[1:])
"""
"""`python -c CAPPED_CLI N ARGS...`: the CLI, its state file allowed N pages more than it holds
when opened for writing (a disk that fills up during the run)."""


def big_entity(name: str) -> Entity:
    entity = make_entity(name)
    metadata = {**entity.body["metadata"], "description": PADDING}
    return replace(entity, body={**entity.body, "metadata": metadata})


def page(names: list[str], cursor: object) -> EntityIteratorResult:
    return EntityIteratorResult(done=False, entities=[big_entity(n) for n in names], cursor=cursor)


def cap(conn: Connection, extra_pages: int = 0) -> None:
    """No more than `extra_pages` new pages in the state file: then the disk is full."""
    pages = conn.raw.execute("PRAGMA page_count").fetchone()[0]
    conn.raw.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


@pytest.fixture
def conn(state_path: Path) -> Iterator[Connection]:
    """A writing connection to a migrated state file whose provider `fake` is in cycle 1."""
    with closing(Connection(state_path, readonly=False)) as opened:
        opened.migrate()
        store = Store(opened)
        record = store.load_provider("fake")
        record.cycle_id, record.state = 1, ProviderState.BURSTING
        store.start_cycle(record, T0)
        yield opened


def catalog_refs(state_path: Path) -> set[str]:
    with Store.open(state_path, readonly=True) as store:
        return {change.ref for change in store.changes()}


class TestTranslation:
    def test_a_page_the_disk_cannot_hold_is_a_state_error_and_not_applied(
        self, conn: Connection, state_path: Path
    ) -> None:
        store = Store(conn)
        store.commit_page("fake", 1, page(["a", "b"], {"at": 2}), '{"at":2}', T0)
        cap(conn)

        with pytest.raises(StateError) as caught:
            store.commit_page("fake", 1, page(["c", "d", "e"], {"at": 5}), '{"at":5}', T0)

        assert str(caught.value) == f"state store {state_path}: disk full"
        assert caught.value.path == str(state_path)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert not conn.raw.in_transaction
        assert catalog_refs(state_path) == {"component:default/a", "component:default/b"}
        assert store.load_provider("fake").cursor == {"at": 2}

    def test_the_same_page_commits_once_there_is_room(
        self, conn: Connection, state_path: Path
    ) -> None:
        store = Store(conn)
        cap(conn)
        with pytest.raises(StateError, match=r"disk full$"):
            store.commit_page("fake", 1, page(["a", "b"], {"at": 2}), '{"at":2}', T0)

        cap(conn, extra_pages=1000)
        store.commit_page("fake", 1, page(["a", "b"], {"at": 2}), '{"at":2}', T0)

        assert catalog_refs(state_path) == {"component:default/a", "component:default/b"}
        [check] = conn.raw.execute("PRAGMA integrity_check").fetchall()
        assert check == ("ok",)

    def test_a_corrupt_page_met_while_reading_rows_is_a_state_error(
        self, conn: Connection, state_path: Path
    ) -> None:
        store = Store(conn)
        for start in range(0, 60, 6):
            names = [f"e{index:02}" for index in range(start, start + 6)]
            store.commit_page("fake", 1, page(names, {"at": start}), None, T0)
        conn.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with state_path.open("r+b") as raw:  # garbage over the last pages, the entities'
            raw.seek(-8 * 4096, os.SEEK_END)
            raw.write(b"\xa5" * 8 * 4096)

        with Store.open(state_path, readonly=True) as reader:
            rows = reader.iter_entities()
            with pytest.raises(NotAStateFile) as caught:
                list(rows)

        assert str(caught.value) == (
            f"state store {state_path}: corrupt (database disk image is malformed): restore it "
            "from a backup, or move it aside with its -wal and -shm files and the next run "
            "builds a new state (a fresh walk of the platform)"
        )

    def test_text_that_is_not_utf8_is_a_corrupt_state_not_a_bug(
        self, conn: Connection, state_path: Path
    ) -> None:
        """Damage within a page SQLite reads as sound: only Python's decoding of the column finds
        it. The next page's commit reads the stored hashes, and the garbage is not repeated."""
        store = Store(conn)
        store.commit_page("fake", 1, page(["a", "b"], {"at": 2}), None, T0)
        conn.raw.execute("UPDATE entities SET hash = CAST(x'fffe41' AS TEXT) WHERE name = 'b'")

        with pytest.raises(NotAStateFile) as caught:
            store.commit_page("fake", 1, page(["b", "c"], {"at": 4}), None, T0)

        assert str(caught.value) == (
            f"state store {state_path}: corrupt (column 'hash' holds bytes that are not UTF-8): "
            "restore it from a backup, or move it aside with its -wal and -shm files and the "
            "next run builds a new state (a fresh walk of the platform)"
        )
        assert catalog_refs(state_path) == {"component:default/a", "component:default/b"}

    def test_a_column_not_utf8_is_named_whole_whatever_quotes_its_name_holds(
        self, conn: Connection, state_path: Path
    ) -> None:
        Store(conn).commit_page("fake", 1, page(["a"], {"at": 1}), None, T0)
        conn.raw.execute("UPDATE entities SET hash = CAST(x'fffe41' AS TEXT)")

        with pytest.raises(NotAStateFile) as caught:
            conn.execute("SELECT hash || 'x' FROM entities").fetchall()

        assert str(caught.value).startswith(
            f"state store {state_path}: corrupt (column \"hash || 'x'\" holds bytes that are "
            "not UTF-8): restore it"
        )

    @pytest.mark.parametrize(
        ("room", "said"),
        [
            (1 << 62, "disk full (disk I/O error, no space left beside the state file)"),
            (0, "I/O error (disk I/O error)"),
        ],
        ids=["no-room-left", "room-left"],
    )
    def test_an_io_error_on_a_full_file_system_says_disk_full(
        self, state_path: Path, monkeypatch: pytest.MonkeyPatch, room: int, said: str
    ) -> None:
        """A WAL write that meets ENOSPC is SQLITE_IOERR to SQLite, not SQLITE_FULL: "disk I/O
        error" sent an operator looking for a failing disk. (`room`: the free space below which
        the state's real file system counts as full.)"""
        monkeypatch.setattr(connection, "LOW_SPACE_BYTES", room)
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE  # type: ignore[attr-defined]

        assert str(state_error(state_path, error)) == f"state store {state_path}: {said}"

    @pytest.mark.parametrize(
        ("euid", "said"),
        [(0, "I/O error (disk I/O error)"), (1000, "disk full (disk I/O error, no space left")],
        ids=["root-writes-into-the-reserve", "a-user-may-not"],
    )
    def test_root_s_reserve_counts_as_room_for_root(
        self, state_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int, said: str
    ) -> None:
        """No room left but root's reserve (64 MiB of it): root's write went on, so its I/O error
        is not a full disk."""
        reserved = os.statvfs_result((4096, 4096, 100_000, 16_384, 0, 1_000, 1_000, 0, 0, 255))
        monkeypatch.setattr(os, "statvfs", lambda path: reserved)
        monkeypatch.setattr(os, "geteuid", lambda: euid)
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE  # type: ignore[attr-defined]

        assert str(state_error(state_path, error)).startswith(f"state store {state_path}: {said}")

    @pytest.mark.parametrize(
        ("statement", "error"),
        [
            ("SELEC 1", sqlite3.OperationalError),
            ("INSERT INTO openchoreo_incremental_ingestion_state (provider) VALUES (NULL)",
             sqlite3.IntegrityError),
            ("SELECT * FROM nonesuch", sqlite3.OperationalError),
        ],
        ids=["bad-sql", "broken-constraint", "table-no-state-has"],
    )  # fmt: skip
    def test_bugs_stay_what_they_are(
        self, conn: Connection, statement: str, error: type[Exception]
    ) -> None:
        with pytest.raises(error) as caught:
            conn.execute(statement)
        assert not isinstance(caught.value, StateError)


class TestPageWriter:
    def test_a_full_disk_on_the_writer_thread_is_raised_by_wait_as_state_error(
        self, conn: Connection, state_path: Path
    ) -> None:
        writer = PageWriter(Store(conn), "fake", 1, None)
        writer.submit(page(["a"], {"at": 1}), '{"at":1}', T0)
        writer.wait()
        cap(conn)
        writer.submit(page(["b", "c", "d"], {"at": 4}), '{"at":4}', T0)  # commits on the thread

        with pytest.raises(StateError) as caught:
            writer.__exit__(None, None, None)

        assert str(caught.value) == f"state store {state_path}: disk full"
        assert (writer.pages, writer.cursor) == (1, {"at": 1})
        assert catalog_refs(state_path) == {"component:default/a"}


class TestRunCommand:
    """`choreo-ingest run` as cron calls it, against the simulator, while the disk fills up."""

    @pytest.fixture
    def world(self) -> World:
        return World.generate(2, 3, 20, seed=3)

    @pytest.fixture
    def server_url(self, world: World) -> Iterator[str]:
        with start_server(SimulatorApi(world, SimulatorOptions(api="orgs"))) as server:
            yield server.url

    @pytest.fixture
    def config_file(self, tmp_path: Path, server_url: str) -> Path:
        document = {
            "openchoreo": {
                "baseUrl": server_url,
                "incremental": {"chunkSize": 5, "backoff": [0.01], "burstInterval": 0.01},
            },
            "state": {"path": "state.db"},
            "metrics": {"textfile": "metrics.prom"},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        return path

    def choreo(
        self, *args: str | Path, cwd: Path, extra_pages: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        if extra_pages is None:
            return run_cli(*args, cwd=cwd)
        return run_cli(*args, cwd=cwd, entry=("-c", CAPPED_CLI, str(extra_pages)))

    def status(self, config_file: Path, cwd: Path) -> dict[str, Any]:
        done = self.choreo("status", "--json", "--config", config_file, cwd=cwd)
        assert done.returncode == 0, done.stderr
        [provider] = json.loads(done.stdout)["providers"]
        return dict(provider)

    def test_a_full_disk_mid_burst_exits_4_and_the_next_runs_converge(
        self, tmp_path: Path, config_file: Path, world: World
    ) -> None:
        state, metrics = tmp_path / "state.db", tmp_path / "metrics.prom"
        assert self.choreo("migrate", "--config", config_file, cwd=tmp_path).returncode == 0

        full = self.choreo("run", "--config", config_file, cwd=tmp_path, extra_pages=10)

        assert full.returncode == 4, full.stderr
        said = plain(full.stderr).splitlines()
        errors = [line for line in said if "choreo-ingest: error:" in line]
        assert errors == [f"choreo-ingest: error: state store {state}: disk full"]
        assert "internal error" not in full.stderr
        # exit 4 leaves the metrics textfile as it was (none yet), its last run time with it,
        # as a run that cannot open the store does
        assert not metrics.exists()
        with closing(sqlite3.connect(state)) as check:
            assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            # the store failed, not the source: no failed burst, no backoff; the next resumes
            stored = check.execute(
                "SELECT state, attempts FROM openchoreo_incremental_ingestion_state"
            ).fetchall()
            assert stored == [("bursting", 0)]
        stopped = self.status(config_file, tmp_path)
        assert 0 < stopped["activeEntities"] < len(expected_refs(world))  # pages committed
        assert stopped["cursorBytes"] > 0  # and the cursor after the last of them

        for _ in range(5):  # there is room again: cron's next calls carry on from the cursor
            done = self.choreo("run", "--json", "--config", config_file, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            if json.loads(done.stdout)["providers"][0]["cycleCompleted"]:
                break

        export = self.choreo("export", "--config", config_file, cwd=tmp_path)
        refs = {
            f"{body['kind'].lower()}:{body['metadata']['namespace']}/{body['metadata']['name']}"
            for body in map(json.loads, export.stdout.splitlines())
        }
        assert refs == expected_refs(world)
        assert self.status(config_file, tmp_path)["state"] == "resting"
