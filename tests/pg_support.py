"""A throwaway PostgreSQL server for the tests: started once a session, removed afterwards.

`throwaway_cluster()` finds the server's own tools (`initdb`, `pg_ctl`: on PATH, else in
`/usr/lib/postgresql/<version>/bin`, where the Debian package `postgresql` puts them), makes a
cluster in a directory of its own in the system temp directory and starts it on a free port of
127.0.0.1 and on a unix socket in that directory:

    initdb -D <dir>/data -A trust -U postgres --no-sync -E UTF8 --locale=C
    pg_ctl -D <dir>/data -l <dir>/server.log -w -t 60 \
        -o "-k <dir>/socket -c listen_addresses=127.0.0.1 -p <port> -c fsync=off" start
    ...
    pg_ctl -D <dir>/data -m immediate -w stop

`fsync=off` (and `initdb --no-sync`): the cluster lives for one test session, so what a crash of
the machine would lose never matters, and every commit is cheaper. `-A trust`: anyone on this
machine may connect as any role while it runs (on 127.0.0.1 and the socket only); the one role
made with a password (`password_user`) is checked with scram-sha-256, for the tests of passwords.

PostgreSQL refuses to run as root. As root (CI), every server command runs through
`runuser -u postgres --` (the Debian package makes that user) on directories that user owns:
never under pytest's temp directory, which is 0700 root. As anyone else, they run as that user.

Where no server can be started the tests that need one are skipped with the reason, except under
CI (`CI=true`), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from ports import free_port

SERVER_USER = "postgres"
"""The OS user that runs the server when the tests run as root (the Debian package's)."""
SUPERUSER = "postgres"
"""The cluster's superuser role (`initdb -U`)."""
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
START_TIMEOUT = 60
START_ATTEMPTS = 3
"""A free port may be taken by another process between finding it and binding it: try again."""
PASSWORD_USER = "choreo_password"
"""A role that must give its password (scram-sha-256), for the tests of password handling."""


def unavailable(reason: str) -> NoReturn:
    """Skip where no server can be had; under CI (`CI=true`) fail instead."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    pytest.skip(reason)


NO_PSYCOPG = "psycopg is not installed (pip install '.[postgres]' in the source tree)"


def _has_psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def require_psycopg() -> None:
    """At the top of a test module that imports psycopg (or the store's PostgreSQL modules),
    before those imports: skips the module without it, fails it under CI."""
    if _has_psycopg():
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must run the PostgreSQL tests: {NO_PSYCOPG}", pytrace=False)
    pytest.skip(NO_PSYCOPG, allow_module_level=True)


@dataclass
class PgCluster:
    """A running throwaway cluster; `url` reaches its `postgres` database as the superuser."""

    host: str
    port: int
    socket_dir: Path
    data_dir: Path
    bin_dir: Path
    user: str = SUPERUSER
    password_user: str = PASSWORD_USER
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    started_in: float = 0.0
    """Seconds from `initdb` to the first accepted connection."""
    _databases: int = 0

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str, *, user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{database}"

    def password_url(self, database_url: str, *, password: str | None = None) -> str:
        """The database of `database_url` as `password_user`, `password` in the URL if given
        (the right one is `self.password`): libpq asks the server for it when missing."""
        database = database_url.rsplit("/", 1)[1]
        user = self.password_user if password is None else f"{self.password_user}:{password}"
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def admin(self, database: str = "postgres") -> Any:
        """A superuser psycopg connection in autocommit mode (close it, or use it in `with`)."""
        import psycopg

        return psycopg.connect(self.database_url(database), autocommit=True)

    def fresh_database(self, *, icu_locale: str | None = None) -> str:
        """Create a new, empty database and return its URL (the superuser's, no password).

        `icu_locale` (`en-US`, say): the database's default collation is that ICU locale
        instead of the cluster's `C`, for tests of ordering.
        """
        from psycopg import sql

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}_{secrets.token_hex(3)}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
            sql.Identifier(name)
        )
        if icu_locale is not None:
            statement += sql.SQL(" LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE {}").format(
                sql.Literal(icu_locale)
            )
        with self.admin() as conn:
            conn.execute(statement)
            conn.execute(
                sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(
                    sql.Identifier(name), sql.Identifier(self.password_user)
                )
            )
        return self.database_url(name)

    def role_on(self, database_url: str, *, grant: str = "ALL", options: str = "") -> str:
        """A new login role with `grant` on the database of `database_url` (its role options
        such as `CONNECTION LIMIT 1`, or none; `SET name = value` after `;` is applied with
        ALTER ROLE), and that database's URL as it."""
        from psycopg import sql

        database = database_url.rsplit("/", 1)[1]
        role = f"r{os.getpid()}_{secrets.token_hex(4)}"
        created, _, setting = options.partition(";")
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN " + created).format(sql.Identifier(role)))
            if setting.strip():
                conn.execute(sql.SQL("ALTER ROLE {} " + setting).format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT " + grant + " ON DATABASE {} TO {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
        return self.database_url(database, user=role)

    def copy_database(self, url: str) -> str:
        """A new database made from the one at `url` (which nobody may be connected to), as it
        stands: what copying an SQLite file is to the crash tests. Drop it with drop_database."""
        from psycopg import sql

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}_{secrets.token_hex(3)}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(url.rsplit("/", 1)[1])
                )
            )
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database `fresh_database` made, whoever is still connected to it."""
        from psycopg import sql

        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def find_server_tools() -> Path | None:
    """The directory holding `initdb` and `pg_ctl` of one PostgreSQL version, or None."""
    found = shutil.which("initdb")
    if found is not None:
        directory = Path(found).resolve().parent  # /usr/local/bin/initdb may be a symlink
        if (directory / "pg_ctl").exists():
            return directory
    candidates = sorted(
        (path for path in Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")) if _is_version(path)),
        key=lambda path: int(path.parent.name),
        reverse=True,
    )
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def _is_version(bin_dir: Path) -> bool:
    return bin_dir.parent.name.isdigit()


def _reachable_by_others(directory: Path) -> bool:
    return all(part.stat().st_mode & stat.S_IXOTH for part in (directory, *directory.parents))


class _Runner:
    """Runs the server's commands as the user that may run them."""

    def __init__(self) -> None:
        self.prefix: list[str] = []
        self.uid = os.getuid()
        self.gid = os.getgid()
        if os.geteuid() != 0:
            return
        try:
            server_user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            unavailable(
                f"PostgreSQL refuses to run as root and there is no {SERVER_USER!r} user to run "
                "it as (the Debian package `postgresql` makes it)"
            )
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        if not Path(runuser).exists():
            unavailable("running as root, and `runuser` (util-linux) is missing")
        self.prefix = [runuser, "-u", SERVER_USER, "--"]
        self.uid, self.gid = server_user.pw_uid, server_user.pw_gid

    def run(self, *command: str | Path, timeout: float = START_TIMEOUT) -> None:
        args = [*self.prefix, *map(str, command)]
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",  # the server user may not be allowed into the current directory
            env={**os.environ, "LC_ALL": "C"},  # messages and initdb defaults that never vary
        )
        if result.returncode != 0:
            raise ServerCommandFailed(args, result.returncode, result.stdout + result.stderr)


class ServerCommandFailed(Exception):
    def __init__(self, args: list[str], code: int, output: str) -> None:
        self.output = output
        super().__init__(f"{' '.join(args)} exited {code}:\n{output.strip()}")


@contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """Start a cluster for the caller's lifetime; stop it and remove every file of it after.

    Skips (or under CI fails) where no server can be started, naming the reason.
    """
    if not _has_psycopg():
        unavailable(NO_PSYCOPG)
    bin_dir = find_server_tools()
    if bin_dir is None:
        unavailable(
            "no PostgreSQL server: `initdb` is neither on PATH nor in "
            f"{DEBIAN_BIN_DIRS} (install the OS package `postgresql`)"
        )
    runner = _Runner()
    base = Path(tempfile.gettempdir())
    if runner.prefix and not _reachable_by_others(base):
        base = Path("/tmp")  # noqa: S108 (TMPDIR is private: the server user cannot reach it)
    top = Path(tempfile.mkdtemp(prefix=f"choreo-ingest-pg-{os.getuid()}-", dir=base))
    data_dir, socket_dir = top / "data", top / "socket"
    started = False
    try:
        top.chmod(0o755)
        socket_dir.mkdir(mode=0o755)
        for directory in (top, socket_dir):
            os.chown(directory, runner.uid, runner.gid)
        began = time.monotonic()
        runner.run(
            bin_dir / "initdb",
            "-D",
            data_dir,
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        _require_password_for(data_dir / "pg_hba.conf", runner)
        cluster = _start(runner, bin_dir, data_dir, socket_dir, top / "server.log")
        started = True
        _wait_for_connections(cluster)
        _make_password_user(cluster)
        cluster.started_in = time.monotonic() - began
        yield cluster
    except ServerCommandFailed as error:
        if started:
            raise
        unavailable(f"cannot start a PostgreSQL server: {error}")
    finally:
        if started:
            _stop(runner, bin_dir, data_dir)
        shutil.rmtree(top, ignore_errors=True)


def _require_password_for(hba: Path, runner: _Runner) -> None:
    """Put a password line for PASSWORD_USER first: pg_hba.conf's first match decides."""
    lines = hba.read_text()
    hba.write_text(f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n{lines}")
    os.chown(hba, runner.uid, runner.gid)


def _start(
    runner: _Runner, bin_dir: Path, data_dir: Path, socket_dir: Path, log: Path
) -> PgCluster:
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        options = f"-k {socket_dir} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
        try:
            runner.run(
                bin_dir / "pg_ctl",
                "-D",
                data_dir,
                "-l",
                log,
                "-w",
                "-t",
                str(START_TIMEOUT),
                "-o",
                options,
                "start",
                timeout=START_TIMEOUT + 10,
            )
        except ServerCommandFailed as error:
            text = log.read_text(errors="replace") if log.exists() else ""
            if attempt < START_ATTEMPTS and "could not bind" in text:
                continue  # the port was taken meanwhile
            raise ServerCommandFailed(
                [str(bin_dir / "pg_ctl"), "start"], 1, f"{error}\n{text}"
            ) from error
        return PgCluster(
            host="127.0.0.1", port=port, socket_dir=socket_dir, data_dir=data_dir, bin_dir=bin_dir
        )
    raise AssertionError("unreachable")


def _wait_for_connections(cluster: PgCluster) -> None:
    """`pg_ctl -w` waits for the server already; a connection through psycopg makes sure."""
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with cluster.admin():
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _make_password_user(cluster: PgCluster) -> None:
    from psycopg import sql

    with cluster.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(cluster.password_user), sql.Literal(cluster.password)
            )
        )


def _stop(runner: _Runner, bin_dir: Path, data_dir: Path) -> None:
    """`pg_ctl stop -m immediate`; should that fail, SIGKILL the postmaster we started."""
    pid_file = data_dir / "postmaster.pid"
    try:
        postmaster = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        postmaster = None
    try:
        runner.run(bin_dir / "pg_ctl", "-D", data_dir, "-m", "immediate", "-w", "stop", timeout=30)
    except (ServerCommandFailed, subprocess.TimeoutExpired):
        if postmaster is not None:
            with suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)
