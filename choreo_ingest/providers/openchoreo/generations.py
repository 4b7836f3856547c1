"""The OpenChoreo API generations choreo-ingest speaks, newest first (the order `auto` tries).

Each generation's module is imported when the generation is first named: a run against a v1
server never loads the organization era's (about 8 ms of a busy call's start-up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from choreo_ingest.config import Config
from choreo_ingest.errors import (
    NO_API_HERE,
    ChoreoIngestError,
    ConfigError,
    PermanentError,
    ProviderError,
    WebPageAnswer,
)
from choreo_ingest.logs import get_logger
from choreo_ingest.models import (
    API_SOURCE_FACT,
    SOURCE_BEFORE_CYCLE_FACT,
    SOURCE_CYCLE_FACT,
    SOURCE_FACT,
)
from choreo_ingest.providers.openchoreo.generation import Generation, ListPage, says_absent

if TYPE_CHECKING:
    from choreo_ingest.providers.openchoreo.client import OpenChoreoClient

log = get_logger("choreo_ingest.providers.openchoreo")


def _v1() -> Generation:
    from choreo_ingest.providers.openchoreo.api_v1 import V1

    return V1


def _orgs() -> Generation:
    from choreo_ingest.providers.openchoreo.api_orgs import ORGS

    return ORGS


_LOADERS: dict[str, Callable[[], Generation]] = {"v1": _v1, "orgs": _orgs}
NAMES: tuple[str, ...] = tuple(_LOADERS)
"""Every generation's name, newest first."""


def generation_named(name: object) -> Generation:
    load = _LOADERS.get(name) if isinstance(name, str) else None
    if load is None:
        known = ", ".join(NAMES)
        raise PermanentError(f"unknown OpenChoreo API generation {name!r} (known: {known})")
    return load()


def generations(first: str | None = None) -> Iterator[Generation]:
    """Every generation, newest first (`first`, when it names one, before the others), each
    imported only when the caller gets to it."""
    for name in sorted(NAMES, key=lambda name: name != first):
        yield generation_named(name)


def configured_api(config: Config) -> str:
    """`openchoreo.api`: `auto`, or the name of one generation."""
    return config.openchoreo.api


def spoken_instead(
    client: OpenChoreoClient, configured: Generation, missing: ProviderError
) -> str | None:
    """How to mend `openchoreo.api`, when the first listing of the generation it names says the
    server does not have it and another generation's first listing answers (one request each)."""
    if not says_absent(missing):
        return None
    for other in generations():
        if other.name == configured.name:
            continue
        try:
            other.list_page(client, other.phases[0].path(None), limit=1, cursor=None)
        except ProviderError:
            continue
        return f"{missing}; the server speaks the {other.name} API: set it to {other.name} or auto"
    return None


def no_api_here(
    client: OpenChoreoClient, tried: list[Generation], answers: list[ProviderError]
) -> str:
    """What a server that answers none of `tried` generations' first listings is told: a
    setting to mend."""
    return (
        f"{_nothing_found(client, tried, answers)}: set it to the server's address "
        "(https://host) or its API root (https://host/api/v1)"
    )


def _nothing_found(
    client: OpenChoreoClient, tried: list[Generation], answers: list[ProviderError]
) -> str:
    """The URLs asked (a `baseUrl` of `https://host/api` asks for `/api/api/v1/...`) and, when
    every one of `answers` was a web page, that."""
    urls = " and ".join(client.base_url + generation.phases[0].path(None) for generation in tried)
    pages = answers and all(isinstance(answer, WebPageAnswer) for answer in answers)
    found = "answered a web page, not the API" if pages else "found nothing"
    return f"no OpenChoreo API at openchoreo.baseUrl {client.server_root} (GET {urls} {found})"


def first_root_page(
    client: OpenChoreoClient,
    candidates: Iterable[Generation],
    limit: Callable[[Generation], int],
    *,
    unknown: bool = True,
    found_here: str | None = None,
) -> tuple[Generation, ListPage]:
    """The first of `candidates` whose root listing (namespaces, or the org era's organizations)
    answers, with its first page of `limit(generation)` items. `unknown`: no API is known yet
    (`auto` before a cycle said which), so one that says it is not there gives way to the next
    (read lazily: a later one's module is not loaded before). None answering is a 404 naming
    what was tried: a setting to mend, unless a cycle found the API at this address before
    (`found_here`, the name of its generation): then the server's trouble, or a proxy's."""
    tried: list[Generation] = []
    answers: list[ProviderError] = []
    for generation in candidates:
        tried.append(generation)
        try:
            page = generation.list_page(
                client, generation.phases[0].path(None), limit=limit(generation), cursor=None
            )
        except PermanentError as error:
            if not (unknown and says_absent(error)):
                raise
            answers.append(error)
            continue
        return generation, page
    raise no_api_error(client, tried, answers, found_here)


def no_api_error(
    client: OpenChoreoClient,
    tried: list[Generation],
    answers: list[ProviderError],
    found_here: str | None,
) -> PermanentError:
    """No API at the address (`tried` gave `answers`): a setting to mend, unless a cycle found
    the API there before (`found_here`, the name of its generation), which makes it the
    server's trouble, or a proxy's."""
    if found_here is None:
        mend = no_api_here(client, tried, answers)
        return PermanentError(mend, status=404, code=NO_API_HERE, config_key="openchoreo.baseUrl")
    gone = (
        f"{_nothing_found(client, tried, answers)}, where its {found_here} API answered before: "
        "is the server, or a proxy in front of it, down or changed?"
    )
    return PermanentError(gone, status=404, code=NO_API_HERE)


def api_found_at(facts: Mapping[str, str], source: str) -> bool:
    """Whether a cycle found the API at `source` (what the provider reads). A state from before
    `apiSource`: whether a first page stored the `api`, and the cycle under way began at the
    address of the one before it."""
    if API_SOURCE_FACT in facts:
        return facts[API_SOURCE_FACT] == source
    cycle = facts.get(SOURCE_CYCLE_FACT)
    moved = cycle is not None and facts.get(SOURCE_BEFORE_CYCLE_FACT) == cycle
    return not moved and facts.get(SOURCE_FACT) == source and "api" in facts


def root_missing(
    client: OpenChoreoClient,
    generation: Generation,
    missing: PermanentError,
    stated: bool,
    found_here: str | None,
) -> ChoreoIngestError:
    """What a 404 or a web page (`missing`) at a root listing is raised as: where
    `openchoreo.api` names the generation (`stated`), advice to name the one the server speaks
    if another answers, else no API at the address, as under `auto` (`no_api_error`)."""
    if not stated:
        return missing
    if mend := spoken_instead(client, generation, missing):
        return ConfigError(mend, path="openchoreo.api")
    return no_api_error(client, [generation], [missing], found_here)


def detect(
    client: OpenChoreoClient,
    facts: Mapping[str, str],
    source: str,
    limit: Callable[[Generation], int],
    provider: str,
) -> tuple[Generation, ListPage]:
    """`auto`'s generation for a new cycle of `provider`, which reads `source` and has `facts`
    stored, and the first page of its root listing (`first_root_page`)."""
    before = facts.get("api")
    found = before if api_found_at(facts, source) else None
    generation, page = first_root_page(client, generations(), limit, found_here=found)
    if before not in (None, generation.name):
        log.warning("openchoreo_api_changed", provider=provider, before=before, now=generation.name)
    return generation, page
