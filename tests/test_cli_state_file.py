"""What every command says about a state file it cannot use: one line naming the file and what is
wrong with it, exit 4 (STATE_ERROR), one JSON document with `--json`; and nothing changed or
left behind, not even beside the file (but the note of damage a command that writes the state
met, which the reading commands read).

Every test starts `python -m choreo_ingest` off a TTY, as cron does."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.simulator import World

from fakes import FakeClock
from odd_state_paths import SPECIAL, UNREACHABLE, special_problem, unreachable_problem
from sim_support import ingest_world, one_error_line, plain, run_cli, write_config

STATE_ERROR = 4
COMMANDS = (
    ("run",),
    ("run", "--force"),
    ("run", "--force", "--json"),
    ("export",),
    ("changes",),
    ("status",),
    ("status", "--json"),
    ("health",),
)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state file holding one completed cycle, beside a config whose API is unreachable."""
    path = tmp_path / "state.db"
    ingest_world(path, World.generate(2, 2, 3, seed=12), FakeClock())
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("table", ["entities", "changes"])
def test_a_state_file_missing_a_table_is_a_state_error_for_every_command(
    tmp_path: Path, state: Path, table: str
) -> None:
    """`sqlite3 state.db 'DROP TABLE entities'`: reading what is left would report a catalog
    (or a status) that is not there; writing would fail half-way as a bug. (Every table, on
    both stores, is dropped in tests/store/test_missing_tables.py; two tables here, as each
    command line costs a process.)"""
    with closing(sqlite3.connect(state, isolation_level=None)) as conn:
        conn.execute(f"DROP TABLE {table}")
    before = state.read_bytes()
    problem = (
        f"{state}: not a usable choreo-ingest state file "
        f"(no such table: {table}); left untouched: restore it from a backup, or move it aside "
        "with its -wal and -shm files and the next run builds a new state (a fresh walk of the "
        "platform)"
    )

    assert_each_refuses(COMMANDS, state, problem, tmp_path)

    assert state.read_bytes() == before
    wal = state.with_name("state.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_an_entity_body_damaged_on_disk_is_a_state_error_naming_it_and_the_way_out(
    tmp_path: Path, state: Path
) -> None:
    """Bytes zeroed inside a body: SQLite's checks pass, and `export` failed as a bug (exit 1),
    with a traceback of a stream closed after its connection, a truncated catalog on stdout
    before it."""
    with closing(sqlite3.connect(state, isolation_level=None)) as conn:
        [(ref, body)] = conn.execute(
            "SELECT ref, body FROM entities ORDER BY ref LIMIT 1 OFFSET 3"
        ).fetchall()
        damaged = body[:20] + "\x00" * 8 + body[28:]
        conn.execute("UPDATE entities SET body = ? WHERE ref = ?", [damaged, ref])

    done = run_cli("--db", state, "export", cwd=tmp_path)

    assert done.returncode == STATE_ERROR, done.stderr
    assert f"the stored body of {ref} is not JSON" in one_error_line(done.stderr)
    assert "reset openchoreo --purge" in one_error_line(done.stderr)
    assert "Exception ignored" not in done.stderr


@pytest.mark.slow
def test_damage_a_writing_command_met_is_refused_by_the_reading_ones_too(
    tmp_path: Path, state: Path
) -> None:
    """A damaged index the readers never read: every run failed (exit 4) while `status`,
    `health`, `export` and `changes` answered 0, `health` green. The run's finding is noted
    beside the file; a file put back from a backup is another file."""
    with closing(sqlite3.connect(state, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        [root] = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'entities_by_scope'"
        ).fetchone()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    backup = state.read_bytes()
    with state.open("r+b") as file:  # the index's pages, as a torn copy leaves them
        file.seek((root - 1) * page)
        file.write(b"\xff" * page)
    readers = [("status", "--json"), ("health",), ("export",), ("changes", "--json")]
    blind = [run_cli("--db", state, *command, cwd=tmp_path).returncode for command in readers]

    purged = run_cli("--db", state, "reset", "openchoreo", "--purge", "--yes", cwd=tmp_path)
    refused = [run_cli("--db", state, *command, cwd=tmp_path) for command in readers]
    run_cli("--db", state, "check", cwd=tmp_path)  # finds the damage: the note stays
    refused_after_check = run_cli("--db", state, "status", cwd=tmp_path).returncode
    state.write_bytes(backup)  # put back in place: the same inode, another file
    restored = [run_cli("--db", state, *command, cwd=tmp_path).returncode for command in readers]
    note = state.with_name("state.db.damaged")
    noted_before_check = note.exists()
    run_cli("--db", state, "check", cwd=tmp_path)  # reads every page: none damaged now

    assert blind == [0, 0, 0, 0]
    assert purged.returncode == STATE_ERROR
    assert "corrupt (database disk image is malformed)" in one_error_line(purged.stderr)
    assert [done.returncode for done in refused] == [STATE_ERROR] * 4
    for done in refused:
        assert one_error_line(done.stderr).endswith(
            "(met by a command that writes the state; `choreo-ingest check` forgets it once it "
            "finds the file whole)"
        )
    assert refused_after_check == STATE_ERROR
    assert restored == [0, 0, 0, 0]
    assert noted_before_check
    assert not note.exists()


def write_other_app_db(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (
            lambda path: path.write_text("not a state file\n" * 20),
            "not an SQLite file, so not a choreo-ingest state file; left untouched",
        ),
        (write_other_app_db, "an SQLite file, but not a choreo-ingest state file; left untouched"),
    ],
    ids=["text-file", "other-app-sqlite"],
)
@pytest.mark.parametrize("command", [("run",), ("run", "--force"), ("migrate",)], ids=" ".join)
def test_a_file_that_is_not_a_state_file_is_left_alone_with_nothing_beside_it(
    tmp_path: Path, write: Any, problem: str, command: tuple[str, ...]
) -> None:
    """`run --db garbage.db` said it left the file untouched, and left `garbage.db.lock`
    beside it: the run lock is taken before the state is opened."""
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    data = tmp_path / "data"
    data.mkdir()
    garbage = data / "garbage.db"
    write(garbage)
    before = garbage.read_bytes()

    done = run_cli(*command, "--db", garbage, cwd=tmp_path)

    assert done.returncode == STATE_ERROR, done.stderr
    assert one_error_line(done.stderr) == f"choreo-ingest: error: {garbage}: {problem}"
    assert [path.name for path in data.iterdir()] == ["garbage.db"]
    assert garbage.read_bytes() == before


READING_AND_WRITING = (
    ("status",),
    ("status", "--json"),
    ("health",),
    ("export",),
    ("run",),
    ("run", "--force", "--json"),
    ("migrate",),
)


def assert_each_refuses(
    commands: tuple[tuple[str, ...], ...], state: Path, problem: str, cwd: Path
) -> None:
    """Exit 4 and one line saying `problem` from each of `commands` on `state`: with `--json`,
    one JSON document saying it too; without, nothing on stdout."""
    for command in commands:
        done = run_cli(*command, "--db", state, cwd=cwd)

        assert done.returncode == STATE_ERROR, (command, done.stderr)
        assert one_error_line(done.stderr) == f"choreo-ingest: error: {problem}", command
        if "--json" in command:
            document = json.loads(done.stdout)
            assert (document["exitCode"], document["error"]) == (STATE_ERROR, problem), command
        else:
            assert done.stdout == "", command


def assert_refused_by_every_command(state: Path, problem: str, cwd: Path) -> None:
    """`assert_each_refuses` for every command that reads or writes the state, and `check`."""
    assert_each_refuses(READING_AND_WRITING, state, problem, cwd)
    done = run_cli("check", "--db", state, cwd=cwd)
    assert done.returncode == STATE_ERROR, done.stderr
    assert f"choreo-ingest: error: --db: {problem}" in plain(done.stderr).splitlines()


@pytest.mark.slow
@pytest.mark.parametrize(("make", "code"), UNREACHABLE.values(), ids=UNREACHABLE.keys())
def test_a_state_path_the_os_refuses_to_look_up_is_a_state_error_not_a_bug(
    tmp_path: Path, make: Callable[[Path], Path], code: int
) -> None:
    """`--db` with a name of 256 characters gave `internal error: OSError: [Errno 36] File name
    too long (a bug)` (exit 1) from the read commands; a symlink loop said "no state file yet"."""
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    data = tmp_path / "data"
    data.mkdir()
    state = make(data)
    before = sorted(data.iterdir())

    assert_refused_by_every_command(state, unreachable_problem(state, code), tmp_path)

    assert sorted(data.iterdir()) == before


@pytest.mark.slow
@pytest.mark.parametrize(("make", "kind"), SPECIAL.values(), ids=SPECIAL.keys())
def test_a_state_path_that_is_not_a_regular_file_is_refused_with_nothing_made_beside_it(
    tmp_path: Path, make: Callable[[Path], Path], kind: str
) -> None:
    """`status --db fifo` blocked for ever in SQLite's open(), deaf to SIGTERM; `run` made the
    run lock beside it before SQLite failed with an I/O error."""
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    data = tmp_path / "data"
    data.mkdir()
    state = make(data)

    assert_refused_by_every_command(state, special_problem(state, kind), tmp_path)

    assert list(data.iterdir()) == [state]


@pytest.mark.slow
def test_status_refuses_dev_null_as_a_character_device(tmp_path: Path) -> None:
    """`status --db /dev/null` advised `migrate`, which would put a run lock, -journal, -wal and
    -shm in /dev (only read-only commands are pointed at the real /dev/null)."""
    done = run_cli("status", "--db", "/dev/null", cwd=tmp_path)

    assert done.returncode == STATE_ERROR, done.stderr
    assert one_error_line(done.stderr) == (
        "choreo-ingest: error: /dev/null: not a regular file (a character device)"
    )
