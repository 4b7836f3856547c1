"""Writing a file so that readers see the old one or the new one, never a part, with the mode
we mean whatever the umask."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"
"""Temp files are `.<name>.<random>.tmp` beside the target: hidden, and matched by no glob of
the target's own suffix."""


def replace_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a temp file beside `path`, fsync it, give it `mode`, rename it over `path`.

    The rename is durable only once the directory is fsynced; callers that need that do it once
    for many files.
    """
    handle, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX
    )
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def make_directories(path: Path, mode: int = 0o755) -> None:
    """`mkdir -p path`, giving each directory it creates `mode` whatever the umask (those that
    already exist are left as they are)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:  # made meanwhile by another process
            continue
        directory.chmod(mode)
