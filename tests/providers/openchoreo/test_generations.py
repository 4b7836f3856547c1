"""The generations `openchoreo.api` names, in the order `auto` tries them."""

from __future__ import annotations

import pytest

from choreo_ingest.errors import PermanentError
from choreo_ingest.providers.openchoreo.generations import NAMES, generation_named, generations


def test_auto_tries_the_newest_generation_first() -> None:
    assert NAMES == ("v1", "orgs")
    assert [generation.name for generation in generations()] == ["v1", "orgs"]


def test_the_generation_a_server_spoke_comes_first() -> None:
    assert [generation.name for generation in generations(first="orgs")] == ["orgs", "v1"]
    assert [generation.name for generation in generations(first="v9")] == ["v1", "orgs"]


@pytest.mark.parametrize("name", NAMES)
def test_each_name_gives_its_generation(name: str) -> None:
    assert generation_named(name).name == name


@pytest.mark.parametrize("name", ["v2", None, 1, ""])
def test_an_unknown_name_is_refused_naming_the_known_ones(name: object) -> None:
    known = r"unknown OpenChoreo API generation .*\(known: v1, orgs\)"
    with pytest.raises(PermanentError, match=known):
        generation_named(name)
