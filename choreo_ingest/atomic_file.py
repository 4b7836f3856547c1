"""Replacing one file so that readers see the old one or the new one, never a part, with the
mode we mean whatever the umask, and no temp file left per kill (`replace_atomically`).

Paths as text (`os.path`, not pathlib): a `run` with nothing due writes its metrics textfile with
this before anything else is loaded (`idle_answer`), and pathlib, with the urllib it imports, would
cost that call a tenth of what it costs in all. `files` re-exports what the rest of the package
uses.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import suppress

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy: True)

if TYPE_CHECKING:
    from typing import TypeAlias

StrPath: TypeAlias = "str | os.PathLike[str]"

TEMP_SUFFIX = ".tmp"
"""Temp files end in `.tmp`, matched by no glob of the target's own suffix: `.<name>.tmp` and,
while other writers hold it, `.<name>.1.tmp` ... beside the target for `replace_atomically`;
`<name>.<random>.tmp` in `TEMP_DIRECTORY` for `DurableBatch`."""
TEMP_SLOTS = 16
"""Writers of one file at once (`run`, `status`, `serve`) that each get a temp file of their own;
a kill leaves at most one temp file per slot, which the next writer to claim the slot reuses."""
STALE_LEGACY_TEMP_SECONDS = 60.0
"""A `.<name>.<random>.tmp` left by an earlier release is removed once the target is this much
newer than it (no such writer takes that long to rename it)."""


def replace_atomically(path: StrPath, data: bytes, mode: int) -> None:
    """Write `data` to a temp file beside `path`, fsync it, give it `mode`, rename it over `path`.

    The temp file has a fixed name per writer slot (`.<name>.tmp`, then `.<name>.1.tmp` ... while
    other writers hold the earlier ones), claimed with an flock: a kill at any instant leaves at
    most one temp file per slot, never one per kill, and the next writer of that slot takes it
    over. A writer that finds one left so also removes the other slots' leftovers no live writer
    holds (and those of earlier releases' random names), so none outlives a recovery. Nothing
    lists the directory otherwise: this is on the path of every `run`.

    The rename is durable only once the directory is fsynced; callers that need that, or that
    write many files, use `DurableBatch` instead.
    """
    path = os.fspath(path)
    _refuse_special_file(path)
    temp, handle, left_over = _claim_temp(path)
    try:
        try:
            os.ftruncate(handle, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view) :]
            os.fchmod(handle, mode)
            os.fsync(handle)
            os.replace(temp, path)
        except BaseException:
            with suppress(OSError):  # still ours: the flock is held until the close below
                os.unlink(temp)
            raise
    finally:
        os.close(handle)
    if left_over:
        _remove_left_temps(path)


def _temp_for(path: str, slot: int) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}{f'.{slot}' if slot else ''}{TEMP_SUFFIX}")


def _refuse_special_file(path: str) -> None:
    """A rename would put a regular file where a device, FIFO or socket was (`/dev/null` given
    to mean "nowhere"): refuse instead. A symlink is replaced, as ever, whatever it points to."""
    try:
        found = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    problem = None if stat.S_ISLNK(found) else not_a_regular_file(path, found)
    if problem is not None:
        raise OSError(errno.EINVAL, problem.removeprefix(f"{path}: "), path)


def _claim_temp(path: str) -> tuple[str, int, bool]:
    """The first temp slot of `path` no live writer holds: its path, a descriptor holding its
    flock, and whether a writer that died had left it there. When every slot is taken (or
    cannot be told from a live writer's: a mount that reports another owner, or has no flock,
    keeps what killed writers left), a temp file of a name of its own, as releases before the
    slots wrote: the write goes on, and its leftover is as it was then."""
    for slot in range(TEMP_SLOTS):
        temp = _temp_for(path, slot)
        claimed = _claim(temp, create=True)
        if claimed is not None:
            return temp, *claimed
    import tempfile  # the last resort only

    directory, name = os.path.split(path)
    handle, temp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=TEMP_SUFFIX)
    return temp, handle, False


def _claim(temp: str, *, create: bool) -> tuple[int, bool] | None:
    """A descriptor of the regular file `temp` holding its flock, and whether it was there
    already; None when a live writer holds it, it is not ours (another user's, a symlink), or
    (unless `create`) there is none.

    The flock is taken on what was opened, then `temp` is checked to still name that file: a
    writer may have renamed it over its target meanwhile, and that file is no temp any more.
    """
    for _ in range(3):  # renamed away between our open and our flock: look again
        opened = _open_temp(temp, create=create)
        if opened is None:
            return None
        handle, existed = opened
        try:
            _lock(handle, made=not existed)
            found = os.fstat(handle)
            current = os.lstat(temp)
        except BlockingIOError:  # a live writer's
            os.close(handle)
            return None
        except FileNotFoundError:
            os.close(handle)
            continue
        except BaseException:
            os.close(handle)
            raise
        if (current.st_dev, current.st_ino) != (found.st_dev, found.st_ino):
            os.close(handle)
            continue
        # A file this writer made is its own, whoever the mount says owns it (NFS squashing
        # root, a CIFS mount's uid=); one found there must be this user's to be taken over.
        if not stat.S_ISREG(found.st_mode) or (existed and found.st_uid != os.geteuid()):
            os.close(handle)
            return None
        return handle, existed
    return None


def _lock(handle: int, *, made: bool) -> None:
    """Take `handle`'s flock (BlockingIOError: a live writer holds it). Where flock is not
    supported (NFSv3 without its lock daemon), a file this writer made by O_EXCL is its own all
    the same; one found there cannot be told from a live writer's, and is left alone."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP) or not made:
            raise BlockingIOError(error.errno, error.strerror) from None


def _open_temp(temp: str, *, create: bool) -> tuple[int, bool] | None:
    """`temp` opened for writing, and whether it was there already (made, if `create` and it
    was not); None if it cannot be taken."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    if create:
        try:
            return os.open(temp, flags | os.O_CREAT | os.O_EXCL, 0o600), False
        except FileExistsError:
            pass
    try:
        return os.open(temp, flags), True
    except OSError:  # gone meanwhile (the next slot serves), a symlink, another user's file
        return None


def _remove_left_temps(path: str) -> None:
    """Remove the temp files of `path` that writers which died left: each slot's that no live
    writer holds, and those of earlier releases (`.<name>.<random or pid>.tmp`, names no writer
    of this release gives a temp of `path`) that are well older than `path`. Best effort."""
    for slot in range(TEMP_SLOTS):
        claimed = _claim(_temp_for(path, slot), create=False)
        if claimed is not None:
            handle, _ = claimed
            try:
                with suppress(OSError):
                    os.unlink(_temp_for(path, slot))
            finally:
                os.close(handle)
    directory, name = os.path.split(path)
    prefix = f".{name}."
    try:
        newest = os.stat(path).st_mtime
        with os.scandir(directory or ".") as entries:
            for entry in entries:
                middle = entry.name[len(prefix) : -len(TEMP_SUFFIX)]
                if (
                    entry.name.startswith(prefix)
                    and entry.name.endswith(TEMP_SUFFIX)
                    and (len(middle) == 8 or _is_pid(middle))  # mkstemp's names, or a pid
                    and entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime
                    < newest - STALE_LEGACY_TEMP_SECONDS
                ):
                    with suppress(OSError):
                        os.unlink(entry.path)
    except OSError:
        pass


def _is_pid(text: str) -> bool:
    return text.isdigit() and int(text) >= TEMP_SLOTS  # a slot's number is no pid


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a_regular_file(path: StrPath, mode: int) -> str | None:
    """`<path>: not a regular file (a FIFO)` for `mode` (a stat's `st_mode`) of a FIFO, a
    device or a socket, or None: a regular file, or a directory (what to do about that differs
    by caller, so each says it)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), None)
    return f"{path}: not a regular file" + (f" ({kind})" if kind else "")


def absent_directory(directory: StrPath) -> str:
    """What is wrong with `directory`, which a file should be made in and is not a directory:
    that it does not exist, or (the advice to create it would fail) that a file is there."""
    if os.path.islink(directory) and not os.path.exists(directory):
        return f"{directory} is a symlink to {os.readlink(directory)}, which does not exist"
    if os.path.lexists(directory):
        return f"{directory} is not a directory"
    return f"directory {directory} does not exist"


def read_regular_file(path: StrPath, limit: int) -> bytes:
    """Up to `limit` + 1 bytes of the regular file at `path` (more than `limit`: the caller's
    to refuse), opened without waiting: a FIFO named where a file belongs (a secret, the
    config) blocked every call for ever, each cron minute one more. A FIFO, device or socket
    is an OSError whose `strerror` says so; a directory, IsADirectoryError."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as file:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        problem = not_a_regular_file(path, mode)
        if problem is not None:
            raise OSError(errno.EINVAL, problem.removeprefix(f"{path}: "), str(path))
        return file.read(limit + 1)
