"""Room on the file systems a run writes to, as `check` judges it: a full disk fails every run
(SQLite's "database or disk is full", a textfile or a mirror file not written), which is what a
preflight is for."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from choreo_ingest.models import Check

MIB = 1024 * 1024
TOO_LITTLE = 64 * 1024
"""Less room than this is a full file system: not a page of SQLite's log, a textfile."""
ROOM_WANTED = 64 * MIB
"""Less than this, or than the state file's own size (its write-ahead log and a cycle's new rows
can take as much again), is a warning."""


class Room(NamedTuple):
    free_bytes: int | None
    """What may still be written; None where the file system does not count its space."""
    free_inodes: int | None
    """Files that may still be made; None where the file system does not count them."""


RoomReader = Callable[[Path], Room]


def room_at(directory: Path, *, reserve: bool = False) -> Room:
    """The room on the file system of `directory` (OSError where it cannot be looked at): what a
    user who is not root may use, as `df` shows it (`check` judges that, whoever runs it: cron's
    user may not be root); with `reserve`, what this process may, root's reserve included (as
    the store judges an I/O error its own write met)."""
    found = os.statvfs(directory)
    root = reserve and os.geteuid() == 0
    blocks = found.f_bfree if root else found.f_bavail
    inodes = found.f_ffree if root else found.f_favail
    return Room(
        blocks * found.f_frsize if found.f_blocks else None,  # 0 blocks: not counted (FUSE)
        inodes if found.f_files else None,  # 0 files: not counted (btrfs, NFS)
    )


def space_check(
    key: str,
    place: Path,
    *,
    wanted: int = ROOM_WANTED,
    state_store: bool = False,
    room: RoomReader | None = None,
) -> Check | None:
    """A failure when the file system of `place` (a file, or a directory, that may not exist
    yet: its nearest existing directory counts) has no room left, a warning when it has less
    than `wanted`; None when it has room, or cannot be looked at (the path checks say why).
    `state_store`: `place` is the state file (a failure is a state store error, exit 4, as a
    run meets it; no inodes left, a warning while the file, its `-wal`, `-shm` and lock are
    there, for a run then makes no file)."""
    try:
        directory = place if place.is_dir() else place.parent
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        found = (room or room_at)(directory)
        made = state_store and all(
            place.with_name(place.name + suffix).exists()
            for suffix in ("", "-wal", "-shm", ".lock")
        )
    except OSError:  # a name too long, a directory out of reach: the path checks say it
        return None
    if found.free_bytes is not None and found.free_bytes < TOO_LITTLE:
        detail = f"{place}: its file system is full ({_size(found.free_bytes)} free)"
        return Check(key, False, detail, state_store=state_store)
    if found.free_inodes == 0:
        detail = f"{place}: no file can be made on its file system (no inodes left)"
        if made:
            return Check(key, True, f"{detail}; a run needs none", warning=True)
        return Check(key, False, detail, state_store=state_store)
    if found.free_bytes is not None and found.free_bytes < wanted:
        detail = (
            f"{place}: {_size(found.free_bytes)} free on its file system, less than "
            f"{_size(wanted)}: a run's writes may fail when it is full"
        )
        return Check(key, True, detail, warning=True)
    return None


def state_room_wanted(state_file: Path) -> int:
    """The room a state file wants: ROOM_WANTED, or its own size when larger."""
    try:
        size = state_file.stat().st_size
    except OSError:
        size = 0
    return max(ROOM_WANTED, size)


def _size(count: int) -> str:
    if count >= MIB:
        return f"{count / MIB:,.0f} MiB"
    return f"{count:,} bytes"
