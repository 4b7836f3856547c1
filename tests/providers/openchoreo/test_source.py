"""What the OpenChoreo provider says it reads (`SourceNamingProvider.source`): one server however
its address is spelt, and nothing of an address that is not the server's."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreo_ingest.api_address import source_address
from choreo_ingest.providers.base import SourceNamingProvider
from choreo_ingest.providers.openchoreo.traversal import OpenChoreoProvider

from fakes import make_config


@pytest.mark.parametrize(
    "spelling",
    [
        "https://api.choreo.test",
        "https://api.choreo.test/",
        "https://api.choreo.test/api/v1",
        "https://api.choreo.test/api/v1/",
        "HTTPS://API.Choreo.Test:443/api/v1",
        " https://api.choreo.test ",
        "https://api.choreo.test//api/v1//",
        "https://api.choreo.test//",
    ],
)
def test_spellings_of_one_server_are_one_source(spelling: str) -> None:
    assert source_address(spelling) == "https://api.choreo.test/api/v1"


@pytest.mark.parametrize(
    ("other", "source"),
    [
        ("http://api.choreo.test", "http://api.choreo.test/api/v1"),
        ("https://api.choreo.test:8443", "https://api.choreo.test:8443/api/v1"),
        ("https://choreo.test/platform-b", "https://choreo.test/platform-b/api/v1"),
        ("https://choreo.test//platform-b//", "https://choreo.test/platform-b/api/v1"),
        ("http://[::1]:8080", "http://[::1]:8080/api/v1"),
    ],
)
def test_another_scheme_port_or_path_is_another_source(other: str, source: str) -> None:
    assert source_address(other) == source


def test_what_is_not_the_servers_address_is_left_out() -> None:
    """User information, a query or a fragment could hold a secret; the source is shown by
    `status --json` and said in a log line."""
    shown = source_address("https://robot:s3cret@api.choreo.test/api/v1?token=t0k#frag")

    assert shown == "https://api.choreo.test/api/v1"


def test_the_provider_names_its_base_url(tmp_path: Path) -> None:
    provider = OpenChoreoProvider(make_config(tmp_path))

    assert isinstance(provider, SourceNamingProvider)
    assert provider.source == "http://openchoreo.test/api/v1"
    assert provider.source_key == "openchoreo.baseUrl"
