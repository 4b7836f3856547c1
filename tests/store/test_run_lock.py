"""The run lock: one writer at a time, across processes; readers never take it."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest import invocation
from choreo_ingest.errors import LockHeld, LockLost, NotAStateFile, StateError
from choreo_ingest.invocation import run_once
from choreo_ingest.mirror import sync_mirror
from choreo_ingest.models import EntityIteratorResult
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.store import SqliteLocation, Store
from choreo_ingest.store import run_lock as lock_module
from choreo_ingest.store.run_lock import RunLock, lock_path_for

from fakes import FakeClock, FakeProvider, make_config, make_entity
from privileges import as_nobody, reachable_directory

HOLD_LOCK = """
import sys
from pathlib import Path
from choreo_ingest.store.run_lock import RunLock
lock = RunLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


TAKE_LOCK = """
import sys
from pathlib import Path
from choreo_ingest.store.run_lock import RunLock
with RunLock(Path(sys.argv[1])):
    pass
"""

IS_HELD = """
import sys
from pathlib import Path
from choreo_ingest.store.run_lock import RunLock
print(RunLock(Path(sys.argv[1])).is_held_elsewhere())
"""


@contextmanager
def lock_held_by_another_process(state_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the run lock until its stdin closes."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.communicate(timeout=10)


def test_lock_file_sits_beside_the_state_file_never_on_it(state_path: Path) -> None:
    assert lock_path_for(state_path) == state_path.with_name("state.db.lock")
    with RunLock(state_path) as lock:
        assert lock.path.exists()
        assert not state_path.exists()


def test_second_lock_in_the_same_process_is_refused(state_path: Path) -> None:
    # flock belongs to the open file description, so two RunLocks conflict even in one process
    with (
        RunLock(state_path),
        pytest.raises(LockHeld, match="another choreo-ingest run holds") as caught,
    ):
        RunLock(state_path).acquire()
    assert isinstance(caught.value, StateError)
    assert caught.value.path == str(lock_path_for(state_path))


def test_lock_is_free_again_after_release(state_path: Path) -> None:
    with RunLock(state_path):
        pass
    second = RunLock(state_path)
    second.acquire()
    second.release()
    second.release()  # releasing twice is harmless


def test_refused_acquire_leaves_the_holder_holding(state_path: Path) -> None:
    with RunLock(state_path):
        with pytest.raises(LockHeld):
            RunLock(state_path).acquire()
        assert RunLock(state_path).is_held_elsewhere()


@pytest.mark.slow
def test_lock_held_by_another_process_is_refused_until_it_exits(state_path: Path) -> None:
    with lock_held_by_another_process(state_path):
        with pytest.raises(LockHeld):
            RunLock(state_path).acquire()
        assert RunLock(state_path).is_held_elsewhere()

    with RunLock(state_path):
        pass


@pytest.mark.slow
def test_is_read_from_proc_locks_without_an_encoding_warning(state_path: Path) -> None:
    """`status` and `health` read /proc/locks in the locale's encoding, not named: under
    `-X warn_default_encoding` (what `-X dev` checks leave out) an EncodingWarning on stderr."""
    with lock_held_by_another_process(state_path):
        flags = ["-X", "warn_default_encoding", "-W", "default"]
        done = subprocess.run(
            [sys.executable, *flags, "-c", IS_HELD, str(state_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert (done.returncode, done.stderr, done.stdout) == (0, "", "True\n")


@pytest.mark.slow
def test_lock_of_a_killed_process_is_released_by_the_os(state_path: Path) -> None:
    with lock_held_by_another_process(state_path) as child:
        child.kill()
        child.wait(timeout=10)

    assert not RunLock(state_path).is_held_elsewhere()
    with RunLock(state_path):
        pass


def test_a_state_file_reached_through_a_symlink_is_locked_as_the_file_itself(
    tmp_path: Path,
) -> None:
    """`--db link.db` (a symlink to state.db) and cron's `state.path: state.db` are one state:
    two runs of it must not burst at once."""
    (tmp_path / "real").mkdir()
    state_path = tmp_path / "real" / "state.db"
    link = tmp_path / "link.db"
    link.symlink_to(state_path)

    with SqliteLocation(state_path).open_locked():
        with pytest.raises(LockHeld), SqliteLocation(link).open_locked():
            pass
        assert SqliteLocation(link).lock_held_elsewhere()
    with SqliteLocation(link).open_locked(), pytest.raises(LockHeld):
        RunLock(state_path).acquire()

    assert lock_path_for(link) == state_path.with_name("state.db.lock")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.db", "real"]
    assert sorted(p.name for p in state_path.parent.iterdir()) == [
        "state.db",
        "state.db-shm",
        "state.db-wal",
        "state.db.lock",
    ]


def test_a_path_without_symlinks_is_locked_by_the_name_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert lock_path_for(Path("state.db")) == Path("state.db.lock")


def test_status_check_on_a_missing_lock_file_creates_nothing(state_path: Path) -> None:
    assert not RunLock(state_path).is_held_elsewhere()
    assert list(state_path.parent.iterdir()) == []


def test_status_check_never_takes_the_lock(state_path: Path) -> None:
    with RunLock(state_path):
        pass  # leaves the lock file behind, unlocked
    reader = RunLock(state_path)

    assert not reader.is_held_elsewhere()

    with RunLock(state_path):  # the check left nothing held
        assert reader.is_held_elsewhere()


def test_lock_in_a_missing_directory_is_a_state_error_naming_the_directory(
    tmp_path: Path,
) -> None:
    with pytest.raises(StateError) as caught:
        RunLock(tmp_path / "missing" / "state.db").acquire()
    lock, directory = tmp_path / "missing" / "state.db.lock", tmp_path / "missing"
    assert str(caught.value) == f"{lock}: directory {directory} does not exist"


def test_a_dangling_lock_symlink_is_not_taken_for_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "state.db.lock").symlink_to(tmp_path / "nowhere" / "lock")
    with pytest.raises(
        StateError, match="state\\.db\\.lock: cannot open the run lock: No such file"
    ):
        RunLock(tmp_path / "state.db").acquire()


def test_a_lock_file_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    (tmp_path / "state.db.lock").mkdir()
    with pytest.raises(StateError, match=r"state\.db\.lock: cannot open the run lock: Is a dir"):
        RunLock(tmp_path / "state.db").acquire()


def test_status_check_reads_proc_locks_without_taking_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = RunLock(tmp_path / "state.db")
    holder.acquire()
    try:
        taken: list[int] = []
        real_flock = fcntl.flock
        monkeypatch.setattr(fcntl, "flock", lambda fd, op: taken.append(op) or real_flock(fd, op))
        assert RunLock(tmp_path / "state.db").is_held_elsewhere()
        assert taken == []
    finally:
        monkeypatch.undo()
        holder.release()


def test_status_check_falls_back_to_a_probe_without_proc_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock_module, "PROC_LOCKS", tmp_path / "no-such-file")
    holder = RunLock(tmp_path / "state.db")
    holder.acquire()
    try:
        assert RunLock(tmp_path / "state.db").is_held_elsewhere()
    finally:
        holder.release()
    assert not RunLock(tmp_path / "state.db").is_held_elsewhere()


@pytest.mark.parametrize("umask", [0o077, 0o000], ids=["umask-077", "umask-000"])
def test_a_new_lock_file_is_0640_whatever_the_umask(state_path: Path, umask: int) -> None:
    subprocess.run(
        [sys.executable, "-c", TAKE_LOCK, str(state_path)], check=True, umask=umask, timeout=30
    )

    assert stat.S_IMODE(lock_path_for(state_path).stat().st_mode) == 0o640


def test_an_existing_lock_file_keeps_its_mode(state_path: Path) -> None:
    with RunLock(state_path) as lock:
        pass
    lock.path.chmod(0o600)

    with RunLock(state_path):
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600


def test_status_check_by_a_user_who_may_not_open_the_lock_file_says_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without /proc/locks, a reader of a 0640 lock file it may not open: nothing is known."""
    with RunLock(tmp_path / "state.db") as holder:
        pass
    monkeypatch.setattr(lock_module, "PROC_LOCKS", tmp_path / "no-such-file")
    real_open = os.open

    def refused(path: str | Path, flags: int, mode: int = 0o777) -> int:
        if Path(path) == holder.path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(lock_module.os, "open", refused)

    assert not RunLock(tmp_path / "state.db").is_held_elsewhere()


class TestNotAStateFile:
    """The lock is taken before the state file is opened: when that turns out not to be a state
    file, a lock file the attempt made goes with it, and nothing is left beside the file."""

    def test_a_lock_file_made_for_a_file_that_is_not_a_state_is_removed(
        self, tmp_path: Path
    ) -> None:
        garbage = tmp_path / "garbage.db"
        garbage.write_text("not a state file\n" * 20)

        with pytest.raises(NotAStateFile), SqliteLocation(garbage).open_locked():
            pass

        assert [path.name for path in tmp_path.iterdir()] == ["garbage.db"]

    def test_a_lock_file_that_was_there_already_stays(self, tmp_path: Path) -> None:
        garbage = tmp_path / "garbage.db"
        garbage.write_text("not a state file\n" * 20)
        with RunLock(garbage) as lock:
            pass
        before = lock.path.stat()

        with pytest.raises(NotAStateFile), SqliteLocation(garbage).open_locked():
            pass

        assert lock.path.stat().st_ino == before.st_ino

    def test_a_lock_on_a_file_removed_meanwhile_is_taken_again_on_the_file_there(
        self, state_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another run that made the lock file removes it (its state was refused) between our
        open of that file and our flock: a lock on the removed file would lock nothing a third
        run could see, so the lock is taken again on the file at the path."""
        real_flock = fcntl.flock
        removed: list[Path] = []

        def removed_before_the_flock(fd: int, operation: int) -> None:
            if not removed:
                removed.append(lock_path_for(state_path))
                removed[0].unlink()
            real_flock(fd, operation)

        monkeypatch.setattr(fcntl, "flock", removed_before_the_flock)

        with RunLock(state_path) as lock:
            monkeypatch.undo()
            assert removed == [lock.path]
            with pytest.raises(LockHeld):
                RunLock(state_path).acquire()


@dataclass
class LockFileRemovedOnPage(FakeProvider):
    """While it serves page `on_page` (0-based), the run lock file is removed, as an operator
    who takes it for stale would, and a second run locks the new one (held until `release`)."""

    on_page: int = 2
    second_run: RunLock | None = None

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        page = 0 if cursor is None else cursor["offset"] // self.page_size
        if page == self.on_page and self.second_run is None:
            state = context.config.state_path
            lock_path_for(state).unlink()
            self.second_run = RunLock(state)
            self.second_run.acquire()
        return super().next(context, cursor)


def test_a_run_whose_lock_file_is_removed_writes_no_more_pages(tmp_path: Path) -> None:
    """A run started after the removal locks a new file: the first stops at its next write
    transaction, so the two never burst one state at once."""
    config = make_config(tmp_path, burst_length=60.0)
    entities = [make_entity(f"e{i}") for i in range(6)]
    provider = LockFileRemovedOnPage(entities, page_size=2)
    location = SqliteLocation(config.state_path)
    try:
        with pytest.raises(LockLost, match="removed or replaced while this run held it"):
            run_once(config, location, FakeClock(), providers={"fake": provider})
        assert provider.second_run is not None
        assert provider.second_run.path.exists()  # the new lock file stays the second run's
        with location.open(readonly=True) as store:
            written = {change.ref for change in store.changes()}
        # Page 0 was committed before page 1 was handed to the writer; page 1's commit may have
        # begun before the removal; page 2, fetched after it, never is.
        refs = [entity.ref for entity in entities]
        assert set(refs[:2]) <= written <= set(refs[:4])
    finally:
        if provider.second_run is not None:
            provider.second_run.release()


def test_a_lock_that_still_names_its_file_passes_its_check(state_path: Path) -> None:
    with RunLock(state_path) as lock:
        lock.check_held()
        lock.path.unlink()
        lock.path.touch()  # replaced: another file by the same name
        with pytest.raises(LockLost):
            lock.check_held()


def _taken_over(state: Path) -> RunLock:
    """The run lock file removed by hand, and the lock of a run started since."""
    lock_path_for(state).unlink()
    second = RunLock(state)
    second.acquire()
    return second


def test_a_mirror_whose_run_lost_its_lock_puts_no_file_in_place(tmp_path: Path) -> None:
    state, directory = tmp_path / "state.db", tmp_path / "catalog"
    entities = [make_entity(f"e{i}") for i in range(3)]
    with SqliteLocation(state).open_locked() as store:
        store.migrate()
        store.commit_page("fake", 1, EntityIteratorResult(done=False, entities=entities), None, 0.0)
        second = _taken_over(state)
        try:
            with pytest.raises(LockLost):
                sync_mirror(store, directory)
        finally:
            second.release()

    assert not list(directory.glob("*/*/*.yaml"))


def test_a_run_that_lost_its_lock_before_its_mirror_stops_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mirror's errors are the run's outputs' (reported beside the bursts); a lost lock
    stops the run instead: no mirror, no change-log pruning, no metrics textfile."""
    config = replace(make_config(tmp_path, burst_length=60.0), catalog_directory=tmp_path / "cat")
    seconds: list[RunLock] = []

    def taken_over_first(store: Store, directory: Path, **options: Any) -> Any:
        seconds.append(_taken_over(config.state_path or Path()))
        return sync_mirror(store, directory, **options)

    monkeypatch.setattr(invocation, "sync_mirror", taken_over_first)
    provider = FakeProvider([make_entity("a")], page_size=1)
    try:
        with pytest.raises(LockLost):
            run_once(config, SqliteLocation(config.state_path or Path()), FakeClock(),
                     providers={"fake": provider})  # fmt: skip
    finally:
        for second in seconds:
            second.release()

    assert seconds
    assert not list(tmp_path.glob("cat/*/*/*.yaml"))
    assert config.metrics_textfile is not None
    assert not config.metrics_textfile.exists()


def test_a_lock_that_cannot_be_looked_at_stops_the_writes_as_a_state_error() -> None:
    with reachable_directory(0o777) as shared, as_nobody():
        own = shared / "own"
        own.mkdir()
        with RunLock(own / "state.db") as lock:
            own.chmod(0o000)  # its owner (nobody, or this user) takes away the right to look
            try:
                with pytest.raises(StateError) as caught:
                    lock.check_held()
            finally:
                own.chmod(0o755)

    assert not isinstance(caught.value, LockLost)
    assert str(caught.value) == (
        f"{own}/state.db.lock: cannot check the run lock: Permission denied"
    )
