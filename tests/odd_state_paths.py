"""State paths no state file can be at, each made in `directory`: ones the OS refuses to look up
(a name too long, a path too long, a symlink loop) and files that are not regular (a FIFO, a
unix socket, a character device)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from contextlib import chdir
from pathlib import Path

import pytest


def name_too_long(directory: Path) -> Path:
    return directory / ("a" * 256 + ".db")


def path_too_long(directory: Path) -> Path:
    """Over PATH_MAX (4096) in all, every name in it short."""
    return directory.joinpath(*["d"] * 2100, "state.db")


def symlink_loop(directory: Path) -> Path:
    (directory / "loop-b.db").symlink_to("loop-a.db")
    path = directory / "loop-a.db"
    path.symlink_to("loop-b.db")
    return path


UNREACHABLE: dict[str, tuple[Callable[[Path], Path], int]] = {
    "name-too-long": (name_too_long, errno.ENAMETOOLONG),
    "path-too-long": (path_too_long, errno.ENAMETOOLONG),
    "symlink-loop": (symlink_loop, errno.ELOOP),
}
"""Each maker, and the errno the OS refuses its path with."""


def unreachable_problem(path: Path, code: int) -> str:
    return f"{path}: cannot look up the state file: {os.strerror(code)}"


def fifo(directory: Path) -> Path:
    path = directory / "state.db"
    os.mkfifo(path)
    return path


def unix_socket(directory: Path) -> Path:
    """Bound by its name in `directory`: a socket's whole path may not exceed 107 bytes."""
    path = directory / "state.db"
    with chdir(directory), socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path.name)
    return path


def null_device(directory: Path) -> Path:
    """A character device node of its own for the null device (1, 3): what /dev/null is,
    without anything written beside the real one. Only root may make one."""
    path = directory / "state.db"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("only root may make a device node")
    return path


SPECIAL: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fifo": (fifo, "a FIFO"),
    "socket": (unix_socket, "a socket"),
}
"""Each maker of a file that is not regular, and what the error calls it."""


def special_problem(path: Path, kind: str) -> str:
    return f"{path}: not a regular file ({kind})"
