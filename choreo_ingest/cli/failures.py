"""An error turned into what the user sees: one line on stderr (and with --json, one document
on stdout) and an exit code. The typer commands (`common.reported_errors`), the lean entry and
the lean `run` (`run_flow`) all report through `reported`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from choreo_ingest.cli.exit_codes import ExitCode, exit_code_for
from choreo_ingest.cli.output import error_line, print_json
from choreo_ingest.errors import ChoreoIngestError
from choreo_ingest.models import RunOutcome

RUN_ERROR_FIELDS = {"outcome": RunOutcome.ERROR.value, "providers": []}
"""What `run --json` prints besides `exitCode` and `error` when it fails before any burst."""
ERROR_FIELDS: dict[str, Mapping[str, Any]] = {
    "run": RUN_ERROR_FIELDS,
    "refresh": RUN_ERROR_FIELDS,
    "health": {"healthy": False},
    "check": {"ok": False, "checks": []},
    "event": {"stored": 0, "rejected": []},
}
"""A command's usual keys that its `--json` error document carries (a usage error's too)."""


def reported(error: BaseException, as_json: bool, fields: Mapping[str, Any]) -> int:
    """Say what went wrong; returns the exit code. A bug is named as one, its traceback at -vv."""
    if isinstance(error, ChoreoIngestError):
        message, code = str(error), exit_code_for(error)
    elif isinstance(error, KeyboardInterrupt):
        message, code = "interrupted", ExitCode.INTERRUPTED
    else:
        from choreo_ingest.logs import get_logger  # not on the lean entry's idle path

        get_logger("choreo_ingest.cli").debug("internal_error", exc_info=error)
        message = (
            f"internal error: {type(error).__name__}: {error} (a bug; run with -vv for details)"
        )
        code = ExitCode.INTERNAL_ERROR
    error_line(message)
    if as_json:
        if "outcome" in fields and code in _OUTCOME_OF:  # the outcome says what happened
            fields = {**fields, "outcome": _OUTCOME_OF[code]}
        print_json({**fields, "exitCode": int(code), "error": message})
    return int(code)


_OUTCOME_OF = {
    ExitCode.INTERRUPTED: RunOutcome.INTERRUPTED.value,
    ExitCode.LOCKED: RunOutcome.LOCKED.value,
}
