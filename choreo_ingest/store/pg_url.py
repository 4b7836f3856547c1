"""What is wrong with a PostgreSQL URL, said in one line that never holds its password.

`pg_connection.url_options` asks libpq (through psycopg) to read a URL; this module, which needs
no psycopg, words what libpq refused (`unreadable_url_problem`) and what it would refuse only
when connecting (`option_value_problem`), as the config's own URL checks word theirs
(`config_values.database_url_problem`): the problem, then the form expected. It also finds what
in a URL's text may be a password, to mask it (`url_password_candidates`), shows a URL with its
password redacted (`redact_url`), says where the password of a refused connection came from
(`password_hint`) and what to do about a statement the server refused (`problem_hint`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import unquote

from choreo_ingest.config_database_url import DATABASE_URL_FORM, raw_url_parts
from choreo_ingest.config_values import without_credentials
from choreo_ingest.store.dialect import LOCK_NOT_AVAILABLE

EXPECTED = f"expected {DATABASE_URL_FORM}"
REDACTED = "***"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
CHOICE_OPTIONS = {
    "sslmode": SSLMODES,
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "load_balance_hosts": ("disable", "random"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
}
"""libpq's options that take one of a few words (as written: libpq compares them exactly)."""
INTEGER_OPTIONS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
"""libpq's whole-number options an operator sets in a URL (psycopg reads `connect_timeout`)."""
LIBPQ_ALIASES = ("requiressl",)
"""A keyword libpq takes in a URL though `PQconndefaults` does not list it (it means sslmode)."""
_KEYWORD_SHAPED = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_INTEGER = re.compile(r"\s*[-+]?[0-9]+\s*")
MISREAD_HINT = "percent-encode a `/` or `@` in the password (`%2F`, `%40`)"


def redact_url(url: str) -> str:
    """`url` fit to be shown: the password in it (`user:secret@`, `?password=secret`) is `***`.

    Also takes libpq's `key=value` connection strings (`host=db password=secret`).
    """
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(rf"\g<1>{REDACTED}", url)
    return without_credentials(url)


_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")


def option_value_problem(options: Mapping[str, Any]) -> str | None:
    """Why libpq would refuse a value of `options` (libpq's reading of a URL), or None. libpq
    checks these only when it connects, after psycopg has looked the host up: a typo would hide
    behind an unknown host. The value is not shown (what libpq read there may be a password's
    tail)."""
    for name, choices in CHOICE_OPTIONS.items():
        value = options.get(name)
        if value is not None and value not in choices:
            return f"`{name}` takes {', '.join(choices[:-1])} or {choices[-1]}; {EXPECTED}"
    for name in INTEGER_OPTIONS:
        value = options.get(name)
        if value is not None and not _INTEGER.fullmatch(str(value)):
            return f"`{name}` takes a whole number; {EXPECTED}"
    return None


def unreadable_url_problem(url: str, libpq_says: str, keywords: Collection[str]) -> str:
    """What is wrong with `url`, which libpq could not read, in one line: its query read as
    libpq reads it (`name=value` pairs joined by `&`, each name one of `keywords`: the
    connection options this libpq knows), else `libpq_says` (libpq's error, its password
    already masked). Where libpq ended the user info early (a `/` or a second `@` in the
    password), nothing it read after is shown: it may be the password's tail."""
    rest = url.partition("://")[2]
    userinfo, at, after = rest.partition("@")
    if at and "/" not in userinfo:  # libpq's user info ends at the first `@` before any `/`
        rest = after
    if "@" in rest:
        return f"libpq cannot read it; {MISREAD_HINT}; {EXPECTED}"
    problem = _query_problem(rest.partition("?")[2], keywords)
    if problem is None:
        lines = [line.strip() for line in libpq_says.splitlines() if line.strip()]
        problem = lines[0] if lines else "libpq cannot read it"
    return f"{problem}; {EXPECTED}"


SECRET_PARAMETERS = ("password", "sslpassword")
"""Query parameters whose value is a secret: a `&` written in it unencoded starts what libpq
reads as another parameter, whose name is then a piece of the secret."""
HIDDEN_TAIL_PROBLEM = (
    "a query parameter after a password is not one libpq knows: percent-encode `&`, `=` and "
    "`%` in the password (`%26`, `%3D`, `%25`)"
)


def _query_problem(query: str, keywords: Collection[str]) -> str | None:
    """Why libpq refuses the URL query `query` (raw, as written), or None. Past a password
    parameter nothing is named: it may be the password's tail."""
    pieces = query.split("&") if query else []
    if pieces and not pieces[-1]:
        pieces.pop()  # a trailing `&` ends the last parameter, as libpq reads it
    secret_seen = False
    for piece in pieces:
        problem = _parameter_problem(piece, keywords)
        if problem is not None:
            return HIDDEN_TAIL_PROBLEM if secret_seen else problem
        secret_seen = secret_seen or unquote(piece.partition("=")[0]) in SECRET_PARAMETERS
    return None


def _parameter_problem(piece: str, keywords: Collection[str]) -> str | None:
    """Why libpq refuses the query parameter `piece` (`name=value`, raw), or None."""
    raw_name, _, raw_value = piece.partition("=")
    if "=" not in piece:
        return "a query parameter has no `=`: write name=value"
    if "=" in raw_value:
        return "a query parameter's value holds `=`: percent-encode it (`%3D`)"
    if not raw_name:
        return "a query parameter has no name: write name=value"
    name = unquote(raw_name)
    if name in (*keywords, *LIBPQ_ALIASES) or (name, unquote(raw_value)) == ("ssl", "true"):
        return None  # libpq reads `ssl=true` as sslmode=require
    if name == "ssl":
        return "`ssl` takes only true; set sslmode for anything else"
    if not _KEYWORD_SHAPED.fullmatch(name):
        return "an unknown query parameter"
    close = difflib.get_close_matches(name, sorted(keywords), n=1)
    return f"unknown query parameter `{name}`" + (f" (did you mean `{close[0]}`?)" if close else "")


def url_password_candidates(url: str) -> list[str]:
    """What in the URL text `url` may be a password, taken from the text itself (libpq's parse
    error quotes it as written, before any parse succeeds), raw and percent-decoded: the
    userinfo after its first `:`, up to the authority's first `@` (as libpq splits it) and up to
    its last (as a URL parser does); what libpq then takes for the host when the authority holds
    several `@` (the password's tail); and each `password=` query value."""
    authority, query = raw_url_parts(url)
    raw: list[str] = []
    if "@" in authority:
        for userinfo in (authority.partition("@")[0], authority.rpartition("@")[0]):
            _, colon, password = userinfo.partition(":")
            if colon:
                raw.append(password)
        raw += _host_part_candidates(authority)
    raw += [value for key, value in query if key.strip() == "password"]
    candidates = [*raw, *(unquote(text) for text in raw)]
    return [text for text in dict.fromkeys(candidates) if text]


def _host_part_candidates(authority: str) -> list[str]:
    """An authority with several `@` (`u:p1@p2@host:5432`): libpq ends the userinfo at the
    first, so the password's tail is in what it reads as hosts and ports, which it may quote:
    each run of `:`/`,`-separated pieces after the first `@` that starts before the last."""
    if authority.count("@") < 2:
        return []
    tail = authority.partition("@")[2]
    last_at = tail.rindex("@")
    bounds = [0, *(found.end() for found in re.finditer(r"[:,]", tail))]
    ends = [found.start() for found in re.finditer(r"[:,]", tail)] + [len(tail)]
    return [tail[start:end] for start in bounds if start < last_at for end in ends if end > start]


def password_hint(libpq_says: str, *, from_file: bool) -> str:
    """What to add to a refused connection's message about the password it used: whose it was
    (`state.passwordFile`'s wins over the URL's), or where one is read from when none was."""
    if from_file and "password authentication failed" in libpq_says:  # libpq's words
        return " (password: state.passwordFile's)"
    if "no password supplied" in libpq_says:
        return " (no password: set state.passwordFile, PGPASSWORD or a password file, ~/.pgpass)"
    return ""


_ATTEMPT = re.compile(r"- host: '([^']*)', port: '([^']*)'(?:, hostaddr: '[^']*')?: (.*)")
_SERVER_AT = re.compile(r"^(?:connection failed: )?connection to server (?:at|on) .*? failed: ")


def each_attempt(lines: list[str]) -> str | None:
    """For a URL of several hosts (`h1:5432,h2:5433`), libpq's failure at each, in one line
    (`127.0.0.1:5432: password authentication failed ...; 127.0.0.1:5433: Connection
    refused`): its first line names only the last host's, maybe a standby down on purpose."""
    attempts = [match for line in lines if (match := _ATTEMPT.fullmatch(line))]
    if len(attempts) < 2:
        return None
    return "; ".join(
        f"{host}:{port}: {_SERVER_AT.sub('', failure)}"
        for host, port, failure in (match.groups() for match in attempts)
    )


def problem_hint(problem: str, sqlstate: str) -> str:
    """What to do about a statement's refusal (`problem`, with its SQLSTATE): what to grant for
    a "permission denied" to make the state's schema or its tables, where to look for the
    session holding a lock past `lock_timeout`."""
    for thing in ("database", "schema"):
        if problem.startswith(f"permission denied for {thing}"):
            return f": the role needs CREATE on the {thing} (GRANT CREATE ON {thing.upper()} ...)"
    if sqlstate == LOCK_NOT_AVAILABLE:
        return (
            ": another session held a lock it needed past lock_timeout (pg_locks and "
            "pg_stat_activity name that session); the next call tries again"
        )
    return ""
