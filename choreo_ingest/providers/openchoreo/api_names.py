"""API entity names that never collide: when two endpoints would get the same name, the one
whose (project, component, endpoint) sorts first keeps it and the other gets a hash suffix.

`<project>-<component>-<endpoint>` is ambiguous: project `a` with component `b-c` and project
`a-b` with component `c` give one name (in the org era, component `a` with endpoint `b-c` and
component `a-b` with endpoint `c`). Which of the two arrives first depends on page order and
events, so every endpoint records a claim on its plain name in the provider's lookup index; the
claims of a name decide who holds it, whatever the order. When a newcomer sorts before the
current holder, the holder is displaced: the caller re-reads it so it moves to its hashed name
in the same page; the entity of every API that lost its plain name leaves with that page, before
the newcomer's is written (`lost`: the caller names it).

Backstage compares refs case-insensitively, and v1 names keep their case (`web-cart-httpApi`),
so claims are grouped by the lower-cased name: `httpApi` and `httpapi` contend for one name.
A name without capitals goes first, then the sort order: it is the one that held the name before
v1 names kept their case (a name with capitals had a hashed one then), so no holder loses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from choreo_ingest.models import Delta, IndexEntry, entity_ref
from choreo_ingest.providers.openchoreo.generation import Harvest, Walk
from choreo_ingest.providers.openchoreo.index_overlay import with_rows

CLAIMS = "api-name"
"""The index table of claims: grouped by `<namespace>/<plain name, lower-cased>`."""

MOST_NAMES_HANDED_ON = 8
"""Rounds of `names_handed_on`, each mapping the claimants that wait on a name freed: a bound,
though each round leaves a freed name held."""

Owner = tuple[str, ...]
"""Who owns an endpoint, outermost first: (project, component)."""
ClaimKey = tuple[str, ...]
"""(*owner, endpoint): what claims sort by."""


@dataclass(frozen=True)
class ApiClaim:
    namespace: str
    owner: Owner
    endpoint: str
    plain: str
    origin: str = ""
    """The source's own namespace (org) of the owner, when `namespace` is not its name as
    written (made valid: `naming.namespace_name`): what an event about the owner names."""

    @property
    def sort_key(self) -> ClaimKey:
        return (*self.owner, self.endpoint)

    @property
    def group(self) -> str:
        return f"{self.namespace}/{self.plain.lower()}"

    @property
    def cased(self) -> bool:
        return self.plain != self.plain.lower()


@dataclass(frozen=True)
class Standing:
    """A claim as its group knows it: whether it holds the plain name, and whether that name
    has capitals (it yields to one without)."""

    holds: bool
    cased: bool = False


Pending = dict[str, dict[ClaimKey, Standing]]
"""Claims decided earlier in the same page: group -> claim -> its standing."""


def resolve_api_names(
    walk: Walk,
    claims: Sequence[ApiClaim],
    hashed: Callable[[Owner, str], str],
    pending: Pending | None = None,
    *,
    whole: bool = False,
    identity: Callable[[Owner], Owner] | None = None,
) -> tuple[dict[ClaimKey, str], Harvest, list[Owner], list[tuple[ClaimKey, ClaimKey]]]:
    """Names for `claims`, the index rows that record them, the owners displaced from a plain
    name they held (to be re-read and renamed by the caller), and every claim, of `claims` or
    of those owners, that lost the plain name it held, with the claim that holds it now (the
    entity of the lost name is to be removed, unless it is the holder's own: the same name).
    A claim of `claims` that takes the plain name it did not hold gives up its hashed one: the
    harvest removes that entity (`removals`), so one endpoint never has two APIs in a cycle.

    `whole`: `claims` holds every API endpoint of each owner it names (a harvest of those
    components). A stored claim of such an owner that is not among them is stale (its endpoint
    gone, or no API any more): it is released, and decides nothing. Else it would keep the name
    from the owner's other spelling of it (`httpApi` beside a removed `httpapi`) until the
    cycle's end prunes it, and the name would come free a cycle late. One that held the name
    lost it (with `lost`'s other claims): its entity is not to wait for the sweep beside the
    new holder's, the same name but for case.

    `identity`: what makes two owners one (the org era's component name, unique in its org:
    a component made again in another project is the same one). With `whole`, a stored claim
    of an owner one with an owner of `claims` is stale as well: the claims it made as a member
    of the project it left would keep its names from it."""
    pending = {} if pending is None else pending
    same = identity or (lambda owner: owner)
    by_group: dict[str, list[ApiClaim]] = {}
    for claim in claims:
        by_group.setdefault(claim.group, []).append(claim)
    stored = walk.index.by_group(CLAIMS, sorted(by_group))
    owners = {same(claim.owner) for claim in claims} if whole else set()
    current = {claim.sort_key for claim in claims}
    names: dict[ClaimKey, str] = {}
    harvest = Harvest()
    displaced: list[Owner] = []
    lost: list[tuple[ClaimKey, ClaimKey]] = []
    for group, rows in stored.items():
        known: dict[ClaimKey, Standing] = {}
        stale: list[ClaimKey] = []  # released, that held the name: its entity leaves too
        for row in rows:
            key = _claim_key(row)
            if same(key[:-1]) in owners and key not in current:
                harvest.index.append(IndexEntry(CLAIMS, row.key, group, None))
                stale += [key] if _standing(row).holds else []
            else:
                known[key] = _standing(row)
        known.update(
            (key, standing)
            for key, standing in pending.get(group, {}).items()
            if same(key[:-1]) not in owners or key in current
        )
        ours = by_group[group]
        cased = {key: standing.cased for key, standing in known.items()}
        cased.update((claim.sort_key, claim.cased) for claim in ours)
        winner = min(cased, key=lambda key: (cased[key], key))
        lost += [(key, winner) for key in stale]
        for claim in ours:
            holds = claim.sort_key == winner
            hashed_name = hashed(claim.owner, claim.endpoint)
            names[claim.sort_key] = claim.plain if holds else hashed_name
            harvest.index.append(_row(claim, holds))
            held = known.get(claim.sort_key)
            if held is not None and held.holds and not holds:
                lost.append((claim.sort_key, winner))
            if held is not None and holds and not held.holds:  # its API had its hashed name
                harvest.removals.append(entity_ref("API", claim.namespace, hashed_name))
            known[claim.sort_key] = Standing(holds, claim.cased)
        for key, standing in known.items():
            if standing.holds and key != winner:
                lost.append((key, winner))
                if key[:-1] not in displaced:
                    displaced.append(key[:-1])
                known[key] = Standing(False, standing.cased)
        pending[group] = known
    return names, harvest, displaced, lost


def predicted_names(
    walk: Walk,
    claims: Sequence[ApiClaim],
    hashed: Callable[[Owner, str], str],
    pending: Pending | None = None,
    *,
    whole: bool = False,
) -> dict[ClaimKey, str]:
    """The names `resolve_api_names` would give `claims` now, recording nothing: what a ref to
    an API that another page or event maps names. The claims stored (and those `pending` in
    this page) decide, by the same rule; the API's own page may still decide otherwise if a
    claim that sorts first arrives before it. `whole`: as for `resolve_api_names` (claims of
    every API endpoint of their owners: a stored claim of one gone decides nothing)."""
    names, _, _, _ = resolve_api_names(walk, claims, hashed, dict(pending or {}), whole=whole)
    return names


def waiting_claimants(walk: Walk, index: Sequence[IndexEntry]) -> list[Owner]:
    """The owners of the claims on each plain name that a claim held before the rows `index`
    (a delta's) and none holds after them: one of them is to hold it, read again (its API
    leaves its hashed name), as a walk would name it."""
    released = [row.key for row in index if row.table == CLAIMS and row.value is None]
    held = walk.index.by_key(CLAIMS, released) if released else {}
    freed = sorted({row.group for row in held.values() if holds(row)})
    after = with_rows(walk, index).index.by_group(CLAIMS, freed) if freed else {}
    waiting = [
        row for rows in after.values() if not any(holds(row) for row in rows) for row in rows
    ]
    return sorted({_claim_key(row)[:-1] for row in waiting})


def names_handed_on(
    walk: Walk,
    done: Delta,
    take_back: Callable[[Owner, Delta], Delta],
    more_rounds: int = 0,
) -> Delta:
    """`done` (an event's delta), then the owners whose claims wait on an API name it freed
    (`waiting_claimants`: given up, or its holder gone) mapped again: `take_back(owner, done)`
    is `done` then the owner mapped on the rows `done` will have written, so that one of them
    takes the name, as a walk names it. At most `MOST_NAMES_HANDED_ON + more_rounds` rounds."""
    for _ in range(MOST_NAMES_HANDED_ON + more_rounds):
        if not (waiting := waiting_claimants(walk, done.index)):
            break
        for owner in waiting:
            done = take_back(owner, done)
    return done


def claim_key(claim: ApiClaim) -> str:
    """The index key of a claim (to release it, write an IndexEntry with this key and no value)."""
    return f"{claim.group}|{'/'.join(claim.sort_key)}"


def claim_key_project(key: str) -> str:
    """The project (the owner's first part) a claim's index key (`claim_key`) names."""
    return key.partition("|")[2].split("/", 1)[0]


def _row(claim: ApiClaim, holds: bool) -> IndexEntry:
    value: dict[str, object] = {"owner": list(claim.owner), "endpoint": claim.endpoint}
    value["holds"] = holds
    if claim.cased:
        value["cased"] = True
    if claim.origin and claim.origin != claim.namespace:
        value["in"] = claim.origin
    return IndexEntry(CLAIMS, claim_key(claim), claim.group, value)


def claim_owner(row: IndexEntry) -> tuple[str, Owner]:
    """The source's namespace (org) of a claim row's owner, and the owner."""
    origin = _value(row).get("in")
    namespace = origin if isinstance(origin, str) else row.group.partition("/")[0]
    return namespace, _claim_key(row)[:-1]


def holds(row: IndexEntry) -> bool:
    """Whether a claim row holds its plain name."""
    return bool(_value(row).get("holds"))


def _value(row: IndexEntry) -> Mapping[str, object]:
    return row.value if isinstance(row.value, Mapping) else {}


def _standing(row: IndexEntry) -> Standing:
    """A stored claim's standing; rows written before names kept their case have no `cased`:
    their names had no capitals."""
    value = _value(row)
    return Standing(bool(value.get("holds")), bool(value.get("cased")))


def _claim_key(row: IndexEntry) -> ClaimKey:
    value = _value(row)
    owner = value.get("owner")
    endpoint = value.get("endpoint")
    parts = [str(part) for part in owner] if isinstance(owner, list) else []
    return (*parts, str(endpoint))
