"""A second run taking the PostgreSQL run lock while the first still holds it, as a pooler in
transaction mode lets it (README: "Run on more than one host"): the advisory lock stays with a
server connection that then serves the second host, for which `pg_try_advisory_lock` succeeds
because the lock is re-entrant within that session. Simulated by making the second run's
`advisory_lock_try` say yes; everything after it (the claim of the store) is the real thing.

Imported by the tests, and by a process the CLI tests start (`TAKEN_OVER_CLI`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest.mock import patch

from choreo_ingest.store import PostgresLocation, Store
from choreo_ingest.store.pg_connection import PgConnection


@contextmanager
def second_run(location: PostgresLocation) -> Iterator[Store]:
    """The store as a second host's run opens it through the pooler: the run lock "taken"
    although another run holds it, the store migrated (and so claimed), held until exit."""
    with ExitStack() as stack:
        with patch.object(PgConnection, "advisory_lock_try", return_value=True):
            store = stack.enter_context(location.open_locked())
        store.migrate()
        yield store


@contextmanager
def taken_over_after_migrating(url: str) -> Iterator[list[Store]]:
    """Whatever migrates a PostgreSQL store under the run lock from now on (every command that
    writes does it first) finds, right after, a second run holding the store at `url` (kept
    until exit, listed in the yielded list): each write after that is one made while another
    run holds the store."""
    seconds: list[Store] = []
    real_migrate = Store.migrate
    with ExitStack() as stack:

        def migrate(store: Store) -> list[str]:
            applied = real_migrate(store)
            if store.dialect == "postgres" and not stack_entered:
                stack_entered.append(True)  # the second run's own migrate comes back here
                seconds.append(stack.enter_context(second_run(PostgresLocation(url))))
            return applied

        stack_entered: list[bool] = []
        stack.enter_context(patch.object(Store, "migrate", migrate))
        yield seconds


TESTS = Path(__file__).resolve().parent
TAKEN_OVER_CLI = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from pg_takeover import taken_over_after_migrating
from choreo_ingest.cli import main
with taken_over_after_migrating(sys.argv[1]):
    main(sys.argv[2:])
"""
"""`python -c TAKEN_OVER_CLI URL ARGS...`: the CLI with ARGS, a second run taking the store at
URL over as soon as the command has migrated it."""
