"""What the client says of answers it cannot use: a 401 by the JWT middleware's `error` code
(`openchoreo-v1-api.md`, Errors), and an answer larger than the client reads. Driven through
`httpx.MockTransport`: an identity provider that grants numbered tokens and an API that answers
every request the same."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from choreo_ingest.config import AuthConfig, OAuthConfig, OpenChoreoConfig
from choreo_ingest.errors import (
    AuthError,
    CredentialsMissing,
    DeadlineExceeded,
    PermanentError,
    TokenRefused,
    needs_mending,
)
from choreo_ingest.providers.openchoreo import client as client_module
from choreo_ingest.providers.openchoreo.api_v1 import V1
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient

from fakes import FakeClock

BASE = "https://openchoreo.test"
TOKEN_URL = "https://idp.test/oauth2/token"
STATIC_TOKEN = "static-token-4c1d9e"
HEADER_STRIPPED = (
    "the Authorization header did not reach the API (a proxy or ingress in between strips it?)"
)


class Platform:
    """An identity provider that grants `issued-token-<n>` and an API that answers `answer`."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.granted: list[str] = []
        self.api_requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "idp.test":
            self.granted.append(f"issued-token-{len(self.granted) + 1:04d}")
            return httpx.Response(200, json={"access_token": self.granted[-1], "expires_in": 3600})
        self.api_requests.append(request)
        return self.answer(request)

    def client(self, config: OpenChoreoConfig) -> OpenChoreoClient:
        transport = httpx.MockTransport(self.handle)
        return OpenChoreoClient(config, clock=FakeClock(), deadline=None, transport=transport)


def oauth_config() -> OpenChoreoConfig:
    oauth = OAuthConfig(token_url=TOKEN_URL, client_id="choreo-ingest", client_secret="s3cr3t-x")
    return OpenChoreoConfig(base_url=BASE, auth=AuthConfig(oauth=oauth))


def refused(code: str) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": code, "message": "refused"})

    return answer


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        ("MISSING_TOKEN", f"{HEADER_STRIPPED}: it was sent, with the token from "),
        ("INVALID_TOKEN", "check that OpenChoreo trusts that identity provider (its issuer, "),
        ("INVALID_CLAIMS", "for its claims: check the issuer and audience OpenChoreo expects"),
        ("INVALID_CLAIMS", "and that a subject type of openchoreo-api's security configuration"),
    ],
)
def test_a_401_with_oauth_is_advised_by_its_code_after_one_refresh(code: str, advice: str) -> None:
    platform = Platform(refused(code))

    with platform.client(oauth_config()) as client, pytest.raises(AuthError) as caught:
        client.get_json("/namespaces")

    message = str(caught.value)
    assert message.startswith(f"GET /namespaces: HTTP 401 {code}: refused; ")
    assert advice in message
    assert caught.value.code == code
    assert len(platform.granted) == 2  # refreshed once, as before
    sent = [request.headers["Authorization"] for request in platform.api_requests]
    assert sent == [f"Bearer {token}" for token in platform.granted]
    assert not any(token in message for token in [*platform.granted, "s3cr3t-x"])


def test_a_missing_token_401_says_the_header_was_taken_off_on_the_way() -> None:
    platform = Platform(refused("MISSING_TOKEN"))

    with platform.client(oauth_config()) as client, pytest.raises(AuthError) as caught:
        client.get_json("/namespaces")

    assert str(caught.value).endswith(
        f"{HEADER_STRIPPED}: it was sent, with the token from openchoreo.auth.oauth"
    )
    assert "issuer" not in str(caught.value)


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        ("MISSING_TOKEN", f"{HEADER_STRIPPED}: it was sent, with the token from openchoreo.token"),
        ("INVALID_TOKEN", "check openchoreo.token"),
        ("INVALID_CLAIMS", "check openchoreo.token"),
    ],
)
def test_a_401_to_a_static_token_is_advised_by_its_code(code: str, advice: str) -> None:
    platform = Platform(refused(code))
    config = OpenChoreoConfig(base_url=BASE, token=STATIC_TOKEN)

    with platform.client(config) as client, pytest.raises(AuthError) as caught:
        client.get_json("/namespaces")

    assert str(caught.value) == f"GET /namespaces: HTTP 401 {code}: refused; {advice}"
    assert len(platform.api_requests) == 1  # a static token is not sent again
    # Another token mends a refused one (exit 2), not a header a proxy took off (exit 3).
    assert needs_mending(caught.value) is (code != "MISSING_TOKEN")
    assert isinstance(caught.value, TokenRefused) is (code != "MISSING_TOKEN")


def test_a_401_to_a_token_files_token_is_a_setting_to_mend(tmp_path: Path) -> None:
    platform = Platform(refused("INVALID_TOKEN"))
    token_file = tmp_path / "token"
    token_file.write_text(STATIC_TOKEN + "\n")
    config = OpenChoreoConfig(base_url=BASE, auth=AuthConfig(token_file=token_file))

    with platform.client(config) as client, pytest.raises(TokenRefused) as caught:
        client.get_json("/namespaces")

    assert str(caught.value).endswith("; check openchoreo.auth.tokenFile")
    assert needs_mending(caught.value)


def test_a_401_to_a_token_just_issued_is_not_a_setting_to_mend() -> None:
    """The identity provider's token refused: the API's trust of it (or a passing fault of
    its signing keys), not a setting of ours alone: exit 3, as upstream trouble."""
    platform = Platform(refused("INVALID_TOKEN"))

    with platform.client(oauth_config()) as client, pytest.raises(AuthError) as caught:
        client.get_json("/namespaces")

    assert not needs_mending(caught.value)


def test_a_missing_token_401_without_credentials_asks_for_them() -> None:
    platform = Platform(refused("MISSING_TOKEN"))

    config = OpenChoreoConfig(base_url=BASE)

    with platform.client(config) as client, pytest.raises(CredentialsMissing) as caught:
        client.get_json("/namespaces")

    assert str(caught.value).endswith("; the API needs credentials: set openchoreo.auth")
    assert needs_mending(caught.value)


def workloads_page(count: int) -> dict[str, object]:
    schema = {"type": "openapi", "content": "x" * 400}
    items = [
        {"metadata": {"name": f"w{n}"}, "spec": {"endpoints": {"e": {"schema": schema}}}}
        for n in range(count)
    ]
    return {"items": items, "pagination": {}}


def test_an_answer_read_is_freed_with_its_last_reference_not_left_to_the_collector() -> None:
    """httpx's stream held its response in a cycle: a page's body (up to 64 MiB) outlived its
    page until a collection, several at once, and the peak memory of a run with large inline
    schemas grew with them (a 400 KB schema a workload: 438 MB at 47 a page, now 312)."""
    answered: list[weakref.ref[httpx.Response]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(200, json=workloads_page(3))
        answered.append(weakref.ref(response))
        return response

    platform = Platform(answer)
    config = OpenChoreoConfig(base_url=BASE, token=STATIC_TOKEN)
    gc.disable()
    try:
        with platform.client(config) as client:
            page = V1.list_page(client, "/namespaces/shop/workloads", limit=50, cursor=None)
            assert len(page.items) == 3
            assert [ref() for ref in answered] == [None]
    finally:
        gc.enable()


def test_a_page_larger_than_the_client_reads_fails_at_once_saying_to_ask_for_fewer_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retried, it was as large every time: the burst failed as a connection error, with no
    advice, and the cycle never finished."""
    error, platform = read_a_page_too_large(monkeypatch, limit=50)

    assert str(error) == (
        "GET /namespaces/shop/workloads: the answer is larger than 4,096 bytes, the most the "
        "client reads: a page of 50 items holds too much (workloads carry their endpoints' API "
        "schemas inline); lower openchoreo.incremental.chunkSize, the items a page asks for"
    )
    assert (error.code, error.path) == ("TOO_LARGE", "/namespaces/shop/workloads")
    assert error.config_key == "openchoreo.incremental.chunkSize"
    assert needs_mending(error)  # `run` exits 2: the config, not the server
    assert len(platform.api_requests) == 1


def test_a_page_of_one_item_too_large_does_not_ask_for_fewer_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error, _ = read_a_page_too_large(monkeypatch, limit=1)

    assert str(error) == (
        "GET /namespaces/shop/workloads: the answer is larger than 4,096 bytes, the most the "
        "client reads: a page of 1 item, so no chunkSize makes it fit"
    )
    assert error.config_key is None
    assert not needs_mending(error)


def read_a_page_too_large(
    monkeypatch: pytest.MonkeyPatch, *, limit: int
) -> tuple[PermanentError, Platform]:
    """The error of a workloads page over the client's cap (4 KiB here) asked for `limit`."""
    monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 4096)
    platform = Platform(lambda request: httpx.Response(200, json=workloads_page(20)))
    config = OpenChoreoConfig(base_url=BASE, token=STATIC_TOKEN)
    with platform.client(config) as client, pytest.raises(PermanentError) as caught:
        V1.list_page(client, "/namespaces/shop/workloads", limit=limit, cursor=None)
    return caught.value, platform


def test_a_single_object_larger_than_the_client_reads_fails_at_once_naming_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 2**20)
    workload = {"metadata": {"name": "w"}, "spec": {"schema": "x" * (2**20 + 2**19)}}
    platform = Platform(lambda request: httpx.Response(200, json=workload))
    config = OpenChoreoConfig(base_url=BASE, token=STATIC_TOKEN)

    with platform.client(config) as client, pytest.raises(PermanentError) as caught:
        client.get_json("/namespaces/shop/workloads/w")

    assert str(caught.value) == (
        "GET /namespaces/shop/workloads/w: the answer is larger than 1 MiB, the most the client "
        "reads"
    )
    assert caught.value.config_key is None
    assert not needs_mending(caught.value)
    assert len(platform.api_requests) == 1


def test_a_deadline_after_the_token_endpoint_failed_names_the_token_request() -> None:
    """The GET before the deadline was never sent: the 503 was the identity provider's."""
    clock = FakeClock()
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "idp.test" and len(asked) == 1:
            return httpx.Response(503, json={"error": "temporarily_unavailable"})
        if request.url.host == "idp.test":
            return httpx.Response(200, json={"access_token": "issued-token", "expires_in": 3600})
        clock.advance(60)
        raise httpx.ReadTimeout("read timed out", request=request)

    client = OpenChoreoClient(
        oauth_config(),
        clock=clock,
        deadline=clock.monotonic() + 30,
        transport=httpx.MockTransport(handle),
    )
    with client, pytest.raises(DeadlineExceeded) as caught:
        client.get_json("/namespaces")

    assert asked == ["idp.test", "idp.test", "openchoreo.test"]
    assert str(caught.value) == (
        "GET /namespaces: timed out at the burst deadline, the token request before it answered "
        "HTTP 503 temporarily_unavailable"
    )
    assert caught.value.status == 503
