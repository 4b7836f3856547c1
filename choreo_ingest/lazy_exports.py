"""Names a package re-exports, each loaded when first asked for (PEP 562's module `__getattr__`):
importing the package loads none of the modules behind them, so that a `run` with nothing due
pays only for what it uses (`choreo_ingest`, `choreo_ingest.store`)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy: True)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` of `package` for `exports` (a name -> the module defining it):
    it imports that module when the name is first asked for, and keeps the value."""

    def attribute(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return attribute
