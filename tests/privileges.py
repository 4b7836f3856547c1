"""Tests of permissions, run as root in CI: the effective user dropped to `nobody` for a block."""

from __future__ import annotations

import codecs
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534
LAZY_CODECS = ("utf-8-sig", "idna", "ascii", "latin-1")
"""Codecs the code under test looks up (an event body's BOM, host names): a worker whose first
lookup of one came as `nobody`, who may not read root's Python (pyenv under /root), would fail
it with `LookupError: unknown encoding`, a flake of the test, not the code."""


@contextmanager
def as_nobody() -> Iterator[None]:
    """This process's effective user is `nobody` for the block, when it runs as root (as any
    other user, it is already one that a mode-000 file of its own refuses too)."""
    if os.geteuid() != 0:
        yield
        return
    for codec in LAZY_CODECS:  # imported at first use, from a stdlib `nobody` may not read
        codecs.lookup(codec)
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
