"""Logging through structlog, loaded only for a line to write; secrets never reach the stream.

Logs go to stderr only (stdout carries command output such as `--json`). On a terminal they are
rendered for people at INFO; otherwise (cron, systemd) they are JSON lines at WARNING, because cron
mails any output and a successful run should stay quiet. Events are past-tense snake_case with
fields: `log.info("page_committed", pages=7, entities=50)`.

Two layers keep credentials out:
- `Redactor` replaces the value of any key named like a credential (token, authorization,
  password, secret, api key, cookie), at any depth, and every registered secret in any string
  value (`register_secret`: the CLI registers the configured secrets;
  `register_learned_secret`: the latest tokens the credentials learn at runtime);
- the rendered line is scrubbed once more, which also covers secrets inside `repr()` of objects.

A registered secret is masked as a whole token, never inside a word: a one-letter token must not
turn `projects` into `projec***s`. It counts where it stands between the ends of the text and
characters no token holds (whitespace, quotes, `=:,;()[]{}<>&?#/` and backslash, or a full stop
that ends a sentence). A secret shorter than four characters (a toy, but the rule has no
length) is masked the same way: an output may lose a short word that equals it.

Importing structlog costs a call that bursts about 70 ms of CPU, and off a terminal a burst that
goes well writes nothing. So `get_logger` gives a `Logger` that drops a call below the configured
level before anything is imported, and the first call to be written loads structlog (`log_setup`)
and configures it as `configure_logging` was told. Where structlog is loaded already (tests,
anything that imported it), `configure_logging` configures it at once and every call goes to
structlog, which filters by level itself, as `structlog.testing.capture_logs` expects.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

if TYPE_CHECKING:
    from choreo_ingest.clock import Clock

REDACTED = "***"
SENSITIVE_KEY = re.compile(r"token|authorization|password|passwd|secret|api[-_]?key|cookie", re.I)


MIN_SUBSTRING_LENGTH = 4
"""Shorter secrets are masked by `mask_short_secret` only where they stand apart from letters
and digits: replaced wherever they occur, they would mangle every word that holds them."""
_LETTER_OR_DIGIT = "A-Za-z0-9"


def mask_short_secret(text: str, secret: str, mask: str) -> str:
    """`text` with `secret` (shorter than MIN_SUBSTRING_LENGTH) replaced by `mask` where no letter
    or digit is next to it (`Bearer ab`, `token=ab&`, not `tab`)."""
    if not secret or secret not in text:
        return text
    found = rf"(?<![{_LETTER_OR_DIGIT}]){re.escape(secret)}(?![{_LETTER_OR_DIGIT}])"
    return re.sub(found, lambda _: mask, text)


# Characters that cannot be part of a token, so a secret next to one stands alone. The backslash
# and the escapes \n, \r, \t before a secret cover JSON and repr() text (`\"tok\"`, `\ntok`).
_APART = r"""\s'"`=:,;()\[\]{}<>&?#/\\"""
_BEFORE = rf"(?:(?<![^{_APART}])|(?<=\\[nrt]))"
_AFTER = rf"""(?=[{_APART}]|[.!]?$|[.!][\s'"\\])"""  # a full stop or ! that ends a sentence
_APART_BEFORE = re.compile(_BEFORE)
"""Matches at a secret's start when it stands apart from what comes before it."""
_APART_AFTER = re.compile(_AFTER)
"""Matches at a secret's end when it stands apart from what comes after it."""


def spellings(secret: str) -> set[str]:
    """A secret as text may hold it: itself; percent-encoded as in a URL or a form body (an
    identity provider may echo the request it refused, client secret and all); escaped as
    `repr()` of the text or of its UTF-8 bytes and JSON write it (an HTTP library quotes a header
    value it refuses: `b'Bearer tok\\n'`); and on one line, its control characters and runs of
    whitespace made one space each, as a one-line error text shows it."""
    import json
    from urllib.parse import quote, quote_plus

    one_line = " ".join("".join(c if c.isprintable() else " " for c in secret).split())
    escaped = {repr(secret)[1:-1], repr(secret.encode("utf-8"))[2:-1], json.dumps(secret)[1:-1]}
    return {secret, quote(secret, safe=""), quote_plus(secret), one_line, *escaped} - {""}


MAX_LEARNED_SECRETS = 16
"""Secrets learned at runtime that log output is searched for, the latest first kept."""


class Redactor:
    """A structlog processor that masks credential-named keys and registered secret values."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._searched: tuple[str, ...] = ()
        """Every spelling of every secret, the longest first."""
        self._lock = threading.Lock()
        self._kept: frozenset[str] = frozenset()
        self._learned: tuple[str, ...] = ()

    def register(self, secret: str, *, learned: bool = False) -> None:
        """Mask `secret` from now on; safe to call from any thread (credentials do, at runtime).

        A `learned` secret (an issued access token, a token file's content) is one of the
        latest MAX_LEARNED_SECRETS only: `serve` learns a token an hour for as long as it runs,
        and every log line is searched for all of them."""
        if not secret or secret in self._secrets:
            return
        with self._lock:
            if learned:
                self._learned = (*self._learned, secret)[-MAX_LEARNED_SECRETS:]
            else:
                self._kept |= spellings(secret)
            secrets = self._kept.union(*(spellings(value) for value in self._learned))
            # Searched as plain text, not compiled into a pattern of them all: `re` keeps the
            # last 512 patterns it compiled, and `serve` learns a token at every renewal, so
            # each token's pattern (tens of KB) stayed, the process growing for weeks.
            searched = tuple(sorted(secrets, key=len, reverse=True))
            self._secrets, self._searched = secrets, searched

    def scrub(self, text: str) -> str:
        """`text` with every registered secret that stands as a whole token replaced by `***`."""
        if text in self._secrets:
            return REDACTED
        searched = self._searched
        pieces: list[str] = []
        done = 0
        while (found := _first_standing(text, done, searched)) is not None:
            start, end = found
            pieces += [text[done:start], REDACTED]
            done = end
        return "".join([*pieces, text[done:]]) if pieces else text

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> dict[str, Any]:
        return {key: self._clean(key, value) for key, value in event_dict.items()}

    def _clean(self, key: object, value: object) -> object:
        if isinstance(key, str) and SENSITIVE_KEY.search(key) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self._clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(None, item) for item in value]
        return value


def _first_standing(text: str, at: int, searched: Iterable[str]) -> tuple[int, int] | None:
    """(start, end) of the first secret of `searched` (the longest first) that stands as a whole
    token in `text` from `at` on: the earliest, and of those starting there the longest."""
    first: tuple[int, int] | None = None
    for secret in searched:
        start = text.find(secret, at)
        while start != -1 and (first is None or start < first[0]):
            end = start + len(secret)
            if _APART_BEFORE.match(text, start) and _APART_AFTER.match(text, end):
                first = (start, end)
                break
            start = text.find(secret, start + 1)
    return first


_REDACTOR = Redactor()


def masked(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` that stands as a whole token masked, as log lines mask them
    (a secret `p` leaves `supported` alone)."""
    redactor = Redactor()
    for secret in secrets:
        redactor.register(secret)
    return redactor.scrub(text)


def register_secret(value: str) -> None:
    """Mask `value` wherever it stands as a whole token in later log output (the CLI registers
    `config.secret_values(config)`)."""
    _REDACTOR.register(value)


def scrub_secrets(text: str) -> str:
    """`text` with every registered secret masked as log output masks it: for a text shown
    elsewhere (a failed burst's message, which `status` and `--json` show). Mask before cutting a
    text short: a cut secret is no longer found."""
    return _REDACTOR.scrub(text)


def register_learned_secret(value: str) -> None:
    """`register_secret` for a secret learned at runtime, kept among the latest few only: the
    OpenChoreo provider passes it as its credentials' `on_secret` (token-file contents, issued
    access tokens)."""
    _REDACTOR.register(value, learned=True)


DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
"""The standard library's level numbers, which structlog's filtering loggers use."""


class _Settings(NamedTuple):
    level: int
    as_json: bool
    tty: bool
    stream: TextIO | None


_STATE_LOCK = threading.Lock()
_threshold = 0
"""Calls below this level are dropped before structlog is loaded; 0 while structlog filters."""
_pending: _Settings | None = None
"""Settings that `configure_logging` was given while structlog was not loaded, not yet applied."""
_configured = False
"""Whether `configure_logging` was called: a line written before is routed as its defaults say
(stderr, WARNING off a terminal), never by structlog's own defaults (stdout, every level)."""


def configure_logging(
    *, verbosity: int = 0, json: bool | None = None, stream: TextIO | None = None
) -> bool:
    """Route log lines to `stream` (default: stderr as it is when each line is written); returns
    whether they are JSON lines.

    `verbosity`: 0 -> WARNING off a terminal, INFO on one; 1 (`-v`) -> INFO; 2+ (`-vv`) -> DEBUG.
    `json`: force JSON lines (True) or the console renderer (False); None picks by terminal.

    Without `stream`, lines go to whatever `sys.stderr` is at the time: a live display that takes
    stderr over (the demo's progress line, rich's `Live`) prints them above itself instead of
    having them written over it.
    """
    global _threshold, _pending, _configured
    _configured = True
    on_terminal = _is_terminal(stream if stream is not None else sys.stderr)
    settings = _Settings(
        level=_level(verbosity, on_terminal),
        as_json=not on_terminal if json is None else json,
        tty=on_terminal,
        stream=stream,
    )
    with _STATE_LOCK:
        if "structlog" in sys.modules:
            _threshold, _pending = 0, None
            _apply(settings)
        else:
            _threshold, _pending = settings.level, settings
    return settings.as_json


def get_logger(name: str | None = None) -> Logger:
    """A logger; `name` (e.g. the module) is added to every event as `logger`.

    Safe to call at import time: nothing is loaded or looked up until a call is written.
    """
    return Logger(name)


class Logger:
    """`log.info("page_committed", pages=7)`: structlog's methods; a line to write loads it."""

    __slots__ = ("_name", "_structlog")

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._structlog: Any = None

    def debug(self, event: str, **fields: Any) -> None:
        self._write(DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._write(INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write(WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write(ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the exception being handled (its traceback)."""
        self._write(ERROR, "exception", event, fields)

    def _write(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if not _configured and "structlog" not in sys.modules:
            configure_logging()
        if _threshold <= level:
            getattr(self._logger(), method)(event, **fields)

    def _logger(self) -> Any:
        if _pending is not None:
            _apply_pending()
        if self._structlog is None:
            from choreo_ingest.log_setup import structlog_logger

            self._structlog = structlog_logger(self._name)
        return self._structlog


def configure_structlog_now() -> None:
    """Load structlog and give it the settings `configure_logging` was told, before any line.

    For code that logs through structlog itself, as a provider plugin may: unconfigured,
    structlog prints every level to stdout, which carries data only (and cron mails it).
    """
    if not _configured:
        configure_logging()
    if _pending is not None:
        _apply_pending()


def _apply_pending() -> None:
    global _pending
    with _STATE_LOCK:
        if _pending is not None:
            _apply(_pending)
            _pending = None


def _apply(settings: _Settings) -> None:
    from choreo_ingest.log_setup import configure

    configure(
        level=settings.level,
        as_json=settings.as_json,
        tty=settings.tty,
        stream=settings.stream,
        redactor=_REDACTOR,
    )


def _level(verbosity: int, on_terminal: bool) -> int:
    if verbosity >= 2:
        return DEBUG
    if verbosity == 1 or on_terminal:
        return INFO
    return WARNING


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or stream-like objects without a terminal
        return False


QUIET_SECONDS = 60.0
"""At most one line this often about a failure that may repeat at every turn of a loop."""


class Throttle:
    """Counts something that happens, and says when a line about it is due: the first time,
    then no sooner than `interval` seconds after the line before."""

    def __init__(self, clock: Clock, interval: float = QUIET_SECONDS) -> None:
        self._clock = clock
        self._interval = interval
        self._next_line_at: float | None = None
        self._count = 0

    def count(self) -> int:
        """Counts one more; how many there were since the last line (this one too) if a line is
        due now, else 0."""
        self._count += 1
        now = self._clock.monotonic()
        if self._next_line_at is not None and now < self._next_line_at:
            return 0
        self._next_line_at = now + self._interval
        counted, self._count = self._count, 0
        return counted
