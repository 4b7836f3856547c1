"""`choreo-ingest demo`: the simulator on a free loopback port; `run --force` until a cycle ends.

The simulator speaks OpenChoreo v1 (what every release serves) and hands out OAuth2 tokens by
client credentials, as a real installation does; `--api orgs` shows the organization-era API.
The state lives in a directory the user names (`--dir`), else in a new temporary one that stays
after the demo (the user is told where): every demo leaves its state file to look at.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from choreo_ingest.clock import Clock
from choreo_ingest.config import (
    AuthConfig,
    Config,
    IncrementalConfig,
    OAuthConfig,
    OpenChoreoConfig,
)
from choreo_ingest.errors import ChoreoIngestError, ConfigError
from choreo_ingest.invocation import RunResult, migrate, run_once
from choreo_ingest.reporting import reading
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server

PROVIDER = "openchoreo"
DEMO_CLIENT_ID = "choreo-ingest-demo"
TOKEN_ENDPOINT = "/oauth2/token"  # noqa: S105 - a URL path, not a secret
MAX_RUNS = 1000
"""A demo world finishes in a few runs; this only stops a broken one from looping forever."""
STATE_FILE = "state.db"
TEMPORARY_PREFIX = "choreo-ingest-demo-"


@dataclass(frozen=True)
class DemoPlace:
    """Where a demo keeps its state: `state_path`, in `directory`."""

    state_path: Path
    directory: Path
    temporary: bool
    """The demo made `directory` under the system's temporary directory; it stays afterwards."""


def demo_place(directory: Path | None = None, state_path: Path | None = None) -> DemoPlace:
    """`directory/state.db` (the directory made if missing), `state_path` as given, else a
    state file in a new temporary directory. `directory` and `state_path` exclude each other."""
    if directory is not None and state_path is not None:
        raise ConfigError("give --dir or --db, not both", path="--dir")
    if state_path is not None:
        return DemoPlace(state_path, state_path.parent, temporary=False)
    if directory is None:
        made = Path(tempfile.mkdtemp(prefix=TEMPORARY_PREFIX))
        return DemoPlace(made / STATE_FILE, made, temporary=True)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file in the way, or not ours to write
        raise ConfigError(
            f"cannot create {directory}: {error.strerror or error}", path="--dir"
        ) from error
    return DemoPlace(directory / STATE_FILE, directory, temporary=False)


@dataclass(frozen=True)
class WorldSize:
    orgs: int = 3
    projects: int = 4
    components: int = 5
    seed: int = 0
    api: str = "v1"


@dataclass(frozen=True)
class DemoProgress:
    runs: int
    phase: str
    entities: dict[str, int]
    requests: int
    """The requests this demo's runs sent (a state a demo left earlier counted its own)."""
    state: str


@dataclass(frozen=True)
class DemoResult:
    place: DemoPlace
    base_url: str
    runs: int
    cycle_completed: bool
    entities: dict[str, int]
    requests: int
    """The requests this demo's runs sent, not those of an earlier demo in the same state."""
    last_run: RunResult

    @property
    def state_path(self) -> Path:
        return self.place.state_path

    def document(self) -> dict[str, Any]:
        """What `demo --json` prints."""
        return {
            "stateFile": str(self.place.state_path),
            "directory": str(self.place.directory),
            "temporaryDirectory": self.place.temporary,
            "simulator": self.base_url,
            "runs": self.runs,
            "cycleCompleted": self.cycle_completed,
            "entities": self.entities,
            "requests": self.requests,
        }


def run_demo(
    size: WorldSize,
    place: DemoPlace,
    clock: Clock,
    *,
    burst_length: float = 2.0,
    on_progress: Callable[[DemoProgress], None] | None = None,
) -> DemoResult:
    world = World.generate(size.orgs, size.projects, size.components, size.seed)
    secret = secrets.token_urlsafe(24)  # a fresh client secret: nothing to configure, or to leak
    options = SimulatorOptions(
        api="v1" if size.api == "v1" else "orgs",
        oauth_client_id=DEMO_CLIENT_ID,
        oauth_client_secret=secret,
    )
    api = SimulatorApi(world, options)
    state_path = place.state_path
    migrate(state_path)  # as the first run would: the counter below is then there to read
    counted_before = _requests_counted(state_path)
    with start_server(api) as server:
        config = _demo_config(server.url, state_path, burst_length, secret)
        runs = 0
        while True:
            result = run_once(config, state_path, clock, force=True)
            if result.outcome == "interrupted":  # Ctrl-C or SIGTERM: the last page is saved
                raise KeyboardInterrupt
            runs += 1
            progress = _progress(state_path, runs, counted_before)
            if on_progress is not None:
                on_progress(progress)
            outcome = result.providers[0]
            if outcome.error:
                raise ChoreoIngestError(f"demo run {runs} failed: {outcome.error}")
            if outcome.cycle_completed or runs >= MAX_RUNS:
                break
        return DemoResult(
            place=place,
            base_url=server.url,
            runs=runs,
            cycle_completed=result.providers[0].cycle_completed,
            entities=progress.entities,
            requests=progress.requests,
            last_run=result,
        )


def _demo_config(base_url: str, state_path: Path, burst_length: float, secret: str) -> Config:
    incremental = replace(IncrementalConfig(), burst_length=burst_length, burst_interval=1.0)
    server_root = base_url.rstrip("/").removesuffix("/api/v1")
    oauth = OAuthConfig(
        token_url=server_root + TOKEN_ENDPOINT, client_id=DEMO_CLIENT_ID, client_secret=secret
    )
    return Config(
        openchoreo=OpenChoreoConfig(
            base_url=base_url, auth=AuthConfig(oauth=oauth), incremental=incremental
        ),
        state_path=state_path,
        providers=(PROVIDER,),
    )


def _requests_counted(state_path: Path) -> int:
    """The provider's stored request counter: every request since the state was made."""
    with reading(state_path) as store:
        return store.counters(PROVIDER).get("requests", 0)


def _progress(state_path: Path, runs: int, counted_before: int) -> DemoProgress:
    """Where the demo stands after `runs` runs; `counted_before`: the request counter as the
    demo found it."""
    with reading(state_path) as store:
        record = store.load_provider(PROVIDER)
        phase = "done" if record.cursor is None else str(record.cursor.get("phase", "?"))
        return DemoProgress(
            runs=runs,
            phase=phase,
            entities=store.entity_counts(PROVIDER),
            requests=store.counters(PROVIDER).get("requests", 0) - counted_before,
            state=record.state.value,
        )
