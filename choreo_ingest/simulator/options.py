"""How the simulated server behaves (`SimulatorOptions`); every fault is off by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from choreo_ingest.simulator.webhooks import check_webhook_url

CLIENT_AUTH_METHODS = ("client_secret_post", "client_secret_basic")

ApiGeneration = Literal["v1", "orgs"]


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulated server behaves; every fault is off by default.

    `api` picks the generation served: "v1" (shared/openchoreo-v1-api.md, every release since
    v1.0) or "orgs" (shared/openchoreo-api.md, the organization-era cursor API). Options marked
    "orgs only" have no effect under v1, whose limits and envelopes are fixed by its contract.
    """

    api: ApiGeneration = "v1"
    base_path: str = "/api/v1"
    """The org-era API root (orgs only: v1 always serves `/api/v1/...`)."""
    token: str | None = None
    """When set, every request but the public routes needs `Authorization: Bearer <token>`."""
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    """With both set, `POST /oauth2/token` issues JWTs (client credentials) the API accepts."""
    oauth_client_auth: str | None = None
    """`client_secret_post` or `client_secret_basic`: the one way the token endpoint takes the
    client's secret, as an identity provider holds a client to the method it was registered
    with (Thunder does); None takes either."""
    token_lifetime: int = 3600
    """Seconds an issued token stays valid (on the simulator's clock)."""
    forbidden: bool = False
    """The caller may see nothing: orgs answers every authenticated request 403; v1 answers
    single reads 403 and lists with no items (v1 lists filter, they never answer 403)."""
    default_limit: int = 16
    """Page size without `limit` (orgs only; v1: 20)."""
    max_limit: int = 1024
    """Largest page; larger limits are clamped (orgs only; v1: 100)."""
    cursor_ttl: float | None = 300.0
    """Seconds a cursor stays valid (None: forever); older cursors get 410 (v1: 500)."""
    cursor_ttl_from_listing_start: bool = False
    """Count expiry from the listing's first page (as Kubernetes does) instead of each cursor."""
    cursor_first_page_always: bool = False
    """Serve the first page in cursor mode even without `pagination=cursor` (orgs only)."""
    no_cursor_support: bool = False
    """Never paginate: every list call gets the legacy envelope with all items (orgs only)."""
    repeat_cursor_bug: bool = False
    """A page requested with a cursor hands back that same cursor again."""
    error_rate: float = 0.0
    """Fraction of requests answered 500/502/503/504 INTERNAL_ERROR."""
    rate_limit_rps: float | None = None
    """Requests above this many per (sliding) second get 429 with `Retry-After`."""
    latency: float = 0.0
    """Seconds slept (through the clock) before answering."""
    fault_seed: int = 0
    log_requests: bool = False
    """Keep a `LoggedRequest` for every request (see `SimulatorApi.request_log`)."""
    control: bool = False
    """Serve the `/_control/*` debug routes (stats, world dump, mutations; see control.py)."""
    webhooks: tuple[str, ...] = ()
    """URLs to POST OpenChoreo's event-forwarder events to, for every change made through the
    control routes (see webhooks.py); read when the `SimulatorApi` is built."""

    def __post_init__(self) -> None:
        if self.api not in ("v1", "orgs"):
            raise ValueError("api must be 'v1' or 'orgs'")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("latency must not be negative")
        if self.rate_limit_rps is not None and self.rate_limit_rps < 1:
            raise ValueError("rate_limit_rps must be at least 1")
        if self.cursor_ttl is not None and self.cursor_ttl < 0:
            raise ValueError("cursor_ttl must not be negative")
        if not 1 <= self.default_limit <= self.max_limit:
            raise ValueError("default_limit must be between 1 and max_limit")
        if not self.base_path.startswith("/"):
            raise ValueError("base_path must start with '/'")
        if (self.oauth_client_id is None) != (self.oauth_client_secret is None):
            raise ValueError("oauth_client_id and oauth_client_secret must be set together")
        if self.oauth_client_auth not in (None, *CLIENT_AUTH_METHODS):
            raise ValueError("oauth_client_auth must be client_secret_post or client_secret_basic")
        if self.token_lifetime < 1:
            raise ValueError("token_lifetime must be at least 1 second")
        for url in self.webhooks:
            check_webhook_url(url)

    @property
    def oauth(self) -> bool:
        """Whether the token endpoint is served and its tokens are required."""
        return self.oauth_client_id is not None

    @property
    def secured(self) -> bool:
        """Whether API requests need a bearer token (static or issued)."""
        return self.token is not None or self.oauth

    @property
    def api_root(self) -> str:
        """The path the API's routes hang under (what a client's base URL ends in)."""
        return "/api/v1" if self.api == "v1" else self.base_path.rstrip("/")
