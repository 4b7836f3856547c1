"""Plain output: JSON documents and text on stdout, one-line errors on stderr.

An error or warning line is a log record (one JSON object, as `--log-json` writes them) where
logging is JSON: a log pipeline that parses stderr line by line and alerts on `level` sees it.

What the lean commands (`cli/lean.py`) print, without rich: `render` adds the tables and the
live line for people on top of these. A reader that closes stdout early (`export | head -1`) has
taken what it wanted: every write here turns that into StdoutClosed, a quiet exit 0. Any other
failed write (a full disk, an I/O error, stdout closed with `>&-`) is StdoutFailed: the
command's output is lost, and it says so in one line on stderr.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import signal
import sys
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from choreo_ingest.clock import SystemClock, log_timestamp


class StdoutClosed(SystemExit):
    """stdout's reader went away: the command stops here and exits 0, saying nothing.

    A SystemExit, so that no `except Exception` on the way out takes it for a bug.
    """

    def __init__(self) -> None:
        super().__init__(0)


class StdoutFailed(Exception):
    """stdout could not take what the command printed (`cannot write to stdout: No space left on
    device`). What the command did stands (a `run`'s committed pages); only its output is lost:
    `reported` says so on stderr alone (no JSON document to the stdout that just failed), with
    `ExitCode.OUTPUT_FAILED`.

    Not a ChoreoIngestError: the lean entry hands those to the full application, which would do
    the command (a `run`'s burst) a second time."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot write to stdout: {reason}")


def stdout_closed() -> NoReturn:
    _discard_stdout()
    raise StdoutClosed


def stdout_failed(error: OSError) -> NoReturn:
    """StdoutClosed for a reader gone (EPIPE), else StdoutFailed naming what the OS said."""
    if isinstance(error, BrokenPipeError):
        stdout_closed()
    _discard_stdout()
    raise StdoutFailed(error.strerror or str(error)) from error


def _discard_stdout() -> None:
    # The recipe of the Python docs (signal, "Note on SIGPIPE"): point stdout at /dev/null, so
    # the interpreter's last flush of what is still buffered cannot fail again at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing
        pass  # to redirect


def stdout_in_utf8() -> None:
    """JSON, NDJSON and YAML are UTF-8 whatever the locale says: a stdout set up for another
    encoding (a Latin-1 locale, PYTHONIOENCODING=ascii) would fail on the first name it cannot
    encode, halfway through an export. A terminal in such a locale shows the bytes as they come."""
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper) and codecs.lookup(out.encoding).name != "utf-8":
        out.reconfigure(encoding="utf-8", errors="surrogateescape")  # a path's bytes as given


def _stdout() -> TextIO:
    out = sys.stdout
    if out is None:  # the process was started with descriptor 1 closed (`>&-`)
        raise StdoutFailed("it is closed")
    return out


@contextmanager
def writing_stdout() -> Iterator[None]:
    """Writes to stdout inside (rich's too): a reader gone is StdoutClosed, any other failure
    StdoutFailed. Only writes belong inside: an OSError from anything else would be taken for
    stdout's."""
    _stdout()
    try:
        yield
    except OSError as error:
        stdout_failed(error)


def _write(text: str, *, flush: bool = False) -> None:
    out = _stdout()
    try:
        out.write(text)
        if flush:
            out.flush()
    except OSError as error:
        stdout_failed(error)


def stdout_is_tty() -> bool:
    """Whether stdout is a terminal (False when it is closed)."""
    return sys.stdout is not None and sys.stdout.isatty()


def stderr_is_tty() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
_document_stdout: weakref.ref[TextIO] | None = None
"""The stdout a JSON document was written to: it takes no second one (an error's)."""


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout, written whole: an interrupt (SIGINT, SIGTERM) that
    lands meanwhile waits until it is out (and is then raised as usual), so a script never reads
    a cut-off document followed by the interrupt's own."""
    global _document_stdout
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        _document_stdout = weakref.ref(_stdout())
        _write(text, flush=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def document_written() -> bool:
    """Whether this stdout has had its one JSON document (or the start of it) already."""
    return _document_stdout is not None and _document_stdout() is sys.stdout


def print_json_lines(rows: Iterable[Any]) -> None:
    """One compact JSON document a line; the rows are read between the writes (an export
    streams from the store), so only the writes are taken for stdout's failures."""
    for row in rows:
        _write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    flush_stdout()


def print_text(text: str) -> None:
    _write(text if text.endswith("\n") else text + "\n")


def flush_stdout() -> None:
    """Write out what is still buffered (StdoutClosed if the reader went away meanwhile,
    StdoutFailed if it cannot be written); nothing to do when stdout is closed."""
    out = sys.stdout
    if out is None:
        return
    try:
        out.flush()  # no write of "": a full disk refuses even a write of nothing
    except OSError as error:
        stdout_failed(error)


def error_line(message: str) -> None:
    """One line on stderr, never markup-interpreted (error texts contain brackets)."""
    _stderr_line("error", message)


def warning_line(message: str) -> None:
    """One line on stderr for what works but asks for a look."""
    _stderr_line("warning", message)


_lines_in_json: bool | None = None
"""Whether the lines above are JSON log records; None: as logging's default, JSON off a terminal
(what a call that never configures logging, such as a lean `status`, would log in)."""


def stderr_lines_in_json(as_json: bool | None) -> None:
    """Write error and warning lines as logging writes its records: the CLI passes what
    `configure_logging` decided (JSON or console), None for logging's default."""
    global _lines_in_json
    _lines_in_json = as_json


def ask(question: str) -> bool:
    """`question [y/N]: ` on stderr (stdout carries data only; click's prompt writes to stdout),
    the answer a line of stdin: only y or yes confirms; anything else, an empty line or the end of
    input (Ctrl-D) is no."""
    if sys.stderr is not None:
        sys.stderr.write(f"{question} [y/N]: ")
        sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in {"y", "yes"}


def one_line(text: str) -> str:
    """`text` with its control characters (and other unprintable ones) escaped, as `\\n` or
    `\\x1b`: a line break in a config key or a path cannot split the line that names it."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _stderr_line(level: str, message: str) -> None:
    if sys.stderr is None:  # started with descriptor 2 closed: nowhere to say it
        return
    text = one_line(message)
    as_json = not stderr_is_tty() if _lines_in_json is None else _lines_in_json
    if as_json:  # the keys, and their order, of the records `log_setup` renders
        record = {"message": text, "event": level, "level": level, "logger": "choreo_ingest.cli"}
        line = json.dumps({**record, "timestamp": log_timestamp(SystemClock().now())})
    else:
        line = f"choreo-ingest: {level}: {text}"
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()
