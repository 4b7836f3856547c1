"""`choreo-ingest check`: is everything in place for `run`? Each check says what is wrong."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config, IncrementalConfig, require_api
from choreo_ingest.errors import ChoreoIngestError
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient, default_user_agent


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(config: Config, state_path: Path, clock: Clock) -> list[Check]:
    checks = [Check("config", True, str(config.source or "no config file: defaults"))]
    checks += [Check("config", False, warning) for warning in config.warnings]
    if "openchoreo" in config.providers:
        api, latency = _api_check(config, clock)
        checks.append(api)
        if latency is not None:
            checks.append(page_time_check(latency, config.incremental))
    checks.append(_writable("state.path", state_path))
    if config.metrics_textfile is not None:
        checks.append(_writable("metrics.textfile", config.metrics_textfile))
    if config.catalog_directory is not None:
        checks.append(_creatable("catalog.directory", config.catalog_directory))
    return checks


def _api_check(config: Config, clock: Clock) -> tuple[Check, float | None]:
    """Reachability, auth and cursor support: `GET /orgs?limit=1`; and the request latency, from
    a second such request on the connection the first one opened."""
    try:
        require_api(config)
        deadline = clock.monotonic() + 2 * config.incremental.request_timeout
        with OpenChoreoClient(
            config.openchoreo, clock=clock, deadline=deadline, user_agent=default_user_agent()
        ) as client:
            page = client.list_page("/orgs", limit=1, cursor=None)
            started = clock.monotonic()
            client.list_page("/orgs", limit=1, cursor=None)
            latency = clock.monotonic() - started
    except ChoreoIngestError as error:
        return Check("openchoreo", False, str(error)), None
    more = "more to list" if page.next_cursor else "listing complete"
    check = Check(
        "openchoreo",
        True,
        f"{config.openchoreo.base_url}: reachable, authorized, cursor pagination supported "
        f"({len(page.items)} org on the first page, {more})",
    )
    return check, latency


def page_time_check(latency: float, settings: IncrementalConfig) -> Check:
    """Does a page of components fit in a burst at this request latency? A burst that commits no
    page fails, and the next one fails the same way, so a page should take at most half of it.

    A components page is one list call, then `chunkSize` detail calls `maxConcurrentRequests` at a
    time, and no faster than `maxRequestsPerSecond`.
    """
    chunk = settings.chunk_size
    rounds = 1 + math.ceil(chunk / settings.max_concurrent_requests)
    seconds = rounds * latency
    if settings.max_requests_per_second:
        seconds = max(seconds, (chunk + 1) / settings.max_requests_per_second)
    estimate = (
        f"a page of {chunk} components takes about {seconds:.1f} s "
        f"at {latency * 1000:.0f} ms per request"
    )
    burst = settings.burst_length
    if seconds <= burst / 2:
        return Check("openchoreo.incremental", True, f"{estimate}; burstLength is {burst:g} s")
    return Check(
        "openchoreo.incremental",
        False,
        f"{estimate}, more than half of burstLength ({burst:g} s): bursts may end "
        "before any page is committed; raise openchoreo.incremental.burstLength or lower "
        "openchoreo.incremental.chunkSize",
    )


def _creatable(key: str, directory: Path) -> Check:
    """A directory that exists and is writable, or could be created below one that is."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check(key, False, f"{directory}: {existing} is not a writable directory")
    return Check(key, True, f"{directory}: writable")


def _writable(key: str, path: Path) -> Check:
    directory = path.parent
    if not directory.is_dir():
        return Check(key, False, f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        return Check(key, False, f"{path}: directory {directory} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        return Check(key, False, f"{path}: not writable")
    return Check(key, True, f"{path}: writable")
