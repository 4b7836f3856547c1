"""An example choreo-ingest provider: Backstage entities from a CSV file.

Installed, it registers itself in the `choreo_ingest.providers` entry point group as `csv`
(see pyproject.toml); choreo-ingest then runs it when the config lists it:

    providers:
      - openchoreo
      - name: csv
        path: services.csv              # relative to the config file
        pageSize: 100                   # rows per page (default: incremental.chunkSize)
        owner: group:default/platform   # for rows with no owner (default: mapping.defaultOwner)
        lifecycle: experimental         # for rows with none (default: mapping.lifecycle)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from choreo_ingest import ConfigError
from choreo_ingest.config import Config
from choreo_ingest_csv_provider.entities import Defaults, row_entity
from choreo_ingest_csv_provider.provider import CsvProvider

PROVIDER_NAME = "csv"
OPTIONS = ("path", "pageSize", "owner", "lifecycle")

__all__ = ["OPTIONS", "PROVIDER_NAME", "CsvProvider", "Defaults", "create_provider", "row_entity"]


def create_provider(config: Config) -> CsvProvider:
    """The entry point: build the provider from its options in the config."""
    options: Mapping[str, Any] = config.provider_options.get(PROVIDER_NAME) or {}
    where = f"providers.{PROVIDER_NAME}"
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} (expected: {', '.join(OPTIONS)})", path=where
        )
    return CsvProvider(
        path=_csv_path(options.get("path"), config.source, where),
        page_size=_page_size(options.get("pageSize", config.incremental.chunk_size), where),
        defaults=Defaults(
            owner=_text(options.get("owner", config.mapping.default_owner), f"{where}.owner"),
            lifecycle=_text(
                options.get("lifecycle", config.mapping.lifecycle), f"{where}.lifecycle"
            ),
        ),
        name=PROVIDER_NAME,
    )


def _csv_path(value: object, source: Path | None, where: str) -> Path:
    """The CSV file; a relative path is relative to the config file, as every path there is."""
    path = Path(_text(value, f"{where}.path")).expanduser()
    if not path.is_absolute() and source is not None:
        path = source.parent / path
    return path


def _page_size(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"expected a whole number above 0, got {value!r}", path=f"{where}.pageSize"
        )
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("expected a non-empty string", path=where)
    return value.strip()
