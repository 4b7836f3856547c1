"""The secrets a config file gives: reading a secret file, and keeping every secret the file
gives (written in it, or in a file it names) out of its errors."""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from choreo_ingest.atomic_file import read_regular_file
from choreo_ingest.config_document import SECRET_FILES, SECRET_KEYS, dig
from choreo_ingest.config_model import BareFileName, DeferredSecret, SecretPath
from choreo_ingest.config_values import Invalid, home_expanded, interpolate
from choreo_ingest.errors import ConfigError

LONG_SECRET = 16
"""Secrets this long are masked wherever they stand, within a word too (`openchoreo.<it>`), and
so is any start of one at least this long: a value's description keeps only the first 57
characters of a longer value (`config_values.describe`), which may end inside the secret."""

LARGEST_SECRET_FILE = 64 * 1024
"""A secret file holds no more (a JWT is a few KiB): a larger one is refused where it is used."""


def secrets_masked(
    error: ConfigError, document: dict[Any, Any], env: Mapping[str, str], base: Path
) -> ConfigError:
    """`error`, or the same error with the secrets `document` gives (a token, a client secret,
    the content of a secret file it names, in directory `base`) masked: one written in another
    key by mistake as well (`baseUrl: <the token>`, or as a key's name) would be shown by that
    key's error, or the first 57 characters of it, as a value's description cuts a long one
    (`config_values.describe`)."""
    secrets = document_secrets(document, env) | _file_secrets(document, env, base)
    from choreo_ingest.logs import masked

    def hidden(text: str) -> str:
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= LONG_SECRET:  # no word of a message is one: masked wherever
                text = _prefixes_masked(text, secret)
            text = _cut_start_masked(text, secret)
        return masked(text, secrets)

    def hidden_path(path: str) -> str:  # a key named with a secret: `mapping.<it>.owner`
        parts = re.split(r"([.\[\]])", hidden(path))
        return "".join("***" if part in secrets else part for part in parts)

    text, path = str(error), error.path
    if path is not None:  # the message begins with the key's path
        text = text.removeprefix(f"{path}: ")
    message, shown_path = hidden(text), None if path is None else hidden_path(path)
    if (message, shown_path) == (text, path):
        return error
    return type(error)(message, path=shown_path)


def document_secrets(document: dict[Any, Any], env: Mapping[str, str]) -> set[str]:
    """The token and client secret `document` gives, as written and as interpolated."""
    secrets = set()
    for key in SECRET_KEYS:
        if isinstance(written := dig(document, key), str) and written.strip():
            secrets.add(written.strip())
            with suppress(Invalid):
                secrets.add(interpolate(written, env, secret=True).strip())
    return secrets


def _file_secrets(document: dict[Any, Any], env: Mapping[str, str], base: Path) -> set[str]:
    """What the files `document` names hold, read for an error only (a load reads no secret
    file): the whole text and each line, however the file is written (UTF-16, more than one
    line: a file its key would refuse may hold the secret all the same). Only a regular file
    with something in it is read, and no more than a secret file may hold: a pipe would block
    or lose its secret to this read, and so would `/proc/kmsg`, which says it is empty."""
    secrets = set()
    for key in SECRET_FILES:
        if not isinstance(written := dig(document, key), str) or not written.strip():
            continue
        with suppress(Invalid, OSError):
            file = base / home_expanded(interpolate(written, env, secret=False).strip())
            descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            with os.fdopen(descriptor, "rb") as opened:
                status = os.fstat(descriptor)
                if stat.S_ISREG(status.st_mode) and status.st_size > 0:
                    text = _decoded(opened.read(LARGEST_SECRET_FILE)).strip()
                    lines = {line.strip() for line in text.splitlines()}
                    secrets |= {text} | {line for line in lines if len(line) >= _LINE_MASKED}
    return secrets - {""}


_LINE_MASKED = 8
"""A line of a file of several this long is masked as a secret; a shorter one (`#`, a word)
would mask the same word all over the message."""


def _decoded(raw: bytes) -> str:
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    return raw.decode("utf-16" if utf16 else "utf-8", errors="replace").removeprefix("\ufeff")


_CUT_MARKS = ("...'", '..."')  # where `config_values.describe` cut a long value short
_SHORTEST_CUT_START = 4


def _cut_start_masked(text: str, secret: str) -> str:
    """`text` with a start of `secret` that ends a value cut short masked: shorter than
    LONG_SECRET (a longer one `_prefixes_masked` finds), down to _SHORTEST_CUT_START."""
    longest = min(len(secret), LONG_SECRET - 1)
    for mark in _CUT_MARKS:
        end = text.find(mark)
        while end != -1:
            for length in range(longest, _SHORTEST_CUT_START - 1, -1):
                if text.endswith(secret[:length], 0, end):
                    text = f"{text[: end - length]}***{text[end:]}"
                    end += 3 - length
                    break
            end = text.find(mark, end + len(mark))
    return text


def _prefixes_masked(text: str, secret: str) -> str:
    """`text` with each run that starts `secret`, LONG_SECRET characters or more, masked."""
    start = text.find(secret[:LONG_SECRET])
    while start != -1:
        end = start + LONG_SECRET
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        text = f"{text[:start]}***{text[end:]}"
        start = text.find(secret[:LONG_SECRET], start + 3)
    return text


def read_secret_file(path: SecretPath | None, key: str) -> str | None:
    """The secret in the file `key` names (trimmed); None when unset. A deferred path, an
    unreadable or an empty file is a ConfigError naming `key`."""
    if isinstance(path, DeferredSecret):
        raise path.error()
    if path is None:
        return None
    try:
        raw = read_regular_file(path, LARGEST_SECRET_FILE)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"cannot read {secret_file_shown(path)}: {reason}", path=key) from None
    if len(raw) > LARGEST_SECRET_FILE:
        raise ConfigError(f"{secret_file_shown(path)}: over 64 KiB, not a secret file", path=key)
    return secret_in(raw, path, key)


def secret_in(raw: bytes, path: str | Path, key: str) -> str:
    """The secret a secret file's bytes hold: UTF-8 text (a byte order mark dropped, as an
    editor on Windows writes it), trimmed, on one line; else a ConfigError naming `key` and
    the file, never the content."""
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (UTF-16? save it as UTF-8)", path=key) from None
    if not text:
        raise ConfigError(f"{path}: the file is empty", path=key)
    if "\n" in text or "\r" in text:
        raise ConfigError(f"{path}: more than one line (the secret alone, on one line)", path=key)
    return text


def secret_file_shown(path: str | Path) -> str:
    """A secret file's path as an error shows it: as it is where it is a path (the file is
    there, or its directory is), else not at all, since the secret itself may have been
    written where its file's path belongs (`tokenFile: <the token>`)."""
    try:
        file = home_expanded(str(path))
    except Invalid:
        file = Path(path)
    if file.exists():
        return str(path)
    if "/" in str(path) and file.parent.is_dir() and not isinstance(path, BareFileName):
        return str(path)
    return "the file it names (not shown: it may be the secret itself)"
