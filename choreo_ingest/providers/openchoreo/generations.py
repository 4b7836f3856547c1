"""The OpenChoreo API generations choreo-ingest speaks, newest first (the order `auto` tries)."""

from __future__ import annotations

from choreo_ingest.config import Config
from choreo_ingest.errors import PermanentError
from choreo_ingest.providers.openchoreo.api_orgs import ORGS
from choreo_ingest.providers.openchoreo.api_v1 import V1
from choreo_ingest.providers.openchoreo.generation import Generation

GENERATIONS: tuple[Generation, ...] = (V1, ORGS)


def generation_named(name: object) -> Generation:
    for generation in GENERATIONS:
        if generation.name == name:
            return generation
    known = ", ".join(generation.name for generation in GENERATIONS)
    raise PermanentError(f"unknown OpenChoreo API generation {name!r} (known: {known})")


def configured_api(config: Config) -> str:
    """`openchoreo.api`: `auto`, or the name of one generation."""
    return config.openchoreo.api
