"""The org era's index of the claims on API names each component made (`CLAIMED`): what a
Component event releases (`released`) before it maps the component again, so that a name it
gave up, or held when it went, is free at once and the event hands it on (`names_handed_on`),
and the projects it had APIs in (`claimed_projects`).

One row per claim, as the claims index (`CLAIMS`) has it, grouped by its component, written by
the same mapping and left for the sweep to prune. A walk's page reads nothing for it and writes
over nothing an event needs: when it finds an endpoint gone (or renamed), the endpoint's claim
holds its name until the cycle's sweep, and so long its row here lets an event applied after
that page release it and hand the name on; when it finds the component made again in another
project, the rows of the claims it made in the one it left (released by the page or not) tell
an event where its APIs there are, though the page wrote the Component over."""

from __future__ import annotations

from collections.abc import Sequence

from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.openchoreo.api_names import (
    CLAIMS,
    ApiClaim,
    claim_key,
    claim_key_project,
)
from choreo_ingest.providers.openchoreo.generation import Walk

CLAIMED = "claimed"
"""Index: `<claim's key>` grouped by `<org>/<component>` -> its project, for each claim of the
component's (`CLAIMS`). A release before this one wrote one row a component instead, keyed
`<org>/<component>` with its claims' keys (read until a completed cycle prunes it)."""


def claimed_rows(org: str, claims: Sequence[ApiClaim]) -> list[IndexEntry]:
    """The rows of `claims` (an org's components' mapping): each names its project."""
    return [
        IndexEntry(CLAIMED, claim_key(claim), f"{org}/{claim.owner[-1]}", claim.owner[0])
        for claim in claims
    ]


def claimed_projects(walk: Walk, org: str, component: str) -> list[str]:
    """The projects the component made claims in since the last completed sweep."""
    group = f"{org}/{component}"
    rows = walk.index.by_group(CLAIMED, [group])[group]
    return sorted({row.value for row in rows if isinstance(row.value, str)})


def released(walk: Walk, org: str, component: str) -> list[IndexEntry]:
    """The component's claims on API names (`CLAIMED`), released: an event then maps it again,
    whose claims stand over these, or it is gone. A name it gave up, or held when it went, is
    free at once, and the event hands it on (`names_handed_on`)."""
    group = f"{org}/{component}"
    rows = walk.index.by_group(CLAIMED, [group])[group]
    claims = [row.key for row in rows]
    if (old := walk.index.by_key(CLAIMED, [group]).get(group)) is not None:  # a release before
        claims += [str(key) for key in old.value] if isinstance(old.value, list) else []
        rows = [*rows, old]
    return [
        *(IndexEntry(CLAIMS, key) for key in dict.fromkeys(claims)),
        *(IndexEntry(CLAIMED, row.key) for row in rows),
    ]


def released_in(walk: Walk, org: str, project: str | None = None) -> list[IndexEntry]:
    """The claims on API names the org's components made (in `project`, when given), released:
    the org (or the project) is gone with them. A component made again in another project keeps
    the claims it made there. A row of the release before (one a component, grouped by the org)
    says no project: its component's claims are released when it made them in `project`."""
    rows = [
        row
        for row in walk.index.by_group_prefix(CLAIMED, f"{org}/")
        if project is None or row.value == project
    ]
    made = [IndexEntry(CLAIMS, row.key) for row in rows]
    for old in walk.index.by_group(CLAIMED, [org])[org]:
        claims = [str(key) for key in old.value] if isinstance(old.value, list) else []
        if project is None or any(claim_key_project(claim) == project for claim in claims):
            made += [IndexEntry(CLAIMS, claim) for claim in claims]
            rows.append(old)
    return [*made, *(IndexEntry(CLAIMED, row.key) for row in rows)]
