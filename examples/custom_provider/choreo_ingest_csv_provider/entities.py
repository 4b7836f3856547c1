"""One CSV row -> one Backstage entity (`backstage.io/v1alpha1`), or a reason to reject the row."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from choreo_ingest import Entity

API_VERSION = "backstage.io/v1alpha1"
MANAGED_BY_LOCATION = "backstage.io/managed-by-location"
MANAGED_BY_ORIGIN_LOCATION = "backstage.io/managed-by-origin-location"
SOURCE_ROW = "choreo-ingest.example/csv-row"

KINDS = {kind.lower(): kind for kind in ("Component", "API", "Resource", "System", "Domain")}
"""The kinds a row may name (any case), spelled as Backstage spells them."""

# Backstage's rules: a name is up to 63 of [A-Za-z0-9-_.], starting and ending alphanumeric;
# a namespace is a DNS label.
_NAME = re.compile(r"[A-Za-z0-9](?:[-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_NAMESPACE = re.compile(r"(?=.{1,63}$)[a-z0-9]+(?:-[a-z0-9]+)*")


class RowRejected(Exception):
    """The row cannot become a valid entity; the provider skips it and says why."""


@dataclass(frozen=True)
class Defaults:
    owner: str
    lifecycle: str


def row_entity(
    row: Mapping[str, str], defaults: Defaults, provider: str, row_number: int
) -> Entity:
    """The entity a row describes. Columns: kind, name (required), namespace, owner, type,
    lifecycle, system, domain, description, definition (optional; empty counts as absent)."""
    value = {key: text.strip() for key, text in row.items() if text and text.strip()}
    kind = KINDS.get(value.get("kind", "").lower())
    if kind is None:
        raise RowRejected(
            f"kind {value.get('kind', '')!r} is not one of {', '.join(KINDS.values())}"
        )
    name = value.get("name", "")
    if not _NAME.fullmatch(name):
        raise RowRejected(f"name {name!r} is not a valid Backstage name")
    namespace = value.get("namespace", "default")
    if not _NAMESPACE.fullmatch(namespace):
        raise RowRejected(f"namespace {namespace!r} is not a valid Backstage namespace")

    location = f"provider:{provider}"
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "annotations": {
            MANAGED_BY_LOCATION: location,
            MANAGED_BY_ORIGIN_LOCATION: location,
            SOURCE_ROW: str(row_number),
        },
    }
    if "description" in value:
        metadata["description"] = value["description"]
    body = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": _spec(kind, name, value, defaults),
    }
    return Entity(kind=kind, namespace=namespace, name=name, body=body)


def _spec(kind: str, name: str, value: Mapping[str, str], defaults: Defaults) -> dict[str, Any]:
    owner = value.get("owner", defaults.owner)
    lifecycle = value.get("lifecycle", defaults.lifecycle)
    if kind == "Component":
        spec = {"type": value.get("type", "service"), "lifecycle": lifecycle, "owner": owner}
    elif kind == "API":
        spec = {
            "type": value.get("type", "openapi"),
            "lifecycle": lifecycle,
            "owner": owner,
            # Backstage requires a non-empty definition.
            "definition": value.get("definition", f"{name}: no definition given in the CSV file"),
        }
    elif kind == "Resource":
        spec = {"type": value.get("type", "resource"), "owner": owner}
    elif kind == "System":
        spec = {"owner": owner}
        if "domain" in value:
            spec["domain"] = value["domain"]
        return spec
    else:  # Domain
        return {"owner": owner}
    if "system" in value:
        spec["system"] = value["system"]
    return spec
