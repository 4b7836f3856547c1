"""What needs neither secrets, nor the network, nor write access, through the command line.

- Commands that only read (`status`, `health`, `export`, `changes`, `removals`, `providers`,
  `migrate --status`) work while a secret the config interpolates is unset; the commands that
  call the API (`run`, `refresh --now`, `check`) refuse with exit 2 naming the key.
- Another user (a monitoring agent, uid 65534) who may read the state file but not write to its
  directory gets `status`, `health` and `export`, with no writer running and while one is.
- The files the tool creates have their modes whatever the umask; a state file this user may
  not write is a state store error (exit 4); an unusable `openchoreo.caBundle` is a config error.

Tests of permissions need root, to become uid 65534 (CI runs as root: there they never skip).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from choreo_ingest.clock import SystemClock
from choreo_ingest.models import EntityIteratorResult
from choreo_ingest.simulator import World
from choreo_ingest.store import Store

from fakes import FakeClock, make_entity
from privileges import NOBODY
from sim_support import (
    expected_refs,
    ingest_world,
    plain,
    run_cli,
)

UNREACHABLE_URL = "http://127.0.0.1:9/api/v1"
SECRET_VARIABLES = ("OPENCHOREO_TOKEN", "CLIENT_SECRET", "CREDENTIALS_DIRECTORY")
TOKEN_AUTH = {"token": "${OPENCHOREO_TOKEN}"}
OAUTH_AUTH = {
    "auth": {
        "oauth": {
            "tokenUrl": "http://127.0.0.1:9/oauth2/token",
            "clientId": "choreo-ingest",
            "clientSecret": "${CLIENT_SECRET}",
        }
    }
}
SECRET_CONFIGS = {
    "token": (TOKEN_AUTH, "openchoreo.token: environment variable OPENCHOREO_TOKEN is not set"),
    "oauth": (
        OAUTH_AUTH,
        "openchoreo.auth.oauth.clientSecret: environment variable CLIENT_SECRET is not set",
    ),
    "token-file": (  # systemd's LoadCredential= sets CREDENTIALS_DIRECTORY
        {"auth": {"tokenFile": "${CREDENTIALS_DIRECTORY}/token"}},
        "openchoreo.auth.tokenFile: environment variable CREDENTIALS_DIRECTORY is not set",
    ),
}
READ_ONLY_COMMANDS = {
    "status": ["status", "--json"],
    "health": ["health", "--json"],
    "export": ["export"],
    "changes": ["changes", "--json"],
    "removals": ["removals", "--json"],
    "providers": ["providers", "--json"],
    "migrate-status": ["migrate", "--status", "--json"],
}

AS_USER = """
import importlib._bootstrap as bootstrap, os, sys

uid = gid = int(sys.argv.pop(1))
find_and_load = bootstrap._find_and_load
importing = 0  # imports nest: the outermost one turns back to uid


def find_and_load_as_root(*args):
    global importing
    if not importing:
        os.seteuid(0)
    importing += 1
    try:
        return find_and_load(*args)
    finally:
        importing -= 1
        if not importing:
            os.seteuid(uid)


os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, 0)
bootstrap._find_and_load = find_and_load_as_root
from choreo_ingest.cli import main

main(sys.argv[1:])
"""
"""`python -c AS_USER UID ARGS...`: the CLI as UID, except while it imports a module.

The interpreter and its libraries may live where uid 65534 may not look (pyenv under /root,
mode 0700, as on the machine this was written on), so `setpriv ... python` cannot even start
there. This child drops to UID (real, effective and so filesystem IDs, no groups, no
capabilities) before the CLI runs and turns back to root (its saved set-user-ID) only while a
module is imported. Every file the CLI opens, it opens as UID.
"""


def choreo(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    umask: int = -1,
    user: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m choreo_ingest ARGS` off a TTY, as cron runs it (as `user` if given), without
    the caller's choreo-ingest settings or the secrets these tests leave unset."""
    entry = ("-m", "choreo_ingest") if user is None else ("-c", AS_USER, str(user))
    return run_cli(
        *args,
        cwd=cwd,
        env={"HOME": str(cwd), **(env or {})},
        unset=SECRET_VARIABLES,
        entry=entry,
        umask=umask,
    )


def require_root() -> None:
    """Skip where this user cannot become another; under CI (`CI=true`) fail instead."""
    if os.geteuid() == 0:
        return
    reason = "becoming uid 65534 needs root (CI runs the suite as root)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must run the permission tests: {reason}")
    pytest.skip(reason)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty root-owned 0755 directory that uid 65534 can reach.

    pytest keeps /tmp/pytest-of-<user> at 0700, and puts it back at every session start (so
    opening it up would race the other sessions on the machine): while tmp_path cannot be
    reached by others, a directory of our own in the system temp directory stands in for it,
    removed afterwards.
    """
    require_root()
    if all(parent.stat().st_mode & stat.S_IXOTH for parent in tmp_path.parents):
        tmp_path.chmod(0o755)
        directory = tmp_path / "shared"
        directory.mkdir(mode=0o755)
        yield directory
        return
    base = Path(tempfile.gettempdir())
    if not all(part.stat().st_mode & stat.S_IXOTH for part in (base, *base.parents)):
        pytest.fail(f"neither {tmp_path} nor {base} can be reached by uid {NOBODY}")
    directory = Path(tempfile.mkdtemp(prefix="choreo-ingest-test-", dir=base))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


def write_config(directory: Path, **openchoreo: Any) -> Path:
    """A config file every user may read: `openchoreo` keys below `baseUrl`, the state file in
    `directory`."""
    document = {
        "openchoreo": {"baseUrl": UNREACHABLE_URL, **openchoreo},
        "state": {"path": str(directory / "state.db")},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    path.chmod(0o644)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line for line in plain(done.stderr).splitlines() if line.startswith("choreo-ingest: error:")
    ]


@pytest.fixture
def world() -> World:
    return World.generate(2, 2, 3, seed=12)


class TestWithoutSecrets:
    """Read-only commands load the config without its secrets; API commands need them."""

    @pytest.fixture(params=sorted(SECRET_CONFIGS))
    def secret_config(self, request: pytest.FixtureRequest) -> tuple[dict[str, Any], str]:
        return SECRET_CONFIGS[request.param]

    @pytest.fixture
    def config_file(
        self, tmp_path: Path, world: World, secret_config: tuple[dict[str, Any], str]
    ) -> Path:
        """A config whose secret comes from an unset variable, over a state file holding a
        completed cycle."""
        ingest_world(tmp_path / "state.db", world, FakeClock())
        return write_config(tmp_path, **secret_config[0])

    @pytest.mark.parametrize("command", READ_ONLY_COMMANDS.values(), ids=READ_ONLY_COMMANDS)
    def test_read_only_command_works_with_the_secret_unset(
        self, tmp_path: Path, config_file: Path, command: list[str]
    ) -> None:
        done = choreo(*command, "--config", config_file, cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        assert "is not set" not in done.stderr
        assert done.stdout.strip()

    def test_export_prints_the_catalog_with_the_secret_unset(
        self, tmp_path: Path, config_file: Path, world: World
    ) -> None:
        done = choreo("export", "--config", config_file, cwd=tmp_path)

        refs = {_ref(json.loads(line)) for line in done.stdout.splitlines()}
        assert refs == expected_refs(world)

    @pytest.mark.parametrize(
        "command",
        [["run"], ["run", "--json"], ["refresh", "openchoreo", "--now"]],
        ids=["run", "run-json", "refresh-now"],
    )
    def test_api_command_with_the_secret_unset_exits_2_naming_the_key(
        self,
        tmp_path: Path,
        config_file: Path,
        secret_config: tuple[dict[str, Any], str],
        command: list[str],
    ) -> None:
        with Store.open(tmp_path / "state.db", readonly=True) as before:
            record = before.load_provider("openchoreo")

        done = choreo(*command, "--config", config_file, cwd=tmp_path)

        assert done.returncode == 2, done.stderr
        [line] = error_lines(done)
        assert line.startswith(f"choreo-ingest: error: {secret_config[1]}")
        assert "Traceback" not in done.stderr
        with Store.open(tmp_path / "state.db", readonly=True) as after:
            assert after.load_provider("openchoreo") == record  # nothing was done

    def test_check_with_the_secret_unset_fails_its_key_and_changes_nothing(
        self, tmp_path: Path, config_file: Path, secret_config: tuple[dict[str, Any], str]
    ) -> None:
        """Beside the checks that need no secret (the server's, unreachable here, the state's)."""
        with Store.open(tmp_path / "state.db", readonly=True) as before:
            record = before.load_provider("openchoreo")

        done = choreo("check", "--json", "--config", config_file, cwd=tmp_path)

        assert done.returncode == 2, done.stderr
        failed = {c["name"]: c["detail"] for c in json.loads(done.stdout)["checks"] if not c["ok"]}
        key, _, problem = secret_config[1].partition(": ")
        assert failed.pop(key).startswith(problem)
        assert set(failed) <= {"openchoreo.server"}
        assert "Traceback" not in done.stderr
        with Store.open(tmp_path / "state.db", readonly=True) as after:
            assert after.load_provider("openchoreo") == record

    def test_run_uses_the_secret_once_it_is_set(
        self, tmp_path: Path, config_file: Path, secret_config: tuple[dict[str, Any], str]
    ) -> None:
        """Set, the variable gets past the config: the run then fails upstream (exit 3)."""
        env = dict.fromkeys(SECRET_VARIABLES, "s3cr3t-value")
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "token").write_text("s3cr3t-value\n", encoding="utf-8")
        env["CREDENTIALS_DIRECTORY"] = str(credentials)

        done = choreo("run", "--force", "--config", config_file, cwd=tmp_path, env=env)

        assert done.returncode == 3, done.stderr
        assert "is not set" not in done.stderr
        assert "s3cr3t-value" not in done.stderr + done.stdout


def _ref(body: dict[str, Any]) -> str:
    metadata = body["metadata"]
    return f"{body['kind'].lower()}:{metadata['namespace']}/{metadata['name']}"


class TestCaBundle:
    def test_missing_ca_bundle_exits_2_at_config_load(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, caBundle="certs/missing.pem")

        for command in (["status"], ["run"]):
            done = choreo(*command, "--config", config, cwd=tmp_path)

            assert done.returncode == 2, done.stderr
            assert error_lines(done) == [
                f"choreo-ingest: error: openchoreo.caBundle: {tmp_path}/certs/missing.pem: "
                "cannot read: No such file or directory"
            ]
            assert "Traceback" not in done.stderr

    def test_ca_bundle_this_user_may_not_read_exits_2(self, shared_dir: Path) -> None:
        bundle = shared_dir / "ca.pem"
        bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        bundle.chmod(0o600)
        config = write_config(shared_dir, caBundle=str(bundle))

        done = choreo("status", "--config", config, cwd=shared_dir, user=NOBODY)

        assert done.returncode == 2, done.stderr
        assert error_lines(done) == [
            f"choreo-ingest: error: openchoreo.caBundle: {bundle}: cannot read: Permission denied"
        ]


class TestMonitoringUser:
    """uid 65534 may read the state file (root's, 0644, in a 0755 directory), not write."""

    @pytest.fixture
    def state(self, shared_dir: Path, world: World) -> Path:
        state = shared_dir / "state.db"
        ingest_world(state, world, FakeClock())
        state.chmod(0o644)
        # The next writer gives the -wal and -shm the state file's mode.
        done = choreo("migrate", "--db", state, cwd=shared_dir)
        assert done.returncode == 0, done.stderr
        return state

    def listing(self, directory: Path) -> dict[str, tuple[int, int, int]]:
        return {
            path.name: (path.stat().st_uid, mode(path), path.stat().st_size)
            for path in directory.iterdir()
        }

    def test_status_health_and_export_read_without_write_access(
        self, shared_dir: Path, state: Path, world: World
    ) -> None:
        config = write_config(shared_dir)
        before = self.listing(shared_dir)

        status = choreo("status", "--json", "--config", config, cwd=shared_dir, user=NOBODY)
        health = choreo("health", "--json", "--config", config, cwd=shared_dir, user=NOBODY)
        export = choreo("export", "--config", config, cwd=shared_dir, user=NOBODY)

        for done in (status, health, export):
            assert done.returncode == 0, done.stderr
        [provider] = json.loads(status.stdout)["providers"]
        assert (provider["name"], provider["state"]) == ("openchoreo", "resting")
        assert json.loads(health.stdout)["healthy"] is True
        assert {_ref(json.loads(line)) for line in export.stdout.splitlines()} == expected_refs(
            world
        )
        assert self.listing(shared_dir) == before  # nothing written, nothing created
        assert {name: mode(shared_dir / name) for name in ("state.db-wal", "state.db-shm")} == {
            "state.db-wal": 0o644,
            "state.db-shm": 0o644,
        }

    def test_reads_see_what_a_live_writer_has_not_checkpointed(
        self, shared_dir: Path, state: Path, world: World
    ) -> None:
        config = write_config(shared_dir)
        late = make_entity("late-arrival")
        with Store.open(state) as writer:
            page = EntityIteratorResult(done=False, entities=[late])
            writer.commit_page("openchoreo", 1, page, None, SystemClock().now())
            assert (shared_dir / "state.db-wal").stat().st_size > 0  # not checkpointed

            status = choreo("status", "--json", "--config", config, cwd=shared_dir, user=NOBODY)
            export = choreo("export", "--config", config, cwd=shared_dir, user=NOBODY)

        assert status.returncode == 0, status.stderr
        [provider] = json.loads(status.stdout)["providers"]
        assert provider["activeEntities"] == len(expected_refs(world)) + 1
        assert export.returncode == 0, export.stderr
        refs = {_ref(json.loads(line)) for line in export.stdout.splitlines()}
        assert refs == expected_refs(world) | {"component:default/late-arrival"}

    def test_unreadable_wal_files_are_named(self, shared_dir: Path, state: Path) -> None:
        """A `chmod` of the state file reaches its -wal and -shm at the next writer only."""
        for end in ("-wal", "-shm"):
            Path(f"{state}{end}").chmod(0o640)

        done = choreo("status", "--db", state, cwd=shared_dir, user=NOBODY)

        assert done.returncode == 4, done.stderr
        [line] = error_lines(done)
        assert line.startswith(
            f"choreo-ingest: error: state store {state}: cannot be read without write access "
            f"to {shared_dir}: state.db-wal not readable, state.db-shm not readable"
        )

    def test_wal_files_a_reader_made_while_the_state_was_read_only_do_not_fail_a_writer(
        self, shared_dir: Path
    ) -> None:
        """A state restored read-only (0440) and read by `status` gets its -wal and -shm made
        0440 by SQLite; once the operator makes it writable again, the next write succeeds."""
        own = shared_dir / "own"
        own.mkdir()
        os.chown(own, NOBODY, NOBODY)
        state = own / "state.db"
        assert choreo("migrate", "--db", state, cwd=own, user=NOBODY).returncode == 0
        for end in ("-wal", "-shm"):
            Path(f"{state}{end}").unlink(missing_ok=True)
        state.chmod(0o440)
        assert choreo("status", "--db", state, cwd=own, user=NOBODY).returncode == 0
        assert mode(Path(f"{state}-wal")) == 0o440
        state.chmod(0o640)

        done = choreo("refresh", "openchoreo", "--db", state, cwd=own, user=NOBODY)

        assert done.returncode == 0, done.stderr
        assert {mode(Path(f"{state}{end}")) for end in ("", "-wal", "-shm")} == {0o640}

    @pytest.mark.parametrize(
        ("command", "use"),
        [(["refresh", "openchoreo"], "write"), (["status"], "read")],
        ids=["writer", "reader"],
    )
    def test_wal_files_of_another_owner_are_named_with_their_owner_and_the_fix(
        self, shared_dir: Path, command: list[str], use: str
    ) -> None:
        """-wal and -shm that root left (a backup restored with `cp`): no run of the state's
        owner can mend them, so the error says whose they are and how to give them back."""
        own = shared_dir / "own"
        own.mkdir()
        os.chown(own, NOBODY, NOBODY)
        state = own / "state.db"
        assert choreo("migrate", "--db", state, cwd=own, user=NOBODY).returncode == 0
        sidecars = [Path(f"{state}{end}") for end in ("-wal", "-shm")]
        for sidecar in sidecars:
            os.chown(sidecar, 0, 0)

        done = choreo(*command, "--db", state, cwd=own, user=NOBODY)

        assert done.returncode == 4, done.stderr
        assert error_lines(done) == [
            f"choreo-ingest: error: state store {state}: state.db-wal and state.db-shm belong "
            f"to uid 0, not to the state file's owner (uid {NOBODY}), and this user may not "
            f"{use} them: give them the state file's owner (`chown --reference={state} "
            f"{sidecars[0]} {sidecars[1]}`; the next run sets their mode)"
        ]
        for sidecar in sidecars:
            os.chown(sidecar, NOBODY, NOBODY)
        assert choreo(*command, "--db", state, cwd=own, user=NOBODY).returncode == 0

    def test_a_run_lock_of_another_owner_is_named_with_its_owner(self, shared_dir: Path) -> None:
        own = shared_dir / "own"
        own.mkdir()
        os.chown(own, NOBODY, NOBODY)
        state = own / "state.db"
        assert choreo("migrate", "--db", state, cwd=own).returncode == 0  # root, by hand
        os.chown(state, NOBODY, NOBODY)  # the state given back, its lock forgotten

        done = choreo("refresh", "openchoreo", "--db", state, cwd=own, user=NOBODY)

        assert done.returncode == 4, done.stderr
        assert error_lines(done) == [
            f"choreo-ingest: error: {state}.lock: cannot open the run lock: Permission denied "
            "(owner uid 0, mode -rw-r-----)"
        ]

    def test_a_run_lock_it_may_not_create_names_the_directory(self, shared_dir: Path) -> None:
        """As `check` says it: the directory, not "Permission denied" of a file not there."""
        state = shared_dir / "state.db"

        done = choreo("migrate", "--db", state, cwd=shared_dir, user=NOBODY)

        assert done.returncode == 4, done.stderr
        assert error_lines(done) == [
            f"choreo-ingest: error: {state}.lock: cannot create the run lock: directory "
            f"{shared_dir} is not writable"
        ]

    def test_run_on_a_state_file_this_user_may_not_write_exits_4(self, shared_dir: Path) -> None:
        state = shared_dir / "state.db"
        assert choreo("migrate", "--db", state, cwd=shared_dir).returncode == 0
        state.chmod(0o644)
        assert choreo("migrate", "--db", state, cwd=shared_dir).returncode == 0  # modes follow
        os.chown(f"{state}.lock", NOBODY, NOBODY)  # the run lock is not what is tested here
        config = write_config(shared_dir)

        done = choreo("run", "--config", config, cwd=shared_dir, user=NOBODY)

        assert done.returncode == 4, done.stderr
        assert error_lines(done) == [
            f"choreo-ingest: error: state store {state}: not writable "
            "(attempt to write a readonly database)"
        ]
        assert "internal error" not in done.stderr

    def test_run_in_a_directory_this_user_may_not_write_names_the_directory(
        self, shared_dir: Path
    ) -> None:
        """The state file and its run lock are the user's, but its -wal and -shm cannot be made
        beside it: SQLite's "attempt to write a readonly database" blamed the file."""
        state = shared_dir / "state.db"
        assert choreo("migrate", "--db", state, cwd=shared_dir).returncode == 0
        for path in (state, Path(f"{state}.lock")):
            os.chown(path, NOBODY, NOBODY)
        for end in ("-wal", "-shm"):
            Path(f"{state}{end}").unlink(missing_ok=True)  # as a clean close leaves them

        done = choreo("migrate", "--db", state, cwd=shared_dir, user=NOBODY)

        assert done.returncode == 4, done.stderr
        assert error_lines(done) == [
            f"choreo-ingest: error: state store {state}: not writable: directory {shared_dir} "
            "is not writable, and SQLite makes state.db-wal and state.db-shm beside the file"
        ]


class TestFileModes:
    @pytest.mark.parametrize("umask", [0o077, 0o000], ids=["umask-077", "umask-000"])
    def test_state_file_its_wal_files_and_the_run_lock_are_0640(
        self, tmp_path: Path, umask: int
    ) -> None:
        state = tmp_path / "state.db"
        config = write_config(tmp_path)

        created = choreo("migrate", "--db", state, cwd=tmp_path, umask=umask)
        ran = choreo("run", "--config", config, cwd=tmp_path, umask=umask)

        assert created.returncode == 0, created.stderr
        assert ran.returncode == 3, ran.stderr  # the API is unreachable; the files are there
        names = ("state.db", "state.db-wal", "state.db-shm", "state.db.lock")
        assert {name: oct(mode(tmp_path / name)) for name in names} == dict.fromkeys(
            names, oct(0o640)
        )

    def test_an_existing_state_file_keeps_its_mode(self, tmp_path: Path) -> None:
        """The operator's `chmod` stands, and the -wal and -shm follow it."""
        state = tmp_path / "state.db"
        assert choreo("migrate", "--db", state, cwd=tmp_path).returncode == 0
        state.chmod(0o600)

        done = choreo("migrate", "--db", state, cwd=tmp_path, umask=0)

        assert done.returncode == 0, done.stderr
        assert {mode(Path(f"{state}{end}")) for end in ("", "-wal", "-shm")} == {0o600}
