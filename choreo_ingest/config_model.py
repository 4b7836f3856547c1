"""The configuration as the code sees it: frozen dataclasses with their defaults, and how a
secret is held (its value, or why it has none yet). The rest of the package imports these from
`config`, which re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PosixPath
from typing import Any, TypeVar

from choreo_ingest.errors import ConfigError

BUILT_IN_PROVIDER = "openchoreo"
"""The provider choreo-ingest ships; its settings are `openchoreo.*`, it takes no options."""
DEFAULT_PROVIDERS = (BUILT_IN_PROVIDER,)
DEFAULT_OWNER = "group:default/guests"
DEFAULT_LIFECYCLE = "production"
API_AUTO, API_V1, API_ORGS = "auto", "v1", "orgs"
API_CHOICES = (API_AUTO, API_V1, API_ORGS)
APIS_WITHOUT_SCHEMA_CHOICES = ("skip", "stub")
CLIENT_AUTH_AUTO, CLIENT_SECRET_POST, CLIENT_SECRET_BASIC = (
    "auto",
    "client_secret_post",
    "client_secret_basic",
)
CLIENT_AUTH_METHODS = (CLIENT_AUTH_AUTO, CLIENT_SECRET_POST, CLIENT_SECRET_BASIC)
"""How the client secret reaches the token endpoint, by the names identity providers give
them (`token_endpoint_auth_method`); `auto` tries the form body, then HTTP Basic."""

TOKEN_SHORTHAND = "openchoreo.token"  # noqa: S105 (a key path, not a token)
AUTH_KEY = "openchoreo.auth"
OAUTH_KEY = "openchoreo.auth.oauth"
AUTH_MODES = f"{AUTH_KEY}.token, {AUTH_KEY}.tokenFile or {AUTH_KEY}.oauth"


@dataclass(frozen=True)
class DeferredSecret:
    """A secret whose `${VAR}` could not be interpolated at load (VAR is unset, say).

    The config still loads, so the commands that never call the API (`status`, `export`, ...)
    need no secret; `reveal` (the credentials) and `require_secrets` (`run`, `refresh --now`,
    `check`, before they call the API) raise the ConfigError that load would have raised.
    """

    key: str
    """The config key path (`openchoreo.auth.token`)."""
    problem: str
    """What is wrong, never the value (`environment variable OPENCHOREO_TOKEN is not set`)."""

    def error(self) -> ConfigError:
        return ConfigError(self.problem, path=self.key)


Secret = str | DeferredSecret
"""A secret as the config holds it: its value, or why it has none yet."""
SecretPath = Path | DeferredSecret
"""The path of a file holding a secret (`tokenFile`), or why it has none yet: a path built from
an unset `${CREDENTIALS_DIRECTORY}` must not stop the commands that never read it."""


class BareFileName(PosixPath):
    """A secret file's path written as a bare name (`tokenFile: token`), taken in the config
    file's directory. While no such file exists, what was written may be the secret itself
    (`tokenFile: <the token>`): errors do not show it (`config.secret_file_shown`)."""


def in_directory(base: Path, value: Path, *, secret_file: bool) -> Path:
    """`value` taken in `base` (the config file's directory); a secret file's path written as a
    bare name is marked so (`BareFileName`)."""
    if secret_file and not value.is_absolute() and len(value.parts) == 1:
        return BareFileName(base / value)
    return base / value


_Revealed = TypeVar("_Revealed", str, Path)


def reveal(secret: _Revealed | DeferredSecret | None) -> _Revealed | None:
    """The value of a secret field (or secret file's path); raises the ConfigError of a
    deferred one."""
    if isinstance(secret, DeferredSecret):
        raise secret.error()
    return secret


@dataclass(frozen=True)
class IncrementalConfig:
    burst_length: float = 10.0
    burst_interval: float = 30.0
    rest_length: float = 30 * 60.0  # seconds here; minutes in YAML
    chunk_size: int = 50
    backoff: tuple[float, ...] = (30.0, 60.0, 300.0, 1800.0)
    max_attempts: int = 5
    reject_removals_above_percentage: float | None = None
    reject_empty_source_collections: bool = True
    max_concurrent_requests: int = 5
    max_requests_per_second: float | None = None
    request_timeout: float = 10.0


@dataclass(frozen=True)
class OAuthConfig:
    """OAuth2 client credentials; exactly one of the two secret fields."""

    token_url: str
    client_id: str
    client_secret: Secret | None = field(default=None, repr=False)
    client_secret_file: SecretPath | None = None
    """Read when a token is requested, never at config load."""
    scope: str | None = None
    audience: str | None = None
    """Sent as `audience` with each token request: the API identifier of identity providers
    that want one for client credentials (Auth0)."""
    client_auth_method: str = CLIENT_AUTH_AUTO
    token_cache_file: Path | None = None
    """Where the access token is kept between calls (`token_cache`); None: in memory only."""

    def __post_init__(self) -> None:
        given = [key for key, value in self._secret_keys() if value is not None]
        if len(given) > 1:
            raise ConfigError(f"cannot be combined with {given[0]}; give one", path=given[1])
        if not given:
            raise ConfigError(
                f"required: set it or {OAUTH_KEY}.clientSecretFile",
                path=f"{OAUTH_KEY}.clientSecret",
            )

    @property
    def secret_key(self) -> str:
        """The config key path the client secret comes from."""
        return next(key for key, value in self._secret_keys() if value is not None)

    def _secret_keys(self) -> list[tuple[str, object]]:
        return [
            (f"{OAUTH_KEY}.clientSecret", self.client_secret),
            (f"{OAUTH_KEY}.clientSecretFile", self.client_secret_file),
        ]


@dataclass(frozen=True)
class AuthConfig:
    """How to authenticate to the API: at most one of a token, a token file, or OAuth2."""

    token: Secret | None = field(default=None, repr=False)
    token_file: SecretPath | None = None
    """Re-read at each use (a Kubernetes secret or systemd credential may be rotated)."""
    oauth: OAuthConfig | None = None
    token_key: str = field(default=f"{AUTH_KEY}.token", compare=False)
    """The key the static token was given under (`openchoreo.token` is its shorthand)."""

    def __post_init__(self) -> None:
        given = self._modes()
        if len(given) > 1:
            raise ConfigError(
                f"cannot be combined with {given[0]}; set exactly one of {AUTH_MODES}",
                path=given[1],
            )

    @property
    def mode_key(self) -> str | None:
        """The key path of the mode in use (`openchoreo.auth.tokenFile`); None: no credentials."""
        given = self._modes()
        return given[0] if given else None

    @property
    def config_key(self) -> str:
        """The key path to name when the credentials are refused; "" when none are configured."""
        if self.oauth is not None:
            return self.oauth.secret_key
        if self.token_file is not None:
            return f"{AUTH_KEY}.tokenFile"
        return self.token_key if self.token is not None else ""

    def _modes(self) -> list[str]:
        found: list[tuple[str, object]] = [
            (self.token_key, self.token),
            (f"{AUTH_KEY}.tokenFile", self.token_file),
            (f"{AUTH_KEY}.oauth", self.oauth),
        ]
        return [key for key, value in found if value is not None]


DEFAULT_INBOX_CAPACITY = 100_000
"""A `run` applies or drops the backlog (past `openchoreo.events.maxPending` and the pages of the
last complete walk) long before an inbox holds this many, unless a walk reads more pages than
this: one this full means no run has come for a long time, or a flood, and a fresh walk is the
way back, not more rows."""


@dataclass(frozen=True)
class EventsConfig:
    max_pending: int = 1000
    """Past this many pending events for one provider, and past the pages of its last complete
    walk (`event_backlog.Limit`), drop the backlog and schedule a refresh."""


@dataclass(frozen=True)
class OpenChoreoConfig:
    """`token` is the shorthand `openchoreo.token`; it and `auth.token` always agree.

    Built in code, `OpenChoreoConfig(token=...)` is the same as `auth=AuthConfig(token=...)`.
    """

    base_url: str | None = None
    token: Secret | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False
    api: str = API_AUTO
    """`auto` (ask the server), `v1` (OpenChoreo v1.x) or `orgs` (the organization-era API)."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)

    def __post_init__(self) -> None:
        if not self.token:  # None, or "" as from an unset environment variable
            object.__setattr__(self, "token", self.auth.token)
        elif self.auth.mode_key is None:
            object.__setattr__(
                self, "auth", AuthConfig(token=self.token, token_key=TOKEN_SHORTHAND)
            )
        elif self.auth.token != self.token:
            raise ConfigError(
                f"cannot be combined with {self.auth.mode_key} "
                f"(openchoreo.token is shorthand for {AUTH_KEY}.token); give one",
                path=TOKEN_SHORTHAND,
            )


DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_STATE_SCHEMA = "choreo_ingest"
DATABASE_URL_SCHEMES = ("postgresql", "postgres")
SERVE_TOKEN_ENV = "CHOREO_INGEST_SERVE_TOKEN"  # noqa: S105 (the variable's name, not a token)
OPEN_EVENTS_WARNING = (
    "no serve.events.secretFile: the event routes take events from anyone who reaches this "
    "address (a flood of them makes a full walk due); set it and append it to the webhook URL, "
    "and restrict who reaches the port (a NetworkPolicy)"
)
"""What `serve` and `check` say of an address beyond loopback with no events secret."""


@dataclass(frozen=True)
class Address:
    """Where `serve` (or the simulator) listens: `serve.listen`, `--listen`, `--host`."""

    host: str
    port: int

    @classmethod
    def parse(cls, listen: str) -> Address:
        host, _, port = listen.rpartition(":")
        return cls(host.removeprefix("[").removesuffix("]"), int(port))

    @property
    def is_loopback(self) -> bool:
        import ipaddress  # here: the idle path loads this module, and never asks

        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServeConfig:
    """`choreo-ingest serve`: where it listens and what its callers must show."""

    listen: str = DEFAULT_LISTEN
    """host:port (`[::1]:8080` for IPv6); loopback unless a token protects the API."""
    token_file: SecretPath | None = None
    """The bearer token of the management and feed routes (else $CHOREO_INGEST_SERVE_TOKEN)."""
    events_secret_file: SecretPath | None = None
    """A shared secret the event routes then require (header or last path segment)."""
    max_body_bytes: int = 1024 * 1024
    """Request bodies past this size are refused (413)."""
    read_timeout: float = 10.0
    """Seconds a client has to send a request's headers, from its connection's start or from the
    previous response (else the connection is closed), and then as long for its body (408)."""
    shutdown_delay: float = 0.0
    """Seconds `serve` goes on answering after SIGTERM, every answer closing its connection and
    `/readyz` not ready, so that callers move to another replica before its port closes."""
    allowed_hosts: tuple[str, ...] = ()
    """Names besides localhost and IP addresses a loopback `serve` without a token answers
    (`Host`); `*`: any (its other requests are refused: a page rebound to 127.0.0.1)."""


@dataclass(frozen=True)
class ChangesConfig:
    """How much of the change log is kept for consumers (`/changes`, `changes`)."""

    retain_days: float = 7.0
    max_rows: int = 1_000_000


@dataclass(frozen=True)
class MappingConfig:
    default_owner: str = DEFAULT_OWNER
    lifecycle: str = DEFAULT_LIFECYCLE
    apis_without_schema: str = "skip"
    """An endpoint without a schema: `skip` it, or map it to a `stub` API entity."""


@dataclass(frozen=True)
class Config:
    openchoreo: OpenChoreoConfig = field(default_factory=OpenChoreoConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    state_path: Path | None = None
    state_url: str | None = field(default=None, repr=False)
    """`postgresql://...` (`state.url`): the state in PostgreSQL instead of a file. May hold a
    password; shown only redacted."""
    state_password_file: SecretPath | None = None
    """The PostgreSQL password (`state.passwordFile`; else PGPASSWORD or ~/.pgpass)."""
    state_schema: str = DEFAULT_STATE_SCHEMA
    metrics_textfile: Path | None = None
    metrics_labels: tuple[tuple[str, str], ...] = ()
    """Labels (name, value) every series of the textfile carries (`metrics.labels`)."""
    catalog_directory: Path | None = None
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Options for each provider by name (`providers: [{name: csv, path: ...}]`)."""
    source: Path | None = None
    """The file this config was read from; None when built in code or absent."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    changes: ChangesConfig = field(default_factory=ChangesConfig)
    inbox_capacity: int = DEFAULT_INBOX_CAPACITY
    """Pending events one provider may have (`events.inboxCapacity`); past it new events are
    refused and a refresh is scheduled."""
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """What `load_config` found worth fixing in the file (a readable token, no TLS checks)."""
    secrets_withheld: bool = False
    """Read (`load_config(secrets=False)`) from the file's kept copy, which holds `WITHHELD` in
    place of the token or client secret the file gives in plain text: fit for deciding and
    reporting, not for a request."""

    @property
    def incremental(self) -> IncrementalConfig:
        return self.openchoreo.incremental


MAX_CHUNK_SIZE = 1024  # the organization-era API clamps a larger `limit` silently
MAX_CHUNK_SIZE_V1 = 100  # OpenChoreo v1.x clamps `limit` to 100
