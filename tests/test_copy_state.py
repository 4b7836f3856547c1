"""`migrate --copy-to`: a running installation moves to another store without a new cycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.errors import ConfigError, LockHeld
from choreo_ingest.event_intake import stored_events
from choreo_ingest.feed import changes_page, entities_page
from choreo_ingest.invocation import copy_state
from choreo_ingest.simulator.world import World
from choreo_ingest.store import PostgresLocation, RunLock, state_location
from choreo_ingest.store.schema import SCHEMA_VERSION

from broken_states import as_schema_6_left_it
from fakes import FakeClock
from sim_support import ingest_world, plain, run_cli, write_config


def snapshot(state: Any) -> dict[str, Any]:
    """What a consumer and an operator see of a state: the feed, the catalog, the providers."""
    with state_location(state).open(readonly=True) as store:
        changes = changes_page(store, 0, 10_000).to_json()
        catalog = entities_page(store, None, 1_000).to_json()
        catalog.pop("nextCursor")
        return {
            "changes": changes,
            "catalog": catalog,
            "providers": [store.load_provider(name) for name in store.provider_names()],
            "inbox": [event.body for event in store.pending_events("openchoreo")],
            "facts": store.facts("openchoreo"),
            "counts": {  # kept by the target's triggers (0005_counts), not copied
                name: (store.entity_counts(name), store.active_count(name))
                for name in store.provider_names()
            },
        }


@pytest.fixture
def source(tmp_path: Path, clock: FakeClock) -> Path:
    state = tmp_path / "source.db"
    ingest_world(state, World.generate(2, 2, 3, seed=12), clock, api="v1")
    event = {"kind": "Component", "name": "x", "namespace": "org-00-umbrella", "action": "created"}
    stored_events(state, "openchoreo", [event], clock)
    return state


def test_a_copy_is_the_same_state_down_to_the_seqs_and_the_store_id(
    source: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.db"

    report = copy_state(source, target)

    assert report.rows["entities"] > 0
    assert snapshot(target) == snapshot(source)


def test_the_copy_goes_on_counting_after_the_source(
    source: Path, tmp_path: Path, clock: FakeClock
) -> None:
    target = tmp_path / "target.db"
    copy_state(source, target)
    before = snapshot(target)["changes"]["newestSeq"]

    ingest_world(target, World.generate(2, 2, 4, seed=12), clock, api="v1", force=True)

    seqs = [change["seq"] for change in snapshot(target)["changes"]["changes"]]
    assert seqs == sorted(set(seqs))
    assert max(seqs) > before


def test_a_target_holding_a_state_is_refused_unless_forced(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.db"
    copy_state(source, target)

    with pytest.raises(ConfigError, match="already holds a state; --force"):
        copy_state(source, target)
    copy_state(source, target, force=True)

    assert snapshot(target) == snapshot(source)


def test_a_source_with_no_state_is_refused_and_nothing_is_created_or_overwritten(
    source: Path, tmp_path: Path
) -> None:
    """A mistyped `--db` with `--force` emptied the target."""
    target = tmp_path / "target.db"
    copy_state(source, target)
    before = snapshot(target)

    done = run_cli(
        "--db", "typo.db", "migrate", "--copy-to", "target.db", "--force", "--json", cwd=tmp_path
    )

    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["error"] == "no state at typo.db: nothing to copy"
    assert not list(tmp_path.glob("typo.db*"))
    assert snapshot(target) == before


@pytest.mark.parametrize(
    ("target", "shown"), [("./source.db", "source.db"), ("linked.db", "linked.db")]
)
def test_a_copy_onto_the_state_itself_is_a_usage_error(
    source: Path, tmp_path: Path, target: str, shown: str
) -> None:
    """It said that another run held the lock (exit 75, which cron takes for "try again");
    through a hard link it emptied and refilled every table of the live state under another
    lock file."""
    (tmp_path / "linked.db").hardlink_to(source)
    done = run_cli(
        "--db", "source.db", "migrate", "--copy-to", target, "--force", "--json", cwd=tmp_path
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["error"] == f"--copy-to: {shown} is the state being copied"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--status", "--copy-to", "copy.db"], "--status and --copy-to cannot be combined"),
        (["--status", "--force"], "--status and --force cannot be combined"),
        (["--force"], "--force goes only with --copy-to"),
    ],
    ids=["status-copy-to", "status-force", "force-alone"],
)
def test_options_that_do_not_go_together_are_a_usage_error_and_nothing_is_written(
    source: Path, tmp_path: Path, options: list[str], error: str
) -> None:
    """`migrate --status --copy-to` made the copy: a listing became a write."""
    before = source.read_bytes()

    done = run_cli("--db", "source.db", "migrate", *options, cwd=tmp_path)

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    [line] = plain(done.stderr).splitlines()
    assert line.startswith(f"choreo-ingest: error: {error}")
    assert not list(tmp_path.glob("copy.db*"))
    assert source.read_bytes() == before


def test_the_copy_takes_both_run_locks(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.db"
    with RunLock(target), pytest.raises(LockHeld):
        copy_state(source, target)
    with RunLock(source), pytest.raises(LockHeld):
        copy_state(source, target)


def test_the_command_copies_and_prints_one_document(source: Path, tmp_path: Path) -> None:
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9", state={"path": "source.db"})

    done = run_cli("migrate", "--copy-to", "copy.db", "--json", cwd=tmp_path)
    again = run_cli("migrate", "--copy-to", "copy.db", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["to"] == "copy.db"
    assert document["copied"]["entities"] > 0
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert snapshot(tmp_path / "copy.db") == snapshot(source)


def test_sqlite_to_postgresql_and_back_keeps_everything(
    source: Path, tmp_path: Path, pg_url: str, clock: FakeClock
) -> None:
    postgres = PostgresLocation(pg_url)
    back = tmp_path / "back.db"

    copy_state(source, postgres)
    copy_state(postgres, back)

    assert snapshot(postgres) == snapshot(source)
    assert snapshot(back) == snapshot(source)
    ingest_world(postgres, World.generate(2, 2, 4, seed=12), clock, api="v1", force=True)
    seqs = [change["seq"] for change in snapshot(postgres)["changes"]["changes"]]
    assert seqs == sorted(set(seqs))
    assert max(seqs) > snapshot(source)["changes"]["newestSeq"]


def test_the_command_copies_to_a_postgresql_url(source: Path, tmp_path: Path, pg_url: str) -> None:
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9", state={"path": "source.db"})

    done = run_cli("migrate", "--copy-to", pg_url, "--json", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert snapshot(PostgresLocation(pg_url)) == snapshot(source)
    status = run_cli("status", "--json", "--db", pg_url, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["providers"][0]["activeEntities"] > 0


def test_a_copy_onto_the_same_postgresql_schema_spelt_otherwise_is_a_usage_error(
    source: Path, tmp_path: Path, pg_url: str
) -> None:
    """Its own lock on the source turned the copy away as "another run holds the run lock"
    (exit 75: try again later, which could never succeed). A lock another session holds on
    that schema is still exit 75."""
    copy_state(source, PostgresLocation(pg_url))
    before = snapshot(PostgresLocation(pg_url))
    spelt_otherwise = f"{pg_url}?sslmode=disable"

    done = run_cli(
        "--db", pg_url, "migrate", "--copy-to", spelt_otherwise, "--force", "--json", cwd=tmp_path
    )  # fmt: skip
    with PostgresLocation(spelt_otherwise).run_lock():
        held = run_cli("--db", "source.db", "migrate", "--copy-to", pg_url, "--force", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error == f"--copy-to: {spelt_otherwise} is the state being copied"
    assert snapshot(PostgresLocation(pg_url)) == before
    assert held.returncode == 75, held.stderr


def test_a_copy_to_url_with_a_port_out_of_range_is_a_usage_error_naming_copy_to(
    source: Path, tmp_path: Path
) -> None:
    done = run_cli(
        "--db", "source.db", "migrate", "--json",
        "--copy-to", "postgresql://u:secret-4f2a9c@h:99999/x", cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["error"].startswith(
        "--copy-to: a port is out of range (1-65535)"
    )
    assert "4f2a9c" not in done.stdout + done.stderr


def test_a_state_an_older_release_wrote_is_left_as_it_was_not_migrated_to_copy_it(
    source: Path, tmp_path: Path
) -> None:
    """The copy an operator makes for a rollback: migrated (source and copy), neither could go
    back to the release that wrote the state."""
    as_schema_6_left_it(source)
    before = source.read_bytes()
    target = tmp_path / "target.db"

    done = run_cli("migrate", "--db", source, "--copy-to", target, cwd=tmp_path)

    assert done.returncode == 4
    assert plain(done.stderr).startswith(
        f"choreo-ingest: error: {source}: schema version 6, an older release's (this one's is "
        f"{SCHEMA_VERSION}): the copy would migrate it and itself first"
    )
    assert "run `choreo-ingest migrate` first" in plain(done.stderr)
    assert source.read_bytes() == before
    assert not target.exists()
