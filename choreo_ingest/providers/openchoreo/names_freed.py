"""API names freed without an event about their holder, handed on all the same (`api_names`).

A cycle's walk that no longer finds a name's holder (its component gone, and no event said so,
or the event came only after the walk) leaves its claim to the sweep, which prunes it. The
claimants that wait on the name were mapped against that claim, each with its hashed name. So
the sweep, in its own transaction, queues an event about each of them (`SweepFollower`): the
drain that follows the cycle maps them again, and one takes the name, as a component event
that freed it would have had it (`api_names.names_handed_on`). The event re-reads the
component: whatever it is by then, the read decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from choreo_ingest.models import JSON, IndexEntry, IndexGroups
from choreo_ingest.providers.openchoreo.api_names import CLAIMS, claim_owner, holds


class NamesFreedAtSweep:
    """The OpenChoreo provider's `sweep_follower`: the same for both API generations, whose
    claims name their owner alike (project, component) and whose Component events both take
    `namespace`, `name` and `project`."""

    tables: Sequence[str] = (CLAIMS,)
    waiting = '"holds":false'
    """A claim that waits on its name, as its row's JSON text has it: only a name some claim of
    the cycle waits on is handed on, and a sweep reads the pruned claims of those names only."""

    def events(self, pruned: Sequence[IndexEntry], current: IndexGroups) -> list[JSON]:
        """A Component event about each owner of a claim that the cycle wrote on a name whose
        holder's claim the sweep prunes, when no claim the cycle wrote holds that name."""
        freed = sorted({row.group for row in pruned if row.table == CLAIMS and holds(row)})
        if not freed:
            return []
        waiting = {
            claim_owner(row)
            for rows in current(CLAIMS, freed).values()
            if not any(holds(row) for row in rows)
            for row in rows
        }
        # A row that names no (project, component) names no event: it cannot stop the sweep,
        # which would then never complete (the completion is one transaction with this).
        named = sorted((namespace, owner) for namespace, owner in waiting if len(owner) >= 2)
        return [component_event(namespace, owner) for namespace, owner in named]


def component_event(namespace: str, owner: Sequence[str]) -> JSON:
    """A Component event (as the event forwarder posts it, with the org era's `project`) about
    the owner of a claim: re-read, whatever its action."""
    project, component = owner[0], owner[-1]
    return {
        "kind": "Component",
        "namespace": namespace,
        "project": project,
        "name": component,
        "action": "created",
    }


NAMES_FREED = NamesFreedAtSweep()
