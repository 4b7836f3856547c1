"""The state store's address in the config: a PostgreSQL URL libpq can read (`state.url`,
`--db`, `$CHOREO_INGEST_DB`, `--copy-to`), or a file path that is no URL (`state.path`). A value
here is never shown whole: it may hold a password.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from choreo_ingest.config_model import DATABASE_URL_SCHEMES
from choreo_ingest.config_values import Invalid, as_text, file_path_text, home_expanded


def is_database_url(text: str) -> bool:
    """Whether `--db`, $CHOREO_INGEST_DB or `state.url` names a PostgreSQL database."""
    return text.split(":", 1)[0].lower() in DATABASE_URL_SCHEMES and "://" in text


_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")
"""A scheme of two or more characters and `:/` (one character is a Windows drive: `C:/`)."""
_CONNINFO_LIKE = re.compile(r"(host|hostaddr|port|dbname|user|password|service)\s*=", re.I)
"""libpq's keyword form (`host=db user=ingest password=...`), which is no file either."""
NOT_A_POSTGRESQL_URL = (
    "looks like a URL or a connection string, but only postgresql:// (or postgres://) URLs are "
    "taken; give a file path or a postgresql:// URL"
)


def looks_like_url(text: str) -> bool:
    """Whether `text`, given for a state file, is rather some URL (`postgresql+psycopg://`,
    `postgresql:/h/db`): taken as a file path it would be shown whole, password and all."""
    stripped = text.strip()
    return bool(_URL_LIKE.match(stripped) or _CONNINFO_LIKE.match(stripped)) or "://" in stripped


def as_state_file_path(value: object) -> Path:
    """`state.path`: a file, never a URL (the value is then not shown: it may hold a password)."""
    text = as_text(value)
    if looks_like_url(text):
        if is_database_url(text.strip()):
            raise Invalid("takes a file path; a postgresql:// URL goes in state.url")
        raise Invalid(NOT_A_POSTGRESQL_URL)
    return home_expanded(file_path_text(text))


DATABASE_URL_FORM = "postgresql://[user[:password]@]host[:port]/database[?sslmode=...]"
PORTS = range(1, 65536)
_UNPARSABLE = (
    (re.compile(r"%00"), "holds `%00` (a NUL byte), which libpq refuses"),
    (
        re.compile(r"%(?![0-9A-Fa-f]{2})"),
        "holds a `%` that is not a percent-encoded byte: percent-encode it (`%25`)",
    ),
    (re.compile(r"\s"), "holds whitespace: percent-encode it (a space as `%20`)"),
    (
        re.compile(r"[\x00-\x1f\x7f]"),
        "holds a control character: percent-encode it (`%0A` for a newline)",
    ),
)
"""What libpq's URL parser refuses in a value, quoting the value (a password) in its error."""


def as_database_url(value: object) -> str:
    # The value is never shown: it may hold a password.
    text = as_text(value).strip()
    problem = database_url_problem(text)
    if problem is not None:
        raise Invalid(problem)
    return text


def database_url_problem(text: str) -> str | None:
    """Why `text` is no PostgreSQL URL libpq could use (`a port is out of range (1-65535);
    expected postgresql://...`), or None. The URL itself is never in it: it may hold a password.

    libpq's forms are taken: several hosts, each with its port (`h1:5432,h2:5433`), a bracketed
    IPv6 host, ports in the query (`?port=5432,5433`), no host but a query (`?host=/run/...`)."""
    expected = f"expected {DATABASE_URL_FORM}"
    try:
        parts = urlsplit(text)
    except ValueError:  # an IPv6 host without its closing bracket
        return expected
    hosts = [_host_and_port(entry) for entry in parts.netloc.rpartition("@")[2].split(",")]
    if not is_database_url(text) or not (any(host for host, _ in hosts) or parts.query):
        return expected
    unparsable = _unparsable_part(text)
    if unparsable is not None:
        return f"{unparsable}; {expected}"
    ports = [port for _, port in hosts if port]
    ports += [
        port for key, value in parse_qsl(parts.query) if key == "port" for port in value.split(",")
    ]
    # The port is not shown either: a password with an unescaped `/`, `?` or `#` ends the host
    # part early, and its digits may then pass for one. Where one may have, that is said.
    rest = text.partition("://")[2]
    cut = re.search(r"[/?#]", rest[: max(rest.rfind("@"), 0)])
    for port in ports:
        if not (port.isascii() and port.isdigit()):
            hint = " (a password holding `/`, `?` or `#` must be percent-encoded)" if cut else ""
            return f"a port is not a number (1-65535){hint}; {expected}"
        if int(port) not in PORTS:
            return f"a port is out of range (1-65535); {expected}"
    return None


def raw_url_parts(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The authority and the query's (name, value) pairs of the URL `text`, as written: nothing
    decoded, nothing dropped (urlsplit drops tabs and newlines, which a value may hold)."""
    rest = text.partition("://")[2]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    query = rest.partition("?")[2].partition("#")[0]
    pairs = [pair.partition("=") for pair in query.split("&")] if query else []
    return authority, [(key, value) for key, _, value in pairs]


def _unparsable_part(text: str) -> str | None:
    """Why libpq could not parse the user name, the password or a query parameter of the URL
    `text` (each raw, as given), naming which; None if it could. Its own error would quote the
    value."""
    authority, query = raw_url_parts(text)
    user, colon, password = authority.rpartition("@")[0].partition(":")
    named = [("the password", password)] if colon else []
    named.append(("the user name", user))
    for key, value in query:
        what = "the password (`?password=`)" if key == "password" else "a query parameter"
        named += [(what, value), ("a query parameter's name", key)]
    for what, raw in named:
        for pattern, problem in _UNPARSABLE:
            if pattern.search(raw):
                return f"{what} {problem}"
    return None


def _host_and_port(entry: str) -> tuple[str, str]:
    """`host:port` (either may be empty; an IPv6 host in brackets) as (host, port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = entry.partition(":")
    return host, port
