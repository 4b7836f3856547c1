"""What an unknown config key is told: the key it most likely meant.

Imported only for a mistake (it loads difflib), by `config_document.walk`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence


def unknown_key_hint(
    section: str, key: str, children: Mapping[str, Sequence[str]], paths: Iterable[str]
) -> str:
    """For `key`, unknown in `section` (`children`: each section's keys; `paths`: every key
    and section path), in this order: a key of that name further down (`incremental` at the
    top is `openchoreo.incremental`), the nearest sibling, the nearest key further down (a
    misspelt `openchoreo.burstLenght`), a key of that name elsewhere in the same top-level
    section (`tokenUrl` under `openchoreo.incremental`); else the siblings."""
    known = [path for path in paths if path]
    below = [path for path in known if path.startswith(f"{section}.") or not section]
    named = [path for path in below if path.endswith(f".{key}")]
    if named:
        return f"did you mean {min(named, key=len)}?"
    siblings = list(children[section])
    near = difflib.get_close_matches(key, siblings, n=1)
    if near:
        return f"did you mean {near[0]}?"
    last = {path.rpartition(".")[2]: path for path in sorted(below, key=len, reverse=True)}
    near = difflib.get_close_matches(key, list(last), n=1)
    if near:
        return f"did you mean {last[near[0]]}?"
    top = section.partition(".")[0]
    elsewhere = [path for path in known if path.startswith(f"{top}.") and path.endswith(f".{key}")]
    if section and elsewhere:
        return f"did you mean {min(elsewhere, key=len)}?"
    return f"expected one of: {', '.join(siblings)}"
