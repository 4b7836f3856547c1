"""`choreo-ingest check`: is everything in place for `run`? Each check says what is wrong.

The checks of the state and output paths are here; each provider checks its own source
(`CheckingProvider.preflight`: for OpenChoreo, reachability, the API generation, auth, whether a
page fits in a burst).
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from functools import partial
from pathlib import Path

from choreo_ingest.clock import Clock
from choreo_ingest.config import (
    OPEN_EVENTS_WARNING,
    SERVE_TOKEN_ENV,
    Address,
    Config,
    read_serve_secret,
    secret_files,
    serve_secret,
    short_secret,
)
from choreo_ingest.disk_space import space_check, state_room_wanted
from choreo_ingest.errors import ChoreoIngestError, ConfigError, StateError
from choreo_ingest.files import absent_directory, not_a_regular_file
from choreo_ingest.logs import scrub_secrets
from choreo_ingest.models import Check
from choreo_ingest.providers.base import CheckingProvider
from choreo_ingest.providers.registry import load_provider
from choreo_ingest.store import (
    PostgresLocation,
    SqliteLocation,
    StateLocation,
    StateRef,
    state_location,
)


def run_checks(
    config: Config, state: StateRef, clock: Clock, *, state_key: str | None = None
) -> list[Check]:
    """Every check, in order. `state_key`: the name of the state store's check, where it came
    from (`--db`, `$CHOREO_INGEST_DB`: `config.state_origin`); else its kind's config key,
    `state.url` or `state.path`."""
    checks: list[Check | None] = [
        Check("config", True, str(config.source or "no config file: defaults"))
    ]
    checks += [Check("config", True, warning, warning=True) for warning in config.warnings]
    for name in config.providers:
        try:
            provider = load_provider(name, config)
        except ChoreoIngestError as error:
            checks.append(Check(name, False, str(error)))
            continue
        if isinstance(provider, CheckingProvider):
            # Secrets learnt on the way (a proxy's password that its answer quotes) masked.
            found = provider.preflight(clock)
            checks += [replace(check, detail=scrub_secrets(check.detail)) for check in found]
    checks += _secret_file_checks(config)
    checks += _serve_checks(config)
    location = state_location(state)
    if state_key is None:
        state_key = "state.url" if isinstance(location, PostgresLocation) else "state.path"
    if isinstance(location, PostgresLocation) and location.password_error is not None:
        problem = str(location.password_error).removeprefix("state.passwordFile: ")
        detail = f"{problem} ({state_key}: not checked until this passes)"
        checks.append(Check("state.passwordFile", False, detail))
    else:
        checks.append(_state_check(location, state_key))
    if isinstance(location, SqliteLocation):
        wanted = state_room_wanted(location.real_path)
        checks.append(space_check(state_key, location.real_path, wanted=wanted, state_store=True))
    if config.metrics_textfile is not None:
        checks.append(_writable("metrics.textfile", config.metrics_textfile))
        checks.append(space_check("metrics.textfile", config.metrics_textfile, wanted=0))
    elif config.metrics_labels:
        inert = "has no effect: no metrics.textfile (serve's /metrics carries no such labels)"
        checks.append(Check("metrics.labels", True, inert, warning=True))
    if config.catalog_directory is not None:
        checks.append(_creatable("catalog.directory", config.catalog_directory))
        checks.append(space_check("catalog.directory", config.catalog_directory))
    return [check for check in checks if check is not None]


def _secret_file_checks(config: Config) -> list[Check]:
    """A warning for each secret file any user may read (a config file holding a secret gets
    one at load); a missing or unreadable one is the provider's check's to report. Group bits
    are left alone: a Kubernetes Secret is mounted root:fsGroup 0440, read-only."""
    checks = []
    for key, path in secret_files(config):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o007:
            detail = f"{path} is readable by others (mode {mode:04o}); chmod 600 it"
            checks.append(Check(key, True, detail, warning=True))
    return checks


def _serve_checks(config: Config) -> list[Check]:
    """`serve`'s own secret files, read as it reads them when it starts, and its address: a
    missing, unreadable or empty file, or an address beyond loopback without a token, stops it
    (exit 2, which its unit does not restart). A warning, not a failure: `run` never reads
    them, and a cron job may share a config whose `serve` runs elsewhere."""
    token_env = os.environ.get(SERVE_TOKEN_ENV, "").strip()
    secrets = [
        ("serve.auth.tokenFile", partial(read_serve_secret, config.serve.token_file)),
        ("serve.events.secretFile", partial(read_serve_secret, config.serve.events_secret_file)),
    ]
    if config.serve.token_file is None and token_env:
        secrets.append((f"${SERVE_TOKEN_ENV}", partial(serve_secret, token_env)))
    checks = []
    for key, read in secrets:
        try:
            secret = read(key)
        except ConfigError as error:
            problem = str(error).removeprefix(f"{key}: ")
            detail = f"{problem}: `serve` would not start (`run` does not read it)"
            checks.append(Check(key, True, detail, warning=True))
            continue
        if secret is not None and (short := short_secret(secret)) is not None:
            checks.append(Check(key, True, f"the secret is {short}", warning=True))
    address = Address.parse(config.serve.listen)
    if config.serve.token_file is None and not token_env and not address.is_loopback:
        detail = (
            f"{address} is beyond loopback and no token is set (serve.auth.tokenFile or "
            f"${SERVE_TOKEN_ENV}): `serve` would not start without --insecure-no-auth"
        )
        checks.append(Check("serve.listen", True, detail, warning=True))
    if config.serve.events_secret_file is None and not address.is_loopback:
        detail = f"{address} is beyond loopback and there is {OPEN_EVENTS_WARNING}"
        checks.append(Check("serve.events.secretFile", True, detail, warning=True))
    token_set = config.serve.token_file is not None or bool(token_env)
    if config.serve.allowed_hosts and (token_set or not address.is_loopback):
        why = "a token is set" if token_set else f"{address} is beyond loopback"
        detail = f"has no effect: {why}, so `serve` answers requests for any name"
        checks.append(Check("serve.allowedHosts", True, detail, warning=True))
    return checks


def _state_check(location: StateLocation, key: str) -> Check:
    """Whether a run can write the state there: the paths (or the database's rights), the run
    lock, and a state already there opened read-only as `status` opens it, so that a file that
    is not a choreo-ingest state, or one of a newer schema, is refused here in `run`'s words; a
    state file's pages are read through (`quick_check`), so that damage `status` does not meet
    is found before a run meets it. A state an older release wrote passes with a warning: the
    next run migrates it, and until then the reading commands refuse it."""
    problem = location.write_problem()
    if problem is None and isinstance(location, SqliteLocation):
        problem = _not_a_file(location.path)
    pending: list[str] = []
    if problem is None:
        try:
            if location.exists():
                noted = location.noted_damage()
                with location.open(readonly=True, despite_damage=True) as store:
                    problem = store.damage(thorough=noted is not None)
                    pending = store.pending_migrations()
                if problem is None:  # what a run met is gone, or the note is of another file
                    location.forget_damage()
        except StateError as error:
            problem = str(error)
    if problem is None and pending:
        detail = (
            f"{location}: writable; {len(pending)} pending schema migration(s) of an older "
            "release's state, which the next `run` applies (until then `status`, `health`, "
            "`export` and `changes` refuse it): run `choreo-ingest migrate`"
        )
        return Check(key, True, detail, warning=True, state_store=True)
    detail = problem or f"{location}: writable"
    return Check(key, problem is None, detail, state_store=True)


def _creatable(key: str, directory: Path) -> Check:
    """A directory that exists and is writable, or could be created below one that is."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check(key, False, f"{directory}: {existing} is not a writable directory")
    return Check(key, True, f"{directory}: writable")


def _writable(key: str, path: Path) -> Check:
    directory = path.parent
    if not directory.is_dir():
        return Check(key, False, f"{path}: {absent_directory(directory)}")
    if not os.access(directory, os.W_OK | os.X_OK):
        return Check(key, False, f"{path}: directory {directory} is not writable")
    problem = _not_a_file(path)
    if problem is not None:
        return Check(key, False, problem)
    if path.exists() and not os.access(path, os.W_OK):
        return Check(key, False, f"{path}: not writable")
    return Check(key, True, f"{path}: writable")


def _not_a_file(path: Path) -> str | None:
    """Why `path` cannot be the file a run writes there (a directory, a FIFO, a device), or
    None: a regular file, or nothing yet. A symlink counts as what it points to."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # nothing there yet, or out of reach: the other checks say which
    if stat.S_ISDIR(mode):
        return f"{path}: is a directory; name a file in it"
    return not_a_regular_file(path, mode)
