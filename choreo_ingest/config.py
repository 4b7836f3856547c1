"""Configuration: YAML -> frozen dataclasses, validated; every error names its key path.

Durations are seconds except `restLength`, which is minutes (as in the original provider).

The pieces: `config_model` (the dataclasses and defaults, re-exported here), `config_values` (a
value's parsers, `${VAR}` substitution), `config_document` (the schema, the walk and the build),
`config_file` (the file's kept copy), `config_secrets` (secret files, and secrets kept out of
errors). Everything else imports from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from choreo_ingest.cache_files import CONFIG_ENV, DEFAULT_CONFIG_NAME, STATE_ENV
from choreo_ingest.config_database_url import (
    NOT_A_POSTGRESQL_URL,
    database_url_problem,
    is_database_url,
    looks_like_url,
)
from choreo_ingest.config_document import (
    SECRET_FILES,
    WITHHELD,
    build,
    dig,
    file_warnings,
    for_cache,
    parse_key,
    parse_yaml,
    refuse_rewritten_state,
    walk,
)
from choreo_ingest.config_file import read_document
from choreo_ingest.config_model import (
    API_ORGS,
    API_V1,
    AUTH_KEY,
    CLIENT_AUTH_AUTO,
    CLIENT_AUTH_METHODS,
    CLIENT_SECRET_BASIC,
    CLIENT_SECRET_POST,
    DEFAULT_INBOX_CAPACITY,
    MAX_CHUNK_SIZE,
    MAX_CHUNK_SIZE_V1,
    OAUTH_KEY,
    OPEN_EVENTS_WARNING,
    SERVE_TOKEN_ENV,
    Address,
    AuthConfig,
    ChangesConfig,
    Config,
    DeferredSecret,
    EventsConfig,
    IncrementalConfig,
    MappingConfig,
    OAuthConfig,
    OpenChoreoConfig,
    Secret,
    SecretPath,
    ServeConfig,
    in_directory,
    reveal,
)
from choreo_ingest.config_secrets import (
    document_secrets,
    read_secret_file,
    secret_file_shown,
    secret_in,
    secrets_masked,
)
from choreo_ingest.config_values import Invalid, file_path_text, home_expanded, parse_listen
from choreo_ingest.errors import ConfigError

__all__ = [
    "API_V1",
    "CLIENT_AUTH_AUTO",
    "CLIENT_AUTH_METHODS",
    "CLIENT_SECRET_BASIC",
    "CLIENT_SECRET_POST",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_INBOX_CAPACITY",
    "DEFAULT_STATE_FILE",
    "NO_CONFIG_FOUND",
    "OAUTH_KEY",
    "OPEN_EVENTS_WARNING",
    "SERVE_TOKEN_ENV",
    "STATE_ENV",
    "WITHHELD",
    "Address",
    "AuthConfig",
    "ChangesConfig",
    "Config",
    "DeferredSecret",
    "EventsConfig",
    "IncrementalConfig",
    "MappingConfig",
    "OAuthConfig",
    "OpenChoreoConfig",
    "ServeConfig",
    "config_warnings",
    "effective_chunk_size",
    "find_config_path",
    "load_config",
    "parse_listen",
    "read_secret_file",
    "require_api",
    "require_secrets",
    "resolve_state_path",
    "reveal",
    "secret_file_shown",
    "secret_files",
    "secret_in",
    "secret_values",
    "state_origin",
    "token_problem",
    "with_secrets",
]

DEFAULT_CONFIG_FILE = Path(DEFAULT_CONFIG_NAME)
NO_CONFIG_FOUND = f"no config file was found (--config, ${CONFIG_ENV}, ./{DEFAULT_CONFIG_FILE})"
"""Said where a value the config would have given is missing (cron's or sudo's environment
lacks $CHOREO_INGEST_CONFIG, the usual cause)."""
DEFAULT_STATE_FILE = Path("choreo-ingest.db")


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
    environment = os.environ if env is None else env

    def check(document: dict[Any, Any]) -> Config:
        found: dict[str, Any] = {}
        try:
            walk(document, "", environment, found)
            config = build(found, base=path.parent, source=path)
            _check_provider_names(document, config, document_secrets(document, environment))
        except ConfigError as error:
            masked = secrets_masked(error, document, environment, path.parent)
            raise masked from error.__cause__
        return replace(config, warnings=file_warnings(path, document, config))

    config, withheld = read_document(
        path,
        parse=parse_yaml,
        check=check,
        for_cache=lambda document: _kept_copy(document, path.parent),
        secrets=secrets,
    )
    return replace(config, source=path, secrets_withheld=withheld)


def _kept_copy(document: dict[Any, Any], base: Path) -> tuple[dict[Any, Any] | None, bool]:
    """`for_cache(document)`, or no copy (None) while a secret file's path is one an error would
    not show (`secret_file_shown`): a bare name no file in `base` (the config file's directory)
    has may be the secret itself (`tokenFile: <the token>`). Once the file is there, it is a
    name, and the document is copied."""
    for key in SECRET_FILES:
        raw = dig(document, key)
        if not isinstance(raw, str) or not raw.strip() or "${" in raw:
            continue
        file = in_directory(base, Path(raw.strip()), secret_file=True)
        if secret_file_shown(file) != str(file):
            return None, False
    return for_cache(document)


def _check_provider_names(document: dict[Any, Any], config: Config, secrets: set[str]) -> None:
    """Refuse a provider named with a secret the file gives (a token pasted into `providers`):
    a provider's name is shown by `status`, kept in the state and a label of every metric. Only
    the names the file writes (not the default list, when it writes none)."""
    if "providers" not in document:
        return
    for index, name in enumerate(config.providers):
        if name in secrets:
            named = isinstance(document["providers"][index], dict)
            raise ConfigError(
                "is the token or client secret this file gives, not a provider's name",
                path=f"providers[{index}]{'.name' if named else ''}",
            )


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
        explicit, origin = _expanded(env[CONFIG_ENV], f"${CONFIG_ENV}"), f"${CONFIG_ENV}"
    else:
        return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None
    if not explicit.exists():
        raise ConfigError(f"{explicit}: no such config file (given by {origin})")
    return explicit


def resolve_state_path(
    cli_db: Path | str | None,
    config: Config,
    env: Mapping[str, str] | None = None,
    *,
    option: str = "--db",
) -> Path | str:
    """`--db`, else `$CHOREO_INGEST_DB`, else `state.url`, else `state.path`, else
    `./choreo-ingest.db`: a state file's path, or a PostgreSQL URL (text). `option`: the
    command-line option `cli_db` came from, as errors name it (`--copy-to`)."""
    given, origin = _given_state(cli_db, env, option)
    if given is None:
        return config.state_url or config.state_path or DEFAULT_STATE_FILE
    if is_database_url(given.strip()):  # spaces around a pasted URL are not part of it
        url = given.strip()
        problem = database_url_problem(url)
        if problem is not None:  # a malformed value given, not a store that cannot be reached
            raise ConfigError(problem, path=origin)
        return url
    if looks_like_url(given):  # never shown: taken as a path, it would be, password and all
        raise ConfigError(NOT_A_POSTGRESQL_URL, path=origin)
    state = _expanded(given, origin, file=True)
    refuse_rewritten_state(state, config, origin)
    return state


def _expanded(given: str, origin: str, *, file: bool = False) -> Path:
    try:
        return home_expanded(file_path_text(given) if file else given)
    except Invalid as invalid:
        raise ConfigError(invalid.problem, path=origin) from None


def state_origin(
    cli_db: Path | str | None, config: Config, env: Mapping[str, str] | None = None
) -> str:
    """Where `resolve_state_path` takes the state from, as its errors name it: `--db`, else
    `$CHOREO_INGEST_DB`, else the config's `state.url` or `state.path` (its default too)."""
    given, origin = _given_state(cli_db, env, "--db")
    if given is not None:
        return origin
    return "state.url" if config.state_url else "state.path"


def _given_state(
    cli_db: Path | str | None, env: Mapping[str, str] | None, option: str
) -> tuple[str | None, str]:
    """The state given apart from the config, and where: `option` (`cli_db`), else
    `$CHOREO_INGEST_DB`; None for neither. An empty `option` is a ConfigError."""
    env = os.environ if env is None else env
    given = str(cli_db) if isinstance(cli_db, Path) else cli_db
    if given is not None and not given.strip():  # `--db "$DB"` with DB unset, say
        raise ConfigError("empty; give a state file or a PostgreSQL URL", path=option)
    if given:
        return given, option
    return env.get(STATE_ENV) or None, f"${STATE_ENV}"


def config_warnings(config: Config) -> list[str]:
    """One line per thing in the file the operator should fix; none for a config built in code."""
    return list(config.warnings)


def effective_chunk_size(config: Config | OpenChoreoConfig, api: str) -> tuple[int, str | None]:
    """The page size to ask `api` (`v1` or `orgs`, as detected) for, and a warning if capped
    (what follows `openchoreo.incremental.chunkSize: `).

    Config load cannot cap it: under `api: auto` the API is known only once the server answers.
    """
    if api not in (API_V1, API_ORGS):
        raise ValueError(f"api must be {API_V1!r} or {API_ORGS!r} once detected, not {api!r}")
    size = config.incremental.chunk_size
    largest = MAX_CHUNK_SIZE_V1 if api == API_V1 else MAX_CHUNK_SIZE
    if size <= largest:
        return size, None
    return largest, (
        f"{size}, but the OpenChoreo {api} API serves at most {largest} items a page; "
        f"using {largest}"
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


def require_api(config: Config) -> None:
    """Raise ConfigError unless the config says how to reach the OpenChoreo API and holds the
    secrets it names, usable: a token that can be sent, secret files that can be read (`run`,
    `refresh --now` and `check` call this before the first request). Found here, a mistake is
    a usage error, exit 2, instead of a failed burst that backs off."""
    if not config.openchoreo.base_url:
        if config.source is None:  # the usual cause: cron's or systemd's environment lacks it
            raise ConfigError(
                f"required to call the API, and {NO_CONFIG_FOUND}", path="openchoreo.baseUrl"
            )
        raise ConfigError("required to call the API", path="openchoreo.baseUrl")
    parse_key("openchoreo.baseUrl", config.openchoreo.base_url, {})
    require_secrets(config)
    auth = config.openchoreo.auth
    if isinstance(auth.token, str):
        _require_usable_token(auth.token.strip(), auth.token_key)
    token = read_secret_file(auth.token_file, "openchoreo.auth.tokenFile")
    if token is not None:
        _require_usable_token(token, "openchoreo.auth.tokenFile")
    if auth.oauth is not None:
        read_secret_file(auth.oauth.client_secret_file, "openchoreo.auth.oauth.clientSecretFile")


def _require_usable_token(token: str, key: str) -> None:
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(f"not a usable bearer token: {problem}", path=key)


def read_serve_secret(path: SecretPath | None, key: str) -> str | None:
    """`read_secret_file` for `serve`'s token or events secret, refused (ConfigError naming `key`)
    when no request could carry it (`serve_secret`)."""
    return serve_secret(read_secret_file(path, key), key)


def serve_secret(secret: str | None, key: str) -> str | None:
    """`secret`, unless no request could send it: a bearer token is one word of visible ASCII;
    the events secret, which a header may carry too, visible ASCII and spaces."""
    if secret is None:
        return None
    if key != "serve.events.secretFile":
        problem = token_problem(secret)
    elif not (secret.isascii() and secret.isprintable()):
        problem = "it holds a character that is not ASCII, or a control character"
    else:
        problem = None
    if problem is not None:
        raise ConfigError(f"no request could send it: {problem}", path=key)
    return secret


SERVE_SECRET_MIN_CHARS = 12
"""`serve`'s token or events secret shorter than this is warned of: its routes count failed
attempts, nothing slows them down."""


def short_secret(secret: str) -> str | None:
    """What `check` and `serve` warn of a token or events secret too short to resist guessing
    (never quoting it); None when long enough."""
    if len(secret) >= SERVE_SECRET_MIN_CHARS:
        return None
    return (
        f"{len(secret)} characters long, which a caller may guess: use {SERVE_SECRET_MIN_CHARS} "
        "or more random characters (`openssl rand -hex 32`)"
    )


def token_problem(token: str) -> str | None:
    """Why `token` cannot be sent as `Authorization: Bearer <token>`, never quoting it; None
    when it can: one word of visible ASCII characters."""
    if token.isascii() and token.isprintable() and " " not in token and token:
        return None  # the common case, checked at C speed: the client asks before each request
    if not token:
        return "it is empty"
    if "\n" in token or "\r" in token:
        return "expected one token on one line"
    if any(char.isspace() for char in token):
        return "it holds whitespace"
    if not token.isascii():
        return "it holds a character that is not ASCII"
    if not token.isprintable():
        return "it holds a control character"
    return None


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """The files the config names that hold a secret, by key (those named by an unset `${VAR}`
    are not known yet)."""
    auth, serve = config.openchoreo.auth, config.serve
    oauth = auth.oauth
    named = [
        (f"{AUTH_KEY}.tokenFile", auth.token_file),
        (f"{OAUTH_KEY}.clientSecretFile", oauth.client_secret_file if oauth else None),
        ("serve.auth.tokenFile", serve.token_file),
        ("serve.events.secretFile", serve.events_secret_file),
        ("state.passwordFile", config.state_password_file),
    ]
    return [(key, path) for key, path in named if isinstance(path, Path)]


def _secrets(config: Config) -> list[Secret | SecretPath | None]:
    auth = config.openchoreo.auth
    oauth = auth.oauth
    return [
        auth.token,
        auth.token_file,
        oauth.client_secret if oauth else None,
        oauth.client_secret_file if oauth else None,
    ]
