"""The org era's index of the claims on API names each component made (`CLAIMED`): what a
Component event releases (`released`) before it maps the component again, so that a name it
gave up, or held when it went, is free at once and the event hands it on (`names_handed_on`).

One row per claim, as the claims index (`CLAIMS`) has it, grouped by its component, written by
the same mapping and pruned by the same sweep. A walk's page that finds an endpoint gone (or
renamed) leaves its claim holding its name until the cycle's sweep, as it leaves its row here:
an event applied after that page in the same cycle still finds the claim by its component,
releases it and hands its name on. A page reads nothing for it, and a row of a claim that a
page releases goes with it."""

from __future__ import annotations

from collections.abc import Sequence

from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.openchoreo.api_names import CLAIMS, ApiClaim, claim_key
from choreo_ingest.providers.openchoreo.generation import Walk

CLAIMED = "claimed"
"""Index: `<claim's key>` grouped by `<org>/<component>` for each claim of the component's
(`CLAIMS`). A release before this one wrote one row a component instead, keyed
`<org>/<component>` with its claims' keys (read until a completed cycle prunes it)."""


def claimed_rows(
    org: str, claims: Sequence[ApiClaim], index: Sequence[IndexEntry]
) -> list[IndexEntry]:
    """The rows of `claims` (an org's components' mapping), and the deletion of the row of each
    claim `index` (that mapping's rows) releases."""
    made = [
        IndexEntry(CLAIMED, claim_key(claim), f"{org}/{claim.owner[-1]}", True) for claim in claims
    ]
    gone = [
        IndexEntry(CLAIMED, row.key) for row in index if row.table == CLAIMS and row.value is None
    ]
    return [*gone, *made]


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
