from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from choreo_ingest.config import AuthConfig, OAuthConfig
from choreo_ingest.errors import (
    AuthError,
    ConfigError,
    TokenRetryAfter,
    TransientError,
    needs_mending,
)
from choreo_ingest.providers.openchoreo.auth import (
    TOKENS_KNOWN,
    ClientCredentials,
    NoCredentials,
    StaticToken,
    TokenFile,
    credentials_for,
)
from choreo_ingest.providers.openchoreo.client_auth import FormAnswer
from choreo_ingest.providers.openchoreo.token_lifetime import jwt_claims

from fakes import FakeClock

TOKEN_URL = "http://thunder.openchoreo.localhost:8080/oauth2/token"
CLIENT_SECRET = "cs-7b3f0e2a-very-secret"
START = 1_800_000_000.0


def jwt(**claims: Any) -> str:
    """An unsigned-looking JWT with `claims` (the credentials never verify signatures)."""

    def part(data: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeTokenEndpoint:
    """A token endpoint: answers from `responses` in turn, then issues `access-N` tokens; with
    `always`, answers every request with it.

    `accepts` (`client_secret_post` or `client_secret_basic`) refuses the client secret sent the
    other way with 401 `invalid_client`, as a provider holds a client to its registered method.
    A response is (status, body) or (status, body, seconds its `Retry-After` says)."""

    def __init__(
        self,
        *responses: tuple[int, Any] | tuple[int, Any, float],
        expires_in: object = 3600,
        accepts: str | None = None,
        always: tuple[int, Any] | None = None,
    ) -> None:
        self.responses = list(responses)
        self.expires_in = expires_in
        self.accepts = accepts
        self.always = always
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def __call__(
        self, url: str, fields: Mapping[str, str], headers: Mapping[str, str]
    ) -> FormAnswer:
        with self._lock:
            self.calls.append((url, dict(fields)))
            self.headers.append(dict(headers))
            basic = "Authorization" in headers
            if self.accepts is not None and basic != (self.accepts == "client_secret_basic"):
                return FormAnswer(
                    401, {"error": "invalid_client", "error_description": "auth failed"}
                )
            if self.always is not None:
                return FormAnswer(*self.always)
            if self.responses:
                return FormAnswer(*self.responses.pop(0))
            body = {"access_token": f"access-{len(self.calls)}", "token_type": "Bearer"}
            return FormAnswer(200, body | {"expires_in": self.expires_in})


def oauth_config(**overrides: Any) -> OAuthConfig:
    settings: dict[str, Any] = {
        "token_url": TOKEN_URL,
        "client_id": "choreo-ingest",
        "client_secret": CLIENT_SECRET,
    }
    return OAuthConfig(**(settings | overrides))


def client_credentials(
    endpoint: FakeTokenEndpoint, clock: FakeClock, **overrides: Any
) -> ClientCredentials:
    credentials = credentials_for(
        AuthConfig(oauth=oauth_config(**overrides)), clock=clock, post_form=endpoint
    )
    assert isinstance(credentials, ClientCredentials)
    return credentials


class TestCredentialsFor:
    def test_no_auth_sends_no_token(self) -> None:
        credentials = credentials_for(
            AuthConfig(), clock=FakeClock(), post_form=FakeTokenEndpoint()
        )
        assert isinstance(credentials, NoCredentials)
        assert (credentials.bearer(), credentials.refresh(), credentials.secrets()) == (
            None,
            None,
            [],
        )
        assert credentials.config_key == ""

    @pytest.mark.parametrize(
        ("auth", "kind", "config_key"),
        [
            (AuthConfig(token="tok-1234"), StaticToken, "openchoreo.auth.token"),
            (
                AuthConfig(token="tok-1234", token_key="openchoreo.token"),
                StaticToken,
                "openchoreo.token",
            ),
            (AuthConfig(token_file=Path("t")), TokenFile, "openchoreo.auth.tokenFile"),
            (
                AuthConfig(oauth=oauth_config()),
                ClientCredentials,
                "openchoreo.auth.oauth.clientSecret",
            ),
            (
                AuthConfig(oauth=oauth_config(client_secret=None, client_secret_file=Path("f"))),
                ClientCredentials,
                "openchoreo.auth.oauth.clientSecretFile",
            ),
        ],
        ids=["token", "shorthand", "token-file", "oauth", "oauth-secret-file"],
    )
    def test_picks_the_configured_source_and_names_its_key(
        self, auth: AuthConfig, kind: type, config_key: str
    ) -> None:
        credentials = credentials_for(auth, clock=FakeClock(), post_form=FakeTokenEndpoint())
        assert isinstance(credentials, kind)
        assert credentials.config_key == config_key

    def test_no_file_is_read_and_no_token_requested_until_first_use(self, tmp_path: Path) -> None:
        endpoint = FakeTokenEndpoint()
        auth = AuthConfig(oauth=oauth_config(client_secret=None, client_secret_file=tmp_path / "x"))
        credentials_for(auth, clock=FakeClock(), post_form=endpoint)
        credentials_for(
            AuthConfig(token_file=tmp_path / "y"), clock=FakeClock(), post_form=endpoint
        )
        assert endpoint.calls == []


class TestStaticToken:
    def test_refresh_gives_the_same_token(self) -> None:
        credentials = StaticToken("tok-1234", config_key="openchoreo.auth.token")
        assert credentials.bearer() == credentials.refresh() == "tok-1234"
        assert credentials.secrets() == ["tok-1234"]
        assert "tok-1234" not in repr(credentials)

    @pytest.mark.parametrize(
        "spelled", ["k8s-token-1234\n", "k8s-token-1234\r\n", " k8s-token-1234\t"]
    )
    def test_surrounding_whitespace_is_not_sent(self, spelled: str) -> None:
        """`${OPENCHOREO_TOKEN}` from a Kubernetes secret file ends in a newline."""
        credentials = StaticToken(spelled, config_key="openchoreo.auth.token")

        assert credentials.bearer() == credentials.refresh() == "k8s-token-1234"
        assert {spelled, "k8s-token-1234"} <= set(credentials.secrets())

    @pytest.mark.parametrize(
        ("token", "problem"),
        [
            ("k8s-token\nABCD-1234", "expected one token on one line"),
            ("k8s-token ABCD-1234", "it holds whitespace"),
            ("k8s-token\tABCD-1234", "it holds whitespace"),
            ("k8s-tökenABCD-1234", "it holds a character that is not ASCII"),
            ("k8s-token\x00ABCD-1234", "it holds a control character"),
            ("k8s-token\x7fABCD-1234", "it holds a control character"),
        ],
        ids=["newline", "space", "tab", "not-ascii", "nul", "del"],
    )
    def test_a_token_that_cannot_be_a_header_is_a_config_error_naming_the_key(
        self, token: str, problem: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            credentials_for(
                AuthConfig(token=token, token_key="openchoreo.token"),
                clock=FakeClock(),
                post_form=FakeTokenEndpoint(),
            )

        assert str(caught.value) == f"openchoreo.token: not a usable bearer token: {problem}"
        assert "ABCD" not in str(caught.value)


class TestTokenFile:
    def test_file_is_read_again_at_each_call(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text("first-token\n", encoding="utf-8")
        credentials = TokenFile(path)
        assert credentials.bearer() == "first-token"

        path.write_text("  rotated-token  \n", encoding="utf-8")

        assert credentials.bearer() == "rotated-token"
        assert credentials.secrets() == ["first-token", "rotated-token"]
        assert "rotated-token" not in repr(credentials)

    def test_refresh_reads_the_file_again(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text("old-token", encoding="utf-8")
        credentials = TokenFile(path)
        credentials.bearer()
        path.write_text("new-token", encoding="utf-8")

        assert credentials.refresh("old-token") == "new-token"

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            (None, "cannot read {path}: No such file or directory"),
            ("directory", "cannot read {path}: Is a directory"),
            (b"", "{path}: the file is empty"),
            (b" \n\t\n", "{path}: the file is empty"),
            (b"\xff\xfe-Zq7x-bytes", "{path}: not UTF-8 text (UTF-16? save it as UTF-8)"),
            (b"Zq7x-one\nZq7x-two\n", "{path}: more than one line (the secret alone, on one line)"),
            (b"Zq7x one\n", "{path}: not a usable bearer token: it holds whitespace"),
            (
                "Zq7x-ö".encode(),
                "{path}: not a usable bearer token: it holds a character that is not ASCII",
            ),
        ],
        ids=[
            "missing",
            "directory",
            "empty",
            "blank",
            "not-utf8",
            "two-lines",
            "space",
            "not-ascii",
        ],
    )
    def test_unusable_file_is_a_config_error_naming_key_and_path_not_content(
        self, tmp_path: Path, content: bytes | str | None, problem: str
    ) -> None:
        """The operator must fix the file: exit 2, as for an unset `${VAR}`, not a burst failure
        that backs off for up to half an hour."""
        path = tmp_path / "token"
        if content == "directory":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)

        with pytest.raises(ConfigError) as caught:
            TokenFile(path).bearer()

        assert str(caught.value) == f"openchoreo.auth.tokenFile: {problem.format(path=path)}"
        assert "Zq7x" not in str(caught.value)

    def test_on_secret_hears_each_token_once(self, tmp_path: Path) -> None:
        heard: list[str] = []
        path = tmp_path / "token"
        path.write_text("file-token", encoding="utf-8")
        auth = AuthConfig(token_file=path)
        credentials = credentials_for(
            auth, clock=FakeClock(), post_form=FakeTokenEndpoint(), on_secret=heard.append
        )
        credentials.bearer()
        credentials.bearer()
        assert heard == ["file-token"]


class TestGrant:
    def test_sends_client_credentials_as_a_form(self) -> None:
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(endpoint, FakeClock())

        assert credentials.bearer() == "access-1"

        assert endpoint.calls == [
            (
                TOKEN_URL,
                {
                    "grant_type": "client_credentials",
                    "client_id": "choreo-ingest",
                    "client_secret": CLIENT_SECRET,
                },
            )
        ]

    def test_sends_the_scope_when_configured(self) -> None:
        endpoint = FakeTokenEndpoint()
        client_credentials(endpoint, FakeClock(), scope="openid catalog").bearer()
        assert endpoint.calls[0][1]["scope"] == "openid catalog"

    def test_sends_the_audience_when_configured(self) -> None:
        endpoint = FakeTokenEndpoint()
        client_credentials(endpoint, FakeClock(), audience="https://oc.example/api").bearer()
        assert endpoint.calls[0][1]["audience"] == "https://oc.example/api"
        client_credentials(endpoint, FakeClock()).bearer()
        assert "audience" not in endpoint.calls[1][1]

    @pytest.mark.parametrize("spelled", [f"{CLIENT_SECRET}\n", f" {CLIENT_SECRET}\r\n"])
    def test_a_client_secret_is_sent_without_surrounding_whitespace_as_from_its_file(
        self, spelled: str
    ) -> None:
        """`${CLIENT_SECRET}` from a Kubernetes Secret made of a file written by `echo`."""
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(endpoint, FakeClock(), client_secret=spelled)

        credentials.bearer()

        assert endpoint.calls[0][1]["client_secret"] == CLIENT_SECRET
        assert {spelled, CLIENT_SECRET} <= set(credentials.secrets())

    def test_client_secret_file_is_read_at_each_grant(self, tmp_path: Path) -> None:
        """A rotated client secret is used by the next grant, without a restart."""
        path = tmp_path / "client-secret"
        path.write_text("secret-one\n", encoding="utf-8")
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(
            endpoint, FakeClock(), client_secret=None, client_secret_file=path
        )
        credentials.bearer()
        path.write_text("secret-two\n", encoding="utf-8")

        credentials.refresh()

        assert [fields["client_secret"] for _, fields in endpoint.calls] == [
            "secret-one",
            "secret-two",
        ]
        assert {"secret-one", "secret-two"} <= set(credentials.secrets())

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            (None, "cannot read {path}: No such file or directory"),
            ("directory", "cannot read {path}: Is a directory"),
            (b"\n", "{path}: the file is empty"),
            (b"\xef\xbb\xbf\r\n", "{path}: the file is empty"),
            (b"\xff\xfeZ\x00q\x00", "{path}: not UTF-8 text (UTF-16? save it as UTF-8)"),
            (b"Zq7x\r\nsecond\r\n", "{path}: more than one line (the secret alone, on one line)"),
        ],
        ids=["missing", "directory", "empty", "bom-only", "utf-16", "two-lines"],
    )
    def test_unusable_client_secret_file_is_a_config_error_naming_key_and_path(
        self, tmp_path: Path, content: bytes | str | None, problem: str
    ) -> None:
        path = tmp_path / "client-secret"
        if content == "directory":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(
            endpoint, FakeClock(), client_secret=None, client_secret_file=path
        )

        with pytest.raises(ConfigError) as caught:
            credentials.bearer()

        said = problem.format(path=path)
        assert str(caught.value) == f"openchoreo.auth.oauth.clientSecretFile: {said}"
        assert endpoint.calls == []

    def test_a_client_secret_file_written_with_a_byte_order_mark_sends_the_secret_alone(
        self, tmp_path: Path
    ) -> None:
        """Notepad's UTF-8 starts with U+FEFF; sent with it, the secret was refused as
        invalid_client with no word of why."""
        path = tmp_path / "client-secret"
        path.write_bytes(b"\xef\xbb\xbfS3cr3t-value\r\n")
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(
            endpoint, FakeClock(), client_secret=None, client_secret_file=path
        )

        credentials.bearer()

        assert [fields["client_secret"] for _, fields in endpoint.calls] == ["S3cr3t-value"]

    def test_secrets_holds_the_client_secret_and_every_access_token(self) -> None:
        heard: list[str] = []
        endpoint = FakeTokenEndpoint()
        credentials = credentials_for(
            AuthConfig(oauth=oauth_config()),
            clock=FakeClock(),
            post_form=endpoint,
            on_secret=heard.append,
        )
        credentials.bearer()
        credentials.refresh()

        assert credentials.secrets() == [CLIENT_SECRET, "access-1", "access-2"]
        assert heard == [CLIENT_SECRET, "access-1", "access-2"]
        assert CLIENT_SECRET not in repr(credentials)
        assert "access-2" not in repr(credentials)

    def test_a_client_secret_from_its_file_lasts_while_only_the_latest_tokens_are_kept(
        self, tmp_path: Path
    ) -> None:
        """`serve` is issued a token an hour: masking every one ever issued grows without end,
        and the client secret, sent with every grant, must never drop out."""
        path = tmp_path / "client-secret"
        path.write_text("file-client-secret-9f2c\n", encoding="utf-8")
        lasting: list[str] = []
        tokens: list[str] = []
        credentials = credentials_for(
            AuthConfig(oauth=oauth_config(client_secret=None, client_secret_file=path)),
            clock=FakeClock(),
            post_form=FakeTokenEndpoint(),
            on_secret=lasting.append,
            on_token=tokens.append,
        )
        for _ in range(TOKENS_KNOWN + 3):
            credentials.refresh()

        issued = [f"access-{n}" for n in range(1, TOKENS_KNOWN + 4)]
        assert lasting == ["file-client-secret-9f2c"]
        assert tokens == issued
        assert credentials.secrets() == ["file-client-secret-9f2c", *sorted(issued[-TOKENS_KNOWN:])]


class TestReuse:
    def test_token_is_reused_until_60_seconds_before_expiry(self) -> None:
        clock, endpoint = FakeClock(START), FakeTokenEndpoint(expires_in=3600)
        credentials = client_credentials(endpoint, clock)
        assert credentials.bearer() == "access-1"

        clock.advance(3539)
        assert credentials.bearer() == "access-1"
        clock.advance(1)
        assert credentials.bearer() == "access-2"
        assert len(endpoint.calls) == 2

    def test_jwt_exp_wins_over_expires_in(self) -> None:
        clock = FakeClock(START)
        token = jwt(sub="backstage", iat=START, exp=START + 600)
        endpoint = FakeTokenEndpoint((200, {"access_token": token, "expires_in": 3600}))
        credentials = client_credentials(endpoint, clock)
        assert credentials.bearer() == token

        clock.advance(539)
        assert credentials.bearer() == token
        clock.advance(1)
        assert credentials.bearer() == "access-2"

    def test_expires_in_is_used_when_the_token_is_not_a_jwt(self) -> None:
        clock = FakeClock(START)
        endpoint = FakeTokenEndpoint((200, {"access_token": "opaque", "expires_in": "120"}))
        credentials = client_credentials(endpoint, clock)
        credentials.bearer()

        clock.advance(59)  # 120 s lifetime: refresh 60 s before its end
        assert credentials.bearer() == "opaque"
        clock.advance(1)
        assert credentials.bearer() == "access-2"

    @pytest.mark.parametrize(
        "response",
        [
            {"access_token": "opaque", "expires_in": 20},
            {"access_token": jwt(iat=START, exp=START + 20)},
            {"access_token": jwt(exp=START + 20), "expires_in": 9999},
        ],
        ids=["expires-in", "jwt-with-iat", "jwt-without-iat"],
    )
    def test_short_token_is_replaced_halfway(self, response: dict[str, Any]) -> None:
        """A 20 s token is replaced after 10 s, not 60 s before it expires (before it exists)."""
        clock = FakeClock(START)
        endpoint = FakeTokenEndpoint((200, response))
        credentials = client_credentials(endpoint, clock)
        first = credentials.bearer()

        clock.advance(9.9)
        assert credentials.bearer() == first
        clock.advance(0.1)
        assert credentials.bearer() == "access-2"

    def test_lifetime_counts_from_iat(self) -> None:
        """A token issued 30 s before we got it, valid 100 s: lifetime 100 s, margin 50 s."""
        clock = FakeClock(START)
        token = jwt(iat=START - 30, exp=START + 70)
        credentials = client_credentials(FakeTokenEndpoint((200, {"access_token": token})), clock)
        credentials.bearer()

        clock.advance(19.9)
        assert credentials.bearer() == token
        clock.advance(0.1)
        assert credentials.bearer() == "access-2"

    def test_token_without_expiry_is_kept_five_minutes(self) -> None:
        clock = FakeClock(START)
        credentials = client_credentials(FakeTokenEndpoint((200, {"access_token": "o"})), clock)
        credentials.bearer()

        clock.advance(239)
        assert credentials.bearer() == "o"
        clock.advance(1)
        assert credentials.bearer() == "access-2"

    def test_token_expired_by_our_clock_is_not_requested_at_every_call(self) -> None:
        """Clock skew must not turn every request into a grant; a 401 still refreshes."""
        clock = FakeClock(START)
        token = jwt(iat=START - 3700, exp=START - 100)
        endpoint = FakeTokenEndpoint((200, {"access_token": token}))
        credentials = client_credentials(endpoint, clock)

        assert [credentials.bearer() for _ in range(5)] == [token] * 5
        assert len(endpoint.calls) == 1
        clock.advance(10)
        assert credentials.bearer() == "access-2"

    def test_refresh_forces_a_new_grant(self) -> None:
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(endpoint, FakeClock())
        assert credentials.bearer() == "access-1"

        assert credentials.refresh() == "access-2"
        assert credentials.bearer() == "access-2"
        assert len(endpoint.calls) == 2

    def test_refresh_of_a_token_already_replaced_asks_nobody(self) -> None:
        """Several requests that met one 401 with the same token cause one new grant."""
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(endpoint, FakeClock())
        rejected = credentials.bearer()

        assert credentials.refresh(rejected) == "access-2"
        assert credentials.refresh(rejected) == "access-2"
        assert credentials.refresh("access-2") == "access-3"
        assert len(endpoint.calls) == 3

    def test_failed_grant_leaves_no_token_behind(self) -> None:
        endpoint = FakeTokenEndpoint((503, None))
        credentials = client_credentials(endpoint, FakeClock())
        with pytest.raises(TransientError):
            credentials.bearer()

        assert credentials.bearer() == "access-2"

    def test_failed_refresh_drops_the_old_token(self) -> None:
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(endpoint, FakeClock())
        credentials.bearer()
        endpoint.responses.append((401, {"error": "invalid_client"}))

        with pytest.raises(AuthError):
            credentials.refresh()
        assert credentials.bearer() == "access-3"  # asks again; never the rejected access-1

    def test_concurrent_callers_share_one_grant(self) -> None:
        entered, release = threading.Event(), threading.Event()
        endpoint = FakeTokenEndpoint()

        def slow_endpoint(
            url: str, fields: Mapping[str, str], headers: Mapping[str, str]
        ) -> FormAnswer:
            entered.set()
            release.wait(timeout=5)
            return endpoint(url, fields, headers)

        credentials = credentials_for(
            AuthConfig(oauth=oauth_config()), clock=FakeClock(), post_form=slow_endpoint
        )
        tokens: list[str | None] = []

        def call() -> None:
            tokens.append(credentials.bearer())

        threads = [threading.Thread(target=call) for _ in range(8)]
        threads[0].start()
        assert entered.wait(timeout=5)
        for thread in threads[1:]:
            thread.start()
        time.sleep(0.05)  # let the others reach the lock while the grant is in flight
        release.set()
        for thread in threads:
            thread.join(timeout=5)

        assert tokens == ["access-1"] * 8
        assert len(endpoint.calls) == 1


class TestEndpointErrors:
    def test_refused_client_names_key_status_and_code(self) -> None:
        refused = (401, {"error": "invalid_client", "error_description": "Client auth failed"})
        endpoint = FakeTokenEndpoint(refused, (400, {"error": "invalid_request"}))
        with pytest.raises(AuthError) as caught:
            client_credentials(endpoint, FakeClock()).bearer()

        assert str(caught.value) == (
            f"token request to openchoreo.auth.oauth.tokenUrl ({TOKEN_URL}): HTTP 401 "
            "invalid_client: Client auth failed; check openchoreo.auth.oauth.clientId "
            "and openchoreo.auth.oauth.clientSecret (the secret was refused in the form body: "
            "HTTP 401 invalid_client; as HTTP Basic: HTTP 400 invalid_request)"
        )
        assert (caught.value.status, caught.value.code) == (401, "invalid_client")

    def test_a_secret_refused_as_basic_is_reported_over_the_form_bodys_method_refusal(
        self,
    ) -> None:
        """Thunder refuses a way the client is not registered for before it looks at the
        secret: the Basic answer is the one about the secret."""
        endpoint = FakeTokenEndpoint(
            (401, {"error": "unauthorized_client", "error_description": "method not allowed"}),
            (401, {"error": "invalid_client", "error_description": "Invalid client credentials"}),
        )
        with pytest.raises(AuthError) as caught:
            client_credentials(endpoint, FakeClock()).bearer()

        assert str(caught.value) == (
            f"token request to openchoreo.auth.oauth.tokenUrl ({TOKEN_URL}): HTTP 401 "
            "invalid_client: Invalid client credentials; check openchoreo.auth.oauth.clientId "
            "and openchoreo.auth.oauth.clientSecret (the secret was refused in the form body: "
            "HTTP 401 unauthorized_client; as HTTP Basic: HTTP 401 invalid_client)"
        )

    @pytest.mark.parametrize(
        ("status", "body", "fragment"),
        [
            (400, {"error": "invalid_scope"}, "HTTP 400 invalid_scope; check openchoreo.auth."),
            (400, {"error": "unauthorized_client"}, "must allow the client_credentials grant"),
            (404, None, "HTTP 404; check openchoreo.auth.oauth.tokenUrl"),
            (401, None, "HTTP 401; check openchoreo.auth.oauth.clientId and"),
            (200, {"token_type": "Bearer"}, "HTTP 200 with no access_token"),
            (200, {"access_token": "  "}, "HTTP 200 with no access_token"),
            (200, None, "HTTP 200 with a body that is not JSON"),
            (200, {"access_token": "t", "token_type": "mac"}, "token_type 'mac' is not Bearer"),
        ],
        ids=[
            "invalid-scope",
            "grant-not-allowed",
            "not-found",
            "bare-401",
            "no-access-token",
            "blank-access-token",
            "not-json",
            "not-bearer",
        ],
    )
    def test_unusable_answer_is_a_setting_to_mend(
        self, status: int, body: Any, fragment: str
    ) -> None:
        """Each (a login page's 200 too, from a tokenUrl that names the wrong page) exits 2
        as `check` does, not 3 as upstream trouble."""
        with pytest.raises(AuthError) as caught:
            client_credentials(FakeTokenEndpoint(always=(status, body)), FakeClock()).bearer()
        assert str(caught.value).startswith("token request to openchoreo.auth.oauth.tokenUrl (")
        assert fragment in str(caught.value)
        assert needs_mending(caught.value)

    @pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
    def test_server_trouble_is_transient(self, status: int) -> None:
        endpoint = FakeTokenEndpoint((status, {"error": "temporarily_unavailable"}))
        with pytest.raises(TransientError) as caught:
            client_credentials(endpoint, FakeClock()).bearer()
        assert not isinstance(caught.value, AuthError)
        assert f"HTTP {status} temporarily_unavailable" in str(caught.value)
        assert caught.value.status == status

    def test_a_retry_after_holds_every_caller_until_it_has_passed(self) -> None:
        """Threads that waited on the refused grant (detail calls, an event drain's reads)
        must not each ask again at once, as the endpoint asked them not to."""
        clock = FakeClock()
        endpoint = FakeTokenEndpoint(always=(429, {"error": "slow_down"}, 300.0))
        credentials = client_credentials(endpoint, clock)
        waits = []
        for _ in range(4):
            with pytest.raises(TokenRetryAfter) as caught:
                credentials.bearer()
            waits.append(caught.value.retry_after)
            clock.advance(100)

        assert len(endpoint.calls) == 2  # the first, and the fourth, 300 s on
        assert waits == [300.0, 200.0, 100.0, 300.0]

    def test_a_connection_failure_names_the_token_url_key(self) -> None:
        def unreachable(
            url: str, fields: Mapping[str, str], headers: Mapping[str, str]
        ) -> FormAnswer:
            raise TransientError("POST http://thunder/oauth2/token: ConnectError")

        credentials = credentials_for(
            AuthConfig(oauth=oauth_config()), clock=FakeClock(), post_form=unreachable
        )
        with pytest.raises(TransientError) as caught:
            credentials.bearer()

        assert str(caught.value) == (
            "token request to openchoreo.auth.oauth.tokenUrl: "
            "POST http://thunder/oauth2/token: ConnectError"
        )
        assert (caught.value.method, caught.value.path) == ("POST", TOKEN_URL)

    def test_each_token_request_is_logged_at_debug_without_the_secret(self) -> None:
        endpoint = FakeTokenEndpoint(always=(401, {"error": "invalid_client"}))
        with structlog.testing.capture_logs() as logs, pytest.raises(AuthError):
            client_credentials(endpoint, FakeClock()).bearer()

        requests = [line for line in logs if line["event"] == "token_request"]
        assert [(line["method"], line["status"]) for line in requests] == [("POST", 401)] * len(
            endpoint.calls
        )
        assert requests
        assert CLIENT_SECRET not in repr(logs)

    @pytest.mark.parametrize(
        "body",
        [
            {"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"},
            {"error": f"bad-{CLIENT_SECRET}", "error_description": "no"},
            {"error": "invalid_request", "error_description": f"client_secret={CLIENT_SECRET}"},
        ],
        ids=["description", "code", "echoed-form"],
    )
    def test_secret_echoed_by_the_endpoint_never_reaches_the_message(
        self, body: dict[str, str]
    ) -> None:
        with pytest.raises(AuthError) as caught:
            client_credentials(FakeTokenEndpoint(always=(400, body)), FakeClock()).bearer()
        assert CLIENT_SECRET not in str(caught.value)
        assert CLIENT_SECRET not in repr(caught.value.args)
        assert CLIENT_SECRET not in str(caught.value.code)

    @pytest.mark.parametrize("secret", ["Q", "Zq", "Zq9"])
    def test_a_short_secret_echoed_by_the_endpoint_never_reaches_the_message(
        self, secret: str
    ) -> None:
        """A secret too short to search for inside words is masked where it stands apart."""
        body = {"error": "invalid_client", "error_description": f"secret {secret} declined"}
        credentials = client_credentials(
            FakeTokenEndpoint(always=(401, body)), FakeClock(), client_secret=secret
        )

        with pytest.raises(AuthError) as caught:
            credentials.bearer()

        assert f" {secret} " not in str(caught.value)
        assert "secret *** declined" in str(caught.value)

    @pytest.mark.parametrize(
        "spelled",
        ["cs+SECRET/98 x=7", "cs%2BSECRET%2F98+x%3D7", "cs%2BSECRET%2F98%20x%3D7"],
        ids=["as-is", "form-encoded", "url-encoded"],
    )
    def test_a_secret_echoed_percent_encoded_never_reaches_the_message(self, spelled: str) -> None:
        """An endpoint that echoes the form it refused writes the secret as the form held it."""
        body = {"error": "invalid_request", "error_description": f"client_secret={spelled}&x=1"}
        credentials = client_credentials(
            FakeTokenEndpoint(always=(400, body)),
            FakeClock(),
            client_secret="cs+SECRET/98 x=7",
        )

        with pytest.raises(AuthError) as caught:
            credentials.bearer()

        assert "SECRET" not in str(caught.value)
        assert "client_secret=***&x=1" in str(caught.value)

    @pytest.mark.parametrize(
        "secret", ["Abc\tDefSecret-9876", "Abc  DefSecret-9876", "Abc\nDefSecret-9876"]
    )
    def test_a_secret_holding_whitespace_echoed_by_the_endpoint_is_masked(
        self, secret: str
    ) -> None:
        """Made one line first, the echoed secret would read `Abc DefSecret-9876` and no
        longer match the configured one."""
        body = {"error": "invalid_client", "error_description": f"client secret {secret} is bad"}
        credentials = client_credentials(
            FakeTokenEndpoint(always=(401, body)), FakeClock(), client_secret=secret
        )

        with pytest.raises(AuthError) as caught:
            credentials.bearer()

        assert "DefSecret" not in str(caught.value)
        assert "HTTP 401 invalid_client: client secret *** is bad;" in str(caught.value)

    @pytest.mark.parametrize(
        ("token", "problem"),
        [
            ("abc-def\nghi-jkl", "expected one token on one line"),
            ("abc-def ghi-jkl", "it holds whitespace"),
            ("abc-déf-ghi-jkl", "it holds a character that is not ASCII"),
        ],
        ids=["newline", "space", "not-ascii"],
    )
    def test_an_access_token_that_cannot_be_a_header_is_an_auth_error_not_quoting_it(
        self, token: str, problem: str
    ) -> None:
        endpoint = FakeTokenEndpoint((200, {"access_token": token, "token_type": "Bearer"}))
        credentials = client_credentials(endpoint, FakeClock())

        with pytest.raises(AuthError) as caught:
            credentials.bearer()

        assert str(caught.value) == (
            f"token request to openchoreo.auth.oauth.tokenUrl ({TOKEN_URL}): HTTP 200: the "
            f"access_token is not a usable bearer token: {problem}; check "
            "openchoreo.auth.oauth.tokenUrl"
        )
        assert token in credentials.secrets()

    def test_long_description_is_left_out(self) -> None:
        page = "<html>" + "x" * 500 + "</html>"
        endpoint = FakeTokenEndpoint(
            always=(400, {"error": "invalid_request", "error_description": page})
        )
        with pytest.raises(AuthError) as caught:
            client_credentials(endpoint, FakeClock()).bearer()
        assert "<html>" not in str(caught.value)
        assert "HTTP 400 invalid_request;" in str(caught.value)

    def test_the_token_url_is_shown_without_its_query_values(self) -> None:
        """A signature in the query (Azure's `?sig=`) is a credential under a name the config
        cannot know as one."""
        url = f"{TOKEN_URL}?p=B2C_1_signin&sig=s1gn4ture-Q&flag"
        endpoint = FakeTokenEndpoint(always=(404, None))
        credentials = client_credentials(endpoint, FakeClock(), token_url=url)

        with pytest.raises(AuthError) as caught:
            credentials.bearer()

        assert str(caught.value).startswith(
            f"token request to openchoreo.auth.oauth.tokenUrl ({TOKEN_URL}?p=***&sig=***&flag"
            "): HTTP 404; check openchoreo.auth.oauth.tokenUrl"
        )
        assert "s1gn4ture-Q" not in repr(credentials)
        assert endpoint.calls[0][0] == url  # sent as configured

    def test_message_has_one_line(self) -> None:
        body = {"error": "invalid_client", "error_description": "line one\nline two\r\n"}
        with pytest.raises(AuthError) as caught:
            client_credentials(FakeTokenEndpoint(always=(401, body)), FakeClock()).bearer()
        assert "line one line two;" in str(caught.value)
        assert "\n" not in str(caught.value)


class TestClientAuthMethod:
    """How the client secret reaches the token endpoint: `auto` (the default) sends it in the
    form body, then as HTTP Basic when the form is refused, and keeps whichever worked."""

    def test_auto_sends_the_secret_in_the_form_body_only_when_that_works(self) -> None:
        endpoint = FakeTokenEndpoint(accepts="client_secret_post")
        credentials = client_credentials(endpoint, FakeClock())

        assert credentials.bearer() == "access-1"
        assert credentials.refresh() == "access-2"

        assert [fields["client_secret"] for _, fields in endpoint.calls] == [CLIENT_SECRET] * 2
        assert endpoint.headers == [{}, {}]
        assert credentials.learned_method is None

    def test_auto_turns_to_basic_when_the_form_is_refused_and_stays_with_it(self) -> None:
        endpoint = FakeTokenEndpoint(accepts="client_secret_basic")
        credentials = client_credentials(endpoint, FakeClock())

        assert credentials.bearer() == "access-2"
        assert credentials.refresh() == "access-3"

        assert [("Authorization" in sent) for sent in endpoint.headers] == [False, True, True]
        assert [sorted(fields) for _, fields in endpoint.calls[1:]] == [["grant_type"]] * 2
        assert credentials.learned_method == "client_secret_basic"

    def test_auto_does_not_turn_to_basic_after_the_form_has_worked(self) -> None:
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(endpoint, FakeClock())
        credentials.bearer()
        endpoint.responses = [(401, {"error": "invalid_client"})]  # the secret was rotated

        with pytest.raises(AuthError, match="HTTP 401 invalid_client; check "):
            credentials.refresh()

        assert len(endpoint.calls) == 2

    @pytest.mark.parametrize(
        "refusal",
        [
            (400, {"error": "invalid_scope"}),
            (400, {"error": "unsupported_grant_type"}),
            (404, None),
            (503, {"error": "temporarily_unavailable"}),
        ],
        ids=["scope", "grant-type", "not-found", "unavailable"],
    )
    def test_auto_sends_one_request_when_the_refusal_is_not_about_the_secret(
        self, refusal: tuple[int, Any]
    ) -> None:
        endpoint = FakeTokenEndpoint(refusal)

        with pytest.raises((AuthError, TransientError)):
            client_credentials(endpoint, FakeClock()).bearer()

        assert len(endpoint.calls) == 1

    def test_auto_reports_trouble_with_the_basic_request_as_itself(self) -> None:
        endpoint = FakeTokenEndpoint((401, {"error": "invalid_client"}), (503, None))

        with pytest.raises(TransientError, match=r"HTTP 503$"):
            client_credentials(endpoint, FakeClock()).bearer()

    def test_basic_sends_the_id_and_secret_as_they_are_first_as_thunder_reads_them(
        self,
    ) -> None:
        endpoint = FakeTokenEndpoint()
        credentials = client_credentials(
            endpoint,
            FakeClock(),
            client_id="my client",
            client_secret="cs+SECRET/98 x=7",
            scope="openid",
            client_auth_method="client_secret_basic",
        )

        credentials.bearer()

        [(_, fields)] = endpoint.calls
        assert fields == {"grant_type": "client_credentials", "scope": "openid"}
        as_is = base64.b64encode(b"my client:cs+SECRET/98 x=7").decode()
        assert endpoint.headers == [{"Authorization": f"Basic {as_is}"}]

    def test_basic_form_encodes_them_next_as_rfc_6749_says_and_keeps_what_worked(
        self,
    ) -> None:
        endpoint = FakeTokenEndpoint((401, {"error": "invalid_client"}))
        credentials = client_credentials(
            endpoint,
            FakeClock(),
            client_id="my client",
            client_secret="cs+SECRET/98 x=7",
            client_auth_method="client_secret_basic",
        )

        assert credentials.bearer() == "access-2"
        assert credentials.refresh() == "access-3"

        as_is = base64.b64encode(b"my client:cs+SECRET/98 x=7").decode()
        encoded = base64.b64encode(b"my+client:cs%2BSECRET%2F98+x%3D7").decode()
        assert [sent["Authorization"] for sent in endpoint.headers] == [
            f"Basic {as_is}",
            f"Basic {encoded}",
            f"Basic {encoded}",
        ]
        assert credentials.learned_method is None  # the configured method, only spelt another way

    def test_a_secret_that_needs_no_encoding_is_sent_as_basic_once(self) -> None:
        endpoint = FakeTokenEndpoint(always=(401, {"error": "invalid_client"}))

        with pytest.raises(AuthError):
            client_credentials(
                endpoint, FakeClock(), client_auth_method="client_secret_basic"
            ).bearer()

        assert len(endpoint.calls) == 1

    @pytest.mark.parametrize(
        ("method", "accepts"),
        [("client_secret_post", "client_secret_basic"), ("client_secret_basic", None)],
        ids=["post", "basic"],
    )
    def test_a_configured_method_is_the_only_one_tried_and_the_advice_names_it(
        self, method: str, accepts: str | None
    ) -> None:
        endpoint = FakeTokenEndpoint(accepts=accepts)
        if accepts is None:
            endpoint.responses = [(401, {"error": "invalid_client"})]

        with pytest.raises(AuthError) as caught:
            client_credentials(endpoint, FakeClock(), client_auth_method=method).bearer()

        assert len(endpoint.calls) == 1
        assert str(caught.value).endswith(
            "; check openchoreo.auth.oauth.clientId and openchoreo.auth.oauth.clientSecret; or "
            "the identity provider takes this client's secret another way than "
            f"openchoreo.auth.oauth.clientAuthMethod says ({method})"
        )

    def test_the_basic_credential_echoed_by_the_endpoint_never_reaches_the_message(
        self,
    ) -> None:
        encoded = base64.b64encode(f"choreo-ingest:{CLIENT_SECRET}".encode()).decode()
        refused = (401, {"error": "invalid_client", "error_description": f"bad Basic {encoded}"})
        heard: list[str] = []
        credentials = credentials_for(
            AuthConfig(oauth=oauth_config(client_auth_method="client_secret_basic")),
            clock=FakeClock(),
            post_form=FakeTokenEndpoint(refused),
            on_secret=heard.append,
        )

        with pytest.raises(AuthError) as caught:
            credentials.bearer()

        assert encoded not in str(caught.value)
        assert "bad Basic ***;" in str(caught.value)
        assert encoded in heard  # and so masked in log lines too


class TestJwtClaims:
    @pytest.mark.parametrize(
        "token",
        ["opaque-token", "a.b", "a.%%%.c", "a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c"],
        ids=["opaque", "two-parts", "bad-base64", "not-an-object"],
    )
    def test_anything_but_a_jwt_has_no_claims(self, token: str) -> None:
        assert jwt_claims(token) == {}

    def test_decodes_unpadded_base64url(self) -> None:
        assert jwt_claims(jwt(sub="a?b>", exp=START)) == {"sub": "a?b>", "exp": START}
