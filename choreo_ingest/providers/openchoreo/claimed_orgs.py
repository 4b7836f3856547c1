"""The org era's index of the claims on API names each component made (`CLAIMED`): what a
Component event releases (`released`) before it maps the component again, so that a name it
gave up, or held when it went, is free at once and the event hands it on (`names_handed_on`)."""

from __future__ import annotations

from collections.abc import Sequence

from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.openchoreo.api_names import CLAIMS, ApiClaim, claim_key
from choreo_ingest.providers.openchoreo.generation import Walk

CLAIMED = "claimed"
"""Index: `<org>/<component>` -> the keys of its claims on API names (`CLAIMS`) as its last
mapping made them."""


def claimed_rows(org: str, claims: Sequence[ApiClaim]) -> list[IndexEntry]:
    """The row of each component of `claims` (an org's components' mapping)."""
    made: dict[str, list[str]] = {}
    for claim in claims:
        made.setdefault(claim.owner[-1], []).append(claim_key(claim))
    return [IndexEntry(CLAIMED, f"{org}/{c}", org, keys) for c, keys in made.items()]


def released(walk: Walk, org: str, component: str) -> list[IndexEntry]:
    """The component's claims on API names as its last mapping made them (`CLAIMED`), released:
    an event then maps it again, whose claims stand over these, or it is gone. A name it gave
    up, or held when it went, is free at once, and the event hands it on (`names_handed_on`)."""
    key = f"{org}/{component}"
    row = walk.index.by_key(CLAIMED, [key]).get(key)
    if row is None:
        return []
    made = row.value if isinstance(row.value, list) else []
    return [*(IndexEntry(CLAIMS, str(claim)) for claim in made), IndexEntry(CLAIMED, key)]
