"""The simulator's OAuth2 client-credentials endpoint and the bearer check it feeds."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from choreo_ingest.simulator.api import SimulatorOptions
from choreo_ingest.simulator.world import World

if TYPE_CHECKING:
    from conftest import FakeClock, SimulatorFactory

ROOT = "http://simulator.test"
TOKEN_URL = f"{ROOT}/oauth2/token"
CLIENT = {"oauth_client_id": "backstage", "oauth_client_secret": "s3cret", "token_lifetime": 20}
GRANT = {"grant_type": "client_credentials", "client_id": "backstage", "client_secret": "s3cret"}


@pytest.fixture
def world() -> World:
    return World.generate(2, 2, 3, seed=1)


def claims_of(token: str) -> dict[str, Any]:
    header, payload, signature = token.split(".")
    assert signature
    assert json.loads(_unpad(header))["alg"] == "HS256"
    claims: dict[str, Any] = json.loads(_unpad(payload))
    return claims


def _unpad(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def grant(client: httpx.Client, **changes: str) -> httpx.Response:
    return client.post(TOKEN_URL, data={**GRANT, **changes})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestTokenEndpoint:
    def test_client_credentials_grant_issues_a_jwt(
        self, simulate_v1: SimulatorFactory, world: World, clock: FakeClock
    ) -> None:
        _, client = simulate_v1(world, **CLIENT)
        response = grant(client, scope="openid")
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = response.json()
        assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 20, "openid")
        claims = claims_of(body["access_token"])
        assert (claims["sub"], claims["iss"]) == ("backstage", ROOT)
        assert claims["iat"] == int(clock.now())
        assert claims["exp"] - claims["iat"] == 20

    def test_basic_client_authentication_works_too(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world, **CLIENT)
        response = client.post(
            TOKEN_URL, data={"grant_type": "client_credentials"}, auth=("backstage", "s3cret")
        )
        assert response.status_code == 200

    def test_basic_credentials_are_form_decoded_as_rfc_6749_says(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world, oauth_client_id="my client", oauth_client_secret="a+b/c d")
        encoded = base64.b64encode(b"my+client:a%2Bb%2Fc+d").decode()
        response = client.post(
            TOKEN_URL,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {encoded}"},
        )
        assert response.status_code == 200

    @pytest.mark.parametrize(
        ("required", "basic", "status"),
        [
            ("client_secret_basic", False, 401),
            ("client_secret_basic", True, 200),
            ("client_secret_post", True, 401),
            ("client_secret_post", False, 200),
        ],
        ids=["basic-wanted-form-sent", "basic", "form-wanted-basic-sent", "form"],
    )
    def test_a_client_held_to_one_method_is_refused_the_other(
        self, simulate_v1: SimulatorFactory, world: World, required: str, basic: bool, status: int
    ) -> None:
        _, client = simulate_v1(world, **CLIENT, oauth_client_auth=required)
        if basic:
            response = client.post(
                TOKEN_URL, data={"grant_type": "client_credentials"}, auth=("backstage", "s3cret")
            )
        else:
            response = grant(client)
        assert response.status_code == status
        if status == 401:
            assert response.json()["error"] == "invalid_client"

    @pytest.mark.parametrize(
        ("changes", "status", "error"),
        [
            ({"client_secret": "wrong"}, 401, "invalid_client"),
            ({"client_id": "someone-else"}, 401, "invalid_client"),
            ({"client_secret": ""}, 401, "invalid_client"),
            ({"grant_type": "password"}, 400, "unsupported_grant_type"),
            ({"grant_type": ""}, 400, "invalid_request"),
        ],
        ids=["wrong-secret", "unknown-client", "empty-secret", "password-grant", "no-grant"],
    )
    def test_bad_grants_get_oauth_errors(
        self,
        simulate_v1: SimulatorFactory,
        world: World,
        changes: dict[str, str],
        status: int,
        error: str,
    ) -> None:
        _, client = simulate_v1(world, **CLIENT)
        response = grant(client, **changes)
        assert response.status_code == status
        assert response.json()["error"] == error
        assert "s3cret" not in response.text

    def test_token_endpoint_takes_only_form_posts(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world, **CLIENT)
        assert client.get(TOKEN_URL).status_code == 405
        assert client.post(TOKEN_URL, json=GRANT).json()["error"] == "invalid_request"

    def test_without_oauth_there_is_no_token_endpoint(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world, token="static")
        assert grant(client).status_code == 404


class TestBearerCheck:
    def test_issued_token_opens_the_api_until_it_expires(
        self, simulate_v1: SimulatorFactory, world: World, clock: FakeClock
    ) -> None:
        _, client = simulate_v1(world, **CLIENT)
        assert client.get("/namespaces").json()["error"] == "MISSING_TOKEN"
        token = grant(client).json()["access_token"]
        assert client.get("/namespaces", headers=bearer(token)).status_code == 200
        clock.advance(19.5)
        assert client.get("/namespaces", headers=bearer(token)).status_code == 200
        clock.advance(0.5)
        expired = client.get("/namespaces", headers=bearer(token))
        assert expired.status_code == 401
        assert expired.json() == {
            "error": "INVALID_TOKEN",
            "message": "the bearer token has expired",
        }
        fresh = grant(client).json()["access_token"]
        assert client.get("/namespaces", headers=bearer(fresh)).status_code == 200

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
            lambda token: token.split(".")[0] + ".e30." + token.split(".")[2],
            lambda token: "header.payload.signature",
            lambda token: token + ".extra",
        ],
        ids=["signature", "payload", "made-up", "four-parts"],
    )
    def test_tokens_it_did_not_issue_are_invalid(
        self, simulate_v1: SimulatorFactory, world: World, tamper: Any
    ) -> None:
        _, client = simulate_v1(world, **CLIENT)
        token = grant(client).json()["access_token"]
        response = client.get("/namespaces", headers=bearer(tamper(token)))
        assert response.status_code == 401
        assert response.json()["error"] == "INVALID_TOKEN"

    def test_another_simulators_token_is_invalid(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, first = simulate_v1(world, **CLIENT)
        _, second = simulate_v1(world, **CLIENT)
        token = grant(first).json()["access_token"]
        assert second.get("/namespaces", headers=bearer(token)).status_code == 401

    def test_static_token_works_next_to_oauth(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate_v1(world, token="static", **CLIENT)
        assert client.get("/namespaces", headers=bearer("static")).status_code == 200

    def test_org_era_api_takes_issued_tokens_too(
        self, simulate: SimulatorFactory, world: World
    ) -> None:
        _, client = simulate(world, **CLIENT)
        token = grant(client).json()["access_token"]
        assert client.get("/orgs", headers=bearer(token)).status_code == 200
        assert client.get("/orgs").status_code == 401

    def test_token_requests_are_not_api_requests(
        self, simulate_v1: SimulatorFactory, world: World
    ) -> None:
        api, client = simulate_v1(world, **CLIENT)
        token = grant(client).json()["access_token"]
        grant(client, client_secret="wrong")
        client.get("/namespaces", headers=bearer(token))
        stats = api.stats
        assert (stats.token_requests, stats.api_requests, stats.total_requests) == (2, 1, 3)


@pytest.mark.parametrize(
    "changes",
    [{"oauth_client_id": "x"}, {"oauth_client_secret": "x"}, {**CLIENT, "token_lifetime": 0}],
    ids=["id-only", "secret-only", "no-lifetime"],
)
def test_incomplete_oauth_options_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        SimulatorOptions(**changes)
