"""Reading the config file's YAML document, through a parsed copy kept between calls.

Importing PyYAML costs a `run` with nothing due more than everything else it does, and cron makes
that call every minute. So the document, as parsed (before `${VAR}` interpolation: the
environment is read afresh by every call), is kept as JSON in a cache directory, together with
the config file's absolute path and identity (device, inode, size, and modification and change
times in nanoseconds). A call that finds the file with the same identity reads the JSON and never
imports PyYAML; any other parses the YAML and writes the copy again. An edit, a `mv` of a new
file over it, or a Kubernetes ConfigMap update (a new file behind a symlink) each changes the
identity.

No copy ever holds a secret in plain text, nor anything the schema refused: only a valid
document is copied. One whose API secrets (a token, a client secret; a `${VAR:-default}`
writes its default out), or custom providers' options that look secret, are written out in it is
copied with them left out, marked so: that
copy answers only a call that makes no request (`secrets=False`: the lean entry's `run`
deciding whether anything is due, `status`, `health`, `export`, `changes`); any other parses the
YAML. A document holding a secret every call needs (a password in `state.url`) is not copied at
all, nor is one JSON cannot hold exactly (YAML dates, keys that are not strings). `for_cache`
(config_document.py) says which.

The cache directory is systemd's `$CACHE_DIRECTORY`, else `$XDG_CACHE_HOME/choreo-ingest`, else
`~/.cache/choreo-ingest`; where none can be written (a read-only home), the YAML is parsed every
time, which is slower and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from choreo_ingest.atomic_file import read_regular_file
from choreo_ingest.cache_files import ANSWER_SUFFIX, COPY_SUFFIX, file_identity, kept_file
from choreo_ingest.cache_files import cache_directory as kept_directory
from choreo_ingest.errors import ConfigError
from choreo_ingest.files import make_directories, replace_atomically

STALE_SECONDS = 30 * 86_400
"""A copy not written for this long is removed when another is written (`_forget_stale`)."""
CACHE_FORMAT = 5
"""Bumped whenever what a copy may hold changes (`config_document.for_cache`), so that a copy an
earlier release wrote is not trusted: 3 withholds secret-looking custom options and holds
validated documents only; 4 withholds a secret written as a `${VAR:-default}` default, a
custom provider's `bearer` option and a password in a `state.url` default too (copies of format
3 could hold them); 5 withholds the values of `tokenUrl`'s query (the whole URL, as a stand-in,
where it uses `${...}`)."""

Document = dict[Any, Any]
Checked = TypeVar("Checked")


def read_document(
    path: Path,
    *,
    parse: Callable[[Path, str], Document],
    check: Callable[[Document], Checked],
    for_cache: Callable[[Document], tuple[Document | None, bool]],
    secrets: bool = True,
) -> tuple[Checked, bool]:
    """`check(document)` of the document in `path`, and whether its secrets are left out (only
    if `secrets` is False).

    Its parsed copy answers if the file is unchanged, else `parse(path, text)` (which imports
    PyYAML). A document is copied only once `check` passed (it raises ConfigError otherwise), so
    the copy never holds a key the schema does not know, a misspelt secret's say;
    `for_cache(document)` gives what to copy (None: nothing) and whether that copy left secrets
    out.
    """
    absolute = str(path.absolute())  # not resolve(): a symlink swapped later must be seen
    identity = file_identity(absolute)
    cache = _cache_file(absolute)
    cached = None
    if cache is not None and identity is not None:
        cached = _read_cache(cache, absolute, identity)
        if cached is not None and not (cached[1] and secrets):
            return check(cached[0]), cached[1]
    document = parse(path, _read_text(path))
    try:
        checked = check(document)
    except BaseException:
        if cache is not None and cached is None:  # nor may an earlier release's copy stay
            _forget(cache)
        raise
    if cache is not None and identity is not None and cached is None:
        copy, withheld = for_cache(document)
        if copy is not None:
            _write_cache(cache, absolute, identity, copy, withheld)
        else:  # a copy an earlier release kept may hold what this one keeps out
            _forget(cache)
    return checked, False


def kept_document(path: Path, identity: list[int]) -> Document | None:
    """The document kept of the config file at `path` as it was when it had `identity` (before
    `${VAR}` interpolation; a secret in the file left out), or None: none kept of that file."""
    absolute = str(path.absolute())
    cache = _cache_file(absolute)
    kept = None if cache is None else _read_cache(cache, absolute, identity)
    return None if kept is None else kept[0]


def _forget(cache: Path) -> None:
    with contextlib.suppress(OSError):
        cache.unlink(missing_ok=True)


LARGEST_CONFIG_FILE = 4 * 1024 * 1024
"""A config file holds no more (a large one is a few KiB): `/dev/zero` ran the machine out of
memory."""


def _read_text(path: Path) -> str:
    try:
        raw = read_regular_file(path, LARGEST_CONFIG_FILE)
        if len(raw) > LARGEST_CONFIG_FILE:
            raise ConfigError(f"{path}: over 4 MiB, not a config file")
        return raw.decode("utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text") from None


def cache_directory(env: Mapping[str, str] | None = None) -> Path | None:
    """Where the parsed copies go (None: nowhere to put them)."""
    directory = kept_directory(os.environ if env is None else env)
    return None if directory is None else Path(directory)


def _cache_file(absolute: str) -> Path | None:
    file = kept_file(absolute, COPY_SUFFIX, os.environ)
    return None if file is None else Path(file)


def _read_cache(cache: Path, absolute: str, identity: list[int]) -> tuple[Document, bool] | None:
    try:
        with cache.open(encoding="utf-8") as file:
            copy = json.load(file)
    except (OSError, ValueError):  # none yet, or torn, or not ours: parse the YAML
        return None
    if not isinstance(copy, dict):
        return None
    if (copy.get("format"), copy.get("path"), copy.get("identity")) != (
        CACHE_FORMAT,
        absolute,
        identity,
    ):
        return None
    document, withheld = copy.get("document"), copy.get("withheld")
    if not isinstance(document, dict) or not isinstance(withheld, bool):
        return None
    return document, withheld


def _write_cache(
    cache: Path, absolute: str, identity: list[int], document: Document, withheld: bool
) -> None:
    kept = {"format": CACHE_FORMAT, "path": absolute, "identity": identity}
    try:
        text = json.dumps({**kept, "document": document, "withheld": withheld}, allow_nan=False)
    except (TypeError, ValueError):  # a YAML date, a NaN: JSON cannot hold it
        return
    if json.loads(text)["document"] != document:  # keys that were not strings
        return
    try:
        make_directories(cache.parent, 0o700)  # ~/.cache too, where missing (XDG's mode)
        # A kill mid-write leaves one temp file, which the next write takes over (files.py).
        replace_atomically(cache, text.encode("utf-8"), 0o600)
    except OSError:  # nowhere to keep it: the next call parses the YAML again
        return
    _forget_stale(cache)


def _forget_stale(written: Path) -> None:
    """Remove the copies not written for STALE_SECONDS before `written` was: a config file long
    gone (tests', scripts' temporary ones) leaves its copy behind. One still in use is written
    again at its next call, which parses its YAML once. The age is the files' own (no clock,
    and no look at config paths that may sit on a mount that hangs)."""
    try:
        now = written.stat().st_mtime
        copies = [
            *written.parent.glob(f"config-*{COPY_SUFFIX}"),
            *written.parent.glob(f"config-*{ANSWER_SUFFIX}"),  # `idle_answer`'s
        ]
    except OSError:
        return
    for copy in copies:
        with contextlib.suppress(OSError):
            if copy != written and copy.stat().st_mtime < now - STALE_SECONDS:
                copy.unlink()
