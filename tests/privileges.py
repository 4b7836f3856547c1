"""Tests of permissions, run as root in CI: the effective user dropped to `nobody` for a block."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534


@contextmanager
def as_nobody() -> Iterator[None]:
    """This process's effective user is `nobody` for the block, when it runs as root (as any
    other user, it is already one that a mode-000 file of its own refuses too)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


@contextmanager
def reachable_directory(mode: int) -> Iterator[Path]:
    """A new directory of `mode` in the system temp directory, removed after the block: pytest's
    tmp_path is below a 0700 one that `nobody` may not even look into."""
    directory = Path(tempfile.mkdtemp(prefix="choreo-ingest-test-"))
    try:
        directory.chmod(mode)
        yield directory
    finally:
        shutil.rmtree(directory)
