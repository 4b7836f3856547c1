"""Bad input is a usage error, never a bug: what the CLI makes of what it is given.

Every test starts `python -m choreo_ingest` off a TTY, as cron does: the exit status, stdout and
stderr of a real process are the point (a closed pipe, a signal, typer's own usage errors).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import DEFAULT_INBOX_CAPACITY as INBOX_CAPACITY
from choreo_ingest.metrics import ENTITY_KINDS
from choreo_ingest.models import EntityIteratorResult
from choreo_ingest.simulator import World
from choreo_ingest.store import MIGRATION_NAMES, SCHEMA_VERSION, Store
from choreo_ingest.store.run_lock import RunLock
from choreo_ingest.version import __version__

from fakes import FakeClock, make_entity
from sim_support import (
    CLI_TIMEOUT_SECONDS,
    INHERITED_SETTINGS,
    expected_refs,
    ingest_world,
    one_error_line,
    plain,
    run_cli,
    write_config,
)

UNREACHABLE_URL = "http://127.0.0.1:9/api/v1"
PROVIDER = "openchoreo"


def component_event(name: str, action: str = "updated") -> dict[str, Any]:
    return {
        "kind": "Component",
        "name": name,
        "namespace": "acme",
        "project": "p",
        "action": action,
    }


def pending(state_path: Path, provider: str = PROVIDER) -> list[dict[str, Any]]:
    with Store.open(state_path, readonly=True) as store:
        return [item.body for item in store.pending_events(provider, INBOX_CAPACITY + 1)]


@pytest.fixture
def world() -> World:
    return World.generate(2, 2, 3, seed=12)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def ingested(state_path: Path, world: World) -> Path:
    """A state file holding one completed cycle of the `openchoreo` provider over `world`."""
    ingest_world(state_path, world, FakeClock())
    return state_path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """`choreo-ingest.yaml` in the working directory: openchoreo, state in ./state.db."""
    return write_config(
        tmp_path / "choreo-ingest.yaml", UNREACHABLE_URL, state={"path": "state.db"}
    )


@pytest.fixture
def cli(tmp_path: Path, config_file: Path) -> Any:
    def call(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, stdin=stdin)

    return call


class TestEventInput:
    def test_a_binary_file_is_a_usage_error(self, tmp_path: Path, cli: Any) -> None:
        (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")

        done = cli("event", "image.png")

        assert done.returncode == 2
        assert "image.png: not UTF-8 text (byte 0x89 at offset 0)" in one_error_line(done.stderr)
        assert done.stdout == ""

    def test_more_than_32_mib_of_events_at_once_is_refused_before_it_is_parsed(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        """1.5 million events (117 MB) took 1.66 GB of memory to parse, and a pipe is read
        whole: no more than the limit is read."""
        line = b'{"kind": "Component", "name": "a", "namespace": "n", "action": "created"}\n'
        environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
        done = subprocess.run(
            [sys.executable, "-m", "choreo_ingest", "event", "--json"],
            cwd=tmp_path,
            env=environment,
            input=line * (33 * 2**20 // len(line)),
            capture_output=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )

        assert done.returncode == 2
        assert json.loads(done.stdout)["error"] == (
            "stdin: more than 32 MiB of events at once; queue them in parts (NDJSON: "
            "`split -l 50000`)"
        )

    def test_binary_on_stdin_is_a_usage_error_with_json(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
        done = subprocess.run(
            [sys.executable, "-m", "choreo_ingest", "event", "--json"],
            cwd=tmp_path,
            env=environment,
            input=b'{"kind": "Component", "name": "\xff"}',
            capture_output=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )

        assert done.returncode == 2
        assert "stdin: not UTF-8 text" in one_error_line(done.stderr.decode())
        assert json.loads(done.stdout)["exitCode"] == 2

    @pytest.mark.parametrize("opening", ["[", '{"a":'], ids=["arrays", "objects"])
    def test_deeply_nested_json_is_rejected_not_a_crash(
        self, cli: Any, state_path: Path, opening: str
    ) -> None:
        with Store.open(state_path) as store:
            store.migrate()  # made before: the one line on stderr is the refusal
        done = cli("event", "-", "--json", stdin=opening * 100_000)

        assert done.returncode == 2
        assert one_error_line(done.stderr).endswith("event 1: nested deeper than 32 levels")
        assert json.loads(done.stdout)["rejected"] == [
            {"index": 1, "problem": "nested deeper than 32 levels"}
        ]

    def test_an_event_over_64_kib_is_rejected_with_its_index(
        self, cli: Any, state_path: Path
    ) -> None:
        big = {**component_event("big"), "note": "x" * 70_000}
        events = [component_event("a"), big, component_event("b")]
        with Store.open(state_path) as store:
            store.migrate()  # made before: the one line on stderr is the refusal

        done = cli("event", "-", "--json", stdin=json.dumps(events))

        assert done.returncode == 2
        assert "event 2: 70,0" in one_error_line(done.stderr)
        assert "at most 65,536" in done.stderr
        assert json.loads(done.stdout)["stored"] == 2
        assert [body["name"] for body in pending(state_path)] == ["a", "b"]

    def test_identical_events_coalesce_into_one(self, cli: Any, state_path: Path) -> None:
        """20,000 copies of one event would cost 20,000 re-reads of one object."""
        ndjson = (json.dumps(component_event("checkout")) + "\n") * 20_000
        with Store.open(state_path) as store:
            store.migrate()

        done = cli("event", "-", stdin=ndjson)

        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert pending(state_path) == [component_event("checkout")]

    def test_the_first_events_of_a_state_not_there_yet_make_it_and_say_so(
        self, cli: Any, state_path: Path
    ) -> None:
        """A new install's first events are kept; a mistyped `--db` would keep them where no run
        reads them, so the call that made the state says so (once: cron mails it)."""
        first = cli("event", "-", stdin=json.dumps(component_event("checkout")))
        second = cli("event", "-", stdin=json.dumps(component_event("cart")))

        assert (first.returncode, first.stdout) == (0, "")
        [warning] = plain(first.stderr).splitlines()
        assert warning == (
            "choreo-ingest: warning: state.db (state.path): no state was there; made one for these "
            "events (1 kept). Right for a new install; if `run` uses another state, they are "
            "never applied"
        )
        assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
        assert pending(state_path) == [component_event("checkout"), component_event("cart")]

    def test_a_first_call_that_keeps_no_event_still_says_it_made_a_state(
        self, cli: Any, state_path: Path
    ) -> None:
        """The forwarder sends kinds the catalog does not take (`ReleaseBinding`): a call of
        those only makes the state all the same, and a mistyped `--db` must not go unsaid."""
        ignored = {"kind": "ReleaseBinding", "name": "r", "namespace": "n", "action": "updated"}

        first = cli("event", "-", stdin=json.dumps(ignored))
        second = cli("event", "-", stdin=json.dumps(component_event("cart")))

        assert first.returncode == 0, first.stderr
        assert "no state was there; made one for these events (0 kept)" in plain(first.stderr)
        assert (second.returncode, second.stderr) == (0, "")
        assert pending(state_path) == [component_event("cart")]

    def test_a_full_inbox_refuses_new_events_naming_the_limit(
        self, cli: Any, state_path: Path
    ) -> None:
        with Store.open(state_path) as store:
            store.migrate()
            store.add_events(
                PROVIDER, [component_event(f"c{i}") for i in range(INBOX_CAPACITY)], 1.0
            )

        refused = cli("event", "-", stdin=json.dumps(component_event("one-more")))
        replacing = cli("event", "-", stdin=json.dumps(component_event("c7", "deleted")))

        assert refused.returncode == 2
        assert "is full (100,000 pending events, the limit)" in one_error_line(refused.stderr)
        assert replacing.returncode == 0, replacing.stderr
        names = [body["name"] for body in pending(state_path)]
        assert len(names) == INBOX_CAPACITY
        assert "one-more" not in names
        assert names[-1] == "c7"

    def test_the_configured_capacity_refuses_and_schedules_a_refresh(
        self, tmp_path: Path, state_path: Path
    ) -> None:
        write_config(
            tmp_path / "choreo-ingest.yaml",
            UNREACHABLE_URL,
            state={"path": "state.db"},
            events={"inboxCapacity": 2},
        )
        two = [component_event("a"), component_event("b")]
        assert run_cli("event", "-", cwd=tmp_path, stdin=json.dumps(two)).returncode == 0

        refused = run_cli("event", "-", cwd=tmp_path, stdin=json.dumps(component_event("c")))
        status = run_cli("status", "--json", cwd=tmp_path)

        assert refused.returncode == 2
        assert "is full (2 pending events, the limit)" in one_error_line(refused.stderr)
        assert "refreshRequested" in json.loads(status.stdout)["providers"][0]


class TestEventPurge:
    @pytest.fixture
    def queued(self, cli: Any, state_path: Path) -> Path:
        """Three pending events of openchoreo (one of them parked) and one of `other`."""
        events = [component_event(name) for name in ("a", "b", "c")]
        assert cli("event", "-", stdin=json.dumps(events)).returncode == 0
        with Store.open(state_path) as store:
            first = store.pending_events(PROVIDER)[0]
            store.fail_event(PROVIDER, first.seq, "down", max_attempts=1)
            store.add_events("other", [component_event("z")], 1.0)
        return state_path

    def counts(self, state_path: Path) -> tuple[int, int]:
        with Store.open(state_path, readonly=True) as store:
            counts = store.inbox_counts()
        return counts.pending, counts.parked

    def test_off_a_tty_it_needs_yes(self, cli: Any, queued: Path) -> None:
        done = cli("event", "purge")

        assert done.returncode == 2
        assert "--yes" in one_error_line(done.stderr)
        assert self.counts(queued) == (3, 1)

    def test_empties_the_inbox_parked_events_included(self, cli: Any, queued: Path) -> None:
        done = cli("event", "purge", "--yes", "--json")

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"provider": None, "purged": 4}
        assert self.counts(queued) == (0, 0)

    def test_a_named_provider_loses_only_its_own_events(self, cli: Any, queued: Path) -> None:
        done = cli("event", "purge", PROVIDER, "--yes")

        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert self.counts(queued) == (1, 0)
        assert [body["name"] for body in pending(queued, "other")] == ["z"]

    def test_an_unknown_provider_purges_nothing(self, cli: Any, queued: Path) -> None:
        done = cli("event", "purge", "typo", "--yes")

        assert done.returncode == 2
        assert "unknown provider 'typo'" in one_error_line(done.stderr)
        assert self.counts(queued) == (3, 1)


CLOSED_PIPE_COMMANDS = [
    ["export"],
    ["export", "--format", "yaml"],
    ["changes"],
    ["changes", "--json"],
    ["status"],
    ["status", "--json"],
    ["providers"],
    ["migrate", "--status"],
]


class TestClosedPipe:
    """`export | head -1` and the like: the reader took what it wanted; no error, exit 0."""

    @pytest.mark.parametrize(
        "args", CLOSED_PIPE_COMMANDS, ids=[" ".join(args) for args in CLOSED_PIPE_COMMANDS]
    )
    def test_a_reader_gone_before_the_first_line(
        self, tmp_path: Path, ingested: Path, args: list[str]
    ) -> None:
        read_end, write_end = os.pipe()
        os.close(read_end)  # `| true`: nobody will ever read
        with write_end_closed(write_end):
            process = start_cli(*args, "--db", ingested, cwd=tmp_path, stdout=write_end)

        _, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)

        assert (process.returncode, stderr) == (0, "")

    @pytest.mark.parametrize(
        "args", [["--help"], ["status", "--help"], ["simulate", "--help"]], ids=" ".join
    )
    def test_the_help_to_a_reader_gone(self, tmp_path: Path, args: list[str]) -> None:
        """rich answers a closed pipe with exit 1; the help exits 0 there as every command does."""
        read_end, write_end = os.pipe()
        os.close(read_end)
        with write_end_closed(write_end):
            process = start_cli(*args, cwd=tmp_path, stdout=write_end)

        _, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)

        assert (process.returncode, stderr) == (0, "")

    def test_head_1_of_a_long_export(self, tmp_path: Path) -> None:
        state_path = tmp_path / "big.db"
        ingest_world(state_path, World.generate(3, 4, 8, seed=12), FakeClock())
        process = start_cli("export", "--db", state_path, cwd=tmp_path, stdout=subprocess.PIPE)
        assert process.stdout is not None

        first = process.stdout.readline()
        process.stdout.close()  # the export is far longer than a pipe holds: it is mid-write
        _, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)

        assert json.loads(first)["apiVersion"] == "backstage.io/v1alpha1"
        assert (process.returncode, stderr) == (0, "")


@contextmanager
def write_end_closed(fd: int) -> Iterator[None]:
    try:
        yield
    finally:
        os.close(fd)


def start_cli(*args: str | Path, cwd: Path, stdout: Any) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
    return subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", *map(str, args)],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


UNKNOWN_PROVIDER_COMMANDS = [
    ["refresh", "typo"],
    ["refresh", "typo", "--now"],
    ["reset", "typo", "--yes"],
    ["reset", "typo", "--purge", "--yes"],
    ["removals", "typo"],
    ["removals", "approve", "typo", "--yes"],
    ["status", "typo"],
    ["run", "--provider", "typo"],
    ["event", "--provider", "typo"],
]


class TestUnknownProvider:
    @pytest.mark.parametrize(
        "args",
        UNKNOWN_PROVIDER_COMMANDS,
        ids=[" ".join(args) for args in UNKNOWN_PROVIDER_COMMANDS],
    )
    def test_is_a_usage_error_listing_the_names_and_leaves_no_trace(
        self, cli: Any, ingested: Path, args: list[str]
    ) -> None:
        done = cli(*args, stdin=json.dumps(component_event("a")))
        status = cli("status", "--json")

        assert done.returncode == 2
        line = one_error_line(done.stderr)
        assert "'typo'" in line
        assert "configured: openchoreo" in line
        assert "installed: openchoreo" in line
        assert done.stdout == ""
        assert [item["name"] for item in json.loads(status.stdout)["providers"]] == [PROVIDER]
        assert pending(ingested) == []

    def test_with_json_it_is_one_error_document(self, cli: Any, ingested: Path) -> None:
        done = cli("refresh", "typo", "--json")

        assert done.returncode == 2
        document = json.loads(done.stdout)
        assert document["exitCode"] == 2
        assert "'typo' is not configured" in document["error"]

    def test_a_name_only_the_state_file_knows(
        self, tmp_path: Path, cli: Any, ingested: Path
    ) -> None:
        """Removed from the config, still in the state: shown and listed, never acted on."""
        write_config(tmp_path / "choreo-ingest.yaml", None, providers=["successor"])

        refreshed = cli("refresh", PROVIDER, "--db", ingested)
        shown = cli("status", PROVIDER, "--json", "--db", ingested)
        listed = cli("removals", PROVIDER, "--db", ingested)

        assert refreshed.returncode == 2
        assert f"`reset {PROVIDER} --forget` removes it" in one_error_line(refreshed.stderr)
        assert shown.returncode == 0, shown.stderr
        assert listed.returncode == 0, listed.stderr


class TestForget:
    @pytest.fixture
    def unconfigured(self, tmp_path: Path, ingested: Path) -> Path:
        """The config no longer has openchoreo; the state file still does."""
        write_config(
            tmp_path / "choreo-ingest.yaml",
            None,
            providers=["successor"],
            state={"path": "state.db"},
        )
        return ingested

    def test_removes_state_entities_and_counters(
        self, cli: Any, unconfigured: Path, world: World
    ) -> None:
        with Store.open(unconfigured, readonly=True) as store:
            since = store.last_change_seq()

        done = cli("reset", PROVIDER, "--forget", "--yes", "--json")

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "provider": PROVIDER,
            "reset": True,
            "forgotten": True,
            "purged": len(expected_refs(world)),
        }
        with Store.open(unconfigured, readonly=True) as store:
            assert store.provider_names() == []
            assert store.counters(PROVIDER) == {}
            assert list(store.iter_entities()) == []
            deleted = {row.ref for row in store.changes(since) if row.op == "delete"}
        assert deleted == expected_refs(world)
        status = json.loads(cli("status", "--json").stdout)
        assert [item["name"] for item in status["providers"]] == ["successor"]

    def test_off_a_tty_it_needs_yes(self, cli: Any, unconfigured: Path) -> None:
        done = cli("reset", PROVIDER, "--forget")

        assert done.returncode == 2
        with Store.open(unconfigured, readonly=True) as store:
            assert store.provider_names() == [PROVIDER]

    def test_with_purge_is_a_usage_error_and_forgets_nothing(
        self, cli: Any, unconfigured: Path
    ) -> None:
        """`--purge` would add nothing: forgetting a provider removes its entities anyway."""
        done = cli("reset", PROVIDER, "--forget", "--purge", "--yes", "--json")

        assert done.returncode == 2
        line = one_error_line(done.stderr)
        assert line.endswith(
            "--forget and --purge cannot be combined: --forget already removes the provider's "
            "entities; drop --purge"
        )
        assert json.loads(done.stdout) == {"exitCode": 2, "error": line.split("error: ", 1)[1]}
        with Store.open(unconfigured, readonly=True) as store:
            assert store.provider_names() == [PROVIDER]
            assert store.active_count(PROVIDER) > 0

    def test_refuses_a_provider_still_configured(self, cli: Any, ingested: Path) -> None:
        done = cli("reset", PROVIDER, "--forget", "--yes")

        assert done.returncode == 2
        assert "'openchoreo' is still configured" in one_error_line(done.stderr)
        with Store.open(ingested, readonly=True) as store:
            assert store.active_count(PROVIDER) > 0

    def test_refuses_a_name_the_state_does_not_know(self, cli: Any, unconfigured: Path) -> None:
        done = cli("reset", "typo", "--forget", "--yes")

        assert done.returncode == 2
        assert "holds no provider 'typo' to forget" in one_error_line(done.stderr)


class TestOptionValues:
    def test_an_unknown_kind_lists_the_kinds(self, cli: Any, ingested: Path) -> None:
        done = cli("export", "--kind", "domian")

        assert done.returncode == 2
        line = one_error_line(done.stderr)
        assert f"--kind: no entity of kind 'domian' (kinds: {', '.join(ENTITY_KINDS)})" in line
        assert done.stdout == ""

    def test_a_kind_in_any_case_is_accepted(self, cli: Any, ingested: Path, world: World) -> None:
        done = cli("export", "--kind", "DOMAIN")

        assert done.returncode == 0, done.stderr
        kinds = [json.loads(line)["kind"] for line in done.stdout.splitlines()]
        assert kinds == ["Domain"] * sum(1 for ref in expected_refs(world) if ref[:7] == "domain:")

    @pytest.mark.parametrize(
        "args",
        [["changes", "--limit", "-1"], ["changes", "--since", "-1"], ["removals", "--limit", "-1"]],
        ids=["changes-limit", "changes-since", "removals-limit"],
    )
    def test_a_negative_count_is_a_usage_error(
        self, cli: Any, ingested: Path, args: list[str]
    ) -> None:
        done = cli(*args)

        assert done.returncode == 2
        assert "should be greater than or equal to 0" in one_error_line(done.stderr)
        assert done.stdout == ""

    @pytest.mark.parametrize(
        "args",
        [["--db", "", "status"], ["status", "--db", ""], ["export", "--db="]],
        ids=["before-the-command", "after-the-command", "equals"],
    )
    def test_an_empty_db_is_a_usage_error_not_the_configured_state(
        self, cli: Any, ingested: Path, args: list[str]
    ) -> None:
        """`--db "$DB"` with DB unset worked on the config's state file instead."""
        done = cli(*args)

        assert (done.returncode, done.stdout) == (2, "")
        assert one_error_line(done.stderr).endswith(
            "--db: empty; give a state file or a PostgreSQL URL"
        )

    def test_a_db_url_with_a_port_out_of_range_is_a_usage_error_without_its_password(
        self, cli: Any
    ) -> None:
        url = "postgresql://u:secret-4f2a9c@h:99999/x"

        done = cli("status", "--db", url)
        as_json = cli("run", "--json", "--db", url)

        assert (done.returncode, done.stdout) == (2, "")
        line = one_error_line(done.stderr)
        assert line.startswith("choreo-ingest: error: --db: a port is out of range (1-65535)")
        assert as_json.returncode == 2
        document = json.loads(as_json.stdout)
        assert (document["exitCode"], document["error"]) == (2, line.split("error: ", 1)[1])
        assert "4f2a9c" not in done.stderr + as_json.stdout + as_json.stderr

    def test_a_state_url_with_a_port_out_of_range_is_a_usage_error_naming_the_key(
        self, cli: Any, tmp_path: Path
    ) -> None:
        config = write_config(
            tmp_path / "pg.yaml",
            UNREACHABLE_URL,
            state={"url": "postgresql://u:secret-4f2a9c@h:99999/x"},
        )

        done = cli("status", "--config", config)

        assert (done.returncode, done.stdout) == (2, "")
        assert one_error_line(done.stderr).startswith(
            "choreo-ingest: error: state.url: a port is out of range (1-65535)"
        )
        assert "4f2a9c" not in done.stderr

    @pytest.mark.parametrize(
        ("args", "fields"),
        [
            (["--log-json", "--log-console", "run"], None),
            (["--log-console", "--log-json", "run", "--json"], {"outcome", "providers", "events"}),
            (["--log-json", "--log-console", "status", "--json"], set()),
        ],
        ids=["run-with-nothing-due", "run-json", "status-json"],
    )
    def test_both_log_formats_are_a_usage_error_naming_both(
        self, cli: Any, state_path: Path, world: World, args: list[str], fields: set[str] | None
    ) -> None:
        """The lean entry (a `run` with nothing due off a TTY) and the typer application alike:
        the last flag no longer wins silently."""
        ingest_world(state_path, world, SystemClock())
        assert cli("run").returncode == 0  # nothing is due: the lean entry's idle call

        done = cli(*args)

        assert done.returncode == 2
        line = one_error_line(done.stderr)
        assert "--log-json and --log-console cannot be combined" in line
        if fields is None:
            assert done.stdout == ""
            return
        document = json.loads(done.stdout)
        assert (document.keys() - {"exitCode", "error"}, document["exitCode"]) == (fields, 2)
        assert line.endswith(document["error"] + " (see `choreo-ingest --help`)")

    def test_unknown_option_with_json_still_prints_one_json_document(self, cli: Any) -> None:
        done = cli("run", "--json", "--forse")

        assert done.returncode == 2
        document = json.loads(done.stdout)
        assert document["exitCode"] == 2
        assert "--forse" in document["error"]
        assert "run: No such option: --forse" in one_error_line(done.stderr)

    def test_unknown_option_is_one_line_on_stderr(self, cli: Any) -> None:
        done = cli("run", "--forse")

        assert (done.returncode, done.stdout) == (2, "")
        assert "(see `choreo-ingest run --help`)" in one_error_line(done.stderr)

    def test_no_command_still_prints_the_help(self, cli: Any) -> None:
        done = cli()

        assert done.returncode == 2
        assert "Usage: choreo-ingest" in done.stdout + done.stderr


class TestMigrateStatus:
    def test_lists_every_migration_off_a_tty(self, cli: Any, state_path: Path) -> None:
        before = cli("migrate", "--status")
        cli("migrate")
        after = cli("migrate", "--status")

        assert (before.returncode, after.returncode) == (0, 0)
        assert before.stdout.splitlines()[1:] == [f"{name} pending" for name in MIGRATION_NAMES]
        assert after.stdout.splitlines()[1:] == [f"{name} applied" for name in MIGRATION_NAMES]
        assert "schema version 0 (supported " in before.stdout.splitlines()[0]
        assert before.stdout.splitlines()[0].endswith(
            "; no state there yet (`run` or `migrate` makes it)"
        )
        assert "no state there yet" not in after.stdout

    def test_says_in_json_whether_a_state_is_there_and_names_it_absolutely(
        self, cli: Any, state_path: Path
    ) -> None:
        """A mistyped `--db` read as an unmigrated state, named as typed."""
        before = json.loads(cli("--db", "typo.db", "migrate", "--status", "--json").stdout)
        cli("migrate")
        after = json.loads(cli("migrate", "--status", "--json").stdout)

        assert (before["exists"], after["exists"]) == (False, True)
        assert Path(before["stateFile"]).is_absolute()
        assert before["stateFile"].endswith("typo.db")
        assert after["stateFile"] == str(state_path.absolute())

    def test_names_the_release_that_reads_it(self, cli: Any, state_path: Path) -> None:
        """Rolling back takes a release of the same schema: the one installed is named."""
        cli("migrate")
        said = cli("migrate", "--status").stdout.splitlines()[0]
        document = json.loads(cli("migrate", "--status", "--json").stdout)

        assert said.endswith(f"(supported {SCHEMA_VERSION}, by choreo-ingest {__version__})")
        assert document["release"] == __version__
        packaged = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
        assert packaged["project"]["version"] == __version__  # else pip says already installed


class TestSigterm:
    """SIGTERM before a command routes it to its stop flag exits 130 as it does later, not 143.
    (A config file no longer blocks `run`: a FIFO named as one is refused at once.)"""

    @pytest.mark.parametrize("command", [["event", "{fifo}"]], ids=["event-reading-its-input"])
    def test_exits_130(self, tmp_path: Path, command: list[str]) -> None:
        fifo = tmp_path / "blocks.fifo"
        os.mkfifo(fifo)
        args = [arg.format(fifo=fifo) for arg in command]
        process = start_cli(
            *args, "--db", tmp_path / "state.db", cwd=tmp_path, stdout=subprocess.PIPE
        )

        writer = open_once_read(fifo, process)
        wait_until_blocked_in_read(process)
        try:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
        finally:
            os.close(writer)

        assert process.returncode == 130, stderr
        assert one_error_line(stderr) == "choreo-ingest: error: interrupted"


def wait_until_blocked_in_read(process: subprocess.Popen[str]) -> None:
    """Until the kernel says `process` sleeps in a read of a pipe (Linux: /proc/PID/wchan).

    A signal that comes between the FIFO's open and the read of it can be lost: Python runs a
    handler between bytecodes, and a read that has begun waits for the writer, which writes
    nothing here. Once the read sleeps, SIGTERM interrupts it (EINTR) and the handler runs.
    """
    wchan = Path(f"/proc/{process.pid}/wchan")
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        sleeping_in = wchan.read_text(encoding="ascii", errors="replace")
        if sleeping_in in ("", "0"):  # a kernel that does not say: give the read time to begin
            time.sleep(0.5)
            return
        if "pipe_read" in sleeping_in:
            return
        time.sleep(0.01)
    pytest.fail(f"the command never waited in a read of the FIFO ({wchan.read_text()!r})")


def open_once_read(fifo: Path, process: subprocess.Popen[str]) -> int:
    """Open the FIFO's write end once `process` has opened it to read (and write nothing)."""
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    pytest.fail("the command never opened the FIFO")


class TestNoStateYet:
    def test_health_without_a_state_file_is_unhealthy_not_a_store_error(
        self, tmp_path: Path, cli: Any
    ) -> None:
        done = cli("health", "--json")

        assert done.returncode == 1, done.stderr
        report = json.loads(done.stdout)
        assert report["healthy"] is False
        assert "no state yet" in report["problems"][0]

    def test_event_while_a_run_holds_the_lock_of_a_new_state_file_is_queued(
        self, tmp_path: Path, cli: Any, config_file: Path
    ) -> None:
        """cron may start `run` and `event` together on a fresh install: the run migrates the
        new file under its lock, and the event waits for that instead of being lost."""
        state = tmp_path / "state.db"
        events = tmp_path / "events.json"
        events.write_text(json.dumps(component_event("cart")))
        held = RunLock(state)
        held.__enter__()
        try:
            waiting = subprocess.Popen(
                [sys.executable, "-m", "choreo_ingest", "event", "--config", str(config_file),
                 "--db", str(state), str(events)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            )  # fmt: skip
            time.sleep(1.0)  # the event command is waiting for the schema by now
            with Store.open(state) as store:
                store.migrate()  # what the run holding the lock does first
        finally:
            held.__exit__(None, None, None)

        _, errors = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, errors
        assert [event["name"] for event in pending(state)] == ["cart"]


class TestProviderNotInstalled:
    """A config that names a provider this machine does not have: every run fails for it, so
    `health` must say so, not stay green while cron mails an error every minute; the run exits
    2 (a configuration to fix), not 3 (upstream trouble)."""

    def test_health_is_red_status_shows_why_and_the_metric_counts(self, tmp_path: Path) -> None:
        config = write_config(
            tmp_path / "choreo-ingest.yaml",
            None,
            providers=["not-installed"],
            state={"path": "state.db"},
            metrics={"textfile": "metrics.prom"},
        )

        ran = run_cli("run", "--config", config, cwd=tmp_path)
        health = run_cli("health", "--json", "--config", config, cwd=tmp_path)
        status = run_cli("status", "--json", "--config", config, cwd=tmp_path)

        assert ran.returncode == 2, ran.stderr
        assert health.returncode == 1, health.stderr
        [problems] = [p["problems"] for p in json.loads(health.stdout)["providers"]]
        assert any(
            "not-installed" in problem and "not installed" in problem for problem in problems
        )
        [provider] = json.loads(status.stdout)["providers"]
        assert "not installed" in (provider["lastError"] or "")
        metrics = (tmp_path / "metrics.prom").read_text()
        assert 'choreo_ingest_consecutive_failures{provider="not-installed"} 1.0' in metrics

    def test_a_run_that_also_met_upstream_trouble_exits_3(self, tmp_path: Path) -> None:
        config = write_config(
            tmp_path / "choreo-ingest.yaml",
            "http://127.0.0.1:9",  # nothing listens there: the burst fails to connect
            providers=["openchoreo", "not-installed"],
            state={"path": "state.db"},
        )

        ran = run_cli("run", "--json", "--config", config, cwd=tmp_path)

        assert ran.returncode == 3, ran.stderr
        document = json.loads(ran.stdout)
        assert document["exitCode"] == 3
        assert [p["action"] for p in document["providers"]] == ["failed", "failed"]


def test_export_as_yaml_quotes_what_yaml_1_2_would_read_as_a_number(tmp_path: Path) -> None:
    """Backstage's parser is YAML 1.2: an unquoted `1e3` is a number there; the mirror's dumper
    quotes it, and `export --format yaml` uses the same one."""
    state = tmp_path / "state.db"
    entity = make_entity("svc")
    metadata = {**entity.body["metadata"], "annotations": {"example.com/size": "1e3"}}
    body = {**entity.body, "metadata": metadata}
    with Store.open(state) as store:
        store.migrate()
        record = store.load_provider("fake")
        record.cycle_id = 1
        store.start_cycle(record, 0.0)
        page = EntityIteratorResult(True, [replace(entity, body=body)])
        store.commit_page("fake", 1, page, None, 0.0)

    done = run_cli("export", "--format", "yaml", "--db", state, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "example.com/size: '1e3'" in done.stdout or 'example.com/size: "1e3"' in done.stdout


def test_the_script_entry_point_loads_nothing_heavy_before_it_takes_sigterm() -> None:
    """`choreo-ingest` runs `choreo_ingest.cli:main`: what importing that module loads is the
    window in which SIGTERM would still kill the process outright (exit 143, not 130)."""
    probe = (
        "import sys, choreo_ingest.cli;"
        "print(sorted(m for m in ('typer', 'rich', 'httpx', 'sqlite3') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert done.stdout.strip() == "[]"
