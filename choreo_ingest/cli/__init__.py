"""The command line: parse, call, render, exit.

`main` is what the `choreo-ingest` script runs. It takes SIGTERM as an interrupt (exit 130)
before it imports anything else, so a call stopped in its first moments ends like any other
interrupted call. A `run` with nothing due that the previous one answered alike is answered from
what it kept (`idle_answer`), before anything else is imported. The calls made most often (a
`run` with nothing due, `status --json`, ...) are answered by the lean entry (`cli/lean.py`); the
rest by the typer application (`cli/app.py`), whose imports (typer, rich, the commands) take a
few tenths of a second.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy: True)

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

INTERRUPTED = 130
"""`ExitCode.INTERRUPTED`, spelt out: the enum lives in the module this one has not loaded yet."""


def main(argv: list[str] | None = None) -> None:
    """Run one command (`argv`, default the process's arguments), then exit with its code."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args = sys.argv[1:] if argv is None else list(argv)
    code: int | None = None
    try:
        if answered_as_kept(args):
            ignore_late_signals()
            sys.exit(code := 0)
        with _no_collection():
            from choreo_ingest.cli.failures import reported
            from choreo_ingest.cli.lean import lean_main
            from choreo_ingest.cli.output import StdoutFailed, flush_stdout, stdout_in_utf8
        stdout_in_utf8()
        code = lean_main(args)
        if code is not None:
            ignore_late_signals()
            try:
                flush_stdout()
            except StdoutFailed as failed:  # what the command did stands; its output is lost
                code = reported(failed, False, {})
            sys.exit(code)
        with _no_collection():
            import_libraries_lightly()
            from choreo_ingest.cli.app import main as run
    except (KeyboardInterrupt, RuntimeError) as error:
        from choreo_ingest.errors import interrupted

        if not interrupted(error):
            raise
        ignore_late_signals()  # the code is decided: a second signal must not cut its report
        if code is None:  # nothing answered yet
            report_early_interrupt(args)
        sys.exit(INTERRUPTED)
    run(args)  # ignores late signals itself, once its code is decided


def answered_as_kept(args: list[str]) -> bool:
    """Whether `args` was a `run` with nothing due, answered from what the last such run kept
    (`idle_answer`): a few milliseconds, where deciding costs the imports of everything below."""
    # The one wall-clock read outside clock.py, whose datetime and typing this call does not
    # need; `answered` takes the time as an argument, as everything else takes a Clock.
    now = time.time()  # noqa: TID251
    try:
        from choreo_ingest.idle_answer import answered

        return answered(args, os.environ, now)
    except Exception:  # a kept answer only saves time: the lean entry decides, and reports
        return False


def ignore_late_signals() -> None:
    """Ignore SIGTERM and SIGINT once the command has its exit code: Python's own end puts back
    the default handlers of those it handles, and a signal then would end the process as killed
    (143), whatever the command did and said (its `--json` document printed already)."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)


def report_early_interrupt(args: list[str]) -> None:
    """An interrupt that landed before any command could report it (while modules load), said
    as a command says one: a line on stderr, and with --json the one document a script waits
    for."""
    try:
        from choreo_ingest.cli.failures import command_fields, reported

        reported(KeyboardInterrupt(), *command_fields(args))
    except KeyboardInterrupt:  # a second signal: leave quietly
        pass


def import_libraries_lightly() -> None:
    """Import httpx and httpcore without what they load for features choreo-ingest never uses
    (`light_imports`): a tenth of a second or more of every call that bursts. structlog is
    loaded by `logs`, the same way, only for a line to write."""
    from choreo_ingest.light_imports import import_without

    import_without("httpx", ("httpx._main",))
    import_without("httpcore", ("trio",))  # httpx imports it when it first builds a client


class _no_collection:  # noqa: N801 - used as a function is: `with _no_collection():`
    """Imports allocate much and free next to nothing: a cycle collection meanwhile (one per 700
    new objects) is wasted work, a tenth of what a `run` with nothing due costs. (A class, not
    a `contextmanager`: contextlib is not loaded yet when a kept answer ends the call.)"""

    def __enter__(self) -> None:
        gc.disable()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        gc.enable()


def __getattr__(name: str) -> Any:
    if name == "app":  # `from choreo_ingest.cli import app`, loaded when asked for
        from choreo_ingest.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
