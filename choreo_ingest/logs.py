"""structlog configuration, called once by the CLI; secrets never reach the log stream.

Logs go to stderr only (stdout carries command output such as `--json`). On a terminal they are
rendered for people at INFO; otherwise (cron, systemd) they are JSON lines at WARNING, because cron
mails any output and a successful run should stay quiet. Events are past-tense snake_case with
fields: `log.info("page_committed", pages=7, entities=50)`.

Two layers keep credentials out:
- `Redactor` replaces the value of any key named like a credential (token, authorization,
  password, secret, api key, cookie), at any depth, and every registered secret in any string
  value (`register_secret`: the CLI registers the configured secrets, and every token the
  credentials learn at runtime);
- the rendered line is scrubbed once more, which also covers secrets inside `repr()` of objects.

A registered secret is masked as a whole token, never inside a word: a one-letter token must not
turn `projects` into `projec***s`. It counts where it stands between the ends of the text and
characters no token holds (whitespace, quotes, `=:,;()[]{}<>&?#/` and backslash, or a full stop
that ends a sentence). A secret shorter than four characters is masked only where a whole value
equals it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

REDACTED = "***"
SENSITIVE_KEY = re.compile(r"token|authorization|password|passwd|secret|api[-_]?key|cookie", re.I)


MIN_SEARCHED_LENGTH = 4
"""Shorter secrets are masked only where a whole value equals them: searched for inside text,
they would match all over it (and a secret that short is guessable anyway)."""

# Characters that cannot be part of a token, so a secret next to one stands alone. The backslash
# and the escapes \n, \r, \t before a secret cover JSON and repr() text (`\"tok\"`, `\ntok`).
_APART = r"""\s'"`=:,;()\[\]{}<>&?#/\\"""
_BEFORE = rf"(?:(?<![^{_APART}])|(?<=\\[nrt]))"
_AFTER = rf"""(?=[{_APART}]|[.!]?$|[.!][\s'"\\])"""  # a full stop or ! that ends a sentence


class Redactor:
    """A structlog processor that masks credential-named keys and registered secret values."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, secret: str) -> None:
        """Mask `secret` from now on; safe to call from any thread (credentials do, at runtime)."""
        if not secret or secret in self._secrets:
            return
        with self._lock:
            secrets = self._secrets | {secret}
            searched = sorted((s for s in secrets if len(s) >= MIN_SEARCHED_LENGTH), key=len)
            alternatives = "|".join(re.escape(s) for s in reversed(searched))  # longest first
            pattern = re.compile(f"{_BEFORE}(?:{alternatives}){_AFTER}") if searched else None
            self._secrets, self._pattern = secrets, pattern

    def scrub(self, text: str) -> str:
        """`text` with every registered secret that stands as a whole token replaced by `***`."""
        if text in self._secrets:
            return REDACTED
        pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None else text

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
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


_REDACTOR = Redactor()


def register_secret(value: str) -> None:
    """Mask `value` wherever it stands as a whole token in later log output.

    The CLI registers `config.secret_values(config)` and passes this function as the
    credentials' `on_secret`, so token-file contents and issued access tokens are masked too.
    """
    _REDACTOR.register(value)


def configure_logging(
    *, verbosity: int = 0, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Route structlog to `stream` (default: stderr as it is when each line is written).

    `verbosity`: 0 -> WARNING off a terminal, INFO on one; 1 (`-v`) -> INFO; 2+ (`-vv`) -> DEBUG.
    `json`: force JSON lines (True) or the console renderer (False); None picks by terminal.

    Without `stream`, lines go to whatever `sys.stderr` is at the time: a live display that takes
    stderr over (the demo's progress line, rich's `Live`) prints them above itself instead of
    having them written over it.
    """
    on_terminal = _is_terminal(stream if stream is not None else sys.stderr)
    structlog.configure(
        processors=_processors(as_json=not on_terminal if json is None else json, tty=on_terminal),
        wrapper_class=structlog.make_filtering_bound_logger(_level(verbosity, on_terminal)),
        logger_factory=_NamedPrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A logger; `name` (e.g. the module) is added to every event as `logger`.

    Safe to call at import time: configuration is looked up on each call, not when created.
    """
    factory_args = (name,) if name else ()
    return cast(FilteringBoundLogger, structlog.get_logger(*factory_args))


class _NamedPrintLogger(structlog.PrintLogger):
    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    """`structlog.PrintLoggerFactory` that keeps `get_logger`'s name for `_add_logger_name`.

    (`structlog.get_logger(logger=...)` is not possible: `logger` is one of its own parameters.)
    """

    def __init__(self, file: TextIO | None) -> None:
        self._file = file
        """None: `sys.stderr` when the logger is made, i.e. at every log call (nothing caches)."""

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        file = self._file if self._file is not None else sys.stderr
        return _NamedPrintLogger(file, str(args[0]) if args else None)


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _level(verbosity: int, on_terminal: bool) -> int:
    if verbosity >= 2:
        return logging.DEBUG
    if verbosity == 1 or on_terminal:
        return logging.INFO
    return logging.WARNING


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or stream-like objects without a terminal
        return False


def _processors(*, as_json: bool, tty: bool) -> list[Processor]:
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=tty and "NO_COLOR" not in os.environ,
            exception_formatter=structlog.dev.plain_traceback,
        )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks become text here, before redaction, so secrets in them are masked too
        # (and rich's default formatter, which prints local variables, never runs).
        structlog.processors.format_exc_info,
        _REDACTOR,
        _scrubbed(renderer),
    ]


def _scrubbed(renderer: Processor) -> Callable[[WrappedLogger, str, EventDict], Any]:
    def render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        line = renderer(logger, method_name, event_dict)
        return _REDACTOR.scrub(line) if isinstance(line, str) else line

    return render
