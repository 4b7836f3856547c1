"""Opening and closing a Store must not drop the POSIX locks another connection of the same
process holds: a close() of any descriptor of a file drops all of the process's locks on it, and
another process that then finds the -shm unlocked truncates it (SIGBUS in the first) or
checkpoints and unlinks the -wal under it (a lost commit)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from choreo_ingest.store import Store


def posix_locks_of_this_process(path: Path) -> list[str]:
    info = path.stat()
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    mine = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "POSIX" in fields and str(os.getpid()) in fields and device in fields:
            mine.append(" ".join(fields[fields.index("POSIX") :]))
    return sorted(mine)


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "read-write"])
def test_a_second_store_opened_and_closed_leaves_the_first_ones_locks(
    state_path: Path, readonly: bool
) -> None:
    with Store.open(state_path) as first:
        first.migrate()
        first.load_provider("p")  # a read: the connection maps the -shm and locks it
        files = [state_path, Path(f"{state_path}-shm")]
        held = [posix_locks_of_this_process(path) for path in files]
        assert all(held), "SQLite holds a lock on the file and on the -shm while connected"

        with Store.open(state_path, readonly=readonly) as second:
            second.load_provider("p")

        assert [posix_locks_of_this_process(path) for path in files] == held
        first.load_provider("p")
