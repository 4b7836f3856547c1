"""The built-in OpenChoreo provider: HTTP client, three-phase traversal, entity mapping."""

from __future__ import annotations

from choreo_ingest.config import Config
from choreo_ingest.providers.openchoreo.traversal import OpenChoreoProvider

__all__ = ["OpenChoreoProvider", "create_provider"]


def create_provider(config: Config) -> OpenChoreoProvider:
    """The factory the provider registry calls for `openchoreo`."""
    return OpenChoreoProvider(config)
