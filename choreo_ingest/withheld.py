"""What a caller who may not read catalog content (`serve` without its token, when one is set)
is shown in place of it: the names of namespaces, projects and components, in a provider's last
error, the objects whose events wait, and the API paths its health problems quote."""

from __future__ import annotations

import re

ERROR_WITHHELD = "withheld: send the API token"
"""`lastError` in place of a withheld error's text: there is one; the token reads it. The same
in place of the names of an object waiting alone (`eventsWaitingAlone`), and of what a health
problem quotes."""
NAMES_WITHHELD = frozenset({"namespace", "project", "name"})
"""The keys of an object waiting alone that name it."""

_NAMED_REQUEST = re.compile(r"GET /[^\s,;)]*")
"""A request a health problem names (`GET /namespaces/shop/components`: `step_over`,
`listing_stuck`); its path names namespaces, projects, components."""


def paths_withheld(problem: str) -> str:
    """Health problem `problem` without the API paths it names."""
    return _NAMED_REQUEST.sub(f"GET ({ERROR_WITHHELD})", problem)
