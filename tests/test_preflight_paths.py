"""`check`'s checks of the files a run writes (the state file, the metrics textfile): a path
that exists must be a regular file a run can replace, not a directory or a FIFO; a state file
there must be one `run` would open, and its run lock one `run` could take. And of the secret
files it reads: one other users may read is a warning."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from ports import free_port

from choreo_ingest.config import AuthConfig, Config, OAuthConfig, OpenChoreoConfig, ServeConfig
from choreo_ingest.errors import LockHeld, StateError
from choreo_ingest.models import Check
from choreo_ingest.preflight import run_checks
from choreo_ingest.store import SCHEMA_VERSION, PostgresLocation, RunLock, Store

from broken_states import as_schema_6_left_it, ingested
from fakes import FakeClock
from privileges import as_nobody, reachable_directory


def checks_of(tmp_path: Path, textfile: Path, state: Path | None = None) -> dict[str, Check]:
    """The path checks, for a config with no provider to reach."""
    config = Config(providers=(), metrics_textfile=textfile)
    found = run_checks(config, state or tmp_path / "state.db", FakeClock())
    return {item.name: item for item in found if item.name != "config"}


def test_a_directory_is_refused_as_the_metrics_textfile(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()

    check = checks_of(tmp_path, directory)["metrics.textfile"]

    assert not check.ok
    assert check.detail == f"{directory}: is a directory; name a file in it"


def test_a_fifo_is_refused_as_the_metrics_textfile(tmp_path: Path) -> None:
    fifo = tmp_path / "metrics.prom"
    os.mkfifo(fifo)

    check = checks_of(tmp_path, fifo)["metrics.textfile"]

    assert (check.ok, check.detail) == (False, f"{fifo}: not a regular file (a FIFO)")


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "new"])
def test_a_regular_metrics_textfile_is_writable(tmp_path: Path, exists: bool) -> None:
    textfile = tmp_path / "metrics.prom"
    if exists:
        textfile.write_text("")

    check = checks_of(tmp_path, textfile)["metrics.textfile"]

    assert (check.ok, check.detail) == (True, f"{textfile}: writable")


def test_a_symlink_to_a_regular_file_is_a_writable_metrics_textfile(tmp_path: Path) -> None:
    (tmp_path / "real.prom").write_text("")
    link = tmp_path / "metrics.prom"
    link.symlink_to(tmp_path / "real.prom")

    assert checks_of(tmp_path, link)["metrics.textfile"].ok


def test_a_directory_is_refused_as_the_state_file(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()

    check = checks_of(tmp_path, tmp_path / "metrics.prom", state=directory)["state.path"]

    assert (check.ok, check.detail) == (False, f"{directory}: is a directory; name a file in it")


def test_an_existing_state_file_is_writable(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with Store.open(state) as store:
        store.migrate()

    check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]

    assert (check.ok, check.detail) == (True, f"{state}: writable")


@pytest.mark.parametrize("key", [None, "--db", "$CHOREO_INGEST_DB"], ids=["config", "db", "env"])
def test_a_postgresql_store_is_checked_under_the_name_it_came_from(
    tmp_path: Path, key: str | None
) -> None:
    """`state.url` in the config (never `state.path`), else the option or the variable that
    gave it, as a malformed URL's error names them; the password never shown. (A server down:
    the name is the same either way.)"""
    url = f"postgresql://ingest:pw-not-shown@127.0.0.1:{free_port()}/x?connect_timeout=5"
    config = Config(providers=(), metrics_textfile=tmp_path / "metrics.prom")

    named = {} if key is None else {"state_key": key}
    checks = run_checks(config, PostgresLocation(url), FakeClock(), **named)

    [state] = [check for check in checks if check.state_store]
    assert state.name == (key or "state.url")
    assert not state.ok
    assert "pw-not-shown" not in state.detail
    assert [check.name for check in checks] == ["config", state.name, "metrics.textfile"]


class TestStateFileAsRunFindsIt:
    """`check` opens an existing state file read-only, as `status` does, and the run lock as a
    run opens it: what `run` would refuse, `check` refuses in the same words."""

    @staticmethod
    def refusal(state: Path) -> str:
        """What `status` (a read-only open) says about the state file at `state`."""
        with pytest.raises(StateError) as refused:
            Store.open(state, readonly=True)
        return str(refused.value)

    def test_a_file_that_is_not_sqlite_is_refused(self, tmp_path: Path) -> None:
        state = tmp_path / "notsql.db"
        state.write_text("not an SQLite file, whatever its name says\n" * 10)

        check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]

        assert (check.ok, check.detail) == (False, self.refusal(state))
        assert check.detail == (
            f"{state}: not an SQLite file, so not a choreo-ingest state file; left untouched"
        )

    def test_another_programs_sqlite_file_is_refused(self, tmp_path: Path) -> None:
        state = tmp_path / "other.db"
        with closing(sqlite3.connect(state)) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")

        check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]

        assert (check.ok, check.detail) == (False, self.refusal(state))
        assert "not a choreo-ingest state file" in check.detail

    def test_a_state_of_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        state = tmp_path / "state.db"
        with Store.open(state) as store:
            store.migrate()
        with closing(sqlite3.connect(state)) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

        check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]

        assert (check.ok, check.detail) == (False, self.refusal(state))
        assert f"version {SCHEMA_VERSION + 1} is newer" in check.detail

    def test_a_state_an_older_release_wrote_passes_with_a_warning_to_migrate(
        self, tmp_path: Path
    ) -> None:
        """`status`, `health`, `export` and `changes` refuse it until a run migrates it: a
        `check` that said only "writable" left the operator wondering."""
        state = tmp_path / "state.db"
        with Store.open(state) as store:
            store.migrate()
        as_schema_6_left_it(state)

        check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]

        assert (check.ok, check.warning) == (True, True)
        assert check.detail.startswith(f"{state}: writable; 1 pending schema migration(s)")
        assert check.detail.endswith("run `choreo-ingest migrate`")

    def test_a_run_lock_this_user_may_not_open_is_refused_as_run_refuses_it(
        self, reachable: Path
    ) -> None:
        """Root opens any file, and CI runs as root: the check and the run's own attempt are
        made as `nobody`, whose effective IDs the kernel checks."""
        state = reachable / "state.db"
        with RunLock(state):  # made as a run makes it (0640), then closed to everyone but root
            pass
        (reachable / "state.db.lock").chmod(0o440)

        with as_nobody():
            check = checks_of(reachable, reachable / "metrics.prom", state=state)["state.path"]
            with pytest.raises(StateError) as refused:
                RunLock(state).acquire()

        assert (check.ok, check.detail) == (False, str(refused.value))
        assert check.detail == (
            f"{state}.lock: cannot open the run lock: Permission denied "
            "(owner uid 0, mode -r--r-----)"
        )

    def test_a_lock_held_by_a_run_is_ok_and_stays_held(self, tmp_path: Path) -> None:
        state = tmp_path / "state.db"
        with Store.open(state) as store:
            store.migrate()

        with RunLock(state):
            check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]
            with pytest.raises(LockHeld):
                RunLock(state).acquire()

        assert (check.ok, check.detail) == (True, f"{state}: writable")

    def test_damage_a_read_only_open_does_not_meet_is_found(self, tmp_path: Path) -> None:
        """A damaged index page: `status` reads the state as before, and the next run's first
        write to that index would fail (exit 4 at 3 a.m.); `check` reads every page and says."""
        state = ingested(tmp_path / "state.db", FakeClock())
        with closing(sqlite3.connect(state)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            [root] = conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = 'entities_by_scope'"
            ).fetchone()
        with state.open("r+b") as raw:  # the index's cell pointers now point off the page
            raw.seek((root - 1) * page_size + 8)
            raw.write(b"\xa5" * 64)
        with Store.open(state, readonly=True) as reader:
            counted = reader.entity_counts("openchoreo")

        check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]

        assert counted, "the damage is where a read-only open does not look"
        assert not check.ok
        assert check.detail.startswith(f"state store {state}: corrupt (quick_check: ")
        assert check.detail.endswith(
            "): restore it from a backup, or move it aside with its -wal and -shm files and the "
            "next run builds a new state (a fresh walk of the platform)"
        )
        assert "\n" not in check.detail
        assert "***" not in check.detail


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory every user may write (as /tmp: 1777)."""
    with reachable_directory(0o1777) as directory:
        yield directory


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o644, True), (0o604, True), (0o640, False), (0o440, False), (0o600, False)],
)
def test_a_secret_file_others_may_read_is_a_warning(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    """README warns of a config file holding a secret that others may read; a secret file
    others may read was said nothing of. Its group may: a Kubernetes Secret is mounted
    root:fsGroup 0440, read-only, where `chmod 600` could be done nowhere."""
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret-9f8e\n")
    secret.chmod(mode)
    oauth = OAuthConfig(
        token_url="https://idp.test/token", client_id="c", client_secret_file=secret
    )
    config = Config(providers=(), openchoreo=OpenChoreoConfig(auth=AuthConfig(oauth=oauth)))

    found = run_checks(config, tmp_path / "state.db", FakeClock())

    warnings = [item for item in found if item.warning]
    if not warned:
        assert warnings == []
        return
    [warning] = warnings
    assert (warning.name, warning.ok) == ("openchoreo.auth.oauth.clientSecretFile", True)
    assert warning.detail == f"{secret} is readable by others (mode {mode:04o}); chmod 600 it"


@pytest.mark.parametrize("key", ["serve.auth.tokenFile", "serve.events.secretFile"])
@pytest.mark.parametrize(
    "content", [None, "", "t0ken-5c1a-9e7f\n"], ids=["missing", "empty", "set"]
)
def test_serves_secret_files_are_checked_as_serve_reads_them_at_its_start(
    tmp_path: Path, key: str, content: str | None
) -> None:
    """`check` passed a config `serve` then refused to start with (exit 2, which its unit does
    not restart): the file missing, or empty."""
    secret = tmp_path / "serve-secret"
    if content is not None:
        secret.write_text(content)
        secret.chmod(0o600)
    field = "token_file" if key == "serve.auth.tokenFile" else "events_secret_file"
    config = Config(providers=(), serve=ServeConfig(**{field: secret}))

    found = run_checks(config, tmp_path / "state.db", FakeClock())

    assert all(item.ok for item in found), "a cron job may share the config of a serve elsewhere"
    warned = {item.name: item.detail for item in found if item.warning}
    if content:
        assert warned == {}
        return
    problem = "cannot read" if content is None else "is empty"
    assert problem in warned[key]
    assert warned[key].endswith(": `serve` would not start (`run` does not read it)")
    assert not warned[key].startswith(key)


@pytest.mark.parametrize("key", ["serve.auth.tokenFile", "serve.events.secretFile"])
def test_a_serve_secret_short_enough_to_guess_is_a_warning(tmp_path: Path, key: str) -> None:
    """Failed attempts are counted, never slowed down: `changeme` would be found."""
    secret = tmp_path / "serve-secret"
    secret.write_text("changeme\n")
    secret.chmod(0o600)
    field = "token_file" if key == "serve.auth.tokenFile" else "events_secret_file"
    config = Config(providers=(), serve=ServeConfig(**{field: secret}))

    found = run_checks(config, tmp_path / "state.db", FakeClock())

    warned = {item.name: item.detail for item in found if item.warning}
    assert warned == {
        key: "the secret is 8 characters long, which a caller may guess: use 12 or more random "
        "characters (`openssl rand -hex 32`)"
    }


@pytest.mark.parametrize(
    ("listen", "token", "warned"),
    [
        ("0.0.0.0:8080", None, True),
        ("[::]:8080", None, True),
        ("ingest.internal:8080", None, True),
        ("0.0.0.0:8080", "file", False),
        ("0.0.0.0:8080", "env", False),
        ("127.0.0.1:8080", None, False),
        ("[::1]:8080", None, False),
        ("localhost:8080", None, False),
    ],
)
def test_serve_beyond_loopback_without_a_token_is_a_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listen: str,
    token: str | None,
    warned: bool,
) -> None:
    """`serve` refuses such an address (exit 2) unless --insecure-no-auth; `check` says so."""
    monkeypatch.delenv("CHOREO_INGEST_SERVE_TOKEN", raising=False)
    token_file = None
    if token == "file":
        token_file = tmp_path / "serve-token"
        token_file.write_text("t0ken-5c1a\n")
        token_file.chmod(0o600)
    elif token == "env":
        monkeypatch.setenv("CHOREO_INGEST_SERVE_TOKEN", "t0ken-5c1a")
    config = Config(providers=(), serve=ServeConfig(listen=listen, token_file=token_file))

    found = run_checks(config, tmp_path / "state.db", FakeClock())

    assert all(item.ok for item in found)
    warnings = {item.name: item.detail for item in found if item.warning}
    if not warned:
        assert "serve.listen" not in warnings
        return
    assert warnings["serve.listen"].startswith(f"{listen} is beyond loopback and no token is set")
    assert "--insecure-no-auth" in warnings["serve.listen"]


@pytest.mark.parametrize(
    ("listen", "secret", "warned"),
    [
        ("0.0.0.0:8080", False, True),
        ("0.0.0.0:8080", True, False),
        ("127.0.0.1:8080", False, False),
    ],
)
def test_serve_beyond_loopback_without_an_events_secret_is_a_warning(
    tmp_path: Path, listen: str, secret: bool, warned: bool
) -> None:
    """The forwarder sends no credentials: without the secret, anyone who reaches the port
    may post events, and a flood of them makes a full walk due."""
    secret_file = None
    if secret:
        secret_file = tmp_path / "events-secret"
        secret_file.write_text("s3cret-events\n")
        secret_file.chmod(0o600)
    serve = ServeConfig(listen=listen, token_file=None, events_secret_file=secret_file)

    found = run_checks(Config(providers=(), serve=serve), tmp_path / "state.db", FakeClock())

    warnings = {item.name: item.detail for item in found if item.warning}
    assert ("serve.events.secretFile" in warnings) is warned
    if warned:
        assert warnings["serve.events.secretFile"].startswith(
            f"{listen} is beyond loopback and there is no serve.events.secretFile: the event "
            "routes take events from anyone"
        )


@pytest.mark.parametrize(
    ("listen", "token", "said"),
    [
        ("127.0.0.1:8080", False, None),
        ("127.0.0.1:8080", True, "has no effect: a token is set, so `serve` answers requests for"),
        ("0.0.0.0:8080", False, "has no effect: 0.0.0.0:8080 is beyond loopback, so `serve` answ"),
    ],
)
def test_allowed_hosts_that_change_nothing_are_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str, token: bool, said: str | None
) -> None:
    """They are read only by a loopback `serve` without a token: set elsewhere, they would
    seem to restrict who may call."""
    monkeypatch.delenv("CHOREO_INGEST_SERVE_TOKEN", raising=False)
    if token:
        monkeypatch.setenv("CHOREO_INGEST_SERVE_TOKEN", "t0ken-5c1a")
    serve = ServeConfig(listen=listen, allowed_hosts=("ingest.internal",))

    found = run_checks(Config(providers=(), serve=serve), tmp_path / "state.db", FakeClock())

    warnings = {item.name: item.detail for item in found if item.warning}
    if said is None:
        assert "serve.allowedHosts" not in warnings
    else:
        assert warnings["serve.allowedHosts"].startswith(said)


@pytest.mark.parametrize("textfile", [True, False])
def test_metrics_labels_without_a_textfile_are_a_warning(tmp_path: Path, textfile: bool) -> None:
    config = Config(
        providers=(),
        metrics_textfile=tmp_path / "choreo.prom" if textfile else None,
        metrics_labels=(("platform", "prod"),),
    )

    found = run_checks(config, tmp_path / "state.db", FakeClock())

    warnings = {item.name: item.detail for item in found if item.warning}
    if textfile:
        assert "metrics.labels" not in warnings
    else:
        assert warnings["metrics.labels"] == (
            "has no effect: no metrics.textfile (serve's /metrics carries no such labels)"
        )
