"""One value of the config file, checked: the schema's parsers and `${VAR}` substitution.

A parser takes a YAML value (after interpolation) and returns the field's value or raises
`Invalid`; `config_document.parse_key` adds the key path and never shows a secret's value.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from choreo_ingest.atomic_file import read_regular_file
from choreo_ingest.config_model import AUTH_KEY, MAX_CHUNK_SIZE, OAUTH_KEY
from choreo_ingest.errors import ConfigError

T = TypeVar("T")
NOTHING = object()


class Invalid(Exception):
    def __init__(self, problem: str, value: object = NOTHING, *, where: str = "") -> None:
        self.problem, self.value, self.where = problem, value, where


def within(where: str, parse: Callable[[], T]) -> T:
    """Run `parse`, placing its failure at `where` (`[2]`, `.name`) below the current key."""
    try:
        return parse()
    except Invalid as err:
        raise Invalid(err.problem, err.value, where=where + err.where) from None


def describe(value: object, *, secret: bool = False) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str | int | float) and secret:
        return "a string" if isinstance(value, str) else "a number"
    if not isinstance(value, str | int | float):
        return f"a {type(value).__name__}"  # a date, say
    if isinstance(value, str):
        value = without_credentials(value)
    return repr(value if len(str(value)) <= 60 else f"{str(value)[:57]}...")


def without_credentials(text: str) -> str:
    """`text` with what a URL in it holds as a credential masked: the password of
    `user:password@`, and the value of a query parameter named like one (`?access_token=`), so
    that a URL given to the wrong key (`state: postgresql://u:pw@db/x`) is not echoed whole."""
    if "://" not in text:
        return text
    scheme, rest = text.split("://", 1)
    # Up to the last `@` of all: a password with an unescaped `/`, `?` or `#` stays hidden too
    # (an `@` in the query hides more than the password, never less).
    userinfo, at, after = rest.rpartition("@")
    user, _, password = userinfo.partition(":")
    if at and password:
        rest = f"{user}:***@{after}"
    return scheme + "://" + _QUERY_VALUE.sub(_secret_value_hidden, rest)


def _secret_value_hidden(pair: re.Match[str]) -> str:
    """A query parameter as a message shows it: its value masked where its name, decoded as
    libpq decodes it (`pass%77ord` is `password`), names a credential."""
    return f"{pair[1]}***" if _SECRET_PARAMETER.search(unquote(pair[2])) else pair[0]


LONGEST_SECONDS = 365 * 86_400
"""The longest duration a setting takes: a year."""
LONGEST_DELAY_SECONDS = 3_600
"""The longest delay a setting that may be 0 takes (`serve.shutdownDelay`): an hour."""
MAX_COUNT = 2**63 - 1
"""The largest count a setting takes: what the state store's integer columns hold (the store's
`MAX_INTEGER`)."""

_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def as_number(value: object) -> float:
    # Text that spells a number counts (as in Backstage): ${VAR} always yields text.
    number = float(value) if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value) else value
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise Invalid("expected a number", value)
    return float(number)


def as_positive(value: object) -> float:
    if (number := as_number(value)) <= 0:
        raise Invalid("must be greater than 0", value)
    return number


def as_positive_at_most(value: object, limit: int, unit: str = "") -> float:
    """A number greater than 0 and at most `limit` (`unit`: what follows the limit said)."""
    if (number := as_positive(value)) > limit:
        raise Invalid(f"must be at most {limit:,}{unit}", value)
    return number


def as_seconds(value: object) -> float:
    """A duration in seconds, at most a year (a longer one is a typo, and overflows the clock's
    arithmetic somewhere: a timeout of 1e12 s, a rest of 1e10 s)."""
    return as_positive_at_most(value, LONGEST_SECONDS, " seconds (a year)")


def as_delay(value: object) -> float:
    """Seconds to wait, 0 for none, at most an hour."""
    if (number := as_number(value)) < 0:
        raise Invalid("must be 0 or more", value)
    if number > LONGEST_DELAY_SECONDS:
        raise Invalid(f"must be at most {LONGEST_DELAY_SECONDS:,} seconds (an hour)", value)
    return number


def as_minutes(value: object) -> float:
    if (number := as_positive(value)) > LONGEST_SECONDS / 60:
        raise Invalid(f"must be at most {LONGEST_SECONDS // 60:,} minutes (a year)", value)
    return number * 60


def as_count(value: object) -> int:
    if not (number := as_positive(value)).is_integer():
        raise Invalid("expected a whole number", value)
    # Compared as written where it is written whole: as a float, 2**63 - 2 is 2**63.
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        count = int(value)
    else:
        count = int(number)
    if count > MAX_COUNT:
        raise Invalid(f"must be at most {MAX_COUNT:,}", value)
    return count


MAX_REQUEST_RATE = 1_000_000
"""The most requests a second `maxRequestsPerSecond` takes (no server answers more; its window
holds one entry a request)."""


as_request_rate = partial(as_positive_at_most, limit=MAX_REQUEST_RATE)

LONGEST_RETENTION_DAYS = 3650
"""Days of the change log kept at most: ten years (a larger number is a typo)."""

as_retention_days = partial(as_positive_at_most, limit=LONGEST_RETENTION_DAYS, unit=" (ten years)")


def as_chunk_size(value: object) -> int:
    too_large = Invalid(f"must be at most {MAX_CHUNK_SIZE} (the API's largest page)", value)
    try:
        size = as_count(value)
    except Invalid:
        if isinstance(value, int | float) and value > MAX_CHUNK_SIZE:
            raise too_large from None
        raise
    if size > MAX_CHUNK_SIZE:
        raise too_large
    return size


def as_percentage(value: object) -> float:
    if not 0 <= (number := as_number(value)) <= 100:
        raise Invalid("must be between 0 and 100", value)
    return number


def as_backoff(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise Invalid("expected a list of seconds", value)
    if not value:
        raise Invalid("must list at least one delay")
    return tuple(within(f"[{i}]", partial(as_seconds, step)) for i, step in enumerate(value))


def as_host_names(value: object) -> tuple[str, ...]:
    """Host names as a `Host` header gives them, without a port (lower case, no trailing dot),
    or `*` for any; none for null (every name commented out)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid("expected a list of host names", value)
    return tuple(within(f"[{i}]", partial(_host_name, name)) for i, name in enumerate(value))


HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")
"""A host name in lower case, without its port and final dot (`serve.allowedHosts`, `Host`)."""


def _host_name(value: object) -> str:
    name = as_text(value).strip().lower().removesuffix(".")
    if name != "*" and not HOST_NAME.fullmatch(name):
        raise Invalid("expected a host name without a port (ingest.example.com), or *", value)
    return name


METRIC_LABELS_TAKEN = frozenset(
    {"provider", "state", "kind", "outcome", "api", "job", "instance", "le", "quantile"}
)
"""Label names the series carry already, or Prometheus gives a meaning of its own."""


def as_metric_labels(value: object) -> tuple[tuple[str, str], ...]:
    """Labels every series of the metrics textfile carries: name -> value, by name; a label
    whose value is empty (`${VAR:-}`) is left out, as Prometheus reads an empty one."""
    if value is None:  # every label commented out
        return ()
    if not isinstance(value, dict):
        raise Invalid("expected a mapping of label names to values", value)
    labels = [(str(name), within(f".{name}", partial(_metric_label, name, text)))
              for name, text in value.items()]  # fmt: skip
    return tuple(sorted((name, text) for name, text in labels if text))


def _metric_label(name: object, value: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
        raise Invalid("expected a label name (letters, digits, _; not a digit first)", name)
    if name.startswith("__") or name in METRIC_LABELS_TAKEN:
        taken = ", ".join(sorted(METRIC_LABELS_TAKEN))
        raise Invalid(f"a label name of Prometheus's or of the series' own ({taken}, __*)", name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if value is None or value == "":
        return ""
    return as_text(value)


def as_flag(value: object) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise Invalid("expected true or false", value)
    return value


def as_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("expected a non-empty string", value)
    return value


def optional(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    """Null, or an empty string (as from `${VAR:-}`), leaves the setting unset."""
    return lambda value: None if value is None or value == "" else parse(value)


def as_file_path(value: object) -> Path:
    return home_expanded(file_path_text(as_text(value)))


def as_directory_path(value: object) -> Path:
    return home_expanded(as_text(value))


def file_path_text(text: str) -> str:
    """`text`, a file's path; Invalid where it ends in `/` (or `/.`, `/..`), which names a
    directory: taken as a file, `sub/` would make a file `sub` where the operator meant a
    directory."""
    last = text.rstrip().rpartition("/")[2]
    if last in ("", ".", ".."):
        raise Invalid("names a directory (it ends in /, . or ..); give a file's path", text)
    return text


def home_expanded(text: str) -> Path:
    """`text` as a path, a leading `~` expanded; Invalid where there is no home to expand it to
    ($HOME unset for a user the passwd database does not know: a container's random UID), or
    where it holds a NUL byte, which no path can."""
    if "\x00" in text:
        raise Invalid("holds a NUL byte, which no path can")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise Invalid(
            f"`~` cannot be expanded: $HOME is not set and uid {os.getuid()} has no home "
            "directory; give an absolute path"
        ) from None


def parse_listen(text: str, *, option: str) -> str:
    """A `--listen` address checked as `serve.listen` is; ConfigError naming `option`."""
    try:
        return as_listen(text)
    except Invalid as err:
        raise ConfigError(f"{err.problem}, got {text!r}", path=option) from None


def as_schema_name(value: object) -> str:
    text = as_text(value)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text):
        raise Invalid("expected a lower-case SQL name (letters, digits, _; at most 63)", value)
    if text.startswith("pg_"):
        raise Invalid("names starting with pg_ are PostgreSQL's own schemas", value)
    return text


def as_listen(value: object) -> str:
    """host:port, the port 1-65535; an IPv6 host in brackets."""
    text = as_text(value).strip()
    if "://" in text:
        raise Invalid("expected host:port, not a URL (e.g. 127.0.0.1:8080)", value)
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid("expected host:port (e.g. 127.0.0.1:8080 or [::1]:8080)", value)
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise Invalid("an IPv6 host goes in brackets ([::1]:8080)", value)
    return text


def as_http_url(value: object) -> str:
    url = as_text(value).strip().rstrip("/")
    parts = _url_parts(url, value, hint=f"set {AUTH_KEY}")
    if parts.query:
        raise Invalid("expected a URL with no query (?...)", value)
    if parts.fragment:
        raise Invalid("expected a URL with no fragment (#...)", value)
    return url


_SECRET_PARAMETER = re.compile(r"secret|password|passwd|token|api[-_]?key", re.IGNORECASE)
"""A query parameter of a token URL that holds a credential (`client_secret=...`)."""
_QUERY_VALUE = re.compile(r"([?&]([^=&#]*)=)[^&#]+")
"""A query parameter's name and value in any URL: a value a message leaves out when the name
is a credential's (`_secret_value_hidden`)."""


def as_token_url(value: object) -> str:
    # Kept as given (a trailing slash may matter to an identity provider); a query may too.
    url = as_text(value).strip()
    hint = f"set {OAUTH_KEY}.clientId and clientSecret"
    shown = query_values_hidden(url)
    parts = _url_parts(url, shown, hint=hint)
    if parts.fragment:
        raise Invalid("expected a URL with no fragment (#...)", shown)
    if any(_SECRET_PARAMETER.search(name) for name, _ in parse_qsl(parts.query)):
        # Not echoed: the value is the credential. A URL is shown and cached as it is.
        raise Invalid(f"must not hold credentials in its query; {hint}")
    return url


def query_values_hidden(url: str, mask: str = "***") -> str:
    """`url` as a message shows it: its query's names, each value as `mask` (a signature such as
    Azure's `?sig=` is a credential by any name)."""
    path, asked, query = url.partition("?")
    if not asked:
        return url
    parts = [part.partition("=") for part in query.split("&")]
    return f"{path}?" + "&".join(f"{name}{eq}{mask if eq else ''}" for name, eq, _ in parts)


def _url_parts(url: str, value: object, *, hint: str) -> SplitResult:
    expected = "expected an http:// or https:// URL with a host"
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal, or a password holding `/` (not shown)
        said = f"{expected}, its port (if any) digits"
        raise Invalid(said, NOTHING if "@" in url else value) from None
    if not valid:
        raise Invalid(expected, value)
    if parts.username or parts.password:
        raise Invalid(f"must not hold credentials; {hint}")
    if port == 0:
        raise Invalid("expected a port from 1 to 65535, not 0", value)
    if not url.isprintable() or any(c.isspace() for c in url):
        raise Invalid("must not hold spaces or control characters", value)
    if not _is_host_name(parts.hostname or "", bracketed="[" in parts.netloc):
        raise Invalid(f"{expected}: not a host name", value)
    return parts


_NOT_IN_A_HOST = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")
"""What a URL's host may not hold (WHATWG URL's forbidden host code points)."""


def is_url_host(host: str, *, bracketed: bool) -> bool:
    """Whether `host` is a host a browser's URL parser takes: an IPv6 address in brackets
    (`bracketed`: the URL's authority has them), or a name without forbidden characters."""
    if not host:
        return False
    if bracketed:
        return all(c in "0123456789abcdef:." for c in host)
    return not _NOT_IN_A_HOST.search(host) and host.isprintable()


def _is_host_name(host: str, *, bracketed: bool) -> bool:
    """Whether an HTTP client can connect to `host`: a URL host (`is_url_host`) that, unless an
    IPv6 address, is a name of non-empty labels (`a..b` is none) that IDNA encodes."""
    if not is_url_host(host, bracketed=bracketed):
        return False
    if bracketed:
        return True
    if "" in host.rstrip(".").split("."):
        return False
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise Invalid(f"expected one of: {', '.join(choices)}", value)
        return str(value)

    return parse


# Backstage's rules for kind, namespace (a DNS label) and name.
_ENTITY_REF = re.compile(
    r"[A-Za-z][A-Za-z0-9]*:[a-z0-9]+(?:-[a-z0-9]+)*/[A-Za-z0-9](?:[-_.A-Za-z0-9]*[A-Za-z0-9])?"
)


def as_owner_ref(value: object) -> str:
    if not _ENTITY_REF.fullmatch(ref := as_text(value)):
        raise Invalid("expected a full ref kind:namespace/name like group:default/guests", value)
    return ref


_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def as_providers(value: object) -> dict[str, Mapping[str, Any] | None]:
    """Provider name -> its options (None for a bare name), in the order given."""
    if not isinstance(value, list):
        raise Invalid("expected a list of names or {name: ..., <options>} mappings", value)
    if not value:
        raise Invalid("must name at least one provider")
    chosen: dict[str, Mapping[str, Any] | None] = {}
    for index, item in enumerate(value):
        where, name, options = f"[{index}]", item, None
        if isinstance(item, dict):
            if "name" not in item:
                raise Invalid("missing name", where=where)
            where, name = f"{where}.name", item["name"]
            options = {k: v for k, v in item.items() if k != "name"}
        if not isinstance(name, str):
            raise Invalid("expected a provider name (a string)", name, where=where)
        if not _PROVIDER_NAME.fullmatch(name):
            raise Invalid("expected letters, digits, '.', '_' or '-'", name, where=where)
        if name in chosen:
            raise Invalid(f"duplicate provider name {name!r}", where=where)
        chosen[name] = options
    return chosen


# ${VAR}, ${VAR:-default} (the default when VAR is unset or empty), $$ for a literal $.
SUBSTITUTION = re.compile(r"\$(?:\$|\{([^}]*)(\})?)")
REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def interpolate(text: str, env: Mapping[str, str], *, secret: bool, hidden: bool = False) -> str:
    """`text` with its `${NAME}` references substituted. `secret`: an empty variable is an error,
    and `secret` or `hidden` (a URL that may hold a password): errors never show the text."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        body, closed = match.group(1), match.group(2)
        reference = REFERENCE.fullmatch(body) if closed else None
        if reference is None:
            shown = "" if secret or hidden else f" ${{{body}{closed or ''}"
            raise Invalid(f"bad substitution{shown}: use ${{NAME}}, ${{NAME:-default}} or $$")
        name, default = reference.groups()
        if default is not None and not env.get(name):
            return default
        if name not in env:
            raise Invalid(f"environment variable {name} is not set (or use ${{{name}:-default}})")
        if secret and not env[name].strip():
            # Set but empty (a token file that was never filled in): not the same as no secret.
            raise Invalid(f"environment variable {name} is empty (${{{name}:-}} would allow that)")
        return env[name]

    return SUBSTITUTION.sub(substitute, text)


def expand(value: object, env: Mapping[str, str], *, secret: bool, hidden: bool = False) -> object:
    if isinstance(value, str):
        return interpolate(value, env, secret=secret, hidden=hidden)
    if isinstance(value, list):
        return [
            within(f"[{i}]", partial(expand, item, env, secret=secret, hidden=hidden))
            for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            key: within(f".{key}", partial(expand, item, env, secret=secret, hidden=hidden))
            for key, item in value.items()
        }
    return value


def referenced_variables(value: object) -> set[str]:
    """The environment variables the strings of `value` (a config document, at any depth)
    refer to, as `interpolate` reads them: `${NAME}` and `${NAME:-default}`."""
    if isinstance(value, str):
        found = (
            REFERENCE.fullmatch(match.group(1) or "") for match in SUBSTITUTION.finditer(value)
        )
        return {reference.group(1) for reference in found if reference is not None}
    if isinstance(value, dict):
        return set().union(*map(referenced_variables, value.values()))
    if isinstance(value, list):
        return set().union(*map(referenced_variables, value))
    return set()


def uses_environment(text: str) -> bool:
    """Whether `text` holds a `${...}` reference and all of them are well formed."""
    references = [match for match in SUBSTITUTION.finditer(text) if match.group(0) != "$$"]
    return bool(references) and all(
        match.group(2) and REFERENCE.fullmatch(match.group(1)) for match in references
    )


LARGEST_CA_BUNDLE = 16 * 1024 * 1024
"""A CA bundle holds no more (a system's, every public CA, is about 200 KiB)."""

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----")


def check_ca_bundle(path: Path, key: str) -> None:
    """Refuse a CA bundle (`key`'s) that cannot be used: every command would otherwise load, and
    `run` would fail only once it builds its HTTP client."""
    try:
        content = read_regular_file(path, LARGEST_CA_BUNDLE)
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a PEM file", path=key) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}", path=key) from None
    if len(content) > LARGEST_CA_BUNDLE:
        raise ConfigError(f"{path}: over 16 MiB, not a CA bundle", path=key)
    if not _PEM_CERTIFICATE.search(content):
        raise ConfigError(
            f"{path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)", path=key
        )
