"""A state path no state file can be at is a StateError naming it, found before anything opens or
locks it: one the OS refuses to look up (a name or path too long, a symlink loop), and a file that
is not regular (a FIFO, a socket, a device). Nothing is made beside it.

A FIFO is opened here only by writers (SQLite opens it read-write, which does not block); a
reader's open() of one blocks, so `status` on a FIFO is tested as a process, in
tests/test_cli_state_file.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from choreo_ingest.errors import StateError
from choreo_ingest.store import SqliteLocation, Store

from odd_state_paths import (
    SPECIAL,
    UNREACHABLE,
    null_device,
    special_problem,
    unix_socket,
    unreachable_problem,
)


def opened_locked(location: SqliteLocation) -> None:
    with location.open_locked():
        pass


def opened_to_read(location: SqliteLocation) -> None:
    location.open(readonly=True).close()


def opened_to_write(location: SqliteLocation) -> None:
    location.open().close()


def looked_at(location: SqliteLocation) -> None:
    location.exists()


WAYS_IN: dict[str, Callable[[SqliteLocation], None]] = {
    "exists": looked_at,
    "open-to-read": opened_to_read,
    "open-to-write": opened_to_write,
    "open-locked": opened_locked,
}


@pytest.mark.parametrize("way_in", WAYS_IN.values(), ids=WAYS_IN.keys())
@pytest.mark.parametrize(("make", "code"), UNREACHABLE.values(), ids=UNREACHABLE.keys())
def test_a_path_the_os_refuses_to_look_up_is_a_state_error_saying_what_the_os_said(
    tmp_path: Path, make: Callable[[Path], Path], code: int, way_in: Callable[..., None]
) -> None:
    """`Path.exists` raised OSError for a name too long (a bug, exit 1) and took a symlink loop
    for no state file yet."""
    path = make(tmp_path)
    before = sorted(tmp_path.iterdir())

    with pytest.raises(StateError) as refused:
        way_in(SqliteLocation(path))

    assert str(refused.value) == unreachable_problem(path, code)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize(("make", "code"), UNREACHABLE.values(), ids=UNREACHABLE.keys())
def test_check_names_a_path_the_os_refuses_to_look_up(
    tmp_path: Path, make: Callable[[Path], Path], code: int
) -> None:
    path = make(tmp_path)

    assert SqliteLocation(path).write_problem() == unreachable_problem(path, code)


WRITERS = {key: WAYS_IN[key] for key in ("exists", "open-to-write", "open-locked")}


@pytest.mark.parametrize("way_in", WRITERS.values(), ids=WRITERS.keys())
@pytest.mark.parametrize(("make", "kind"), SPECIAL.values(), ids=SPECIAL.keys())
def test_a_file_that_is_not_regular_is_refused_with_nothing_made_beside_it(
    tmp_path: Path, make: Callable[[Path], Path], kind: str, way_in: Callable[..., None]
) -> None:
    path = make(tmp_path)

    with pytest.raises(StateError) as refused:
        way_in(SqliteLocation(path))

    assert str(refused.value) == special_problem(path, kind)
    assert list(tmp_path.iterdir()) == [path]


def test_a_socket_is_refused_to_a_reader(tmp_path: Path) -> None:
    path = unix_socket(tmp_path)

    with pytest.raises(StateError) as refused:
        Store.open(path, readonly=True)

    assert str(refused.value) == special_problem(path, "a socket")


@pytest.mark.parametrize("way_in", WAYS_IN.values(), ids=WAYS_IN.keys())
def test_a_device_is_refused_with_no_journal_wal_shm_or_lock_beside_it(
    tmp_path: Path, way_in: Callable[..., None]
) -> None:
    """`run --db /dev/null` failed its migration with "I/O error" and left /dev/null.lock,
    -journal, -wal and -shm in /dev. Shown on a null device node of the test's own."""
    path = null_device(tmp_path)

    with pytest.raises(StateError) as refused:
        way_in(SqliteLocation(path))

    assert str(refused.value) == special_problem(path, "a character device")
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(("make", "kind"), SPECIAL.values(), ids=SPECIAL.keys())
def test_check_names_a_file_that_is_not_regular(
    tmp_path: Path, make: Callable[[Path], Path], kind: str
) -> None:
    path = make(tmp_path)

    assert SqliteLocation(path).write_problem() == special_problem(path, kind)


def test_a_state_file_reached_through_a_symlink_still_opens(tmp_path: Path) -> None:
    real = tmp_path / "state.db"
    with Store.open(real) as store:
        store.migrate()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    location = SqliteLocation(link)

    assert location.exists()
    assert location.write_problem() is None
    with location.open_locked() as store:
        assert not store.pending_migrations()
    with location.open(readonly=True) as store:
        assert not store.pending_migrations()
