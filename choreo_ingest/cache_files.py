"""Where files kept between calls live: in the cache directory, one per config file and kind
(the parsed config, `config_file`; the answer of a `run` with nothing due, `idle_answer`), each
named after the config file's absolute path and told from an edited one by its identity.

Paths as text (`os.path`, not pathlib): `idle_answer` reads these before anything else is
imported.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy: True)

if TYPE_CHECKING:
    from typing import Protocol

    class Digest(Protocol):
        def update(self, data: bytes, /) -> None: ...

        def digest(self) -> bytes: ...


CACHE_SUBDIRECTORY = "choreo-ingest"
CONFIG_ENV = "CHOREO_INGEST_CONFIG"
"""The config file, where no `--config` names one (`config.find_config_path`)."""
STATE_ENV = "CHOREO_INGEST_DB"
"""The state, where no `--db` names one (`config.resolve_state_path`)."""
DEFAULT_CONFIG_NAME = "choreo-ingest.yaml"
"""The config file looked for in the working directory when nothing else names one."""
COPY_SUFFIX = ".json"
"""The parsed config's copy (`config_file`)."""
ANSWER_SUFFIX = ".idle"
"""The kept answer of a `run` with nothing due (`idle_answer`)."""


def cache_directory(env: Mapping[str, str]) -> str | None:
    """Where parsed config copies and answers are kept: systemd's `$CACHE_DIRECTORY`, else
    `$XDG_CACHE_HOME/choreo-ingest`, else `~/.cache/choreo-ingest` (None: nowhere)."""
    if env.get("CACHE_DIRECTORY"):  # systemd's CacheDirectory=, already ours alone
        return env["CACHE_DIRECTORY"].split(":")[0]
    xdg, home = env.get("XDG_CACHE_HOME", ""), env.get("HOME", "")
    if os.path.isabs(xdg):  # the XDG spec: a relative one is ignored
        return os.path.join(xdg, CACHE_SUBDIRECTORY)
    if os.path.isabs(home) and os.path.isdir(home):  # a home that is not there is not made
        return os.path.join(home, ".cache", CACHE_SUBDIRECTORY)
    return None


def kept_file(absolute: str, suffix: str, env: Mapping[str, str]) -> str | None:
    """The cache file of kind `suffix` for the config file at `absolute`. The name only spreads
    files out: each holds the path it is for, and answers only for that path."""
    directory = cache_directory(env)
    if directory is None:
        return None
    return os.path.join(directory, f"config-{zlib.crc32(os.fsencode(absolute)):08x}{suffix}")


def new_digest(salt: bytes = b"") -> Digest:
    """A hash of what a kept file is checked against (BLAKE2b, else SHA-256), `salt` first."""
    digest: Digest
    try:
        from _blake2 import blake2b  # CPython's own: hashlib would load OpenSSL
    except ImportError:  # a Python built without it (whose hashlib logs that at import)
        digest = _sha256()
    else:
        digest = blake2b(digest_size=16)
    digest.update(salt)
    return digest


def _sha256() -> Digest:
    """SHA-256 from CPython's own module (`_sha2` from 3.12, `_sha256` before), else
    hashlib's."""
    for module in ("_sha2", "_sha256"):
        try:
            found: Digest = __import__(module).sha256()
        except ImportError:
            continue
        return found
    import hashlib

    return hashlib.sha256()


def file_identity(path: str) -> list[int] | None:
    """What tells a file from an edited or replaced one: its device, inode, size, and
    modification and change times in nanoseconds (None: it cannot be looked at)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return [found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns]


def absolute_path(path: str) -> str:
    """`str(Path(path).absolute())` (how `config_file` names the file), without pathlib: the
    working directory joined, `.` parts and repeated or trailing slashes dropped, `..` kept."""
    joined = path if path.startswith("/") else f"{os.getcwd()}/{path}"
    parts = [part for part in joined.split("/") if part not in ("", ".")]
    prefix = "//" if joined.startswith("//") and not joined.startswith("///") else "/"
    return prefix + "/".join(parts)
