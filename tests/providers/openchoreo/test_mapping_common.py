"""The values both API generations' mappings share (`mapping_common`)."""

from __future__ import annotations

from typing import Any

import pytest

from choreo_ingest.providers.openchoreo.mapping_common import port


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        (8080, "8080"),
        (" 08080 ", "8080"),
        (65535, "65535"),
        (None, None),
        (True, None),
        ("http", None),
        (0, None),
        (-1, None),
        (65536, None),
        ("99999", None),
        ("9" * 5000, None),
        ("٨٠", None),
    ],
    ids=[
        "int",
        "digits",
        "highest",
        "missing",
        "bool",
        "word",
        "zero",
        "negative",
        "too-high",
        "too-high-digits",
        "past-ints-digit-limit",
        "non-ascii-digits",
    ],
)
def test_a_port_is_a_number_from_1_to_65535_else_none(value: Any, annotation: str | None) -> None:
    """0, a negative or a 6-digit port went into the annotation and the generated definition;
    a string of 5,000 digits failed the page (`int()`'s digit limit), for ever."""
    assert port(value) == annotation
