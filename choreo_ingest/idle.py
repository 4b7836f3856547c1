"""`run` with nothing due: most cron calls (59 of 60 while a provider rests), answered from the
stored state before anything a burst needs is imported.

`run_if_idle` takes the run lock and reads the providers' stored state. When a `run` would only
rewrite the metrics textfile, it does that and returns True. When there is anything else to do
(a provider due, events waiting, a refresh requested, the YAML mirror behind, changes to prune,
a migration, a provider that is not built in) or anything is wrong (the lock held, a config or
state error), it changes nothing (on PostgreSQL, opening a database without the schema makes the
empty schema, as the full run's open would next) and returns False: the full run
(`invocation.run_once`) then does the work, or reports the problem, as it always has. The two
cannot disagree on what is due: both ask `schedule.decide`, and neither waits out a cycle begun
on another server (`baseUrl`).

Having found nothing due, it keeps its answer (`keep_answer`), which the next calls take
before any of this is imported (`idle_answer`) while nothing it read has changed.

This module's imports are the idle call's whole cost; `tests/test_idle.py` pins them.
"""

from __future__ import annotations

import marshal
import os
from pathlib import Path
from typing import NamedTuple

from choreo_ingest.api_address import source_address
from choreo_ingest.cache_files import ANSWER_SUFFIX, file_identity, kept_file
from choreo_ingest.clock import Clock
from choreo_ingest.config import Config, require_api
from choreo_ingest.config_file import kept_document
from choreo_ingest.config_values import referenced_variables
from choreo_ingest.errors import ChoreoIngestError, LockWaitTimedOut
from choreo_ingest.files import make_directories, replace_atomically
from choreo_ingest.idle_answer import (
    CHOOSING_VARIABLES,
    KEPT_SECONDS,
    environment_digest,
    go_float,
    installed,
)
from choreo_ingest.metrics import TEXTFILE_MODE, render_metrics, write_textfile
from choreo_ingest.mirror_marker import MARKER, first_entity_file, read_marker
from choreo_ingest.models import (
    EVENT_RETRIES_FACT,
    EVENTS_HELD_FACT,
    REFRESH_REQUESTED_FACT,
    UNAVAILABLE_FACT,
    cycle_source,
)
from choreo_ingest.providers.registry import BUILT_IN
from choreo_ingest.reporting import run_metrics
from choreo_ingest.retention import change_log_prunable
from choreo_ingest.schedule import Burst, Wait, decide, in_cycle, refresh_waits
from choreo_ingest.store import (
    SCHEMA_VERSION,
    SqliteLocation,
    StateLocation,
    Store,
    position_name,
)
from choreo_ingest.store.damage_note import SUFFIX as DAMAGE_SUFFIX
from choreo_ingest.store.run_lock import lock_path_for
from choreo_ingest.store.write_mark import Look, state_identity

WINDOWED_FACTS = (EVENTS_HELD_FACT, EVENT_RETRIES_FACT)
"""Facts whose say changes within a window of time (events held until a time no further than
the longest backoff step ahead, an object's events waiting alone): no answer is kept while a
provider has one."""


class IdleRead(NamedTuple):
    """What an idle run read and wrote, which its kept answer is made of."""

    store: Store
    config: Config
    state: SqliteLocation
    now: float
    look: Look
    """Read first (`Store.look`): whatever is committed after it changes it."""
    data: bytes | None
    """The textfile written (None: no `metrics.textfile`)."""
    mirror: list[list[object]] | None
    """The mirror's files the decision read, by identity, as they were before it read them
    (`mirror_identities`; None: none to keep an answer by)."""


class Keeping(NamedTuple):  # not a dataclass: each costs this entry a millisecond to define
    """What a `run` that may keep its answer knew before it loaded the config."""

    config: str
    """The config file's absolute path, as `idle_answer.config_path` gives it."""
    identity: list[int]
    """Its identity before it was read: a change while it was read then shows."""
    db: str | None = None
    """The `--db` given, as given (with the working directory, which the answer holds, it
    names the state the same way again)."""


def run_if_idle(
    config: Config, state: StateLocation, clock: Clock, keeping: Keeping | None = None
) -> bool:
    """Do what a `run` with nothing to do does (rewrite the metrics textfile) and return True,
    or change nothing and return False (the full run has work to do, or a problem to report).
    With `keeping` (a plain `run` of a config file), keep the answer
    for the calls that follow (`keep_answer`)."""
    if any(name not in BUILT_IN for name in config.providers):
        return False  # another package's provider may do its own work when loaded
    try:
        require_api(config)
        if not state.might_exist():
            return False  # made by the full run, which says where
        with state.open_locked() as store:
            look = store.look()  # first: whatever is committed after it changes it
            if look is None and keeping is not None and isinstance(state, SqliteLocation):
                look = store.new_write_mark()  # once, for a state from before marks
            mirror = [] if keeping is None else mirror_identities(config)  # before it is read
            now = clock.now()
            if not nothing_to_do(store, config, now):
                return False
            data = None
            if config.metrics_textfile is not None:
                data = render_metrics(run_metrics(store, config, now), config.metrics_labels)
                write_textfile(config.metrics_textfile, data)
            if keeping is not None and look is not None and isinstance(state, SqliteLocation):
                keep_answer(keeping, IdleRead(store, config, state, now, look, data, mirror))
    except LockWaitTimedOut:  # the full run would wait out lock_timeout again: said now
        raise
    except ChoreoIngestError:  # the lock held, a config or state problem: the full run says so
        return False
    return True


def nothing_to_do(store: Store, config: Config, now: float) -> bool:
    """Whether a run now would find every configured provider waiting and nothing else to do."""
    if store.schema_version() != SCHEMA_VERSION:
        return False
    for name in config.providers:
        facts, record = store.facts(name), store.load_provider(name)
        if UNAVAILABLE_FACT in facts:
            return False
        if REFRESH_REQUESTED_FACT in facts and not refresh_waits(record):
            return False
        if store.pending_event_count(name):
            return False
        source = cycle_source(facts, record.cycle_id)
        if source is not None and in_cycle(record) and source != _source(config):
            return False  # begun on another server: the engine begins it again at once
        if isinstance(decide(record, config.incremental, now), Burst):
            return False
    directory = config.catalog_directory
    if directory is not None:
        newest = store.change_bounds()[1]
        if not directory.is_dir() or store.get_position(position_name(directory)) != newest:
            return False
        marker = read_marker(directory, store, newest)
        behind = marker.position is not None and marker.position < newest
        if marker.problem is not None or behind:
            return False
    return not change_log_prunable(store, config, now)


def _source(config: Config) -> str:
    """What the built-in provider (the only one the idle call answers for) reads."""
    return source_address(config.openchoreo.base_url or "")


def keep_answer(keeping: Keeping, read: IdleRead) -> None:
    """Keep the answer of this idle run (`idle_answer`), read from the state at `look`: until
    the first wait ends (at most KEPT_SECONDS), if a run then would still find nothing to do
    and write the same textfile but for its time; else remove an answer kept before. Nothing
    is kept for what the kept answer cannot check (a state noted damaged). Keeping
    only saves later calls time: a failure here (no working directory any more, a full disk)
    leaves the next call to decide, as this one did."""
    kept_at = kept_file(keeping.config, ANSWER_SUFFIX, os.environ)
    if kept_at is None:
        return
    answer = Path(kept_at)
    try:
        kept = None
        if not _damage_noted(read.state):
            kept = _answer_to_keep(keeping, read)
        if kept is None:
            answer.unlink(missing_ok=True)
            return
        make_directories(answer.parent, 0o700)
        replace_atomically(answer, marshal.dumps(kept), 0o600)
    except OSError:
        return


def _answer_to_keep(keeping: Keeping, read: IdleRead) -> dict[str, object] | None:
    store, config, state, now, mirror = read.store, read.config, read.state, read.now, read.mirror
    if mirror is None:
        return None
    until = now + KEPT_SECONDS
    for name in config.providers:
        decision = decide(store.load_provider(name), config.incremental, now)
        if not isinstance(decision, Wait) or decision.until is None:
            return None
        until = min(until, decision.until)
    names = {*config.providers, *store.provider_names()}
    if any(fact in store.facts(name) for name in names for fact in WINDOWED_FACTS):
        return None
    # Past WINDOWED_FACTS, what a run decides and writes changes as time passes only once a
    # time is crossed (a wait's end, a health problem's allowance): if it is the same at both
    # ends of the answer's time, it is the same between them.
    last = max(now, until - 0.001)
    if until <= now or not nothing_to_do(store, config, last):
        return None
    chunks: list[str] = []
    if read.data is not None:
        chunks = read.data.decode().split(go_float(now))
        metrics = run_metrics(store, config, last)
        later = render_metrics(metrics, config.metrics_labels)
        if len(chunks) != len(metrics) + 1 or later != go_float(last).join(chunks).encode():
            return None
    variables = _variables(keeping)
    if variables is None:
        return None
    real = Path(os.path.realpath(state.path))
    identity = state_identity(str(real))
    if identity is None:
        return None
    textfile, salt = config.metrics_textfile, os.urandom(16)
    return {
        "format": installed(),
        "config": keeping.config,
        "identity": keeping.identity,
        "db": keeping.db,
        "cwd": str(Path.cwd()),
        "user": os.geteuid(),
        "variables": variables,
        "salt": salt,
        "environment": environment_digest(variables, os.environ, salt),
        "files": [*([path, file_identity(path)] for path in _files_read(config)), *mirror],
        "state_given": str(state.path.absolute()),
        "state": str(real),
        "state_identity": identity,
        "lock": str(lock_path_for(real).absolute()),
        "look": read.look,
        "made": now,
        "until": until,
        "textfile": None if textfile is None else str(textfile.absolute()),
        "chunks": chunks,
        "mode": TEXTFILE_MODE,
    }


def _variables(keeping: Keeping) -> list[str] | None:
    """The environment variables the config file refers to (in its kept parsed copy, of the
    file as it was loaded; the API secrets' too: a run refuses one unset or unusable), and
    those that choose the config, the state and the cache; None where no such copy is kept."""
    document = kept_document(Path(keeping.config), keeping.identity)
    if document is None:
        return None
    return sorted({*referenced_variables(document), *CHOOSING_VARIABLES})


def _damage_noted(state: SqliteLocation) -> bool:
    """A note of damage beside the state, even one a `check` would find stale (it names another
    file): the kept answer's look-up sees only that one is there."""
    real = state.real_path
    return real.with_name(real.name + DAMAGE_SUFFIX).exists()


def mirror_identities(config: Config) -> list[list[object]] | None:
    """What `nothing_to_do` reads of the YAML mirror, by identity (`file_identity`): the
    directory (replaced, remounted, an entry added or removed there: `rm -r catalog/*`), its
    marker, and the first entity file in it (`holds_entity_files` found it, so while it is
    there its answer stands). Empty without a mirror; None for a mirror with no entity file,
    which keeps no answer: a decision that found it in step may have seen one written since."""
    directory = config.catalog_directory
    if directory is None:
        return []
    first = first_entity_file(directory)
    if first is None:
        return None
    watched = [str(directory.absolute()), str((directory / MARKER).absolute()), first]
    return [[str(Path(path).absolute()), file_identity(path)] for path in watched]


def _files_read(config: Config) -> list[str]:
    """The files a run reads before it decides (`config.load_config`'s CA bundle check,
    `require_api`'s secret files): one gone, replaced or edited since may be a run's error."""
    auth = config.openchoreo.auth
    oauth_file = None if auth.oauth is None else auth.oauth.client_secret_file
    found = (config.openchoreo.ca_bundle, auth.token_file, oauth_file)
    return [str(Path(path).absolute()) for path in found if isinstance(path, str | Path)]
