"""What a provider's cycle reads, as the engine keeps it (`SourceNamingProvider.source`): a
new cycle stores it; a cycle begun on another source than the stored cycle's is said
(`source_changed`); cycles that read two sources in turn are a health problem."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from choreo_ingest.logs import get_logger
from choreo_ingest.models import (
    SOURCE_BEFORE_CYCLE_FACT,
    SOURCE_BEFORE_FACT,
    SOURCE_CYCLE_FACT,
    SOURCE_FACT,
    SOURCES_ALTERNATE_FACT,
    Facts,
    cycle_source,
)
from choreo_ingest.providers.base import IncrementalEntityProvider, SourceNamingProvider

log = get_logger("choreo_ingest.engine")


def sources(
    provider: IncrementalEntityProvider, facts_of: Callable[[str], dict[str, str]], cycle_id: int
) -> tuple[str | None, str | None, dict[str, str]]:
    """What `provider` reads (None: it does not say), what the stored cycle `cycle_id` read if
    that was something else (None: the same, or not stored for it, as by an earlier release),
    and the facts stored (read once, for `cycle_facts` too)."""
    if not isinstance(provider, SourceNamingProvider):
        return None, None, {}
    source, stored = provider.source, facts_of(provider.name)
    before = cycle_source(stored, cycle_id)
    return source, None if before == source else before, stored


def cycle_facts(
    provider: IncrementalEntityProvider,
    before: str | None,
    stored: Mapping[str, str],
    *,
    begun_again: bool,
) -> Callable[[int], Facts]:
    """The facts a new cycle of `provider` begins with, given its id (`new_cycle_facts`;
    `stored`: as `sources` read them); one `begun_again` (the cycle before, on another source,
    did not complete, so swept nothing: a typo in the address, then mended) says nothing of
    sources in turn."""
    if not isinstance(provider, SourceNamingProvider):
        return lambda cycle_id: {}
    source, setting = provider.source, provider.source_key
    if begun_again:  # what the cycle begun again had found goes on with it (callers fighting)
        carried = stored.get(SOURCE_BEFORE_CYCLE_FACT) == stored.get(SOURCE_CYCLE_FACT)
        return lambda cycle_id: {
            SOURCE_FACT: source,
            SOURCE_CYCLE_FACT: str(cycle_id),
            **({SOURCE_BEFORE_CYCLE_FACT: str(cycle_id)} if carried else {}),
        }
    return lambda cycle_id: new_cycle_facts(source, cycle_id, before, stored, setting)


def new_cycle_facts(
    source: str, cycle_id: int, before: str | None, facts: Mapping[str, str], setting: str
) -> Facts:
    """The facts a cycle that reads `source` begins with, the cycle before having read `before`
    (None: the same source, or none stored) and `facts` stored: cycles that read two sources in
    turn (A, B, A: two callers of one state, each sweep removing what the other wrote) are a
    health problem until two cycles in a row read one source."""
    begun: Facts = {SOURCE_FACT: source, SOURCE_CYCLE_FACT: str(cycle_id)}
    if before is None:
        cleared: Facts = {SOURCE_BEFORE_FACT: None, SOURCE_BEFORE_CYCLE_FACT: None}
        return {**begun, **cleared, SOURCES_ALTERNATE_FACT: None}
    # What the cycle before (the stored one, which read `before`) found before it, if this
    # release set it then: an older release's cycles in between leave it as it was.
    set_then = facts.get(SOURCE_BEFORE_CYCLE_FACT) == facts.get(SOURCE_CYCLE_FACT)
    earlier = facts.get(SOURCE_BEFORE_FACT) if set_then else None
    marked: Facts = {**begun, SOURCE_BEFORE_FACT: before, SOURCE_BEFORE_CYCLE_FACT: str(cycle_id)}
    if earlier != source:
        return {**marked, SOURCES_ALTERNATE_FACT: None}
    problem = (
        f"cycles read {before} and {source} in turn: every caller of this state must give one "
        f"{setting} (each cycle's sweep removes what the other source had)"
    )
    return {**marked, SOURCES_ALTERNATE_FACT: problem}


def log_source_changed(
    provider: IncrementalEntityProvider, before: str, source: str | None, *, begun_again: bool
) -> None:
    setting = provider.source_key if isinstance(provider, SourceNamingProvider) else None
    log.warning(
        "source_changed",
        provider=provider.name,
        setting=setting,
        before=before,
        now=source,
        cycle_begun_again=begun_again,
        detail="what only the source before has is removed when this cycle completes, as the "
        "removal guards allow",
    )
