"""Generated API definitions are written with libyaml's emitter when PyYAML has it; the text
must be exactly what the pure-Python emitter writes, so content hashes do not change."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from choreo_ingest.config import MappingConfig
from choreo_ingest.providers.openchoreo.entities import component_entities

NAMES = ["plain", "dots", "quotes-colon-hash", "non-ascii", "folded", "dash-colon"]
AWKWARD = [
    ("cart", "http"),
    ("cart", "REST_api.v1"),
    ("cart", "my endpoint: 'quoted' \"twice\" # not a comment"),
    ("zahlungsdienst-für-bestellungen", "注文サービス"),
    ("cart", "an-endpoint-name-that-keeps-going-and-going-well-past-eighty-characters-" * 2),
    ("cart", "- leading dash, trailing colon:"),
]


def definition(component: str, endpoint: str, endpoint_type: str) -> str:
    detail: dict[str, Any] = {
        "name": "cart",
        "displayName": component,
        "type": "deployment/service",
        "workload": {"endpoints": {endpoint: {"type": endpoint_type, "port": 8080}}},
    }
    entities = component_entities(detail, "acme", "shop", MappingConfig(), "openchoreo")
    text = entities[1].body["spec"]["definition"]
    assert isinstance(text, str)
    return text


@pytest.mark.parametrize("endpoint_type", ["REST", "Websocket"], ids=["openapi", "asyncapi"])
@pytest.mark.parametrize(
    ("component", "endpoint"),
    AWKWARD,
    ids=NAMES,
)
def test_generated_definition_is_what_the_pure_python_emitter_writes(
    component: str, endpoint: str, endpoint_type: str
) -> None:
    text = definition(component, endpoint, endpoint_type)
    document = yaml.safe_load(text)
    assert endpoint.strip() in document["info"]["title"]
    assert text == yaml.dump(document, Dumper=yaml.SafeDumper, sort_keys=False, allow_unicode=True)
