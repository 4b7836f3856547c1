"""structlog's configuration for `logs`: processors, renderers, the stream. Loaded only when a
line is to be written (or structlog is loaded already): importing structlog costs a burst more
CPU than anything else it loads beyond httpx.

Lines go to the stream given, else to whatever `sys.stderr` is when each line is written. JSON
lines or the console renderer (colours on a terminal unless `NO_COLOR`); tracebacks become text
before redaction, so secrets in them are masked too; the rendered line is scrubbed once more.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, cast

from choreo_ingest.light_imports import import_without

if TYPE_CHECKING:
    from choreo_ingest.logs import Redactor

# rich.traceback too: under typer, rich itself is loaded by the time a line is written.
import_without("structlog", ("rich", "rich.traceback"))

import structlog  # noqa: E402  # loaded above without rich
from structlog.typing import EventDict, Processor, WrappedLogger  # noqa: E402


def configure(
    *, level: int, as_json: bool, tty: bool, stream: TextIO | None, redactor: Redactor
) -> None:
    structlog.configure(
        processors=_processors(as_json=as_json, tty=tty, redactor=redactor),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_NamedPrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def structlog_logger(name: str | None) -> Any:
    """structlog's lazy logger: configuration is looked up on each call, not when it is made."""
    return structlog.get_logger(*((name,) if name else ()))


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
        # Started with stderr closed (`2>&-`): structlog would print to stdout, which carries data.
        return _NamedPrintLogger(file or _NOWHERE, str(args[0]) if args else None)


class _Nowhere(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


_NOWHERE = cast(TextIO, _Nowhere())


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _processors(*, as_json: bool, tty: bool, redactor: Redactor) -> list[Processor]:
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb",
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
        redactor,
        _scrubbed(renderer, redactor.scrub),
    ]


def _scrubbed(
    renderer: Processor, scrub: Callable[[str], str]
) -> Callable[[WrappedLogger, str, EventDict], Any]:
    def render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        line = renderer(logger, method_name, event_dict)
        return scrub(line) if isinstance(line, str) else line

    return render
