"""The one check of a provider name, for every command and every library entry point.

A typo must not reach the store, where `refresh` or `reset` would create a provider that then
lives on in status, health and the metrics.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

from choreo_ingest.config import Config
from choreo_ingest.errors import ConfigError
from choreo_ingest.providers.registry import available_providers
from choreo_ingest.store import StateRef, state_location


class ProviderScope(enum.Enum):
    """Which provider names a command takes."""

    CONFIGURED = "configured"  # it acts on the provider: run, refresh, reset, event
    KNOWN = "known"  # configured, or still in the state file: status, removals, event purge
    FORGOTTEN = "forgotten"  # in the state file, gone from the config: reset --forget


def checked_provider(
    config: Config,
    state: StateRef,
    name: str,
    scope: ProviderScope = ProviderScope.CONFIGURED,
    *,
    option: str | None = None,
) -> str:
    """`name`, if a command of `scope` may take it; else a usage error (exit 2) listing the names
    it may. The state file is read (never written) only when the config does not settle it."""
    configured = list(config.providers)
    if scope is not ProviderScope.FORGOTTEN and name in configured:
        return name
    in_state = state_provider_names(state)
    if name in in_state and (
        scope is ProviderScope.KNOWN
        or (scope is ProviderScope.FORGOTTEN and name not in configured)
    ):
        return name
    raise ConfigError(_unknown_provider(name, scope, configured, in_state), path=option)


def state_provider_names(state: StateRef) -> list[str]:
    if not state_location(state).exists():
        return []
    with state_location(state).open(readonly=True) as store:
        store.require_current_schema()
        return store.provider_names()


def _unknown_provider(
    name: str, scope: ProviderScope, configured: Sequence[str], in_state: Sequence[str]
) -> str:
    only_in_state = [other for other in in_state if other not in configured]
    if scope is ProviderScope.FORGOTTEN:
        if name in configured:
            return (
                f"provider {name!r} is still configured; --forget is for a provider removed "
                "from the config (--purge removes the entities of a configured one)"
            )
        return f"the state holds no provider {name!r} to forget (it holds: {_names(in_state)})"
    known = f"configured: {_names(configured)}"
    if scope is ProviderScope.KNOWN and only_in_state:
        known += f"; only in the state: {_names(only_in_state)}"
    known += f"; installed: {_names(info.name for info in available_providers())}"
    if scope is ProviderScope.KNOWN:
        return f"unknown provider {name!r} ({known})"
    hint = ""
    if name in only_in_state:
        hint = f"; it is only in the state: `reset {name} --forget` removes it"
    return f"provider {name!r} is not configured ({known}){hint}"


def _names(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"
