"""The org era's index of each component's claims on API names: what an event releases."""

from __future__ import annotations

from typing import Any

from conftest import MemoryIndex

from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.openchoreo.api_names import CLAIMS, ApiClaim, claim_key
from choreo_ingest.providers.openchoreo.claimed_orgs import (
    CLAIMED,
    claimed_projects,
    claimed_rows,
    released,
    released_in,
)
from choreo_ingest.providers.openchoreo.generation import Walk

B_C = ApiClaim(namespace="acme", owner=("shop", "a"), endpoint="b-c", plain="a-b-c")
D = ApiClaim(namespace="acme", owner=("shop", "a"), endpoint="d", plain="a-d")
OTHER = ApiClaim(namespace="acme", owner=("shop", "a-b"), endpoint="c", plain="a-b-c")


def walk_on(index: MemoryIndex) -> Walk:
    fields: Any = {"client": None, "queues": None, "config": None, "provider": "p", "clock": None}
    return Walk(index=index, **fields)


def released_keys(index: MemoryIndex, component: str) -> dict[str, list[str]]:
    rows = released(walk_on(index), "acme", component)
    assert all(row.value is None for row in rows)
    return {table: [row.key for row in rows if row.table == table] for table in (CLAIMS, CLAIMED)}


def test_a_mapping_indexes_each_claim_by_its_component_with_its_project() -> None:
    rows = claimed_rows("acme", [B_C, D, OTHER])

    assert rows == [
        IndexEntry(CLAIMED, claim_key(B_C), "acme/a", "shop"),
        IndexEntry(CLAIMED, claim_key(D), "acme/a", "shop"),
        IndexEntry(CLAIMED, claim_key(OTHER), "acme/a-b", "shop"),
    ]


def test_a_claim_a_later_mapping_left_out_is_released_until_the_sweep_prunes_it() -> None:
    """A walk's page maps `a` without `b-c`: the claim of `b-c` holds its name until the cycle's
    sweep, and so long an event about `a` releases it too."""
    index = MemoryIndex()
    index.apply(claimed_rows("acme", [B_C, D]))
    index.complete_cycle()
    index.apply(claimed_rows("acme", [D]))  # the next cycle's page

    assert released_keys(index, "a") == {
        CLAIMS: [claim_key(B_C), claim_key(D)],
        CLAIMED: [claim_key(B_C), claim_key(D)],
    }
    index.complete_cycle()
    assert released_keys(index, "a") == {CLAIMS: [claim_key(D)], CLAIMED: [claim_key(D)]}
    assert released_keys(index, "a-b") == {CLAIMS: [], CLAIMED: []}


def test_the_row_a_release_before_this_one_wrote_is_released_too() -> None:
    """That release wrote one row a component, keyed by it, with its claims' keys."""
    index = MemoryIndex()
    index.apply([IndexEntry(CLAIMED, "acme/a", "acme", [claim_key(B_C), claim_key(D)])])
    index.apply(claimed_rows("acme", [D]))

    assert released_keys(index, "a") == {
        CLAIMS: [claim_key(D), claim_key(B_C)],
        CLAIMED: [claim_key(D), "acme/a"],
    }


def test_the_projects_a_component_made_claims_in_last_until_the_sweep() -> None:
    """A walk's page lists `a` made again in `web`: its claims in `shop` say where the APIs it
    had there are until the cycle's sweep."""
    index = MemoryIndex()
    index.apply(claimed_rows("acme", [B_C]))
    index.complete_cycle()
    index.apply(claimed_rows("acme", [ApiClaim("acme", ("web", "a"), "d", "a-d")]))

    assert claimed_projects(walk_on(index), "acme", "a") == ["shop", "web"]
    index.complete_cycle()
    assert claimed_projects(walk_on(index), "acme", "a") == ["web"]
    assert claimed_projects(walk_on(index), "acme", "a-b") == []


def test_a_project_gone_releases_the_claims_made_in_it_and_an_org_gone_all_of_them() -> None:
    """`a` was made again in `web` (its claims in `shop` stay until the sweep): `shop` gone takes
    those, not the ones it makes in `web`. A row of the release before says its claims' project
    only in their keys."""
    moved = ApiClaim("acme", ("web", "a"), "d", "a-d")
    old = IndexEntry(
        CLAIMED, "acme/x", "acme", [claim_key(ApiClaim("acme", ("shop", "x"), "e", "x-e"))]
    )
    index = MemoryIndex()
    index.apply([*claimed_rows("acme", [B_C, moved, OTHER]), old])
    walk = walk_on(index)

    shop = released_in(walk, "acme", "shop")
    every = released_in(walk, "acme")

    assert all(row.value is None for row in [*shop, *every])
    assert {(row.table, row.key) for row in shop} == {
        *((table, claim_key(claim)) for table in (CLAIMS, CLAIMED) for claim in (B_C, OTHER)),
        *((CLAIMS, key) for key in old.value),
        (CLAIMED, "acme/x"),
    }
    assert {(row.table, row.key) for row in every} == {
        *(
            (table, claim_key(claim))
            for table in (CLAIMS, CLAIMED)
            for claim in (B_C, moved, OTHER)
        ),
        *((CLAIMS, key) for key in old.value),
        (CLAIMED, "acme/x"),
    }
    assert released_in(walk, "acme", "web") == [
        IndexEntry(CLAIMS, claim_key(moved)),
        IndexEntry(CLAIMED, claim_key(moved)),
    ]
