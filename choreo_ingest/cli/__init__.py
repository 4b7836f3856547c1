"""The command line: parse, call, render, exit.

`main` is what the `choreo-ingest` script runs. It takes SIGTERM as an interrupt (exit 130)
before it imports the application (typer, rich and the commands take a few tenths of a second),
so a call stopped in its first moments ends like any other interrupted call.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

INTERRUPTED = 130
"""`ExitCode.INTERRUPTED`, spelt out: the enum lives in the module this one has not loaded yet."""


def main(argv: list[str] | None = None) -> None:
    """Run one command (`argv`, default the process's arguments), then exit with its code."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        from choreo_ingest.cli.app import main as run
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    run(argv)


def __getattr__(name: str) -> Any:
    if name == "app":  # `from choreo_ingest.cli import app`, loaded when asked for
        from choreo_ingest.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
