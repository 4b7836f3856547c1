"""The SQLite state file and its -wal and -shm on disk, looked at and changed without opening
them (see `Connection.__init__`): a new state file's mode, the sidecars kept with the state
file's mode and owner, and what keeps this user from any of them."""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from pathlib import Path

from choreo_ingest.errors import StateError

STATE_FILE_MODE = 0o640
"""Mode of a new state file, whatever the umask; SQLite gives its -wal and -shm the same."""
WAL_FILE_SUFFIXES = ("-wal", "-shm")


def create_state_file(path: Path) -> None:
    """Create a missing state file empty, with STATE_FILE_MODE whatever the umask.

    An empty file is an empty SQLite database; SQLite creates the -wal and -shm files with the
    mode (and, run as root, the owner) of the database file.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, STATE_FILE_MODE)
    except FileExistsError:
        return
    except OSError as error:
        raise StateError(
            f"state store {path}: cannot create: {error.strerror}", path=str(path)
        ) from error
    try:
        os.fchmod(fd, STATE_FILE_MODE)
    finally:
        os.close(fd)


def keep_wal_files(path: Path, *, create: bool) -> None:
    """Give the -wal and -shm files the state file's mode and group (and, run as root, its
    owner), as SQLite does when it creates them; `create`: put them back, empty, after a close
    deleted them.

    A reader that may not write to the directory (`status` as a monitoring user: SQLite
    `mode=ro`) can open a WAL database only if both exist. Empty ones are what SQLite itself
    leaves with SQLITE_FCNTL_PERSIST_WAL (which Python cannot set); the next writer takes them
    over. Nothing is truncated: another process may have opened them since. Best effort: the
    state is intact either way (on a full disk, say).

    Existing files are changed through an O_PATH descriptor (by /proc/self/fd), whose close
    leaves the process's POSIX locks alone; only a file that does not exist yet is opened.
    """
    try:
        info = path.stat()
    except OSError:
        return
    mode, owner = stat.S_IMODE(info.st_mode), info.st_uid if os.geteuid() == 0 else -1
    for end in WAL_FILE_SUFFIXES:
        name = f"{path}{end}"
        if create:
            with suppress(OSError):  # FileExistsError: no descriptor was made
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                continue
            by_fd = f"/proc/self/fd/{fd}"
            if stat.S_IMODE(found.st_mode) != mode:
                Path(by_fd).chmod(mode)
            if (found.st_uid, found.st_gid) != (info.st_uid, info.st_gid):
                os.chown(by_fd, owner, info.st_gid)
        except OSError:
            pass  # not ours to change: a reader's error names the file
        finally:
            os.close(fd)


def accessible(path: Path, mode: int) -> bool:
    """Whether this process may access `path` as `mode` (`os.R_OK`, `os.W_OK`: for a directory,
    make files in it) as its effective user: a root without CAP_DAC_OVERRIDE too."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def access_problem(path: Path) -> str | None:
    """`permission denied: ...` if this process may not read the state file (as its effective
    user: a root without CAP_DAC_OVERRIDE too), `is a directory` for a directory; else None.

    Looked up without opening the file (see `Connection.__init__`)."""
    try:
        info = path.stat()
    except OSError:
        return None  # missing, or out of reach: SQLite's own error says what it met
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not a state file"
    if not accessible(path, os.R_OK):
        return (
            f"permission denied: this user may not read it (mode {stat.filemode(info.st_mode)}, "
            f"owner uid {info.st_uid})"
        )
    return None


def foreign_wal_files(path: Path, needed: int) -> str | None:
    """What to say of a -wal or -shm of another owner than the state file's that this user may
    not use as `needed` (`os.R_OK`, with `os.W_OK` for a writer): left by root running a command
    by hand, say. None when there is none."""
    try:
        owner = path.stat().st_uid
    except OSError:
        return None
    names, owners = [], set()
    for end in WAL_FILE_SUFFIXES:
        name = f"{path}{end}"
        try:
            info = os.lstat(name)
        except OSError:
            continue
        if info.st_uid != owner and not os.access(name, needed):
            names.append(name)
            owners.add(str(info.st_uid))
    if not names:
        return None
    return (
        f"{' and '.join(Path(name).name for name in names)} belong to uid "
        f"{', '.join(sorted(owners))}, not to the state file's owner (uid {owner}), and this user "
        f"may not {'read' if needed == os.R_OK else 'write'} them: give them the state file's "
        f"owner (`chown --reference={path} {' '.join(names)}`; the next run sets their mode)"
    )


def unreadable_wal_files(path: Path) -> list[str]:
    """`s.db-shm missing`, `s.db-wal not readable`: what keeps a read-only reader out."""
    problems = []
    for end in WAL_FILE_SUFFIXES:
        name = f"{path}{end}"
        if not os.path.lexists(name):
            problems.append(f"{path.name}{end} missing")
        elif not os.access(name, os.R_OK):
            problems.append(f"{path.name}{end} not readable")
    return problems
