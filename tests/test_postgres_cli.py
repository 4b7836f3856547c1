"""The command line on a PostgreSQL state: the password file, and the extra when it is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pg_support import PgCluster, require_psycopg
from sim_support import one_error_line, plain, run_cli, write_config

SSLMODES = "`sslmode` takes disable, allow, prefer, require, verify-ca or verify-full"
EXPECTED_URL = "expected postgresql://[user[:password]@]host[:port]/database[?sslmode=...]"


def test_the_password_comes_from_the_password_file_and_is_never_shown(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    with pg_cluster.admin(database) as admin:
        admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {pg_cluster.password_user}')
    url = pg_cluster.password_url(pg_url)  # no password in it
    secret = tmp_path / "pg-password"
    write_config(
        tmp_path / "choreo-ingest.yaml",
        "http://127.0.0.1:9",
        state={"url": url, "passwordFile": str(secret)},
    )

    secret.write_text("wrong-password-123\n", encoding="utf-8")
    refused = run_cli("migrate", "--json", cwd=tmp_path, unset=["PGPASSWORD"])
    secret.write_text(pg_cluster.password + "\n", encoding="utf-8")
    migrated = run_cli("migrate", "--json", cwd=tmp_path, unset=["PGPASSWORD"])

    assert refused.returncode == 4
    assert "wrong-password-123" not in refused.stdout + refused.stderr
    assert migrated.returncode == 0, migrated.stderr
    document = json.loads(migrated.stdout)
    assert document["pending"] == []
    assert pg_cluster.password not in migrated.stdout + migrated.stderr


def test_check_fails_an_unreadable_password_file_and_still_runs_its_other_checks(
    tmp_path: Path,
) -> None:
    """Exit 2, a setting to mend, as `run` would exit: the state store's check, which would
    need the password, is left out and says so; the API and output paths are still checked.
    Nothing listens on either port: no server is needed to tell."""
    require_psycopg()
    write_config(
        tmp_path / "choreo-ingest.yaml",
        "http://127.0.0.1:9",
        state={"url": "postgresql://ingest@127.0.0.1:9/db", "passwordFile": "pg-password"},
        metrics={"textfile": str(tmp_path / "choreo_ingest.prom")},
    )

    done = run_cli("check", "--json", cwd=tmp_path, unset=["PGPASSWORD"])

    assert done.returncode == 2, done.stderr
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    failed = checks["state.passwordFile"]
    assert not failed["ok"]
    assert failed["detail"].startswith("cannot read ")
    assert failed["detail"].endswith("(state.url: not checked until this passes)")
    assert "state.url" not in checks
    assert {"openchoreo.server", "metrics.textfile"} <= set(checks)


def test_a_schema_of_another_programs_tables_is_refused_by_check_and_health_too(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str
) -> None:
    """As a state file that is not a choreo-ingest state: `check` said "writable" (exit 0) and
    `health` "no state yet: run `choreo-ingest run`" (exit 1) where every other command
    refuses the schema (exit 4)."""
    database = pg_url.rsplit("/", 1)[1]
    with pg_cluster.admin(database) as admin:
        admin.execute("CREATE SCHEMA other")
        admin.execute("CREATE TABLE other.notes (body text)")
    write_config(
        tmp_path / "choreo-ingest.yaml",
        "http://127.0.0.1:9",
        state={"url": pg_url, "schema": "other"},
    )

    checked = run_cli("check", "--json", cwd=tmp_path)
    healthy = run_cli("health", "--json", cwd=tmp_path)
    status = run_cli("status", "--json", cwd=tmp_path)

    refused = "(schema 'other'): holds tables, but not a choreo-ingest state; left untouched"
    assert checked.returncode == 4, checked.stdout
    state_check = next(c for c in json.loads(checked.stdout)["checks"] if c["name"] == "state.url")
    assert state_check["detail"].endswith(refused)
    assert (healthy.returncode, status.returncode) == (4, 4), healthy.stdout
    assert json.loads(healthy.stdout)["error"].endswith(refused)
    with pg_cluster.admin(database) as admin:
        assert admin.execute("SELECT count(*) FROM other.notes").fetchone() == (0,)


def test_without_the_postgres_extra_a_url_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    without_psycopg = (
        "import sys; sys.modules['psycopg'] = None; "
        "from choreo_ingest.cli import main; main(sys.argv[1:])"
    )

    done = run_cli(
        "status",
        "--db",
        "postgresql://127.0.0.1:9/nowhere",
        cwd=tmp_path,
        entry=("-c", without_psycopg),
    )

    assert done.returncode == 2, done.stderr
    assert "pip install '.[postgres]' in choreo-ingest's source tree" in done.stderr


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("bogus=1", "unknown query parameter `bogus`"),
        ("sslmode=bogus", SSLMODES),
    ],
    ids=["unknown-parameter", "sslmode"],
)
def test_a_state_url_libpq_refuses_is_a_usage_error_naming_the_key_never_the_password(
    tmp_path: Path, query: str, problem: str
) -> None:
    """Exit 2 before anything is done (`check` makes no request first), not exit 4: the URL is
    malformed, no store failed. The server's port is closed: a URL taken would fail to connect."""
    require_psycopg()
    url = f"postgresql://ingest:secret-4f2a9c@127.0.0.1:9/db?{query}"
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9", state={"url": url})

    for command in ("status", "run", "check"):
        done = run_cli("-v", command, cwd=tmp_path)  # -v: the logs must not show it either

        assert (done.returncode, done.stdout) == (2, ""), (command, done.stderr)
        assert one_error_line(done.stderr) == f"choreo-ingest: error: state.url: {problem}; " + (
            EXPECTED_URL
        )
        assert "4f2a9c" not in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "origin"),
    [
        (["status", "--json", "--db", "{url}"], {}, "--db"),
        (["run", "--json"], {"CHOREO_INGEST_DB": "{url}"}, "$CHOREO_INGEST_DB"),
        (["migrate", "--json", "--copy-to", "{url}"], {}, "--copy-to"),
    ],
    ids=["db", "environment", "copy-to"],
)
def test_a_url_with_an_unknown_parameter_is_a_usage_error_naming_where_it_came_from(
    tmp_path: Path, args: list[str], env: dict[str, str], origin: str
) -> None:
    require_psycopg()
    url = "postgresql://ingest:secret-4f2a9c@127.0.0.1:9/db?sslmod=require"
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")

    done = run_cli(
        *[arg.format(url=url) for arg in args],
        env={name: value.format(url=url) for name, value in env.items()},
        cwd=tmp_path,
    )

    assert done.returncode == 2, done.stderr
    error = f"{origin}: unknown query parameter `sslmod` (did you mean `sslmode`?); {EXPECTED_URL}"
    assert one_error_line(done.stderr) == f"choreo-ingest: error: {error}"
    document = json.loads(done.stdout)
    assert (document["exitCode"], document["error"]) == (2, error)
    assert "4f2a9c" not in done.stdout + done.stderr


def test_a_state_missing_a_table_is_a_state_error_naming_it(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str
) -> None:
    """As for a state file (test_cli_state_file.py): `status` and `health` read only some of the
    tables, and would report a state whose catalog is gone as healthy."""
    assert run_cli("migrate", "--db", pg_url, cwd=tmp_path).returncode == 0
    with pg_cluster.admin(pg_url.rsplit("/", 1)[1]) as admin:
        admin.execute("DROP TABLE choreo_ingest.entities")
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    expected = (
        f"choreo-ingest: error: {pg_url} (schema 'choreo_ingest'): not a usable choreo-ingest "
        "state (no such table: entities); left untouched: restore it from a backup, or move it "
        "aside (rename the schema) and the next run builds a new state (a fresh walk of the "
        "platform)"
    )

    for command in (("status", "--json"), ("health",), ("run", "--force"), ("export",)):
        done = run_cli(*command, "--db", pg_url, cwd=tmp_path)

        assert done.returncode == 4, (command, done.stderr)
        assert one_error_line(done.stderr) == expected
    assert json.loads(run_cli("status", "--json", "--db", pg_url, cwd=tmp_path).stdout) == {
        "exitCode": 4,
        "error": expected.removeprefix("choreo-ingest: error: "),
    }


def test_a_command_whose_run_lock_another_run_took_exits_4_saying_so_and_writes_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    """A second host through a pooler in transaction mode (`pg_takeover.py`) takes the run lock
    and the store right after `refresh` migrated it: the refresh is refused, as a lost
    connection is (exit 4), in one line that names the likely cause."""
    from choreo_ingest.store import PostgresLocation

    from pg_takeover import TAKEN_OVER_CLI

    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    assert run_cli("migrate", "--db", pg_url, cwd=tmp_path).returncode == 0

    done = run_cli(
        "refresh", "openchoreo", "--db", pg_url, cwd=tmp_path, entry=("-c", TAKEN_OVER_CLI, pg_url)
    )

    assert done.returncode == 4, done.stderr
    assert one_error_line(done.stderr) == (
        f"choreo-ingest: error: state store {pg_url}: another choreo-ingest run took the run "
        "lock of schema 'choreo_ingest' while this one held it (a pooler in transaction mode "
        "between choreo-ingest and PostgreSQL? see README): nothing of this transaction was "
        "written"
    )
    with PostgresLocation(pg_url).open(readonly=True) as store:
        assert store.provider_names() == []  # what a refresh writes first: its provider's record


def test_status_names_the_postgresql_schema_the_state_is_in(tmp_path: Path, pg_url: str) -> None:
    """Two states may share one database: the URL alone does not say which one `status` read."""
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    assert run_cli("migrate", "--db", pg_url, cwd=tmp_path).returncode == 0

    shown = run_cli("status", "--db", pg_url, cwd=tmp_path)
    document = json.loads(run_cli("status", "--json", "--db", pg_url, cwd=tmp_path).stdout)

    assert shown.returncode == 0, shown.stderr
    assert "(schema 'choreo_ingest') (schema version " in " ".join(shown.stdout.split())
    assert document["stateSchema"] == "choreo_ingest"


def test_migrate_status_names_the_schema_and_the_version_apart(tmp_path: Path, pg_url: str) -> None:
    """It said `schema 6`, which read as the name of a PostgreSQL schema."""
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    assert run_cli("migrate", "--db", pg_url, cwd=tmp_path).returncode == 0

    listed = run_cli("migrate", "--status", "--db", pg_url, cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    heading = listed.stdout.splitlines()[0]
    assert "(schema 'choreo_ingest'): schema version " in heading


def test_event_that_makes_a_state_names_its_schema(tmp_path: Path, pg_url: str) -> None:
    """A mistyped `state.schema` makes a state the runs never read: the warning says which."""
    config = write_config(
        tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1", state={"schema": "typo"}
    )
    event = json.dumps({"kind": "Component", "name": "c", "namespace": "n", "action": "updated"})

    first = run_cli("event", "--config", config, "--db", pg_url, cwd=tmp_path, stdin=event)
    second = run_cli("event", "--config", config, "--db", pg_url, cwd=tmp_path, stdin=event)

    assert first.returncode == 0, first.stderr
    [warning] = plain(first.stderr).splitlines()
    assert "(schema 'typo', --db): no state was there; made one for these events (1 kept)" in (
        warning
    )
    assert (second.returncode, second.stderr) == (0, "")


def test_status_and_health_need_one_connection_at_a_time_as_run_does(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    """A database near its connection limit: `run` worked, and `status` and `health` failed with
    exit 4 ("remaining connection slots are reserved"), as they read the run lock on a second
    session while the first was open. A role allowed one connection shows it."""
    url = pg_cluster.fresh_database()
    limited = pg_cluster.role_on(url, options="CONNECTION LIMIT 1")
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")
    assert run_cli("migrate", "--db", limited, cwd=tmp_path).returncode == 0

    status = run_cli("status", "--json", "--db", limited, cwd=tmp_path)
    health = run_cli("health", "--json", "--db", limited, cwd=tmp_path)

    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["running"] is False
    assert health.returncode in (0, 1), health.stderr  # healthy or not, never a state error
    pg_cluster.drop_database(url)


def test_a_role_that_may_not_create_the_schema_is_told_what_to_grant(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    """Before, a bare "permission denied for database" (and `status` then asked for the
    `migrate` that had just failed)."""
    url = pg_cluster.fresh_database()
    connect_only = pg_cluster.role_on(url, grant="CONNECT")
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9/api/v1")

    refused = run_cli("migrate", "--db", connect_only, cwd=tmp_path)

    assert refused.returncode == 4
    assert "permission denied for database" in one_error_line(refused.stderr)
    assert "the role needs CREATE on the database (GRANT CREATE ON DATABASE ...)" in (
        one_error_line(refused.stderr)
    )
    pg_cluster.drop_database(url)
