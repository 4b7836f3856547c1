"""Writing files so that readers see the old one or the new one, never a part, with the mode
we mean whatever the umask; and making many such writes durable with a fixed number of flushes."""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import stat
import sys
from collections.abc import Callable, Collection
from contextlib import suppress
from pathlib import Path
from types import TracebackType

TEMP_SUFFIX = ".tmp"
"""Temp files end in `.tmp`, matched by no glob of the target's own suffix: `.<name>.tmp` and,
while other writers hold it, `.<name>.1.tmp` ... beside the target for `replace_atomically`;
`<name>.<random>.tmp` in `TEMP_DIRECTORY` for `DurableBatch`."""
TEMP_DIRECTORY = ".choreo-ingest-tmp"
"""Where `DurableBatch` stages its temp files: a hidden directory of the root it writes below (so
on the same filesystem, and each rename stays atomic), which each batch empties when it begins."""
TEMP_SLOTS = 16
"""Writers of one file at once (`run`, `status`, `serve`) that each get a temp file of their own;
a kill leaves at most one temp file per slot, which the next writer to claim the slot reuses."""
STALE_LEGACY_TEMP_SECONDS = 60.0
"""A `.<name>.<random>.tmp` left by an earlier release is removed once the target is this much
newer than it (no such writer takes that long to rename it)."""


def replace_atomically(path: Path, data: bytes, mode: int) -> None:
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
            temp.replace(path)
        except BaseException:
            with suppress(OSError):  # still ours: the flock is held until the close below
                temp.unlink()
            raise
    finally:
        os.close(handle)
    if left_over:
        _remove_left_temps(path)


def _temp_for(path: Path, slot: int) -> Path:
    return path.with_name(f".{path.name}{f'.{slot}' if slot else ''}{TEMP_SUFFIX}")


def _refuse_special_file(path: Path) -> None:
    """A rename would put a regular file where a device, FIFO or socket was (`/dev/null` given
    to mean "nowhere"): refuse instead. A symlink is replaced, as ever, whatever it points to."""
    try:
        found = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    problem = None if stat.S_ISLNK(found) else not_a_regular_file(path, found)
    if problem is not None:
        raise OSError(errno.EINVAL, problem.removeprefix(f"{path}: "), str(path))


def _claim_temp(path: Path) -> tuple[Path, int, bool]:
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

    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    return Path(name), handle, False


def _claim(temp: Path, *, create: bool) -> tuple[int, bool] | None:
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
            current = temp.lstat()
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


def _open_temp(temp: Path, *, create: bool) -> tuple[int, bool] | None:
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


def _remove_left_temps(path: Path) -> None:
    """Remove the temp files of `path` that writers which died left: each slot's that no live
    writer holds, and those of earlier releases (`.<name>.<random or pid>.tmp`, names no writer
    of this release gives a temp of `path`) that are well older than `path`. Best effort."""
    for slot in range(TEMP_SLOTS):
        claimed = _claim(_temp_for(path, slot), create=False)
        if claimed is not None:
            handle, _ = claimed
            try:
                with suppress(OSError):
                    _temp_for(path, slot).unlink()
            finally:
                os.close(handle)
    prefix = f".{path.name}."
    try:
        newest = path.stat().st_mtime
        with os.scandir(path.parent) as entries:
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
                        Path(entry.path).unlink()
    except OSError:
        pass


def _is_pid(text: str) -> bool:
    return text.isdigit() and int(text) >= TEMP_SLOTS  # a slot's number is no pid


class DurableBatch:
    """Replaces and removes many files below `root` so that readers see each old file or its new
    one, never a part, and a crash leaves no renamed file whose data is not on disk; with two
    flushes per `commit()` whatever the number of files.

    `replace()` writes a temp file into `root/TEMP_DIRECTORY` without an fsync. `commit()` flushes
    them all (`flush_to_disk`), renames each over its target, then flushes again, so the renames
    and removals are durable when it returns. The fsync per file was what cost (1000 small files
    on a VM's ext4 whose fsync takes 0.12 ms: 240-350 ms with one fsync each, 70-170 ms with two
    syncfs; a disk without a write cache pays milliseconds per fsync). Leaving the block with an
    exception deletes the temp files not yet renamed.

    A batch killed before its renames (SIGKILL, a power cut) leaves its temp files behind, up to
    a batch of them per kill. Entering the next batch deletes them: one listing of a directory
    that is empty unless a batch was killed, where temp files beside their targets could only
    be found by listing every directory of the tree. One batch at a time may write below `root`
    (its callers hold the run lock): entering one takes the others' temp files.

    A directory below `root` (never `root`) that a removal leaves empty is removed at `commit()`,
    after the renames that may still need it, and so is each parent that leaves empty; one that
    holds anything else stays.
    """

    def __init__(self, root: Path, file_mode: int, directory_mode: int) -> None:
        self.root = root
        self.temp_directory = root / TEMP_DIRECTORY
        self.file_mode = file_mode
        self.directory_mode = directory_mode
        self._staged: list[tuple[Path, Path]] = []  # (temp, target)
        self._touched: set[Path] = set()
        self._emptied: set[Path] = set()  # directories to remove at the commit if empty
        self._pending = 0
        self._temp_directory_made = False

    @property
    def pending(self) -> int:
        """Files replaced or removed since the last commit."""
        return self._pending

    def replace(self, path: Path, data: bytes) -> None:
        """Stage `data` as the next content of `path`, creating missing parent directories."""
        created = make_directories(path.parent, self.directory_mode)
        if not self._temp_directory_made:
            created += make_directories(self.temp_directory, self.directory_mode)
            self._temp_directory_made = True
        self._touched.update(directory.parent for directory in created)
        temp = _write_temp(self.temp_directory, path.name, data, self.file_mode)
        self._staged.append((temp, path))
        self._pending += 1

    def remove(self, path: Path) -> bool:
        """Delete `path` now (durable at the next commit), and its directory at the commit if
        that leaves it empty; False when there was no such file (its directory is still looked
        at: a batch killed between the two left it)."""
        self.remove_if_empty(path.parent)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        self._touched.add(path.parent)
        self._pending += 1
        return True

    def remove_if_empty(self, directory: Path) -> None:
        """Remove `directory` (below `root`) at the next commit if it is empty then."""
        self._emptied.add(directory)

    def remove_leftovers(self) -> None:
        """Delete the temp files that batches killed before their renames left."""
        try:
            with os.scandir(self.temp_directory) as entries:
                left = [
                    Path(entry.path)
                    for entry in entries
                    if entry.name.endswith(TEMP_SUFFIX) and not entry.is_dir(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return
        for path in left:
            path.unlink(missing_ok=True)

    def commit(self) -> None:
        """Make every staged file and removal durable and visible."""
        if self._staged:
            flush_to_disk(files=[temp for temp, _ in self._staged])
            staged, self._staged = self._staged, []
            for index, (temp, path) in enumerate(staged):
                try:
                    temp.replace(path)
                except BaseException:
                    self._staged = staged[index:]
                    raise
                self._touched.add(path.parent)
        if self._emptied:
            self._remove_emptied_directories()
        if self._touched:
            flush_to_disk(directories=self._touched)
            self._touched.clear()
        self._pending = 0

    def _remove_emptied_directories(self) -> None:
        for directory in sorted(self._emptied, key=lambda path: len(path.parts), reverse=True):
            while directory != self.root and self.root in directory.parents:
                try:
                    directory.rmdir()
                except FileNotFoundError:  # a killed batch removed it, maybe not its parent
                    self._touched.discard(directory)
                except OSError as error:
                    if error.errno in _HELD_DIRECTORY:
                        break
                    raise
                else:
                    self._touched.discard(directory)
                    self._touched.add(directory.parent)
                directory = directory.parent
        self._emptied.clear()

    def discard(self) -> None:
        """Delete the temp files not yet renamed; removals already made stay made."""
        for temp, _ in self._staged:
            temp.unlink(missing_ok=True)
        self._staged.clear()

    def __enter__(self) -> DurableBatch:
        self.remove_leftovers()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None:
            self.discard()


_HELD_DIRECTORY = frozenset({errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY, errno.ENOTDIR})
"""rmdir(2)'s answers for a directory that stays: it holds something (EEXIST is POSIX's other
spelling of ENOTEMPTY), is a mount point, or is a symlink to a directory."""


def flush_to_disk(*, files: Collection[Path] = (), directories: Collection[Path] = ()) -> None:
    """Make the data of `files` and the entries (renames, unlinks) of `directories` durable.

    On Linux one syncfs(2) per filesystem holding them does it all: the kernel writes out every
    dirty page and inode of that filesystem and commits its journal (so it also writes what other
    processes left dirty there, and before Linux 5.8 it does not report write-back errors).
    Elsewhere each file and directory is fsynced.
    """
    holders = {path.parent for path in files} | set(directories)
    filesystems = {holder.stat().st_dev: holder for holder in sorted(holders)}
    synced = [sync_filesystem(holder) for holder in filesystems.values()]
    if all(synced):
        return
    for path in (*files, *directories):
        _fsync_path(path)


def sync_filesystem(path: Path) -> bool:
    """One syncfs(2) of the filesystem holding `path`; False (nothing done) where libc has none."""
    syncfs = _libc_syncfs()
    if syncfs is None:
        return False
    import ctypes

    handle = os.open(path, os.O_RDONLY)
    try:
        if syncfs(handle) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), str(path))
    finally:
        os.close(handle)
    return True


def make_directories(path: Path, mode: int = 0o755) -> list[Path]:
    """`mkdir -p path`, giving each directory it creates `mode` whatever the umask (those that
    already exist are left as they are). Returns the directories it created, outermost first.

    A setgid bit a new directory inherits is kept (a Kubernetes fsGroup volume's: what is made
    below keeps the volume's group)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    created = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:  # made meanwhile by another process
            continue
        directory.chmod(mode | (directory.stat().st_mode & stat.S_ISGID))
        created.append(directory)
    return created


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a_regular_file(path: Path, mode: int) -> str | None:
    """`<path>: not a regular file (a FIFO)` for `mode` (a stat's `st_mode`) of a FIFO, a
    device or a socket, or None: a regular file, or a directory (what to do about that differs
    by caller, so each says it)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), None)
    return f"{path}: not a regular file" + (f" ({kind})" if kind else "")


def _write_temp(directory: Path, name: str, data: bytes, mode: int) -> Path:
    """`data` in a new temp file in `directory` named after `name`, with `mode`, not fsynced."""
    import tempfile  # only for DurableBatch (the mirror), never for a run with nothing due

    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f"{name}.", suffix=TEMP_SUFFIX)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            os.fchmod(file.fileno(), mode)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _fsync_path(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2) (glibc 2.14+, musl), looked up once; None off Linux or without it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # loads libffi: only for the mirror's sync, never for a run with nothing due

    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return lambda handle: int(function(handle))
