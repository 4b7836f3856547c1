"""A state file this user may not open is named for what it is: `permission denied` on the file,
a directory as a directory; never the missing -wal and -shm of a reader, nor SQLite's "unable to
open database file".

Root reads any file, and CI runs as root: the opening is done as uid 65534 (`as_nobody`), whose
effective IDs (and so its lack of CAP_DAC_OVERRIDE) are what the kernel checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo_ingest.errors import StateError
from choreo_ingest.store import Store, state_location

from privileges import as_nobody, reachable_directory


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A 0755 directory, which every user may search."""
    with reachable_directory(0o755) as directory:
        yield directory


def state_file(directory: Path) -> Path:
    path = directory / "state.db"
    with Store.open(path) as store:
        store.migrate()
    return path


@pytest.mark.parametrize("readonly", [True, False], ids=["reader", "writer"])
def test_a_state_file_this_user_may_not_read_is_permission_denied(
    reachable: Path, readonly: bool
) -> None:
    path = state_file(reachable)
    path.chmod(0o000)
    for end in ("-wal", "-shm"):  # a reader without them would be told of them first
        Path(f"{path}{end}").unlink(missing_ok=True)

    with as_nobody(), pytest.raises(StateError) as refused:
        Store.open(path, readonly=readonly)

    assert str(refused.value) == (
        f"state store {path}: permission denied: this user may not read it "
        f"(mode ----------, owner uid {os.geteuid()})"
    )


@pytest.mark.parametrize("readonly", [True, False], ids=["reader", "writer"])
def test_a_directory_as_the_state_file_is_named_a_directory(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "state"
    path.mkdir()

    with pytest.raises(StateError) as refused:
        Store.open(path, readonly=readonly)

    assert str(refused.value) == f"state store {path}: is a directory, not a state file"


def test_a_readable_state_file_opens(reachable: Path) -> None:
    path = state_file(reachable)
    path.chmod(0o644)

    with as_nobody(), Store.open(path, readonly=True) as store:
        assert store.schema_version() > 0


@pytest.mark.parametrize("readonly", [True, False], ids=["reader", "writer"])
def test_a_directory_this_user_may_not_search_is_permission_denied(
    reachable: Path, readonly: bool
) -> None:
    """`Path.exists` raises PermissionError below such a directory: it ended `status` and `run`
    as an internal error (a bug, exit 1) instead of a state error naming it."""
    closed = reachable / "closed"
    closed.mkdir()
    path = state_file(closed)
    closed.chmod(0o600)  # no search (x) permission
    try:

        def look() -> object:
            if readonly:
                return state_location(path).exists()
            return Store.open(closed / "sub" / "state.db")

        with as_nobody(), pytest.raises(StateError) as refused:
            look()

        assert "permission denied: this user may not look into" in str(refused.value)
    finally:
        closed.chmod(0o755)
