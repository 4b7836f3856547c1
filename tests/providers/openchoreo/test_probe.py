"""The provider's probe (`OpenChoreoProvider.probe`): what the drain reads of the API itself when
an event's re-read failed and no event after it read: one item of the root listing of the API
the server speaks. Against a fake server behind `httpx.MockTransport`."""

from __future__ import annotations

import httpx
import pytest

from choreo_ingest.errors import PermanentError, TransientError
from choreo_ingest.providers.openchoreo import OpenChoreoProvider

NAMESPACE = {"metadata": {"name": "acme"}}
ORG = {"name": "acme"}


class FakeV1:
    """Answers each route below `/api/v1` (path and query) from `routes`, else a proxy's 404;
    records what was asked."""

    def __init__(self, routes: dict[str, httpx.Response]) -> None:
        self.routes = routes
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = request.url.raw_path.decode().removeprefix("/api/v1")
        self.asked.append(route)
        return self.routes.get(route, httpx.Response(404, text="404 page not found\n"))


def page(*items: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"items": list(items), "pagination": {}})


def probe(fake_engine, config_for, clock, server: FakeV1, api: str, spoken: str | None) -> None:
    config = config_for(api=api)
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(server))
    engine = fake_engine(provider, clock, config)
    if spoken is not None:
        engine.facts["api"] = spoken
    with provider.around(engine.burst) as context:
        provider.probe(context)


@pytest.mark.parametrize(
    ("api", "spoken", "asked"),
    [
        ("v1", None, ["/namespaces?limit=1"]),
        ("auto", "v1", ["/namespaces?limit=1"]),
        ("orgs", None, ["/orgs?limit=1&pagination=cursor"]),
        ("auto", "orgs", ["/orgs?limit=1&pagination=cursor"]),
    ],
    ids=["v1", "auto-v1", "orgs", "auto-orgs"],
)
def test_it_reads_one_item_of_the_root_listing_of_the_api_spoken(
    fake_engine, config_for, clock, api: str, spoken: str | None, asked: list[str]
) -> None:
    server = FakeV1(
        {
            "/namespaces?limit=1": page(NAMESPACE),
            "/orgs?limit=1&pagination=cursor": httpx.Response(
                200, json={"success": True, "data": {"items": [ORG], "nextCursor": ""}}
            ),
        }
    )

    probe(fake_engine, config_for, clock, server, api, spoken)

    assert server.asked == asked


def test_under_auto_before_a_cycle_said_which_the_first_root_there_answers(
    fake_engine, config_for, clock
) -> None:
    """An org-era server answers 404 to `/namespaces`: its `/orgs` is asked, one item too."""
    server = FakeV1(
        {
            "/namespaces?limit=1": httpx.Response(404, text="404 page not found\n"),
            "/orgs?limit=1&pagination=cursor": httpx.Response(
                200, json={"success": True, "data": {"items": [ORG], "nextCursor": ""}}
            ),
        }
    )

    probe(fake_engine, config_for, clock, server, "auto", None)

    assert server.asked == ["/namespaces?limit=1", "/orgs?limit=1&pagination=cursor"]


def test_an_api_that_fails_says_so(fake_engine, config_for, clock) -> None:
    failing = httpx.Response(503, json={"error": "unavailable", "code": "INTERNAL_ERROR"})
    server = FakeV1({"/namespaces?limit=1": failing})

    with pytest.raises(TransientError):
        probe(fake_engine, config_for, clock, server, "v1", None)

    assert set(server.asked) == {"/namespaces?limit=1"}  # the client's own retries


@pytest.mark.parametrize(
    ("api", "spoken"), [("v1", None), ("auto", "v1"), ("auto", None)], ids=["v1", "spoken", "auto"]
)
def test_a_root_listing_that_is_not_there_is_no_answer(
    fake_engine, config_for, clock, api: str, spoken: str | None
) -> None:
    """A 404 (a proxy whose API is down, a wrong `baseUrl`) is no answer of the API's: with an
    API known, at once; under `auto` with none known, once no root is there."""
    server = FakeV1({})

    with pytest.raises(PermanentError) as caught:
        probe(fake_engine, config_for, clock, server, api, spoken)

    assert caught.value.status == 404
    assert len(set(server.asked)) == (2 if (api, spoken) == ("auto", None) else 1)
