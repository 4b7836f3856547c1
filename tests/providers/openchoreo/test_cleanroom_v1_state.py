"""The PostgreSQL state store against the clean-room OpenChoreo v1 API (tests/cleanroom_v1.py).

README ("Run on more than one host: the state in PostgreSQL"): `state.url` replaces
`state.path`, the schema is created and migrated by the first `run`, and its text columns sort
in byte order "so paging and ref order are the same on both stores". So the same world walked
into a PostgreSQL state and into a state file must export the same catalog, in the same order,
after a first cycle and after a second one whose sweep removes a component deleted in between
(with its APIs: README, "What lands in the catalog" and the sweep), in a database whose own
collation is a locale's, as Backstage's usually is ("it can live in Backstage's database").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cleanroom_v1 import running
from cleanroom_v1_cli import by_ref, cli, export, run_cycle, status, write_config
from cleanroom_v1_worlds import OPENAPI, bulk, odd_names, put_service, showcase

from pg_support import PgCluster

# Paging through every listing of the bulk world, small enough to walk many pages.
CHUNK_SIZE = 20
# Endpoints whose APIs' refs sort one way in byte order ("-" before "_") and the other way in
# a locale's (en-US: "_" before "-").
COLLATING = {
    name: {"type": "HTTP", "port": 80 + i, "schema": {"content": OPENAPI}}
    for i, name in enumerate(["rest-api", "rest_api", "rest0api"])
}


@pytest.fixture
def backstage_database(pg_cluster: PgCluster) -> Iterator[str]:
    """A new database whose default collation is a locale's (en-US), as Backstage's database
    usually is, not the byte order of the throwaway cluster's own: the state's columns must
    sort in byte order all the same. Dropped after the test."""
    url = pg_cluster.fresh_database(icu_locale="en-US")
    yield url
    pg_cluster.drop_database(url)


def changes(config: Path, since: int = 0) -> list[tuple[str, str]]:
    """The change log after `since`, as (op, ref) in seq order."""
    result = cli("--config", config, "changes", "--since", str(since), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    return [(row["op"], row["ref"]) for row in json.loads(result.stdout)["changes"]]


def newest_seq(config: Path) -> int:
    result = cli("--config", config, "changes", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    return int(json.loads(result.stdout)["newestSeq"])


def test_a_postgresql_state_exports_what_a_state_file_does_through_a_cycle_and_a_sweep(
    here: Path, backstage_database: str
) -> None:
    on_file, on_pg = here / "file", here / "pg"
    on_file.mkdir()
    on_pg.mkdir()
    with running() as server:
        showcase(server.api)
        odd_names(server.api)
        bulk(server.api, {"bulk-a": 45, "bulk-b": 25})
        put_service(server.api, "globex", "web", "edge", "edge-main", COLLATING)
        file_config = write_config(on_file, server, chunk_size=CHUNK_SIZE)
        pg_config = write_config(on_pg, server, chunk_size=CHUNK_SIZE)
        document: dict[str, Any] = yaml.safe_load(pg_config.read_text())
        del document["state"]["path"]
        document["state"]["url"] = backstage_database
        pg_config.write_text(yaml.safe_dump(document))

        for config in (file_config, pg_config):
            run_cycle(config, max_runs=20)
        first = {config: export(config) for config in (file_config, pg_config)}
        seqs = {config: newest_seq(config) for config in (file_config, pg_config)}

        server.api.delete("components", "acme", "cart")
        server.api.delete("workloads", "acme", "cart-7d9f6b")
        for config in (file_config, pg_config):
            run_cycle(config, max_runs=20)
        second = {config: export(config) for config in (file_config, pg_config)}
        logged = {config: changes(config) for config in seqs}
        later = {config: changes(config, seqs[config]) for config in seqs}
        pg_status = status(pg_config)

    assert pg_status["stateFile"] == backstage_database
    assert not (on_pg / "state.db").exists()
    assert first[pg_config] == first[file_config]
    assert second[pg_config] == second[file_config]

    before = by_ref(first[file_config])
    gone = sorted(
        ref
        for ref in before
        if ref == "component:acme/cart" or ref.startswith("api:acme/shop-cart-")
    )
    assert len(gone) > 1  # the component and its APIs
    assert sorted(set(before) - set(by_ref(second[file_config]))) == gone
    assert logged[pg_config] == logged[file_config]
    assert sorted(ref for _, ref in later[pg_config]) == gone
    assert {op for op, _ in later[pg_config]} == {"delete"}
    assert [p["activeEntities"] for p in pg_status["providers"]] == [len(second[pg_config])]
