"""`choreo-ingest check` for OpenChoreo: the server, its security, the grant, the API generation,
what the client may see, and whether a page fits in a burst at the API's latency."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from choreo_ingest.clock import Clock
from choreo_ingest.config import (
    API_V1,
    AuthConfig,
    Config,
    IncrementalConfig,
    effective_chunk_size,
    require_api,
)
from choreo_ingest.errors import (
    AuthError,
    ChoreoIngestError,
    ConfigError,
    CursorExpired,
    DeadlineExceeded,
    NotFoundError,
    ProviderError,
)
from choreo_ingest.files import absent_directory
from choreo_ingest.models import Check, QueuedItem
from choreo_ingest.providers.openchoreo.auth import ClientCredentials, Credentials
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient
from choreo_ingest.providers.openchoreo.generation import (
    Generation,
    ListPage,
    name_of,
    says_absent,
)
from choreo_ingest.providers.openchoreo.generations import (
    generation_named,
    generations,
    no_api_here,
    spoken_instead,
)
from choreo_ingest.providers.openchoreo.http_errors import CHUNK_SIZE_KEY, one_line
from choreo_ingest.providers.openchoreo.token_cache import CONFIG_KEY as TOKEN_CACHE_KEY
from choreo_ingest.providers.openchoreo.token_cache import never_replaced
from choreo_ingest.providers.openchoreo.token_lifetime import jwt_claims

ROLE_MAPPING = (
    "{name: choreo-ingest-catalog-reader-binding, kind: ClusterAuthzRoleBinding, roleMappings: "
    "[{roleRef: {name: backstage-catalog-reader, kind: ClusterAuthzRole}}], entitlement: "
    "{claim: %s, value: %s}, effect: allow}"
)
"""What binds a client (its `sub` claim, or a group its tokens carry) to OpenChoreo's read-only
catalog role: one item of the control plane's Helm values
`openchoreoApi.config.security.authorization.bootstrap.mappings`, in YAML's flow style, so that a
one-line check can say it whole."""
V1_LISTED_NAMESPACES = (
    ": OpenChoreo lists only the namespaces labelled openchoreo.dev/control-plane=true"
)
MAX_SHOWN = 120
"""Longest text from the server (a version, an issuer) a check quotes."""
PAGES_LOOKED_AT = 5
"""Pages `check` reads for a first item before it says what the client may see."""
CHECK_REQUEST_TIMEOUTS = 6
"""`check`'s time, in `requestTimeout`s: the server, the grant, two pages of the first listing,
then a full page of each of the three listings in a namespace (`_full_page_time`)."""


def openchoreo_checks(
    config: Config, clock: Clock, credentials: Credentials, transport: object | None = None
) -> list[Check]:
    unusable = None
    try:
        require_api(config)
    except ChoreoIngestError as error:
        unusable = _failed(error)
        if unusable.name == "openchoreo.baseUrl":
            return [unusable]
    settings = config.openchoreo
    deadline = clock.monotonic() + CHECK_REQUEST_TIMEOUTS * settings.incremental.request_timeout
    try:
        with OpenChoreoClient(
            settings,
            clock=clock,
            deadline=deadline,
            transport=transport,
            credentials=credentials,
        ) as client:
            checks = [_server_check(client)]
            if unusable is not None:  # a secret to mend: the public routes need none
                return [*checks, _unchecked_after(unusable)]
            if not checks[0].ok:
                grant = credentials.config_key
                return [
                    _unchecked_after(checks[0], f"{grant}, {UNCHECKED}" if grant else UNCHECKED)
                ]
            if credentials.config_key:
                checks.append(_grant_check(credentials))
                if not checks[-1].ok:
                    return [*checks[:-1], _unchecked_after(checks[-1])]
            checks += _token_cache_check(config)
            return checks + _api_checks(client, config, clock, credentials)
    except ChoreoIngestError as error:
        return [_failed(error)]


UNCHECKED = "openchoreo.api and openchoreo.incremental"
"""The checks that read the API's listings, left out while the way to it fails."""


def _unchecked_after(failed: Check, unchecked: str = UNCHECKED) -> Check:
    """`failed`, saying which checks wait for it (a person reads a list of oks that stops
    short, not what was left out)."""
    return replace(failed, detail=f"{failed.detail} ({unchecked}: not checked until this passes)")


def _failed(error: ChoreoIngestError) -> Check:
    """A failed check named by the config key the error names (said once: the error's text
    begins with it), else `openchoreo`."""
    key = error.path if isinstance(error, ConfigError) else None
    if key:
        return Check(key, False, str(error).removeprefix(f"{key}: "))
    return Check("openchoreo", False, str(error))


def _server_check(client: OpenChoreoClient) -> Check:
    """The public routes: the server's version, and whether security is on (RFC 9728).

    Only a server that gives no answer fails it (then nothing after it can be checked); a
    `/version` that answers something unusable (an error, a page that is not JSON) is a warning
    that says what came, and the checks after it go on: the listing tells whether the API works.
    """
    parts = []
    odd = False
    try:
        version = client.get_public("/version")
        shown = version.get("version") if isinstance(version, Mapping) else None
        shown = one_line(str(shown), MAX_SHOWN) if shown else None
        parts.append(f"OpenChoreo {shown}" if shown else "a /version without a version")
    except NotFoundError:
        parts.append("no /version (not an OpenChoreo release)")
    except AuthError as error:  # the org era's servers may ask for a token on all but /health
        parts.append(f"no public /version (HTTP {error.status})")
    except ProviderError as error:  # an answer, or none at all
        if error.status is None:
            return Check("openchoreo.server", False, f"{client.server_root}: unreachable: {error}")
        parts.append(f"no usable /version ({error})")
        odd = True
    try:
        resource = client.get_public("/.well-known/oauth-protected-resource")
        parts.append(_security(resource))
    except ProviderError:
        parts.append("no /.well-known/oauth-protected-resource")
    detail = f"{client.server_root}: {'; '.join(parts)}"
    return Check("openchoreo.server", True, detail, warning=odd)


def _security(resource: Any) -> str:
    if not isinstance(resource, Mapping):
        return "security metadata unreadable"
    if resource.get("openchoreo_security_enabled") is False:
        return "security off: requests need no token"
    issuers = resource.get("authorization_servers")
    issuer = issuers[0] if isinstance(issuers, list) and issuers else None
    shown = one_line(str(issuer), MAX_SHOWN) if issuer else None
    return f"security on, tokens from {shown or 'an unnamed issuer'}"


def _grant_check(credentials: Credentials) -> Check:
    try:
        if isinstance(credentials, ClientCredentials):
            credentials.refresh()  # a grant: one from tokenCacheFile would prove nothing now
        else:
            credentials.bearer()
    except ProviderError as error:
        return Check(error.config_key or credentials.config_key, False, str(error))
    learned = credentials.learned_method if isinstance(credentials, ClientCredentials) else None
    if learned is not None:
        return Check(
            credentials.config_key,
            True,
            f"a token was obtained with the client secret sent as {learned}, after the form "
            f"body was refused: set openchoreo.auth.oauth.clientAuthMethod: {learned} to save "
            "that request at every run",
            warning=True,
        )
    if not isinstance(credentials, ClientCredentials):
        return Check(credentials.config_key, True, "a token is set (openchoreo.api tries it)")
    return Check(credentials.config_key, True, "a token was obtained")


def _token_cache_check(config: Config) -> list[Check]:
    """Whether `tokenCacheFile` can be written (else every call asks for a token and says so)."""
    oauth = config.openchoreo.auth.oauth
    path = oauth.token_cache_file if oauth is not None else None
    if path is None:
        return []
    problem = _token_cache_problem(path)
    if problem is None:
        return [Check(TOKEN_CACHE_KEY, True, f"{path}: the token is kept there between calls")]
    return [
        Check(
            TOKEN_CACHE_KEY,
            True,
            f"{path}: {problem}, so every call asks for a new token (and warns)",
            warning=True,
        )
    ]


def auth_for_check(auth: AuthConfig) -> AuthConfig:
    """`auth` without a `tokenCacheFile` that cannot be written: `check` says so in its row, and
    its grant's write would say it again (`token_cache_not_written`)."""
    oauth = auth.oauth
    path = oauth.token_cache_file if oauth is not None else None
    if oauth is None or path is None or _token_cache_problem(path) is None:
        return auth
    return replace(auth, oauth=replace(oauth, token_cache_file=None))


def _token_cache_problem(path: Path) -> str | None:
    folder = path.parent
    special = never_replaced(path)
    if path.is_dir():  # a new token cannot be renamed over it
        return "it is a directory, not a file"
    if special is not None:  # never renamed over (`token_cache`)
        return special.removeprefix(f"{path}: ")
    if not folder.is_dir():
        return absent_directory(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its directory {folder} cannot be written"
    return None


def _api_checks(
    client: OpenChoreoClient, config: Config, clock: Clock, credentials: Credentials
) -> list[Check]:
    api = config.openchoreo.api
    candidates = list(generations()) if api == "auto" else [generation_named(api)]
    absent: list[ProviderError] = []
    for generation in candidates:
        path = generation.phases[0].path(None)
        try:
            page = generation.list_page(client, path, limit=1, cursor=None)
        except ProviderError as error:
            if not says_absent(error):
                return [Check("openchoreo.api", False, str(error))]
            if api != "auto" and (mend := spoken_instead(client, generation, error)):
                return [Check("openchoreo.api", False, mend)]  # the advice `run` gives
            absent.append(error)
            continue
        started = clock.monotonic()
        try:  # the second page where there is one: the cursor a page gives must lead on
            following = generation.list_page(client, path, limit=1, cursor=page.next_cursor or None)
        except ProviderError as error:
            refused = page.next_cursor and (isinstance(error, CursorExpired) or error.status == 400)
            prefix = "the first page's nextCursor was refused: " if refused else ""
            return [Check("openchoreo.api", False, f"{prefix}{error}")]
        latency = clock.monotonic() - started
        problem = _cursor_problem(page, following)
        if problem is not None:
            return [Check("openchoreo.api", False, f"{client.base_url}{path}: {problem}")]
        pages = 1
        if page.next_cursor and not page.items:
            pages, page = _first_items(client, generation, path, following, pages=2)
        auth = config.openchoreo.auth
        listing = _listing_check(client, generation, page, pages, auth, credentials)
        chunk, _ = effective_chunk_size(config, generation.name)
        try:
            slowest, largest = _full_page_time(client, generation, page, chunk, clock)
        except ProviderError as error:
            if error.config_key != CHUNK_SIZE_KEY and not isinstance(error, DeadlineExceeded):
                return [Check("openchoreo.api", False, str(error))]  # a 403, a 5xx
            failed = f"a first page of {chunk} (chunkSize): {error}"
            return [listing, Check("openchoreo.incremental", False, failed)]
        return [
            listing,
            page_time_check(max(latency, slowest), config.incremental, generation.name),
            *_chunk_check(config, generation),
            *page_memory_check(largest, chunk),
        ]
    return [Check("openchoreo.api", False, no_api_here(client, candidates, absent))]


def _full_page_time(
    client: OpenChoreoClient, generation: Generation, page: ListPage, chunk: int, clock: Clock
) -> tuple[float, int]:
    """How long the slowest first page of `chunk` items of each listing in the first namespace
    listed takes (v1: its projects, workloads and components; 0 without one), and how large the
    largest is, in bytes of JSON: the listing of one namespace says little of a page of
    workloads, which carry their API schemas inline. Raises the ProviderError of a page a run
    would fail on (one past the client's 64 MiB, say)."""
    if generation.name != API_V1 or not page.items:
        return 0.0, 0
    namespace = name_of(page.items[0], generation.phases[0].path(None))
    item = QueuedItem(0, namespace, {"namespace": namespace})
    slowest, largest = 0.0, 0
    for phase in generation.phases[1:]:
        started = clock.monotonic()
        listed = generation.list_page(client, phase.path(item), limit=chunk, cursor=None)
        slowest = max(slowest, clock.monotonic() - started)
        largest = max(largest, len(json.dumps(listed.items)))
    return slowest, largest


MEMORY_PER_PAGE_BYTE = 5
"""A run's peak memory grows by about this many bytes for each byte of its largest page (the
page read and parsed, its entities and rows, the page before it still being written): 312 MB
for pages of 63 MB of inline schemas."""
LARGE_PAGE_BYTES = 32 * 2**20
"""A first page larger than this is worth a warning: a run then needs some 200 MB or more."""


def page_memory_check(largest: int, chunk: int) -> list[Check]:
    """A warning when a first page of `chunk` items is so large (v1 workloads carry their API
    schemas inline) that a run's memory grows well past its usual 40-60 MB."""
    if largest <= LARGE_PAGE_BYTES:
        return []
    megabytes = largest / 2**20
    peak = 50 + MEMORY_PER_PAGE_BYTE * megabytes
    said = (
        f"a first page of {chunk} items (chunkSize) is {megabytes:.0f} MiB of JSON: a run may "
        f"need about {peak:.0f} MiB of memory; lower openchoreo.incremental.chunkSize if the "
        "process's memory limit is near that (the Kubernetes examples set 384Mi)"
    )
    return [Check("openchoreo.incremental", True, said, warning=True)]


def _cursor_problem(first: ListPage, following: ListPage) -> str | None:
    """What a listing's second page, asked for with the first's cursor, says of the cursor: a
    server (or a proxy that drops the query) that ignores it answers the first page again."""
    if not first.next_cursor:
        return None
    if following.next_cursor == first.next_cursor:
        return "the next page handed back the cursor it was asked with: a listing never ends"
    if first.items and following.items[:1] == first.items[:1]:
        return "the page asked for with the first page's cursor is the first page again"
    return None


def _first_items(
    client: OpenChoreoClient, generation: Generation, path: str, page: ListPage, pages: int
) -> tuple[int, ListPage]:
    """The first page with items, within `PAGES_LOOKED_AT` pages, and how many were read
    (`page` is the `pages`th): a server that filters what the caller may not see after paging
    (the org era's document allows it) can answer an empty page with more to list."""
    while not page.items and page.next_cursor and pages < PAGES_LOOKED_AT:
        after = page.next_cursor
        try:
            page = generation.list_page(client, path, limit=1, cursor=after)
        except ProviderError:
            break
        pages += 1
        if page.next_cursor == after:
            break
    return pages, page


def _listing_check(
    client: OpenChoreoClient,
    generation: Generation,
    page: ListPage,
    pages: int,
    auth: AuthConfig,
    credentials: Credentials,
) -> Check:
    what = generation.phases[0].name  # plural: `namespaces`, `orgs`
    what = what.removesuffix("s") if len(page.items) == 1 else what
    more = "more to list" if page.next_cursor else "listing complete"
    more += ", its cursor followed" if page.next_cursor and pages == 1 else ""
    where = "on the first page" if pages == 1 else f"on page {pages}"
    detail = (
        f"{client.base_url}: the {generation.name} API, reachable and authorized "
        f"({len(page.items)} {what} {where}, {more})"
    )
    if page.items or page.next_cursor:
        return Check("openchoreo.api", True, detail)
    advice = _empty_listing_advice(what, auth, generation.name, token_claims(credentials))
    return Check("openchoreo.api", True, f"{detail}, {advice}", warning=True)


def _empty_listing_advice(what: str, auth: AuthConfig, api: str, claims: Mapping[str, Any]) -> str:
    """Why a listing may be empty, for the credentials in use: a client without a role binding
    sees nothing (lists leave out what it may not read); without credentials (security off),
    OpenChoreo v1 lists only the namespaces labelled as its own. The role and the Helm values
    are v1's: the org era's document names neither. The binding names the token's `sub`, or,
    when the token carries `groups` (OpenChoreo then takes it for a user's), a group."""
    if auth.mode_key is None:
        labelled = V1_LISTED_NAMESPACES if api == "v1" else ""
        return f"but it lists no {what}{labelled} (is openchoreo.baseUrl the right server?)"
    if api != "v1":
        return (
            f"but it lists no {what}: a list answers with what the client may see, so a client "
            "without a role that may read them sees nothing"
        )
    sub = claims.get("sub")
    claim, value, why = "sub", sub if isinstance(sub, str) and sub else None, ""
    if value is None:
        value = auth.oauth.client_id if auth.oauth is not None else "<the token's sub claim>"
    groups = claims.get("groups")  # OpenChoreo's chart resolves a user (groups) before sub
    named = [g for g in groups if isinstance(g, str) and g] if isinstance(groups, list) else []
    if isinstance(groups, str) and groups:
        named = [groups]
    if named:
        claim, value = "groups", named[0]
        why = (
            " The token carries a groups claim, so OpenChoreo (the chart's subject types) "
            "takes it for a user's and matches bindings on its groups, not on its sub: bind "
            "a group made for this client alone (whoever joins it later may read the "
            "catalog too), or have the identity provider leave groups out."
        )
    elif groups == "":
        why = (
            " The token carries an empty groups claim, so OpenChoreo (the chart's subject "
            "types) takes it for a user's without groups, which no binding matches: have the "
            "identity provider leave groups out."
        )
    return (
        f"but it lists no {what}: a list answers with what the client may see, so a client "
        f"without a role binding sees nothing.{why} Bind it to the read-only role "
        "backstage-catalog-reader: add this item to "
        "openchoreoApi.config.security.authorization.bootstrap.mappings in the control plane's "
        f"Helm values (keep the chart's defaults): {ROLE_MAPPING % (claim, json.dumps(value))}"
    )


def token_claims(credentials: Credentials) -> Mapping[str, Any]:
    """The claims of the token in use, read without checking its signature (to advise on
    bindings, never to trust); none for no token or one that is not a JWT."""
    try:
        token = credentials.bearer()
    except ChoreoIngestError:
        return {}
    return jwt_claims(token) if token else {}


def _chunk_check(config: Config, generation: Generation) -> list[Check]:
    _, warning = effective_chunk_size(config, generation.name)
    return [Check(CHUNK_SIZE_KEY, True, warning, warning=True)] if warning else []


def page_time_check(latency: float, settings: IncrementalConfig, api: str) -> Check:
    """Does a page fit in a burst at this request latency? A burst that commits no page fails,
    and the next one fails the same way, so a page should take at most half of it.

    A v1 page is one list call. An org-era components page is one list call, then `chunkSize`
    detail calls `maxConcurrentRequests` at a time, and no faster than `maxRequestsPerSecond`.
    """
    chunk = settings.chunk_size
    requests = 1 if api == "v1" else 1 + chunk
    rounds = 1 if api == "v1" else 1 + math.ceil(chunk / settings.max_concurrent_requests)
    seconds = rounds * latency
    if settings.max_requests_per_second:
        seconds = max(seconds, requests / settings.max_requests_per_second)
    what = "a page" if api == "v1" else f"a page of {chunk} components"
    estimate = f"{what} takes about {seconds:.1f} s at {latency * 1000:.0f} ms per request"
    burst = settings.burst_length
    if seconds <= burst / 2:
        return Check("openchoreo.incremental", True, f"{estimate}; burstLength is {burst:g} s")
    return Check(
        "openchoreo.incremental",
        False,
        f"{estimate}, more than half of burstLength ({burst:g} s): bursts may end "
        "before any page is committed; raise openchoreo.incremental.burstLength or lower "
        "openchoreo.incremental.chunkSize",
    )
