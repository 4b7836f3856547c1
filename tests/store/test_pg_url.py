"""A PostgreSQL URL libpq refuses is a ConfigError naming where it came from (`state.url`, `--db`,
...) and what is wrong, never the password: found when the location is made from the config, not
a state error when the store is opened. libpq itself reads the URL (`url_options`); pg_url words
what it refused. No server is needed: nothing here connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from pg_support import require_psycopg

require_psycopg()

from choreo_ingest.config import Config  # noqa: E402
from choreo_ingest.errors import ConfigError  # noqa: E402
from choreo_ingest.store import SqliteLocation, configured_location  # noqa: E402
from choreo_ingest.store.pg_connection import url_options  # noqa: E402
from choreo_ingest.store.pg_url import CHOICE_OPTIONS  # noqa: E402

SSLMODES = "`sslmode` takes disable, allow, prefer, require, verify-ca or verify-full"
EXPECTED = "; expected postgresql://[user[:password]@]host[:port]/database[?sslmode=...]"
REFUSED = [
    ("/db?bogus=1", "unknown query parameter `bogus`"),
    ("/db?sslmod=require", "unknown query parameter `sslmod` (did you mean `sslmode`?)"),
    ("/db?ssl=false", "`ssl` takes only true; set sslmode for anything else"),
    ("/db?sslmode=bogus", SSLMODES),
    ("/db?sslmode=REQUIRE", SSLMODES),
    ("/db?sslmode=", SSLMODES),
    ("/db?target_session_attrs=bogus", "`target_session_attrs` takes any, read-write, read-only, "
     "primary, standby or prefer-standby"),
    ("/db?load_balance_hosts=Random", "`load_balance_hosts` takes disable or random"),
    ("/db?connect_timeout=soon", "`connect_timeout` takes a whole number"),
    ("/db?keepalives_idle=1m", "`keepalives_idle` takes a whole number"),
    ("/db?sslmode", "a query parameter has no `=`: write name=value"),
    ("/db?sslmode=require&&port=5432", "a query parameter has no `=`: write name=value"),
    ("/db?options=-c%20a=b", "a query parameter's value holds `=`: percent-encode it (`%3D`)"),
    ("/db?=1", "a query parameter has no name: write name=value"),
    ("/db?x%3Dy=1", "an unknown query parameter"),
    ("/d%zzb", 'invalid percent-encoded token: "d%zzb"'),
    ("/d b", 'unexpected spaces found in "d b"'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tail", "problem"), REFUSED, ids=[problem[:28] + tail[-6:] for tail, problem in REFUSED]
)
def test_a_url_libpq_refuses_is_a_config_error_naming_its_origin_and_the_problem(
    tail: str, problem: str
) -> None:
    url = f"postgresql://ingest:Zq9-secret@127.0.0.1:9{tail}"

    with pytest.raises(ConfigError) as caught:
        url_options(url, origin="--db")

    assert caught.value.path == "--db"
    assert str(caught.value).startswith(f"--db: {problem}")
    assert str(caught.value).endswith(EXPECTED)
    assert "\n" not in str(caught.value)
    assert "Zq9" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Zq9/secret?bogus=1@127.0.0.1:9/db",
        "postgresql://u:Zq9@secret?bogus=1@127.0.0.1:9/db",
        "postgresql://u:12/Zq9secret%zz@127.0.0.1:9/db",
    ],
    ids=["slash-in-password", "at-in-password", "slash-then-bad-percent"],
)
def test_nothing_libpq_read_past_a_password_it_cut_short_is_shown(url: str) -> None:
    """A `/` ends libpq's user info early, a second `@` ends the password at the first: what
    libpq then reads as the host, the database or the query may be the password's tail."""
    with pytest.raises(ConfigError) as caught:
        url_options(url, origin="state.url")

    assert str(caught.value) == (
        "state.url: libpq cannot read it; percent-encode a `/` or `@` in the password "
        f"(`%2F`, `%40`){EXPECTED}"
    )


@pytest.mark.parametrize(
    "query",
    ["password=Zq9s3cr&etXk=1", "sslpassword=Zq9s3cr&etXk", "password=Zq9&sslmode=require&etXk=1"],
    ids=["password", "sslpassword", "later"],
)
def test_no_name_past_a_password_in_the_query_is_shown(query: str) -> None:
    """An `&` written in a password in the query starts what libpq reads as another parameter,
    whose name is the password's tail: past a password, no parameter is named."""
    with pytest.raises(ConfigError) as caught:
        url_options(f"postgresql://u@127.0.0.1:9/db?{query}", origin="state.url")

    message = str(caught.value)
    assert "etXk" not in message
    assert message == (
        "state.url: a query parameter after a password is not one libpq knows: percent-encode "
        f"`&`, `=` and `%` in the password (`%26`, `%3D`, `%25`){EXPECTED}"
    )


@pytest.mark.parametrize(
    "tail",
    [
        "/db?sslmode=verify-full&connect_timeout=5",
        "/db?ssl=true",
        "/db?requiressl=1",
        "/db?ssl%6Dode=require",
        "/db?sslmode=require&",
        "/db?application_name=a%3Db&options=-c%20statement_timeout%3D5s",
        "",
    ],
    ids=["options", "jdbc-ssl", "requiressl", "encoded-name", "trailing-amp", "encoded", "no-db"],
)
def test_a_url_libpq_takes_is_taken(tail: str) -> None:
    """libpq's own spellings (`ssl=true`, `requiressl`), and no database name: libpq then takes
    $PGDATABASE, else the user name."""
    assert url_options(f"postgresql://ingest:Zq9-secret@127.0.0.1:9{tail}")["host"] == "127.0.0.1"


def test_the_location_of_a_url_libpq_refuses_is_never_made() -> None:
    """Found where the config is turned into a location, before a command does any work (`check`
    before its requests), and named as the command line or the config gave it."""
    url = "postgresql://ingest:Zq9-secret@127.0.0.1:9/db?bogus=1"

    for origin in ("state.url", "--db", "$CHOREO_INGEST_DB", "--copy-to"):
        with pytest.raises(ConfigError) as caught:
            configured_location(url, Config(), origin=origin)
        assert caught.value.path == origin
        assert str(caught.value).startswith(f"{origin}: unknown query parameter `bogus`;")
        assert "Zq9" not in str(caught.value)

    path = Path("state.db")
    assert configured_location(path, Config(), origin="state.path") == SqliteLocation(path)


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, choices in CHOICE_OPTIONS.items() for value in choices],
)
def test_every_word_libpq_takes_for_an_option_of_a_few_words_is_taken(
    name: str, value: str
) -> None:
    assert url_options(f"postgresql://u@127.0.0.1:9/db?{name}={value}")[name] == value
