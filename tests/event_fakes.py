"""Fakes for the event tests: an event as the forwarder sends it, and providers that apply
events by re-reading a fixed world (one of them checks events itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from choreo_ingest.models import Delta, Event
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.providers.openchoreo.api_orgs import OrgsGeneration

from fakes import FakeProvider, make_entity

FIVE = [make_entity(f"e{i}") for i in range(5)]


def component_event(name: str, action: str = "updated", **other: Any) -> dict[str, Any]:
    """An event about Component `name` in namespace `default`, project `p`."""
    return {
        "kind": "Component",
        "name": name,
        "namespace": "default",
        "project": "p",
        "action": action,
        **other,
    }


def org_component_events_applied_as_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The org era's Component events change nothing (the others as they are): what the
    org-era fuzzers must find a difference in."""
    real = OrgsGeneration.event_delta

    def components_ignored(self: OrgsGeneration, walk: object, event: object) -> Delta:
        if getattr(event, "kind", None) == "Component":
            return Delta()
        return real(self, walk, event)  # type: ignore[arg-type]

    monkeypatch.setattr(OrgsGeneration, "event_delta", components_ignored)


@dataclass
class EventFakeProvider(FakeProvider):
    """A FakeProvider whose events re-read `entities` (the same world its pages come from).

    `failures` maps an entity name to the errors its next re-reads raise, one per attempt.
    """

    failures: dict[str, list[Exception]] = field(default_factory=dict)
    handled: list[Event] = field(default_factory=list)

    def handle_event(self, context: BurstContext, event: Event) -> Delta:
        self.handled.append(event)
        errors = self.failures.get(event.name)
        if errors:
            raise errors.pop(0)
        found = [entity for entity in self.entities if entity.name == event.name]
        if event.action == "deleted" or not found:
            return Delta(removal_scopes=[event.name])
        return Delta(upserts=found, removal_scopes=[event.name])


@dataclass
class CheckingFake(EventFakeProvider):
    """An EventFakeProvider that checks events itself (`EventCheckingProvider`)."""

    ignored_kinds: tuple[str, ...] = ()
    max_pending_events: int | None = None

    def event_problem(self, body: Any) -> str | None:
        kind = body.get("kind")
        if kind == "Component" or kind in self.ignored_kinds:
            return None
        return f"this fake takes Component events only, not {kind!r}"

    def is_ignored(self, body: Any) -> bool:
        return body.get("kind") in self.ignored_kinds
