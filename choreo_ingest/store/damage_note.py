"""A note beside a state file that a writing command found damaged (SQLite met a malformed
page), so that the read-only commands refuse it too: `status`, `health`, `export` and
`changes` read other pages than a run does, and reported a state that is not there (`health`
green, a wrong catalog at exit 0) while every run failed.

The note (`<state>.damaged`, JSON) holds the error and the state file's inode, size and
modification time when it was written: a file put back from a backup, or written since, is
another file, and the note says nothing of it. `check`, which reads every page, removes it
when it finds none damaged. Written and removed on a best-effort basis: a note that cannot be
written leaves the readers as they were."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

SUFFIX = ".damaged"


def note_path(state: Path) -> Path:
    return state.with_name(state.name + SUFFIX)


def note_damage(state: Path, error: str) -> None:
    with contextlib.suppress(OSError):
        found = state.stat()
        written = state.with_name(f"{state.name}{SUFFIX}.{os.getpid()}.tmp")
        written.write_text(json.dumps({"error": error, **_identity(found)}), encoding="utf-8")
        written.replace(note_path(state))


def noted_damage(state: Path) -> str | None:
    """The error the note holds, if it speaks of the file at `state` as it is now."""
    try:
        text = note_path(state).read_text(encoding="utf-8")
        found = state.stat()
    except (OSError, UnicodeDecodeError):  # no note (the rule), or none to read
        return None
    try:
        note = json.loads(text)
    except ValueError:
        return None
    if not isinstance(note, dict) or not isinstance(note.get("error"), str):
        return None
    if any(note.get(key) != value for key, value in _identity(found).items()):
        return None
    return str(note["error"])


def forget_damage(state: Path) -> None:
    with contextlib.suppress(OSError):
        note_path(state).unlink()


def _identity(found: os.stat_result) -> dict[str, int]:
    return {"inode": found.st_ino, "size": found.st_size, "mtimeNs": found.st_mtime_ns}
