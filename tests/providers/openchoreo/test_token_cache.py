"""`openchoreo.auth.oauth.tokenCacheFile`: calls (processes) share one granted token."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
import structlog
from test_auth import (
    CLIENT_SECRET,
    START,
    FakeTokenEndpoint,
    client_credentials,
    jwt,
)

from choreo_ingest.providers.openchoreo.auth import ClientCredentials
from choreo_ingest.providers.openchoreo.token_cache import MAX_FILE_BYTES

from fakes import FakeClock


def call(endpoint: FakeTokenEndpoint, clock: FakeClock, cache: Path, **overrides: object) -> str:
    """The bearer token of a new call: a new credentials object, as a new process has."""
    credentials = client_credentials(endpoint, clock, token_cache_file=cache, **overrides)
    return credentials.bearer()


def test_later_calls_use_the_token_the_first_granted_until_its_refresh_point(
    tmp_path: Path,
) -> None:
    cache, clock = tmp_path / "token.json", FakeClock(START)
    endpoint = FakeTokenEndpoint(expires_in=3600)

    first = call(endpoint, clock, cache)
    clock.advance(3600 - 61)
    second = call(endpoint, clock, cache)
    clock.advance(2)  # past `exp - 60 s`
    third = call(endpoint, clock, cache)
    fourth = call(endpoint, clock, cache)

    assert (first, second, third, fourth) == ("access-1", "access-1", "access-2", "access-2")
    assert len(endpoint.calls) == 2


def test_without_the_setting_every_call_asks_for_its_own_token(tmp_path: Path) -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock(START)

    tokens = [client_credentials(endpoint, clock).bearer() for _ in range(3)]

    assert tokens == ["access-1", "access-2", "access-3"]
    assert list(tmp_path.iterdir()) == []


def test_the_file_is_private_and_holds_no_client_secret(tmp_path: Path) -> None:
    cache = tmp_path / "token.json"
    call(FakeTokenEndpoint(), FakeClock(START), cache)

    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    text = cache.read_text(encoding="utf-8")
    assert CLIENT_SECRET not in text
    assert json.loads(text)["accessToken"] == "access-1"
    assert [path.name for path in tmp_path.iterdir()] == ["token.json"]


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "another-client"},
        {"client_secret": "a-rotated-secret"},
        {"scope": "catalog:read"},
        {"audience": "https://openchoreo.example/api"},
        {"token_url": "https://idp.example/oauth2/token"},
    ],
    ids=["client-id", "secret-rotated", "scope", "audience", "token-url"],
)
def test_a_token_granted_for_another_client_or_secret_is_not_reused(
    tmp_path: Path, change: dict[str, str]
) -> None:
    cache, clock, endpoint = tmp_path / "token.json", FakeClock(START), FakeTokenEndpoint()
    call(endpoint, clock, cache)

    assert call(endpoint, clock, cache, **change) == "access-2"
    assert call(endpoint, clock, cache, **change) == "access-2"  # and it is kept in its place


def test_a_secret_file_rotated_between_calls_gets_a_new_token(tmp_path: Path) -> None:
    secret, cache = tmp_path / "client-secret", tmp_path / "token.json"
    secret.write_text("secret-one\n", encoding="utf-8")
    endpoint, clock = FakeTokenEndpoint(), FakeClock(START)
    settings = {"client_secret": None, "client_secret_file": secret}

    first = call(endpoint, clock, cache, **settings)
    secret.write_text("secret-two\n", encoding="utf-8")
    second = call(endpoint, clock, cache, **settings)

    assert (first, second) == ("access-1", "access-2")
    assert endpoint.calls[1][1]["client_secret"] == "secret-two"


def test_a_jwts_own_expiry_decides_across_calls(tmp_path: Path) -> None:
    cache, clock = tmp_path / "token.json", FakeClock(START)
    token = jwt(iat=START, exp=START + 600)
    endpoint = FakeTokenEndpoint((200, {"access_token": token, "expires_in": 86_400}))

    assert call(endpoint, clock, cache) == token
    clock.advance(539)
    assert call(endpoint, clock, cache) == token
    clock.advance(2)
    assert call(endpoint, clock, cache) == "access-2"


def test_a_refused_cached_token_is_replaced_for_the_calls_after(tmp_path: Path) -> None:
    """A token revoked, or its signing key rotated: the 401 refreshes it once, and the file."""
    cache, clock, endpoint = tmp_path / "token.json", FakeClock(START), FakeTokenEndpoint()
    call(endpoint, clock, cache)
    credentials = client_credentials(endpoint, clock, token_cache_file=cache)
    refused = credentials.bearer()

    assert credentials.refresh(refused) == "access-2"
    assert call(endpoint, clock, cache) == "access-2"
    assert len(endpoint.calls) == 2


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": 2}',
        b'{"format": 1, "grantKey": "x", "accessToken": "t", "refreshAt": 9e99}',
        b" " * (MAX_FILE_BYTES + 1),
    ],
    ids=["empty", "not-json", "not-utf8", "a-list", "another-format", "another-key", "too-big"],
)
def test_a_file_it_cannot_use_is_replaced_by_a_new_grant(tmp_path: Path, content: bytes) -> None:
    cache, endpoint = tmp_path / "token.json", FakeTokenEndpoint()
    cache.write_bytes(content)

    assert call(endpoint, FakeClock(START), cache) == "access-1"
    assert json.loads(cache.read_text(encoding="utf-8"))["accessToken"] == "access-1"


def test_a_file_that_cannot_be_written_is_logged_and_the_call_goes_on(tmp_path: Path) -> None:
    cache = tmp_path / "missing-directory" / "token.json"
    endpoint = FakeTokenEndpoint((200, {"access_token": "tok-9f8e7d6c5b4a", "expires_in": 60}))

    with structlog.testing.capture_logs() as logs:
        assert call(endpoint, FakeClock(START), cache) == "tok-9f8e7d6c5b4a"

    warning = next(line for line in logs if line["event"] == "token_cache_not_written")
    assert warning["path"] == str(cache)
    assert warning["key"] == "openchoreo.auth.oauth.tokenCacheFile"
    assert "tok-9f8e7d6c5b4a" not in repr(logs)
    assert not cache.parent.exists()


def test_a_cached_token_is_masked_in_error_texts(tmp_path: Path) -> None:
    """A token read from the file is as secret as one granted: it joins the values masked."""
    cache, clock = tmp_path / "token.json", FakeClock(START)
    endpoint = FakeTokenEndpoint((200, {"access_token": "tok-1a2b3c4d5e6f", "expires_in": 3600}))
    call(endpoint, clock, cache)

    credentials = client_credentials(endpoint, clock, token_cache_file=cache)
    credentials.bearer()

    assert isinstance(credentials, ClientCredentials)
    assert "tok-1a2b3c4d5e6f" in credentials.secrets()
    assert len(endpoint.calls) == 1


def test_a_file_any_user_may_read_is_not_trusted_and_is_replaced_private(tmp_path: Path) -> None:
    cache, clock, endpoint = tmp_path / "token.json", FakeClock(START), FakeTokenEndpoint()
    call(endpoint, clock, cache)
    cache.chmod(0o604)

    assert call(endpoint, clock, cache) == "access-2"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert call(endpoint, clock, cache) == "access-2"


def test_group_bits_a_kubernetes_fs_group_adds_do_not_cost_a_grant(tmp_path: Path) -> None:
    cache, clock, endpoint = tmp_path / "token.json", FakeClock(START), FakeTokenEndpoint()
    call(endpoint, clock, cache)
    cache.chmod(0o660)

    assert call(endpoint, clock, cache) == "access-1"


def test_a_link_planted_where_the_new_file_is_written_is_not_followed(tmp_path: Path) -> None:
    cache, victim = tmp_path / "token.json", tmp_path / "victim"
    victim.write_text("keep me", encoding="utf-8")
    (tmp_path / f".token.json.{os.getpid()}.tmp").symlink_to(victim)

    call(FakeTokenEndpoint(), FakeClock(START), cache)

    assert victim.read_text(encoding="utf-8") == "keep me"
    assert json.loads(cache.read_text(encoding="utf-8"))["accessToken"] == "access-1"


def test_a_fifo_in_its_place_is_not_waited_on(tmp_path: Path) -> None:
    """Opened as a file is, a FIFO held the call (and its run lock) until something wrote to
    it: every later cron call then exited 75, as if a run were still going."""
    cache = tmp_path / "token.json"
    os.mkfifo(cache, 0o600)
    granted: list[str] = []
    caller = threading.Thread(
        target=lambda: granted.append(call(FakeTokenEndpoint(), FakeClock(START), cache)),
        daemon=True,
    )
    caller.start()
    caller.join(5)
    waited = caller.is_alive()
    if waited:  # let it go: a writer that opens and closes the FIFO gives the reader its end
        os.close(os.open(cache, os.O_WRONLY | os.O_NONBLOCK))
        caller.join(5)

    assert not waited
    assert granted == ["access-1"]
    assert stat.S_ISFIFO(cache.stat().st_mode)  # left as it is (see below)


def test_a_device_in_its_place_is_never_replaced(tmp_path: Path) -> None:
    """`tokenCacheFile: /dev/null` (to turn the cache off, say) renamed a file holding the
    token over /dev/null, which every program on the host then wrote to and read from."""
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    endpoint, clock = FakeTokenEndpoint(), FakeClock(START)

    with structlog.testing.capture_logs() as logs:
        tokens = [call(endpoint, clock, null) for _ in range(2)]

    assert tokens == ["access-1", "access-2"]  # no cache: each call asks for its own
    assert stat.S_ISCHR(null.stat().st_mode)
    assert list(tmp_path.iterdir()) == [null]
    warning = next(line for line in logs if line["event"] == "token_cache_not_written")
    assert warning["error"] == f"{null}: not a regular file (a character device)"


def test_a_symlink_in_its_place_is_replaced_as_ever(tmp_path: Path) -> None:
    """A link is not what it points to: renaming over it replaces the link, never its target
    (a link to /dev/null leaves /dev/null alone)."""
    cache, target = tmp_path / "token.json", tmp_path / "elsewhere.json"
    target.write_text("{}", encoding="utf-8")
    cache.symlink_to(target)
    endpoint, clock = FakeTokenEndpoint(), FakeClock(START)

    tokens = [call(endpoint, clock, cache) for _ in range(2)]

    assert tokens == ["access-1", "access-1"]  # kept between calls
    assert not cache.is_symlink()
    assert target.read_text(encoding="utf-8") == "{}"
