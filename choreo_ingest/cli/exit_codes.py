"""Exit codes, in one place (documented in the README; `--json` carries the same outcome)."""

from __future__ import annotations

import enum
from collections.abc import Sequence

from choreo_ingest.cli.output import StdoutFailed
from choreo_ingest.errors import (
    AddressInUse,
    ChoreoIngestError,
    ConfigError,
    LockHeld,
    ProviderError,
    StateError,
    StateOutgrown,
)
from choreo_ingest.models import Check, RunOutcome


@enum.unique
class ExitCode(enum.IntEnum):
    OK = 0  # done: a burst ran, or nothing was due
    INTERNAL_ERROR = 1  # a bug (also: `health` found problems)
    USAGE = 2  # usage or configuration error; also a question answered no (nothing done)
    BURST_FAILED = 3  # upstream trouble; backoff scheduled
    STATE_ERROR = 4  # state store unreadable, newer schema, not writable
    OUTPUT_FAILED = 74  # stdout could not be written; what was done stands (EX_IOERR)
    LOCKED = 75  # another run holds the lock, or serve's port; nothing done (EX_TEMPFAIL); or
    # a newer release migrated a running serve's state: start it again
    INTERRUPTED = 130  # SIGTERM/SIGINT; the last page was checkpointed


RUN_OUTCOMES: dict[RunOutcome, ExitCode] = {
    RunOutcome.BURST: ExitCode.OK,
    RunOutcome.WAITING: ExitCode.OK,
    RunOutcome.FAILED: ExitCode.BURST_FAILED,
    RunOutcome.INTERRUPTED: ExitCode.INTERRUPTED,
    RunOutcome.LOCKED: ExitCode.LOCKED,
}
"""The code of each outcome a run reports; `RunOutcome.ERROR` has none of its own: its code is
the error's (`exit_code_for`)."""


def exit_code_for(error: BaseException) -> ExitCode:
    if isinstance(error, StdoutFailed):
        return ExitCode.OUTPUT_FAILED
    if isinstance(error, LockHeld | AddressInUse | StateOutgrown):
        return ExitCode.LOCKED
    if isinstance(error, StateError):
        return ExitCode.STATE_ERROR
    if isinstance(error, ConfigError):
        return ExitCode.USAGE
    if isinstance(error, ProviderError):
        return ExitCode.BURST_FAILED
    if isinstance(error, ChoreoIngestError):
        return ExitCode.USAGE
    return ExitCode.INTERNAL_ERROR


def check_exit_code(checks: Sequence[Check]) -> ExitCode:
    """`check`'s code: 0 when every check passed (warnings too); 4 when the state store's
    failed, whatever failed beside it (`run` opens the state store before anything else it
    checks); else 2 (the config, the API, an output path)."""
    failed = [item for item in checks if not item.ok]
    if not failed:
        return ExitCode.OK
    if any(item.state_store for item in failed):
        return ExitCode.STATE_ERROR
    return ExitCode.USAGE
