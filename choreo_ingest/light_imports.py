"""Importing a library without the optional modules it would load for features never used here.

structlog's `dev` module loads rich's console, traceback and pretty-printing (and pygments) for
exception rendering that `log_setup` does not ask for (it renders with `plain_traceback`); httpx
loads its command-line client (click, rich, pygments); httpcore loads trio when it is installed,
for async clients under trio (85 ms here). Each library imports those only if it can, so hiding
them for the one import is enough; they stay importable for whatever else wants them (rich for
`render`'s tables).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_without(library: str, hidden: tuple[str, ...]) -> ModuleType:
    """`import library` while the modules `hidden` cannot be imported (unless already loaded)."""
    if library in sys.modules:
        return sys.modules[library]
    hiding = [name for name in hidden if name not in sys.modules]
    for name in hiding:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it raises ImportError
    try:
        return importlib.import_module(library)
    finally:
        for name in hiding:
            del sys.modules[name]
