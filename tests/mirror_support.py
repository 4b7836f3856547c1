"""What the YAML mirror holds, and what it should hold, for tests of the mirror on real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from choreo_ingest.reporting import iter_export


def mirrored(directory: Path) -> dict[str, Any]:
    """What Backstage's glob reads, relative path -> parsed YAML (pathlib's `*` matches hidden
    names too, node's does not)."""
    return {
        path.relative_to(directory).as_posix(): yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*/*/*.yaml"))
    }


def exported(state_path: Path) -> dict[str, Any]:
    """What `choreo-ingest export` prints, keyed by where the mirror should put each entity."""
    return {
        f"{body['kind'].lower()}/{body['metadata']['namespace']}/{body['metadata']['name']}.yaml": (
            body
        )
        for body in iter_export(state_path)
    }
