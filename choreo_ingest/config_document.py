"""The config file's document -> Config: the schema (key path -> parser), the walk that names
an unknown or invalid key by its path, the dataclasses built from what it found, and what
the file's kept copy may hold (config_file.py)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from choreo_ingest.config_database_url import as_database_url, as_state_file_path
from choreo_ingest.config_model import (
    API_CHOICES,
    APIS_WITHOUT_SCHEMA_CHOICES,
    AUTH_KEY,
    AUTH_MODES,
    BUILT_IN_PROVIDER,
    CLIENT_AUTH_METHODS,
    OAUTH_KEY,
    TOKEN_SHORTHAND,
    AuthConfig,
    ChangesConfig,
    Config,
    DeferredSecret,
    EventsConfig,
    IncrementalConfig,
    MappingConfig,
    OAuthConfig,
    OpenChoreoConfig,
    ServeConfig,
    in_directory,
)
from choreo_ingest.config_values import (
    NOTHING,
    Invalid,
    as_backoff,
    as_chunk_size,
    as_count,
    as_delay,
    as_directory_path,
    as_file_path,
    as_flag,
    as_host_names,
    as_http_url,
    as_listen,
    as_metric_labels,
    as_minutes,
    as_owner_ref,
    as_percentage,
    as_providers,
    as_request_rate,
    as_retention_days,
    as_schema_name,
    as_seconds,
    as_text,
    as_token_url,
    check_ca_bundle,
    choice,
    describe,
    expand,
    optional,
    query_values_hidden,
    uses_environment,
    without_credentials,
)
from choreo_ingest.errors import ConfigError

_CA_BUNDLE = "openchoreo.caBundle"
_FILE_PATH = optional(as_file_path)
"""The parser of every key naming a file (`_check_rewritten_files` looks for it)."""
_DIRECTORY_PATH = optional(as_directory_path)
_STATE_FILE_PATH = optional(as_state_file_path)
"""`state.path`'s: a file path, as `_FILE_PATH`'s, that is no URL (it would be shown whole)."""

# The schema: YAML key path -> parser. A key sets the Config field its path spells in snake
# case (openchoreo.incremental.burst_length) unless _TARGETS names another.
_SCHEMA: dict[str, Callable[[object], object]] = {
    "openchoreo.baseUrl": optional(as_http_url),
    "openchoreo.api": choice(*API_CHOICES),
    "openchoreo.token": optional(as_text),
    "openchoreo.auth.token": optional(as_text),
    "openchoreo.auth.tokenFile": _FILE_PATH,
    "openchoreo.auth.oauth.tokenUrl": optional(as_token_url),
    "openchoreo.auth.oauth.clientId": optional(as_text),
    "openchoreo.auth.oauth.clientSecret": optional(as_text),
    "openchoreo.auth.oauth.clientSecretFile": _FILE_PATH,
    "openchoreo.auth.oauth.scope": optional(as_text),
    "openchoreo.auth.oauth.audience": optional(as_text),
    "openchoreo.auth.oauth.clientAuthMethod": optional(choice(*CLIENT_AUTH_METHODS)),
    "openchoreo.auth.oauth.tokenCacheFile": _FILE_PATH,
    "openchoreo.caBundle": _FILE_PATH,
    "openchoreo.insecureSkipVerify": as_flag,
    "openchoreo.incremental.burstLength": as_seconds,
    "openchoreo.incremental.burstInterval": as_seconds,
    "openchoreo.incremental.restLength": as_minutes,
    "openchoreo.incremental.chunkSize": as_chunk_size,
    "openchoreo.incremental.backoff": as_backoff,
    "openchoreo.incremental.maxAttempts": as_count,
    "openchoreo.incremental.rejectRemovalsAbovePercentage": optional(as_percentage),
    "openchoreo.incremental.rejectEmptySourceCollections": as_flag,
    "openchoreo.incremental.maxConcurrentRequests": as_count,
    "openchoreo.incremental.maxRequestsPerSecond": optional(as_request_rate),
    "openchoreo.incremental.requestTimeout": as_seconds,
    "openchoreo.events.maxPending": as_count,
    "mapping.defaultOwner": as_owner_ref,
    "mapping.lifecycle": as_text,
    "mapping.apisWithoutSchema": choice(*APIS_WITHOUT_SCHEMA_CHOICES),
    "events.inboxCapacity": as_count,
    "serve.listen": as_listen,
    "serve.auth.tokenFile": _FILE_PATH,
    "serve.events.secretFile": _FILE_PATH,
    "serve.maxBodyBytes": as_count,
    "serve.readTimeout": as_seconds,
    "serve.shutdownDelay": as_delay,
    "serve.allowedHosts": as_host_names,
    "changes.retainDays": as_retention_days,
    "changes.maxRows": as_count,
    "state.path": _STATE_FILE_PATH,
    "state.url": optional(as_database_url),
    "state.passwordFile": _FILE_PATH,
    "state.schema": as_schema_name,
    "metrics.textfile": _FILE_PATH,
    "metrics.labels": as_metric_labels,
    "catalog.directory": _DIRECTORY_PATH,
    "providers": lambda value: _providers(as_providers(value)),
}
_TARGETS = {
    "state.path": "state_path",
    "state.url": "state_url",
    "state.passwordFile": "state_password_file",
    "state.schema": "state_schema",
    "metrics.textfile": "metrics_textfile",
    "metrics.labels": "metrics_labels",
    "catalog.directory": "catalog_directory",
    "events.inboxCapacity": "inbox_capacity",
    "serve.auth.tokenFile": "serve.token_file",
    "serve.events.secretFile": "serve.events_secret_file",
}
SECRET_KEYS = frozenset({TOKEN_SHORTHAND, f"{AUTH_KEY}.token", f"{OAUTH_KEY}.clientSecret"})
SECRET_FILES = frozenset(
    {f"{AUTH_KEY}.tokenFile", f"{OAUTH_KEY}.clientSecretFile", "serve.auth.tokenFile"}
    | {"serve.events.secretFile", "state.passwordFile"}
)
_HIDDEN_VALUES = SECRET_KEYS | {"state.url"}
"""Keys whose value no error shows (`state.url` may hold a password)."""
# Sections that hold a secret, a secret file or a URL with a password: a scalar given in place
# of one may be that secret (`serve: {auth: <the token>}`).
_SECRET_SECTIONS = frozenset(
    path.rsplit(".", depth)[0]
    for path in _HIDDEN_VALUES | SECRET_FILES
    for depth in range(1, path.count(".") + 1)
) - {"openchoreo", "state"}  # a URL given as `state` is shown with its password masked

_CHILDREN: dict[str, list[str]] = {}  # section path ("" for the top) -> its keys
for _path in _SCHEMA:
    _parts = _path.split(".")
    for _depth in range(len(_parts)):
        _siblings = _CHILDREN.setdefault(".".join(_parts[:_depth]), [])
        if _parts[_depth] not in _siblings:
            _siblings.append(_parts[_depth])


def _providers(chosen: dict[str, Mapping[str, Any] | None]) -> dict[str, Mapping[str, Any] | None]:
    """Refuse options given to the built-in provider: it reads only `openchoreo.*`."""
    for index, (name, options) in enumerate(chosen.items()):
        if name == BUILT_IN_PROVIDER and options:
            key = next(iter(options))
            import difflib  # only for a mistake

            near = difflib.get_close_matches(str(key), list(_OPENCHOREO_KEYS), n=1)
            hint = f"did you mean {_OPENCHOREO_KEYS[near[0]]}?" if near else f"set {name}.* instead"
            raise Invalid(
                f"unknown key (the built-in {name} provider takes no options; {hint})",
                where=f"[{index}].{key}",
            )
    return chosen


# The last part of each `openchoreo.*` key and section -> its path (the first wins: `token` is
# the shorthand `openchoreo.token`), for an option wrongly given next to the provider's name.
_OPENCHOREO_KEYS: dict[str, str] = {}
for _path in [*_SCHEMA, *_CHILDREN]:
    if _path.startswith(f"{BUILT_IN_PROVIDER}."):
        _OPENCHOREO_KEYS.setdefault(_path.rsplit(".", 1)[1], _path)


def _target(path: str) -> str:
    """The Config field a key path sets (the found dict's key, as `build` reads it)."""
    return _TARGETS.get(path) or re.sub("([A-Z])", r"_\1", path).lower()


_SECRET_FILE_TARGETS = frozenset(_target(key) for key in SECRET_FILES)  # their `found` keys


def walk(node: object, section: str, env: Mapping[str, str], found: dict[str, Any]) -> None:
    if node is None:  # a section whose keys are all commented out
        return
    if not isinstance(node, dict):
        shown = describe(node, secret=section in _SECRET_SECTIONS)
        raise ConfigError(f"expected a mapping, got {shown}", path=section or None)
    for key, value in node.items():
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {describe(key)}", path=section or None)
        path = f"{section}.{key}" if section else key
        if path in _CHILDREN:
            walk(value, path, env, found)
        elif path in _SCHEMA:
            found[_target(path)] = parse_key(path, value, env)
        else:
            from choreo_ingest.config_hints import unknown_key_hint  # only for a mistake

            hint = unknown_key_hint(section, key, _CHILDREN, [*_CHILDREN, *_SCHEMA])
            raise ConfigError(f"unknown key ({hint})", path=path)


def parse_key(path: str, value: object, env: Mapping[str, str]) -> object:
    """The value of the key at `path`; a secret (or its file's path) as `${VAR}` text that fails
    for the environment (VAR unset) is a DeferredSecret: only the API needs it."""
    secret = path in SECRET_KEYS
    hidden = path in _HIDDEN_VALUES
    deferrable = secret or path in SECRET_FILES
    try:
        return _SCHEMA[path](expand(value, env, secret=secret, hidden=hidden))
    except Invalid as err:
        # A secret file's key given the secret itself, of the wrong type (a number): not shown
        shown = hidden or path in SECRET_FILES
        got = "" if err.value is NOTHING else f", got {describe(err.value, secret=shown)}"
        if deferrable and isinstance(value, str) and uses_environment(value):
            return DeferredSecret(path + err.where, f"{err.problem}{got}")
        raise ConfigError(f"{err.problem}{got}", path=path + err.where) from None


def build(found: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """The Config of the values `walk` found in the file `source`, in directory `base`."""
    found = {
        target: in_directory(base, v, secret_file=target in _SECRET_FILE_TARGETS)
        if isinstance(v, Path)
        else v
        for target, v in found.items()
    }
    if (ca_bundle := found.get("openchoreo.ca_bundle")) is not None:
        check_ca_bundle(ca_bundle, _CA_BUNDLE)
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
    _check_rewritten_files(found, source)
    return Config(
        openchoreo=openchoreo,
        mapping=MappingConfig(**fields("mapping.")),
        serve=ServeConfig(**fields("serve.")),
        changes=ChangesConfig(**fields("changes.")),
        **top,
    )


TOKEN_CACHE_KEY = f"{OAUTH_KEY}.tokenCacheFile"
_CATALOG_DIRECTORY = "catalog.directory"
_STATE_SIDECARS = ("-wal", "-shm", ".lock")
_REWRITTEN = {
    TOKEN_CACHE_KEY: ("each new token", "the token"),
    "metrics.textfile": ("every run's metrics", "the metrics"),
}
"""The files choreo-ingest replaces whole, by key: what overwrites them, and what they hold
(`refuse_rewritten_state` finds them in a Config)."""


def _check_rewritten_files(found: dict[str, Any], source: Path | None) -> None:
    """A file choreo-ingest replaces whole (`_REWRITTEN`) may not be a file the tool reads or
    writes besides (the state file, a secret, the config file itself would be lost), nor lie in
    `catalog.directory`, whose files are the catalog."""
    files = [
        key
        for key, parse in _SCHEMA.items()
        if parse in (_FILE_PATH, _STATE_FILE_PATH, _DIRECTORY_PATH)
    ]
    state = found.get(_target("state.path"))
    for key, (writer, content) in _REWRITTEN.items():
        written = found.get(_target(key))
        if not isinstance(written, Path):
            continue
        mine = Path(os.path.realpath(written))
        others = [
            (f"{other}'s file", found.get(_target(other)), "")
            for other in files
            if other not in (key, _CATALOG_DIRECTORY)
        ]
        others += [("the config file", source, "")]
        others += [(f"state.path's {end} file", state, end) for end in _STATE_SIDECARS]
        for what, other, suffix in others:
            # Not a Path: unset, or a secret file named by an unset variable.
            if isinstance(other, Path) and mine == Path(os.path.realpath(other) + suffix):
                raise ConfigError(
                    f"{written} is also {what}, which {writer} would overwrite: give "
                    f"{content} a file of its own",
                    path=key,
                )
        catalog = found.get(_target(_CATALOG_DIRECTORY))
        if isinstance(catalog, Path) and mine.is_relative_to(os.path.realpath(catalog)):
            raise ConfigError(
                f"{written} is in catalog.directory, whose files are the catalog: give "
                f"{content} a file outside it",
                path=key,
            )


def refuse_rewritten_state(state: Path, config: Config, origin: str) -> None:
    """A state file given apart from the config (`origin`: `--db`, `$CHOREO_INGEST_DB`) that the
    config names as a file choreo-ingest replaces whole (`_REWRITTEN`; the config's own
    `state.path` is checked at load): the state would be lost at the next run."""
    oauth = config.openchoreo.auth.oauth
    rewritten = {
        "metrics.textfile": config.metrics_textfile,
        TOKEN_CACHE_KEY: oauth.token_cache_file if oauth is not None else None,
    }
    mine = os.path.realpath(state)
    for key, file in rewritten.items():
        target = os.path.realpath(file) if file is not None else None
        for end in ("", *_STATE_SIDECARS):
            if target == mine + end:
                raise ConfigError(
                    f"{state}{end} is also {key}'s file, which choreo-ingest replaces whole: "
                    "give the state another file",
                    path=origin,
                )


def _auth(fields: Callable[[str], dict[str, Any]]) -> AuthConfig:
    """`openchoreo.token` or one `openchoreo.auth` mode; two at once name each other."""
    shorthand = fields("openchoreo.").get("token")
    auth = {key: value for key, value in fields(f"{AUTH_KEY}.").items() if value is not None}
    oauth = {key: value for key, value in fields(f"{OAUTH_KEY}.").items() if value is not None}
    given = [TOKEN_SHORTHAND] if shorthand is not None else []
    given += [f"{AUTH_KEY}.{'tokenFile' if key == 'token_file' else key}" for key in auth]
    given += [f"{OAUTH_KEY}"] if oauth else []
    if len(given) > 1:
        also = " (its shorthand)" if given[:2] == [TOKEN_SHORTHAND, f"{AUTH_KEY}.token"] else ""
        raise ConfigError(
            f"cannot be combined with {given[0]}{also}; set exactly one of {AUTH_MODES}",
            path=given[1],
        )
    if shorthand is not None:
        return AuthConfig(token=shorthand, token_key=TOKEN_SHORTHAND)
    if oauth:
        for key, name in (("token_url", "tokenUrl"), ("client_id", "clientId")):
            if key not in oauth:
                raise ConfigError(
                    "required for OAuth2 client credentials", path=f"{OAUTH_KEY}.{name}"
                )
        auth["oauth"] = OAuthConfig(**oauth)
    return AuthConfig(**auth)


def parse_yaml(file: Path, text: str) -> dict[Any, Any]:
    """The file's document (`config_yaml`): PyYAML is loaded only when the file changed."""
    from choreo_ingest.config_yaml import parse_document

    return parse_document(file, text)


def _literal_secrets(document: dict[Any, Any]) -> list[str]:
    """The secret keys `document` gives a value in plain text (not `${VAR}` references alone)."""
    found = []
    for path in sorted(SECRET_KEYS):
        raw = dig(document, path)  # a blank value leaves the key unset
        if isinstance(raw, str) and raw.strip() and not _ONLY_REFERENCES.fullmatch(raw.strip()):
            found.append(path)
    return found


WITHHELD = "withheld-from-the-kept-copy"
"""What the kept copy holds in place of a secret given in plain text (config_file.py)."""
_TOKEN_URL, _WITHHELD_URL = f"{OAUTH_KEY}.tokenUrl", f"https://{WITHHELD}.invalid/"


def for_cache(document: dict[Any, Any]) -> tuple[dict[Any, Any] | None, bool]:
    """What the config file's kept copy of a valid `document` may hold: the document itself, or
    (True) a copy with `WITHHELD` for its plain-text API secrets, its token URL's query values
    and what looks like a secret among custom providers' options (`_withheld_options`); or
    nothing (None) when `state.url` holds a password in plain text, which every call needs."""
    url = dig(document, "state.url")
    if isinstance(url, str) and _holds_credentials(url):
        return None, False
    secrets = _literal_secrets(document)
    for path in secrets:
        document = _replaced(document, path.split("."), WITHHELD)
    token_url = dig(document, _TOKEN_URL)  # a signature (`?sig=`) is a credential by any name
    if isinstance(token_url, str) and "?" in token_url:  # `${`: a query may be in a default
        shown = _WITHHELD_URL if "${" in token_url else query_values_hidden(token_url, WITHHELD)
        document = _replaced(document, _TOKEN_URL.split("."), shown)
        secrets.append(_TOKEN_URL)
    providers = document.get("providers")
    if isinstance(providers, list):
        kept = [_withheld_options(item) for item in providers]
        if kept != providers:
            document, secrets = {**document, "providers": kept}, [*secrets, "providers"]
    return document, bool(secrets)


# Option names a custom provider's secret may go by: its options are the provider's to check,
# so their copy keeps no value under such a name, at any depth (`auth: {user: ..., pass: ...}`).
_SECRET_NAME = re.compile(
    r"token|secret|pass|pwd|credential|auth|bearer|cookie|private|key$|dsn", re.IGNORECASE
)
_ONLY_REFERENCES = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")
_BARE_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
"""A `${VAR}` without a default: what a URL may hold in place of a password (a default is one)."""


def _withheld_options(node: object, *, secret: bool = False) -> object:
    """`node` (a provider's entry, or a value in it) with `WITHHELD` in place of each value under
    a secret-looking name unless it is only `${VAR}` references, and of each URL with a
    password in it."""
    if isinstance(node, dict):
        return {
            key: _withheld_options(value, secret=secret or bool(_SECRET_NAME.search(str(key))))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_withheld_options(item, secret=secret) for item in node]
    if not isinstance(node, str):
        return WITHHELD if secret and node is not None else node
    if not secret:
        return WITHHELD if _holds_credentials(node) else node
    return node if not node or _ONLY_REFERENCES.fullmatch(node) else WITHHELD


def _holds_credentials(text: str) -> bool:
    """Whether `text`, its `${VAR}` references left out, is a URL with a password or a
    credential-named query parameter (`?access_token=...`) in it."""
    bare = _BARE_REFERENCE.sub("", text)
    try:
        password = urlsplit(bare).password
    except ValueError:  # cannot tell: keep it out of the copy
        return True
    return bool(password) or without_credentials(bare) != bare


def dig(document: dict[Any, Any], path: str) -> object:
    found: object = document
    for key in path.split("."):
        found = found.get(key) if isinstance(found, dict) else None
    return found


def _replaced(document: dict[Any, Any], keys: list[str], value: object) -> dict[Any, Any]:
    """A copy of `document` with the value at `keys` set to `value` (the rest shared)."""
    head, *rest = keys
    return {**document, head: _replaced(document[head], rest, value) if rest else value}


def file_warnings(file: Path, document: dict[Any, Any], config: Config) -> tuple[str, ...]:
    warnings, held = [], _literal_secrets(document)
    url = dig(document, "state.url")
    if isinstance(url, str) and _holds_credentials(url):
        held.append("state.url with a password")
    for path in held:
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
