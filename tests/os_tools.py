"""Tools from the OS packages that some tests run (`systemd-analyze`, `promtool`)."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def require_tool(name: str, package: str) -> str:
    """The tool's path; skip when it is missing, but under CI (`CI=true`) fail instead: .ci/run
    installs the Debian package."""
    found = shutil.which(name)
    if found:
        return found
    return missing(f"{name} is not on PATH; install the Debian package `{package}`")


def missing(reason: str) -> NoReturn:
    """Skip a test whose tool is missing, or under CI (`CI=true`) fail it: CI runs them all."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)
