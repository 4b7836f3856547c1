"""Run Backstage's own entity validators (validate.mjs, @backstage/catalog-model) from tests.

Needs `node` on PATH and the pinned packages installed: `npm ci --prefix tests/backstage`.
Tests call `skip_unless_backstage_validator()` first, then `run_backstage_validator(lines)`;
under CI a missing validator fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

BACKSTAGE_DIR = Path(__file__).resolve().parent
VALIDATOR = BACKSTAGE_DIR / "validate.mjs"
CATALOG_MODEL = BACKSTAGE_DIR / "node_modules" / "@backstage" / "catalog-model" / "package.json"
INSTALL_COMMAND = "npm ci --prefix tests/backstage"
TIMEOUT_SECONDS = 60.0


def backstage_validator_missing() -> str | None:
    """Why the validator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH; Backstage's validators need Node.js"
    if not CATALOG_MODEL.is_file():
        return f"@backstage/catalog-model is not installed; run `{INSTALL_COMMAND}`"
    return None


def skip_unless_backstage_validator() -> None:
    """Skip when the validator cannot run; under CI (`CI=true`) fail instead, so a missing
    install step cannot pass for a green run."""
    reason = backstage_validator_missing()
    if reason and os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must run Backstage's validators: {reason}")
    if reason:
        pytest.skip(reason)


def run_backstage_validator(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Validate NDJSON entity lines; return the problems found (empty when all pass).

    Each problem is `{"line", "ref", "check", "message"}` with 1-based `line`. Raises
    RuntimeError when the validator itself fails rather than reporting problems.
    """
    stdin = "".join(f"{line.rstrip(chr(10))}\n" for line in lines)
    completed = subprocess.run(
        ["node", str(VALIDATOR)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
        cwd=BACKSTAGE_DIR,
    )
    problems = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode not in (0, 1) or (completed.returncode == 1) != bool(problems):
        raise RuntimeError(
            f"validate.mjs exited {completed.returncode}: {completed.stderr.strip()[:2000]}"
        )
    return problems


def entity_lines(bodies: Iterable[Mapping[str, Any]]) -> list[str]:
    """Entity bodies as NDJSON lines, the way `choreo-ingest export --format ndjson` writes them."""
    return [json.dumps(body, sort_keys=True, ensure_ascii=False) for body in bodies]
