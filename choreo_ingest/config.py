"""Configuration: YAML -> frozen dataclasses, validated; every error names its key path.

Durations are seconds except `restLength`, which is minutes (as in the original provider).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PROVIDERS = ("openchoreo",)
DEFAULT_OWNER = "group:default/guests"
DEFAULT_LIFECYCLE = "production"


@dataclass(frozen=True)
class IncrementalConfig:
    burst_length: float = 10.0
    burst_interval: float = 30.0
    rest_length: float = 30 * 60.0  # seconds here; minutes in YAML
    chunk_size: int = 50
    backoff: tuple[float, ...] = (30.0, 60.0, 300.0, 1800.0)
    max_attempts: int = 5
    reject_removals_above_percentage: float | None = None
    reject_empty_source_collections: bool = True
    max_concurrent_requests: int = 5
    max_requests_per_second: float | None = None
    request_timeout: float = 10.0


@dataclass(frozen=True)
class OpenChoreoConfig:
    base_url: str | None = None
    token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)


@dataclass(frozen=True)
class MappingConfig:
    default_owner: str = DEFAULT_OWNER
    lifecycle: str = DEFAULT_LIFECYCLE


@dataclass(frozen=True)
class Config:
    openchoreo: OpenChoreoConfig = field(default_factory=OpenChoreoConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    state_path: Path | None = None
    metrics_textfile: Path | None = None
    catalog_directory: Path | None = None
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Options for each provider by name (`providers: [{name: csv, path: ...}]`)."""
    source: Path | None = None
    """The file this config was read from; None when built in code or absent."""

    @property
    def incremental(self) -> IncrementalConfig:
        return self.openchoreo.incremental
