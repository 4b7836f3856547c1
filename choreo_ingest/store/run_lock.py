"""The run lock: a non-blocking `flock` on `<state file>.lock`, never on the DB file itself.

The state file is named by its real path, symlinks resolved: `--db link.db` (a symlink to
`state.db`) and `state.path: state.db` are one state, so they must be one lock, beside the
file SQLite writes (its -wal and -shm follow the symlink too)."""

from __future__ import annotations

import fcntl
import os
import stat
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from choreo_ingest.atomic_file import absent_directory
from choreo_ingest.errors import LockHeld, LockLost, StateError

LOCK_FILE_MODE = 0o640
"""Mode of a new lock file, whatever the umask (like the state file's)."""


def lock_path_for(state_path: Path) -> Path:
    real = real_path(state_path)
    return real.with_name(real.name + ".lock")


def real_path(path: Path) -> Path:
    """`path` with its symlinks resolved (as far as they lead: the file may not exist yet); as
    given when it has none, so that messages name it as the operator did."""
    real = os.path.realpath(path)
    return path if real == os.path.abspath(path) else Path(real)  # noqa: PTH100 - lexical


class RunLock:
    """Held for the whole of one `run` (or `migrate`, `reset`, ...); released by the OS on death."""

    def __init__(self, state_path: Path) -> None:
        self.path = lock_path_for(state_path)
        self._fd: int | None = None
        self._made = False

    def acquire(self) -> None:
        while True:
            fd, made = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockHeld(
                    f"another choreo-ingest run holds {self.path}; nothing done",
                    path=str(self.path),
                ) from None
            if _names(self.path, fd):
                break
            # The run that made the file removed it (`discard`) between our open and our flock:
            # locked, the removed file would keep out no run that opens the path from now on.
            os.close(fd)
        self._fd, self._made = fd, made

    def _open(self) -> tuple[int, bool]:
        try:
            return _open_lock_file(self.path)
        except OSError as error:
            missing = isinstance(error, FileNotFoundError | NotADirectoryError)
            if missing and not self.path.parent.is_dir():
                # As the store says when it opens the state file.
                raise StateError(
                    f"{self.path}: {absent_directory(self.path.parent)}",
                    path=str(self.path),
                ) from None
            raise StateError(_cannot_open(self.path, error), path=str(self.path)) from error

    def check_held(self) -> None:
        """Raise LockLost if the lock file is no longer the one this lock holds: removed (a
        "stale lock" deleted at 3 a.m.) or replaced, so that a run started since locks another
        file and would burst the same state at once. Called before each write transaction."""
        if self._fd is None:
            return
        try:
            held = _names(self.path, self._fd)
        except OSError as error:  # its directory made unreadable meanwhile, say
            raise StateError(
                f"{self.path}: cannot check the run lock: {error.strerror or error}",
                path=str(self.path),
            ) from None
        if not held:
            raise LockLost(
                f"{self.path}: the run lock file was removed or replaced while this run held "
                "it; stopping before writing more (a run started since may hold the new one). "
                "Never delete it: no process holds it once the run that locked it has ended",
                path=str(self.path),
            )

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Release the lock, and remove the lock file if this lock made it: for a state file
        that turned out not to be one, beside which nothing may be left. Removed while still
        locked: a run that opened the file meanwhile finds it gone once it has the flock, and
        opens the path again (`acquire`)."""
        if self._fd is not None and self._made:
            with suppress(OSError):
                self.path.unlink()
        self.release()

    def is_held_elsewhere(self) -> bool:
        """True if another process holds the lock (for `status`).

        Read from /proc/locks, so a `run` starting at the same instant is never turned away;
        where that file does not exist, a non-blocking shared lock taken for an instant.
        """
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return False
        held = _held_in_proc_locks(os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
        if held is not None:
            return held
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # a reader that may not open it (mode 0640): say nothing is known
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def lock_problem(state_path: Path) -> str | None:
    """Why a run could not open the run lock of the state file at `state_path`, in the words
    `RunLock.acquire` would use, or None (for `check`). An existing lock file is opened for
    writing and closed at once, never locked: a flock belongs to the descriptor that took it,
    so a run holding the lock keeps it. A missing one is not made (the run makes it, in a
    directory `check` finds writable or not)."""
    path = lock_path_for(state_path)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError as error:
        return _cannot_open(path, error)
    os.close(fd)
    return None


def _cannot_open(path: Path, error: OSError) -> str:
    """The error's words, and for a refusal whose file the lock is (one made by another user,
    root running `run` once by hand): its owner and mode, so that the fix is plain."""
    owner = ""
    if isinstance(error, PermissionError):
        try:
            info = path.lstat()
        except FileNotFoundError:  # as `check` says it
            return f"{path}: cannot create the run lock: directory {path.parent} is not writable"
        except OSError:
            pass
        else:
            owner = f" (owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)})"
    return f"{path}: cannot open the run lock: {error.strerror}{owner}"


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """Open the lock file, creating it with LOCK_FILE_MODE (then fchmod, as a umask of 077
    would narrow the mode given to open); and whether it was made here."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, LOCK_FILE_MODE)
    except FileExistsError:
        return os.open(path, os.O_RDWR), False
    try:
        os.fchmod(fd, LOCK_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd, True


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


PROC_LOCKS = Path("/proc/locks")


def _held_in_proc_locks(major: int, minor: int, inode: int) -> bool | None:
    """Whether /proc/locks lists a flock on that file; None if /proc/locks cannot be read."""
    try:
        lines = PROC_LOCKS.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    wanted = f"{major:02x}:{minor:02x}:{inode}"
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return True
    return False
