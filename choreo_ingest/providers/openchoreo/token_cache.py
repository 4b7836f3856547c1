"""An OAuth2 access token kept in a file between calls (`openchoreo.auth.oauth.tokenCacheFile`).

A cron or CronJob call lives for one burst; without the file, every busy call asks the identity
provider for a new token, which some count against a quota (Auth0 meters machine-to-machine
tokens). With it, calls share one token until its refresh point, as OpenChoreo's own plugins
share one in memory.

The file holds the token, its refresh point, and a SHA-256 of what it was granted for (token
URL, client id, scope, audience and client secret), so a changed config or a rotated secret
never reuses it; never the secret itself. It is written whole to a new file with mode 0600
(whatever the umask) and renamed over the old, so a reader never sees half of one. A file that
cannot be read or does not match, or that any user may read, is ignored (a new grant replaces
it, at 0600); one that cannot be written, or is not a regular file (a FIFO, /dev/null: never
replaced), is logged and skipped: the call goes on with its token (`check` says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import NamedTuple

from choreo_ingest.config import OAuthConfig
from choreo_ingest.files import not_a_regular_file
from choreo_ingest.logs import get_logger

MAX_FILE_BYTES = 65_536
"""A larger file is not one this module wrote: ignored, not read into memory."""
FORMAT = 1
FILE_MODE = 0o600
CONFIG_KEY = "openchoreo.auth.oauth.tokenCacheFile"

log = get_logger("choreo_ingest.http")


class CachedToken(NamedTuple):
    token: str
    refresh_at: float
    """Epoch seconds (`Clock.now()`) after which a new grant replaces it."""


class TokenCache:
    """The cache file of one OAuth client configuration and secret."""

    def __init__(self, path: Path, oauth: OAuthConfig, secret: str) -> None:
        self.path = path
        self._key = grant_key(oauth, secret)

    def __repr__(self) -> str:
        return f"TokenCache(path={str(self.path)!r})"

    def load(self) -> CachedToken | None:
        """The token the file holds for this client, or None (no file, another client's, or not
        one this module wrote)."""
        try:
            # Non-blocking: a FIFO put there (by mistake) would hold the call, and its run
            # lock, until something wrote to it; a regular file reads as ever.
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            with os.fdopen(descriptor, "rb") as file:
                mode = os.fstat(descriptor).st_mode
                # Any user may read it: not ours. (Group bits are left alone: with a
                # Kubernetes fsGroup, the kubelet may add them on every mount.)
                if not stat.S_ISREG(mode) or mode & 0o007:
                    return None
                data = file.read(MAX_FILE_BYTES + 1)
            document = json.loads(data) if len(data) <= MAX_FILE_BYTES else None
        except (OSError, ValueError, RecursionError):  # ValueError: not UTF-8 or not JSON
            return None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            return None
        token, refresh_at = document.get("accessToken"), document.get("refreshAt")
        if document.get("grantKey") != self._key or not isinstance(token, str) or not token:
            return None
        if isinstance(refresh_at, bool) or not isinstance(refresh_at, int | float):
            return None
        return CachedToken(token, float(refresh_at))

    def store(self, token: str, refresh_at: float) -> None:
        """Replace the file with `token`; a failure is logged (never the token) and skipped."""
        document = {
            "format": FORMAT,
            "grantKey": self._key,
            "refreshAt": refresh_at,
            "accessToken": token,
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        problem = never_replaced(self.path)
        if problem is not None:
            log.warning(
                "token_cache_not_written", path=str(self.path), error=problem, key=CONFIG_KEY
            )
            return
        try:
            temporary.unlink(missing_ok=True)  # a killed call's leftover, or a planted link
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with os.fdopen(os.open(temporary, flags, FILE_MODE), "w", encoding="utf-8") as file:
                os.fchmod(file.fileno(), FILE_MODE)  # whatever the umask took away
                json.dump(document, file)
            temporary.replace(self.path)
        except OSError as error:
            log.warning(
                "token_cache_not_written",
                path=str(self.path),
                error=error.strerror or type(error).__name__,
                key=CONFIG_KEY,
            )
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


def never_replaced(path: Path) -> str | None:
    """Why the file at `path` is never renamed over (`<path>: not a regular file (a FIFO)`), or
    None: a regular file, a symlink (the rename replaces the link, never what it points to), or
    nothing (or nothing this user may see: the write says so). `tokenCacheFile: /dev/null` once
    made /dev/null a file holding the token."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISLNK(mode) else not_a_regular_file(path, mode)


def grant_key(oauth: OAuthConfig, secret: str) -> str:
    """What a token was granted for, hashed: the secret is in it, and never in the file."""
    granted_for = [oauth.token_url, oauth.client_id, oauth.scope, oauth.audience, secret]
    return hashlib.sha256(json.dumps(granted_for).encode()).hexdigest()
