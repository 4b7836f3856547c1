"""`check` on a full or nearly full file system (`disk_space`): the room is read through a fake
(a test cannot fill the disk it runs on), and through `os.statvfs` once, for real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from choreo_ingest import disk_space
from choreo_ingest.config import Config
from choreo_ingest.disk_space import MIB, ROOM_WANTED, Room, room_at, space_check, state_room_wanted
from choreo_ingest.models import Check
from choreo_ingest.preflight import run_checks
from choreo_ingest.store import Store

from fakes import FakeClock

PLENTY = Room(free_bytes=10_000 * MIB, free_inodes=1_000_000)


def with_room(found: Room) -> tuple[list[Path], disk_space.RoomReader]:
    asked: list[Path] = []

    def room(directory: Path) -> Room:
        asked.append(directory)
        return found

    return asked, room


@pytest.mark.parametrize(
    ("found", "ok", "warning", "said"),
    [
        (Room(0, None), False, False, "its file system is full (0 bytes free)"),
        (Room(4096, None), False, False, "its file system is full (4,096 bytes free)"),
        (Room(500 * MIB, 0), False, False, "no file can be made on its file system"),
        (Room(20 * MIB, 900), True, True, "20 MiB free on its file system, less than 64 MiB"),
        (Room(475_136, 900), True, True, "475,136 bytes free on its file system, less than"),
    ],
    ids=["nothing", "a-page", "no-inodes", "under-what-it-wants", "under-a-mebibyte"],
)
def test_too_little_room_fails_or_warns_naming_the_path(
    tmp_path: Path, found: Room, ok: bool, warning: bool, said: str
) -> None:
    _, room = with_room(found)

    check = space_check("catalog.directory", tmp_path / "catalog", room=room)

    assert check is not None
    assert (check.name, check.ok, check.warning) == ("catalog.directory", ok, warning)
    assert check.detail.startswith(f"{tmp_path / 'catalog'}: {said}")


def test_room_enough_says_nothing(tmp_path: Path) -> None:
    _, room = with_room(PLENTY)

    assert space_check("catalog.directory", tmp_path, room=room) is None


def test_a_path_not_made_yet_is_judged_by_its_nearest_directory(tmp_path: Path) -> None:
    asked, room = with_room(PLENTY)

    space_check("catalog.directory", tmp_path / "a" / "b" / "catalog", room=room)

    assert asked == [tmp_path]


def test_a_file_system_that_cannot_be_looked_at_is_left_to_the_path_checks(
    tmp_path: Path,
) -> None:
    def room(directory: Path) -> Room:
        raise PermissionError(13, "Permission denied")

    assert space_check("metrics.textfile", tmp_path / "m.prom", room=room) is None


def test_a_large_state_file_wants_its_own_size_again(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with state.open("wb") as file:
        file.truncate(300 * MIB)  # sparse: no room taken

    assert state_room_wanted(state) == 300 * MIB
    assert state_room_wanted(tmp_path / "none.db") == ROOM_WANTED


def test_the_room_of_a_real_file_system_is_read(tmp_path: Path) -> None:
    found = room_at(tmp_path)

    assert found.free_bytes is not None
    assert found.free_bytes > 0
    assert found.free_inodes is None or found.free_inodes > 0


def statvfs_result(blocks: int, free: int, available: int, files: int) -> os.statvfs_result:
    """A file system of 4 KiB blocks whose reserve for root is `free - available` blocks (and
    as many inodes)."""
    fields = (4096, 4096, blocks, free, available, files, free, available, 0, 255)
    return os.statvfs_result(fields)


@pytest.mark.parametrize(
    ("euid", "reserve", "wanted"),
    [
        (0, True, Room(100 * 4096, 100)),
        (0, False, Room(40 * 4096, 40)),
        (1000, True, Room(40 * 4096, 40)),
    ],
    ids=["root-with-the-reserve", "root-as-df-shows-it", "a-user-has-no-reserve"],
)
def test_the_room_is_what_may_be_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, euid: int, reserve: bool, wanted: Room
) -> None:
    """`check` judges what `df` shows (cron's user may not be root, whoever runs `check`); the
    store judges an I/O error its own write met with root's reserve, which root's writes use."""
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs_result(1000, 100, 40, 5000))
    monkeypatch.setattr(os, "geteuid", lambda: euid)

    assert room_at(tmp_path, reserve=reserve) == wanted


def test_a_file_system_that_counts_no_space_is_not_called_full(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Some FUSE and network file systems answer statvfs with zeros: their room is unknown,
    and no check fails or warns on it."""
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs_result(0, 0, 0, 0))

    assert room_at(tmp_path) == Room(None, None)
    assert space_check("state.path", tmp_path / "state.db", state_store=True) is None


def test_check_fails_a_full_state_file_system_as_a_state_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `run` would meet it: SQLite's "database or disk is full" is exit 4. The metrics
    textfile on the same full disk fails too; a warning of too little room comes only below
    what a state wants."""
    monkeypatch.setattr(disk_space, "room_at", lambda directory: Room(0, 10))
    config = Config(providers=(), metrics_textfile=tmp_path / "metrics.prom")

    found = run_checks(config, tmp_path / "state.db", FakeClock())

    failed = [check for check in found if not check.ok]
    assert [(check.name, check.state_store) for check in failed] == [
        ("state.path", True),
        ("metrics.textfile", False),
    ]
    assert all(c.detail.endswith("its file system is full (0 bytes free)") for c in failed)


@pytest.mark.parametrize("made", [True, False], ids=["state-there", "no-state-yet"])
def test_no_inodes_left_fails_unless_the_state_and_its_files_are_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: bool
) -> None:
    """A run makes no file beside a state file whose `-wal`, `-shm` and lock are there; a
    first run makes them all, and the textfile is written to a new file and renamed."""
    state = tmp_path / "state.db"
    if made:
        with Store.open(state) as store:
            store.migrate()
        for end in ("-wal", "-shm", ".lock"):
            state.with_name(state.name + end).touch()
    monkeypatch.setattr(disk_space, "room_at", lambda directory: Room(500 * MIB, 0))
    config = Config(providers=(), metrics_textfile=tmp_path / "metrics.prom")

    found = run_checks(config, state, FakeClock())

    said = [c for c in found if "no inodes left" in c.detail]
    assert [(c.name, c.ok, c.warning, c.state_store) for c in said] == [
        ("state.path", made, made, not made),
        ("metrics.textfile", False, False, False),
    ]


def test_check_warns_of_a_nearly_full_state_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_space, "room_at", lambda directory: Room(30 * MIB, 10))
    config = Config(providers=(), metrics_textfile=tmp_path / "metrics.prom")

    found = run_checks(config, tmp_path / "state.db", FakeClock())

    warned: list[Check] = [check for check in found if check.warning]
    assert [(check.name, check.ok) for check in warned] == [("state.path", True)]
    assert "30 MiB free on its file system" in warned[0].detail
