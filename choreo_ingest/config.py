"""Configuration: YAML -> frozen dataclasses, validated; every error names its key path.

Durations are seconds except `restLength`, which is minutes (as in the original provider).
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from choreo_ingest.config_file import read_document
from choreo_ingest.errors import ConfigError

DEFAULT_PROVIDERS = ("openchoreo",)
DEFAULT_OWNER = "group:default/guests"
DEFAULT_LIFECYCLE = "production"
API_AUTO, API_V1, API_ORGS = "auto", "v1", "orgs"
API_CHOICES = (API_AUTO, API_V1, API_ORGS)
APIS_WITHOUT_SCHEMA_CHOICES = ("skip", "stub")

_SHORTHAND = "openchoreo.token"
_CA_BUNDLE = "openchoreo.caBundle"
_AUTH = "openchoreo.auth"
_OAUTH = "openchoreo.auth.oauth"
_AUTH_MODES = f"{_AUTH}.token, {_AUTH}.tokenFile or {_AUTH}.oauth"


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
    """OAuth2 client credentials (`client_secret_post`); exactly one of the two secret fields."""

    token_url: str
    client_id: str
    client_secret: Secret | None = field(default=None, repr=False)
    client_secret_file: SecretPath | None = None
    """Read when a token is requested, never at config load."""
    scope: str | None = None

    def __post_init__(self) -> None:
        given = [key for key, value in self._secret_keys() if value is not None]
        if len(given) > 1:
            raise ConfigError(f"cannot be combined with {given[0]}; give one", path=given[1])
        if not given:
            raise ConfigError(
                f"required: set it or {_OAUTH}.clientSecretFile", path=f"{_OAUTH}.clientSecret"
            )

    @property
    def secret_key(self) -> str:
        """The config key path the client secret comes from."""
        return next(key for key, value in self._secret_keys() if value is not None)

    def _secret_keys(self) -> list[tuple[str, object]]:
        return [
            (f"{_OAUTH}.clientSecret", self.client_secret),
            (f"{_OAUTH}.clientSecretFile", self.client_secret_file),
        ]


@dataclass(frozen=True)
class AuthConfig:
    """How to authenticate to the API: at most one of a token, a token file, or OAuth2."""

    token: Secret | None = field(default=None, repr=False)
    token_file: SecretPath | None = None
    """Re-read at each use (a Kubernetes secret or systemd credential may be rotated)."""
    oauth: OAuthConfig | None = None
    token_key: str = field(default=f"{_AUTH}.token", compare=False)
    """The key the static token was given under (`openchoreo.token` is its shorthand)."""

    def __post_init__(self) -> None:
        given = self._modes()
        if len(given) > 1:
            raise ConfigError(
                f"cannot be combined with {given[0]}; set exactly one of {_AUTH_MODES}",
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
            return f"{_AUTH}.tokenFile"
        return self.token_key if self.token is not None else ""

    def _modes(self) -> list[str]:
        found: list[tuple[str, object]] = [
            (self.token_key, self.token),
            (f"{_AUTH}.tokenFile", self.token_file),
            (f"{_AUTH}.oauth", self.oauth),
        ]
        return [key for key, value in found if value is not None]


DEFAULT_INBOX_CAPACITY = 100_000
"""A `run` applies or drops the backlog (`openchoreo.events.maxPending`) long before an inbox
holds this many: one this full means no run has come for a long time, and a fresh walk is the
way back, not more rows."""


@dataclass(frozen=True)
class EventsConfig:
    max_pending: int = 1000
    """Past this many pending events for one provider, drop the backlog and schedule a refresh."""


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
            object.__setattr__(self, "auth", AuthConfig(token=self.token, token_key=_SHORTHAND))
        elif self.auth.token != self.token:
            raise ConfigError(
                f"cannot be combined with {self.auth.mode_key} "
                f"(openchoreo.token is shorthand for {_AUTH}.token); give one",
                path=_SHORTHAND,
            )


DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_STATE_SCHEMA = "choreo_ingest"
DATABASE_URL_SCHEMES = ("postgresql", "postgres")
SERVE_TOKEN_ENV = "CHOREO_INGEST_SERVE_TOKEN"  # noqa: S105 (the variable's name, not a token)


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


CONFIG_ENV = "CHOREO_INGEST_CONFIG"
STATE_ENV = "CHOREO_INGEST_DB"
DEFAULT_CONFIG_FILE = Path("choreo-ingest.yaml")
DEFAULT_STATE_FILE = Path("choreo-ingest.db")
MAX_CHUNK_SIZE = 1024  # the organization-era API clamps a larger `limit` silently
MAX_CHUNK_SIZE_V1 = 100  # OpenChoreo v1.x clamps `limit` to 100


def load_config(
    path: Path | None, *, env: Mapping[str, str] | None = None, secrets: bool = True
) -> Config:
    """Read, interpolate and validate a config file; None (no file) gives the defaults.

    Relative paths in the file (`state.path`, `metrics.textfile`, `catalog.directory`,
    `openchoreo.caBundle`, `openchoreo.auth.tokenFile`, `openchoreo.auth.oauth.clientSecretFile`)
    are relative to the file's directory, whatever cron's cwd is. Secret files are not read here:
    only the commands that call the API read them, when they need them.

    `secrets=False` is for a call that makes no request: it may get a config whose token or
    client secret is withheld (`Config.secrets_withheld`), read without PyYAML.
    """
    if path is None:
        return Config()
    document, withheld = read_document(
        path, parse=_parse_yaml, for_cache=_for_cache, secrets=secrets
    )
    found: dict[str, Any] = {}
    _walk(document, "", os.environ if env is None else env, found)
    config = _build(found, base=path.parent)
    warnings = _file_warnings(path, document, config)
    return replace(config, source=path, warnings=warnings, secrets_withheld=withheld)


def with_secrets(config: Config) -> Config:
    """`config` itself, or read again with its secrets if they were withheld."""
    if not config.secrets_withheld:
        return config
    return load_config(config.source)


def find_config_path(cli_value: Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """`--config`, else `$CHOREO_INGEST_CONFIG`, else `./choreo-ingest.yaml` if it exists."""
    env = os.environ if env is None else env
    if cli_value is not None:
        explicit, origin = cli_value, "--config"
    elif env.get(CONFIG_ENV):
        explicit, origin = Path(env[CONFIG_ENV]).expanduser(), f"${CONFIG_ENV}"
    else:
        return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None
    if not explicit.exists():
        raise ConfigError(f"{explicit}: no such config file (given by {origin})")
    return explicit


def resolve_state_path(
    cli_db: Path | str | None, config: Config, env: Mapping[str, str] | None = None
) -> Path | str:
    """`--db`, else `$CHOREO_INGEST_DB`, else `state.url`, else `state.path`, else
    `./choreo-ingest.db`: a state file's path, or a PostgreSQL URL (text)."""
    env = os.environ if env is None else env
    given = str(cli_db) if isinstance(cli_db, Path) else cli_db
    if not given:
        given = env.get(STATE_ENV) or None
    if given is not None:
        return given if is_database_url(given) else Path(given).expanduser()
    return config.state_url or config.state_path or DEFAULT_STATE_FILE


def config_warnings(config: Config) -> list[str]:
    """One line per thing in the file the operator should fix; none for a config built in code."""
    return list(config.warnings)


def effective_chunk_size(config: Config | OpenChoreoConfig, api: str) -> tuple[int, str | None]:
    """The page size to ask `api` (`v1` or `orgs`, as detected) for, and a warning if capped.

    Config load cannot cap it: under `api: auto` the API is known only once the server answers.
    """
    if api not in (API_V1, API_ORGS):
        raise ValueError(f"api must be {API_V1!r} or {API_ORGS!r} once detected, not {api!r}")
    size = config.incremental.chunk_size
    largest = MAX_CHUNK_SIZE_V1 if api == API_V1 else MAX_CHUNK_SIZE
    if size <= largest:
        return size, None
    return largest, (
        f"openchoreo.incremental.chunkSize is {size} but the OpenChoreo {api} API serves at "
        f"most {largest} items a page; using {largest}"
    )


def secret_values(config: Config) -> list[str]:
    """Every secret the config itself holds (a token, a client secret), to mask in logs.

    Secrets in files (`tokenFile`, `clientSecretFile`) and issued access tokens are known only
    once read or granted; the credentials object reports those. A deferred secret (its variable
    is unset) has no value to mask.
    """
    return [value for value in _secrets(config) if isinstance(value, str) and value]


def require_secrets(config: Config) -> None:
    """Raise the ConfigError of the first deferred secret (an unset `${VAR}`), if any.

    For the commands that call the API, before they call it; the others never need a secret.
    """
    for value in _secrets(config):
        if isinstance(value, DeferredSecret):
            raise value.error()


def read_secret_file(path: SecretPath | None, key: str) -> str | None:
    """The secret in the file `key` names (trimmed); None when unset. A deferred path, an
    unreadable or an empty file is a ConfigError naming `key`."""
    if isinstance(path, DeferredSecret):
        raise path.error()
    if path is None:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"cannot read {path}: {reason}", path=key) from None
    if not value:
        raise ConfigError(f"{path} is empty", path=key)
    return value


def require_api(config: Config) -> None:
    """Raise ConfigError unless the config says how to reach the OpenChoreo API and holds the
    secrets it names (`run`, `refresh --now` and `check` call this before the first request)."""
    if not config.openchoreo.base_url:
        raise ConfigError("required to call the API", path="openchoreo.baseUrl")
    _parse_key("openchoreo.baseUrl", config.openchoreo.base_url, {})
    require_secrets(config)


def _secrets(config: Config) -> list[Secret | SecretPath | None]:
    auth = config.openchoreo.auth
    oauth = auth.oauth
    return [
        auth.token,
        auth.token_file,
        oauth.client_secret if oauth else None,
        oauth.client_secret_file if oauth else None,
    ]


# Parsers take a YAML value (after ${VAR} interpolation) and return the field's value or raise
# _Invalid; _parse_key adds the key path and never shows the value of a secret.

T = TypeVar("T")
_NOTHING = object()


class _Invalid(Exception):
    def __init__(self, problem: str, value: object = _NOTHING, *, where: str = "") -> None:
        self.problem, self.value, self.where = problem, value, where


def _within(where: str, parse: Callable[[], T]) -> T:
    """Run `parse`, placing its failure at `where` (`[2]`, `.name`) below the current key."""
    try:
        return parse()
    except _Invalid as err:
        raise _Invalid(err.problem, err.value, where=where + err.where) from None


def _describe(value: object, *, secret: bool = False) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str | int | float) and secret:
        return "a string" if isinstance(value, str) else "a number"
    if not isinstance(value, str | int | float):
        return f"a {type(value).__name__}"  # a date, say
    return repr(value if len(str(value)) <= 60 else f"{str(value)[:57]}...")


_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _number(value: object) -> float:
    # Text that spells a number counts (as in Backstage): ${VAR} always yields text.
    number = float(value) if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value) else value
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise _Invalid("expected a number", value)
    return float(number)


def _positive(value: object) -> float:
    if (number := _number(value)) <= 0:
        raise _Invalid("must be greater than 0", value)
    return number


def _minutes(value: object) -> float:
    return _positive(value) * 60


def _count(value: object) -> int:
    if not (number := _positive(value)).is_integer():
        raise _Invalid("expected a whole number", value)
    return int(number)


def _chunk_size(value: object) -> int:
    if (size := _count(value)) > MAX_CHUNK_SIZE:
        raise _Invalid(f"must be at most {MAX_CHUNK_SIZE} (the API's largest page)", value)
    return size


def _percentage(value: object) -> float:
    if not 0 <= (number := _number(value)) <= 100:
        raise _Invalid("must be between 0 and 100", value)
    return number


def _backoff(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise _Invalid("expected a list of seconds", value)
    if not value:
        raise _Invalid("must list at least one delay")
    return tuple(_within(f"[{i}]", partial(_positive, step)) for i, step in enumerate(value))


def _flag(value: object) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise _Invalid("expected true or false", value)
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("expected a non-empty string", value)
    return value


def _optional(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    """Null, or an empty string (as from `${VAR:-}`), leaves the setting unset."""
    return lambda value: None if value is None or value == "" else parse(value)


def _file_path(value: object) -> Path:
    return Path(_text(value)).expanduser()


def parse_listen(text: str, *, option: str) -> str:
    """A `--listen` address checked as `serve.listen` is; ConfigError naming `option`."""
    try:
        return _listen(text)
    except _Invalid as err:
        raise ConfigError(f"{err.problem}, got {text!r}", path=option) from None


def is_database_url(text: str) -> bool:
    """Whether `--db`, $CHOREO_INGEST_DB or `state.url` names a PostgreSQL database."""
    return text.split(":", 1)[0].lower() in DATABASE_URL_SCHEMES and "://" in text


def _database_url(value: object) -> str:
    # The value is never shown: it may hold a password.
    text = _text(value).strip()
    expected = "expected postgresql://[user[:password]@]host[:port]/database[?sslmode=...]"
    try:
        parts = urlsplit(text)
        valid = is_database_url(text) and bool(parts.hostname or parts.query) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise _Invalid(expected)
    return text


def _schema_name(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text):
        raise _Invalid("expected a lower-case SQL name (letters, digits, _; at most 63)", value)
    return text


def _listen(value: object) -> str:
    """host:port, the port 1-65535; an IPv6 host in brackets."""
    text = _text(value).strip()
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Invalid("expected host:port (e.g. 127.0.0.1:8080 or [::1]:8080)", value)
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise _Invalid("an IPv6 host goes in brackets ([::1]:8080)", value)
    return text


def _http_url(value: object) -> str:
    url = _text(value).strip().rstrip("/")
    parts = _url_parts(url, value, expected="with a host and no query", hint=f"set {_AUTH}")
    if parts.query or parts.fragment:
        raise _Invalid("expected an http:// or https:// URL with a host and no query", value)
    return url


def _token_url(value: object) -> str:
    # Kept as given (a trailing slash may matter to an identity provider); a query may too.
    url = _text(value).strip()
    hint = f"set {_OAUTH}.clientId and clientSecret"
    if _url_parts(url, value, expected="with a host and no fragment", hint=hint).fragment:
        raise _Invalid("expected an http:// or https:// URL with a host and no fragment", value)
    return url


def _url_parts(url: str, value: object, *, expected: str, hint: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 literal
        valid = False
    if not valid:
        raise _Invalid(f"expected an http:// or https:// URL {expected}", value)
    if parts.username or parts.password:
        raise _Invalid(f"must not hold credentials; {hint}")
    return parts


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise _Invalid(f"expected one of: {', '.join(choices)}", value)
        return str(value)

    return parse


# Backstage's rules for kind, namespace (a DNS label) and name.
_ENTITY_REF = re.compile(
    r"[A-Za-z][A-Za-z0-9]*:[a-z0-9]+(?:-[a-z0-9]+)*/[A-Za-z0-9](?:[-_.A-Za-z0-9]*[A-Za-z0-9])?"
)


def _owner_ref(value: object) -> str:
    if not _ENTITY_REF.fullmatch(ref := _text(value)):
        raise _Invalid("expected a full ref kind:namespace/name like group:default/guests", value)
    return ref


_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _providers(value: object) -> dict[str, Mapping[str, Any] | None]:
    """Provider name -> its options (None for a bare name), in the order given."""
    if not isinstance(value, list):
        raise _Invalid("expected a list of names or {name: ..., <options>} mappings", value)
    if not value:
        raise _Invalid("must name at least one provider")
    chosen: dict[str, Mapping[str, Any] | None] = {}
    for index, item in enumerate(value):
        where, name, options = f"[{index}]", item, None
        if isinstance(item, dict):
            if "name" not in item:
                raise _Invalid("missing name", where=where)
            where, name = f"{where}.name", item["name"]
            options = {k: v for k, v in item.items() if k != "name"}
        if not isinstance(name, str):
            raise _Invalid("expected a provider name (a string)", name, where=where)
        if not _PROVIDER_NAME.fullmatch(name):
            raise _Invalid("expected letters, digits, '.', '_' or '-'", name, where=where)
        if name in chosen:
            raise _Invalid(f"duplicate provider name {name!r}", where=where)
        chosen[name] = options
    return chosen


# ${VAR}, ${VAR:-default} (the default when VAR is unset or empty), $$ for a literal $.
_SUBSTITUTION = re.compile(r"\$(?:\$|\{([^}]*)(\})?)")
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def _interpolate(text: str, env: Mapping[str, str], *, secret: bool) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        body, closed = match.group(1), match.group(2)
        reference = _REFERENCE.fullmatch(body) if closed else None
        if reference is None:
            shown = "" if secret else f" ${{{body}{closed or ''}"
            raise _Invalid(f"bad substitution{shown}: use ${{NAME}}, ${{NAME:-default}} or $$")
        name, default = reference.groups()
        if default is not None and not env.get(name):
            return default
        if name not in env:
            raise _Invalid(f"environment variable {name} is not set (or use ${{{name}:-default}})")
        return env[name]

    return _SUBSTITUTION.sub(substitute, text)


def _expand(value: object, env: Mapping[str, str], *, secret: bool) -> object:
    if isinstance(value, str):
        return _interpolate(value, env, secret=secret)
    if isinstance(value, list):
        return [
            _within(f"[{i}]", partial(_expand, item, env, secret=secret))
            for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            key: _within(f".{key}", partial(_expand, item, env, secret=secret))
            for key, item in value.items()
        }
    return value


# The schema: YAML key path -> parser. A key sets the Config field its path spells in snake
# case (openchoreo.incremental.burst_length) unless _TARGETS names another.
_SCHEMA: dict[str, Callable[[object], object]] = {
    "openchoreo.baseUrl": _optional(_http_url),
    "openchoreo.api": _choice(*API_CHOICES),
    "openchoreo.token": _optional(_text),
    "openchoreo.auth.token": _optional(_text),
    "openchoreo.auth.tokenFile": _optional(_file_path),
    "openchoreo.auth.oauth.tokenUrl": _optional(_token_url),
    "openchoreo.auth.oauth.clientId": _optional(_text),
    "openchoreo.auth.oauth.clientSecret": _optional(_text),
    "openchoreo.auth.oauth.clientSecretFile": _optional(_file_path),
    "openchoreo.auth.oauth.scope": _optional(_text),
    "openchoreo.caBundle": _optional(_file_path),
    "openchoreo.insecureSkipVerify": _flag,
    "openchoreo.incremental.burstLength": _positive,
    "openchoreo.incremental.burstInterval": _positive,
    "openchoreo.incremental.restLength": _minutes,
    "openchoreo.incremental.chunkSize": _chunk_size,
    "openchoreo.incremental.backoff": _backoff,
    "openchoreo.incremental.maxAttempts": _count,
    "openchoreo.incremental.rejectRemovalsAbovePercentage": _optional(_percentage),
    "openchoreo.incremental.rejectEmptySourceCollections": _flag,
    "openchoreo.incremental.maxConcurrentRequests": _count,
    "openchoreo.incremental.maxRequestsPerSecond": _optional(_positive),
    "openchoreo.incremental.requestTimeout": _positive,
    "openchoreo.events.maxPending": _count,
    "mapping.defaultOwner": _owner_ref,
    "mapping.lifecycle": _text,
    "mapping.apisWithoutSchema": _choice(*APIS_WITHOUT_SCHEMA_CHOICES),
    "events.inboxCapacity": _count,
    "serve.listen": _listen,
    "serve.auth.tokenFile": _optional(_file_path),
    "serve.events.secretFile": _optional(_file_path),
    "serve.maxBodyBytes": _count,
    "changes.retainDays": _positive,
    "changes.maxRows": _count,
    "state.path": _optional(_file_path),
    "state.url": _optional(_database_url),
    "state.passwordFile": _optional(_file_path),
    "state.schema": _schema_name,
    "metrics.textfile": _optional(_file_path),
    "catalog.directory": _optional(_file_path),
    "providers": _providers,
}
_TARGETS = {
    "state.path": "state_path",
    "state.url": "state_url",
    "state.passwordFile": "state_password_file",
    "state.schema": "state_schema",
    "metrics.textfile": "metrics_textfile",
    "catalog.directory": "catalog_directory",
    "events.inboxCapacity": "inbox_capacity",
    "serve.auth.tokenFile": "serve.token_file",
    "serve.events.secretFile": "serve.events_secret_file",
}
_SECRETS = frozenset({_SHORTHAND, f"{_AUTH}.token", f"{_OAUTH}.clientSecret"})
_SECRET_FILES = frozenset(
    {f"{_AUTH}.tokenFile", f"{_OAUTH}.clientSecretFile", "serve.auth.tokenFile"}
    | {"serve.events.secretFile", "state.passwordFile"}
)
# Sections that hold a secret: a scalar given in place of one may be that secret.
_SECRET_SECTIONS = frozenset(
    path.rsplit(".", depth)[0] for path in _SECRETS for depth in range(1, path.count(".") + 1)
) - {"openchoreo"}

_CHILDREN: dict[str, list[str]] = {}  # section path ("" for the top) -> its keys
for _path in _SCHEMA:
    _parts = _path.split(".")
    for _depth in range(len(_parts)):
        _siblings = _CHILDREN.setdefault(".".join(_parts[:_depth]), [])
        if _parts[_depth] not in _siblings:
            _siblings.append(_parts[_depth])


def _walk(node: object, section: str, env: Mapping[str, str], found: dict[str, Any]) -> None:
    if node is None:  # a section whose keys are all commented out
        return
    if not isinstance(node, dict):
        shown = _describe(node, secret=section in _SECRET_SECTIONS)
        raise ConfigError(f"expected a mapping, got {shown}", path=section or None)
    for key, value in node.items():
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {_describe(key)}", path=section or None)
        path = f"{section}.{key}" if section else key
        if path in _CHILDREN:
            _walk(value, path, env, found)
        elif path in _SCHEMA:
            target = _TARGETS.get(path) or re.sub("([A-Z])", r"_\1", path).lower()
            found[target] = _parse_key(path, value, env)
        else:
            known = _CHILDREN[section]
            import difflib  # only for a mistake

            near = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {near[0]}?" if near else f"expected one of: {', '.join(known)}"
            raise ConfigError(f"unknown key ({hint})", path=path)


def _parse_key(path: str, value: object, env: Mapping[str, str]) -> object:
    """The value of the key at `path`. A secret (or a secret file's path) given as `${VAR}` text
    that fails for what the environment holds (VAR unset, say) becomes a DeferredSecret: only
    the API needs it."""
    secret = path in _SECRETS
    deferrable = secret or path in _SECRET_FILES
    try:
        return _SCHEMA[path](_expand(value, env, secret=secret))
    except _Invalid as err:
        got = "" if err.value is _NOTHING else f", got {_describe(err.value, secret=secret)}"
        if deferrable and isinstance(value, str) and _uses_environment(value):
            return DeferredSecret(path + err.where, f"{err.problem}{got}")
        raise ConfigError(f"{err.problem}{got}", path=path + err.where) from None


def _uses_environment(text: str) -> bool:
    """Whether `text` holds a `${...}` reference and all of them are well formed."""
    references = [match for match in _SUBSTITUTION.finditer(text) if match.group(0) != "$$"]
    return bool(references) and all(
        match.group(2) and _REFERENCE.fullmatch(match.group(1)) for match in references
    )


def _build(found: dict[str, Any], base: Path) -> Config:
    found = {target: base / v if isinstance(v, Path) else v for target, v in found.items()}
    if (ca_bundle := found.get("openchoreo.ca_bundle")) is not None:
        _check_ca_bundle(ca_bundle)
        found["openchoreo.ca_bundle"] = str(ca_bundle)

    def fields(prefix: str) -> dict[str, Any]:
        return {
            target.removeprefix(prefix): value
            for target, value in found.items()
            if target.startswith(prefix) and "." not in target.removeprefix(prefix)
        }

    top = fields("")
    if "providers" in top:
        chosen: dict[str, Mapping[str, Any] | None] = top["providers"]
        top["providers"] = tuple(chosen)
        options = {name: given for name, given in chosen.items() if given is not None}
        top["provider_options"] = options
    incremental = IncrementalConfig(**fields("openchoreo.incremental."))
    openchoreo = OpenChoreoConfig(
        incremental=incremental,
        auth=_auth(fields),
        events=EventsConfig(**fields("openchoreo.events.")),
        **{key: value for key, value in fields("openchoreo.").items() if key != "token"},
    )
    if top.get("state_url") and top.get("state_path"):
        raise ConfigError("cannot be combined with state.path; give one", path="state.url")
    return Config(
        openchoreo=openchoreo,
        mapping=MappingConfig(**fields("mapping.")),
        serve=ServeConfig(**fields("serve.")),
        changes=ChangesConfig(**fields("changes.")),
        **top,
    )


def _auth(fields: Callable[[str], dict[str, Any]]) -> AuthConfig:
    """`openchoreo.token` or one `openchoreo.auth` mode; two at once name each other."""
    shorthand = fields("openchoreo.").get("token")
    auth = {key: value for key, value in fields(f"{_AUTH}.").items() if value is not None}
    oauth = {key: value for key, value in fields(f"{_OAUTH}.").items() if value is not None}
    given = [_SHORTHAND] if shorthand is not None else []
    given += [f"{_AUTH}.{'tokenFile' if key == 'token_file' else key}" for key in auth]
    given += [f"{_OAUTH}"] if oauth else []
    if len(given) > 1:
        also = " (its shorthand)" if given[:2] == [_SHORTHAND, f"{_AUTH}.token"] else ""
        raise ConfigError(
            f"cannot be combined with {given[0]}{also}; set exactly one of {_AUTH_MODES}",
            path=given[1],
        )
    if shorthand is not None:
        return AuthConfig(token=shorthand, token_key=_SHORTHAND)
    if oauth:
        for key, name in (("token_url", "tokenUrl"), ("client_id", "clientId")):
            if key not in oauth:
                raise ConfigError("required for OAuth2 client credentials", path=f"{_OAUTH}.{name}")
        auth["oauth"] = OAuthConfig(**oauth)
    return AuthConfig(**auth)


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----")


def _check_ca_bundle(path: Path) -> None:
    """Refuse a CA bundle that cannot be used: every command would otherwise load, and `run`
    would fail only once it builds its HTTP client."""
    try:
        content = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a PEM file", path=_CA_BUNDLE) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}", path=_CA_BUNDLE) from None
    if not _PEM_CERTIFICATE.search(content):
        raise ConfigError(
            f"{path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path=_CA_BUNDLE,
        )


def _parse_yaml(file: Path, text: str) -> dict[Any, Any]:
    import yaml  # a tenth of a second: only when the file changed (config_file.py)

    from choreo_ingest.config_yaml import StrictLoader

    try:
        document = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:  # its str() quotes the line, which may hold the token
        mark, problem = err.problem_mark or err.context_mark, err.problem or err.context
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: invalid YAML: {err}") from None
    if document is None:  # an empty file, or only comments
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {_describe(document)}")
    return document


def _literal_secrets(document: dict[Any, Any]) -> list[str]:
    """The secret keys `document` gives a value in plain text (not only through ${VAR})."""
    found = []
    for path in sorted(_SECRETS):
        raw = _dig(document, path)
        literal = isinstance(raw, str) and all(
            match.group(0) == "$$" for match in _SUBSTITUTION.finditer(raw)
        )
        if literal and str(raw).strip():  # a blank value leaves the key unset
            found.append(path)
    return found


WITHHELD = "withheld-from-the-kept-copy"
"""What the config file's kept copy holds in place of a token or client secret given in plain
text (config_file.py)."""


def _for_cache(document: dict[Any, Any]) -> tuple[dict[Any, Any] | None, bool]:
    """What the config file's kept copy may hold: the document itself, or (True) a copy with its
    plain-text API secrets replaced by `WITHHELD`, or nothing (None) when `state.url` holds a
    password in plain text, which every call needs."""
    url = _dig(document, "state.url")
    if isinstance(url, str) and _holds_password(_SUBSTITUTION.sub("", url)):
        return None, False
    secrets = _literal_secrets(document)
    for path in secrets:
        document = _replaced(document, path.split("."), WITHHELD)
    return document, bool(secrets)


def _holds_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:  # cannot tell: keep it out of the copy
        return True


def _dig(document: dict[Any, Any], path: str) -> object:
    found: object = document
    for key in path.split("."):
        found = found.get(key) if isinstance(found, dict) else None
    return found


def _replaced(document: dict[Any, Any], keys: list[str], value: object) -> dict[Any, Any]:
    """A copy of `document` with the value at `keys` (dicts all the way down) set to `value`;
    the rest is shared, not copied."""
    head, *rest = keys
    return {**document, head: _replaced(document[head], rest, value) if rest else value}


def _file_warnings(file: Path, document: dict[Any, Any], config: Config) -> tuple[str, ...]:
    warnings = []
    for path in _literal_secrets(document):
        if (mode := stat.S_IMODE(file.stat().st_mode)) & 0o077:
            warnings.append(
                f"{file} holds {path} and is readable by others (mode {mode:04o}); chmod 600 it"
            )
    if config.openchoreo.insecure_skip_verify:
        warnings.append(
            "openchoreo.insecureSkipVerify is true: TLS certificates are not verified; "
            "prefer openchoreo.caBundle"
        )
    return tuple(warnings)
