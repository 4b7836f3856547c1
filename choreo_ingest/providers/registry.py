"""Which providers exist: the built-ins plus the `choreo_ingest.providers` entry point group."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

from choreo_ingest.config import Config
from choreo_ingest.errors import ProviderLoadError, interrupted

if TYPE_CHECKING:
    from importlib.metadata import EntryPoints

    from choreo_ingest.providers.base import IncrementalEntityProvider, ProviderFactory

ENTRY_POINT_GROUP = "choreo_ingest.providers"
BUILT_IN = {"openchoreo": "choreo_ingest.providers.openchoreo:create_provider"}


class ProviderInfo(NamedTuple):
    name: str
    source: str  # "built-in" or the entry point's `module:attr`


def entry_points(group: str, name: str | None = None) -> EntryPoints:
    """importlib.metadata's, imported when first needed (a `run` with nothing due never does)."""
    from importlib.metadata import entry_points as installed

    found = installed(group=group)
    return found if name is None else found.select(name=name)


def available_providers() -> list[ProviderInfo]:
    found = {name: ProviderInfo(name, "built-in") for name in BUILT_IN}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, ProviderInfo(point.name, point.value))
    return sorted(found.values(), key=lambda info: info.name)


def load_provider(name: str, config: Config) -> IncrementalEntityProvider:
    """Build the provider called `name`; raises ProviderLoadError naming it on any problem."""
    try:
        factory = _factory(name)
        provider = factory(config)
    except ProviderLoadError:
        raise
    except Exception as error:
        if interrupted(error):  # a SIGTERM as the provider's module loads
            raise KeyboardInterrupt from error
        raise ProviderLoadError(name, f"failed to load: {type(error).__name__}: {error}") from error
    missing = [attr for attr in ("name", "around", "next") if not hasattr(provider, attr)]
    if missing:
        raise ProviderLoadError(
            name, f"does not implement IncrementalEntityProvider (missing {', '.join(missing)})"
        )
    if provider.name != name:
        raise ProviderLoadError(name, f"calls itself {provider.name!r}; names must match")
    return provider


def _factory(name: str) -> ProviderFactory:
    if name in BUILT_IN:
        module_name, _, attr = BUILT_IN[name].partition(":")
        factory: ProviderFactory = getattr(importlib.import_module(module_name), attr)
        return factory
    for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        from choreo_ingest.logs import configure_structlog_now  # not on the idle path

        configure_structlog_now()  # a plugin may log through structlog itself, even on import
        loaded: ProviderFactory = point.load()
        return loaded
    import difflib  # a typo's error path only

    names = [info.name for info in available_providers()]
    near = difflib.get_close_matches(name, names, n=1)
    hint = f": did you mean {near[0]}?" if near else ""
    raise ProviderLoadError(name, f"not installed{hint} (known providers: {', '.join(names)})")
