"""Shared pieces of the benchmarks and the soak: measured child processes, the simulator process,
config files, and the result table.

Every figure about the client is the child process's own cost, read with `os.wait4` by
bench/spawner.py: user and system CPU, wall time and peak RSS (`ru_maxrss`).
"""

from __future__ import annotations

import atexit
import compileall
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH_DIR = Path(__file__).resolve().parent
PROVIDER = "openchoreo"

# The parsed copies of the benchmarks' many short-lived config files (config_file.py) go to a
# directory of this run's, not to ~/.cache/choreo-ingest, where each would stay.
_CACHE = tempfile.TemporaryDirectory(prefix="choreo-bench-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE.name
os.environ.pop("CACHE_DIRECTORY", None)


def compile_package() -> None:
    """Write choreo_ingest's bytecode, as `pip install` does: a measured process must not compile
    the package from source (an editable install under PYTHONDONTWRITEBYTECODE=1 would, every
    time: about 0.06 s of CPU per process here)."""
    import choreo_ingest

    compileall.compile_dir(Path(choreo_ingest.__file__).parent, quiet=1)


def cli() -> list[str]:
    """The command that runs choreo-ingest: this interpreter's entry script, else `python -m`.

    The script next to `sys.executable` is preferred to PATH, where a version manager's shim
    (pyenv) would add its own start-up to every measurement."""
    script = Path(sys.executable).with_name("choreo-ingest")
    if script.exists():
        return [str(script)]
    found = shutil.which("choreo-ingest")
    return [found] if found else [sys.executable, "-m", "choreo_ingest"]


@dataclass(frozen=True)
class Measured:
    """A finished child process and what it cost."""

    argv: list[str]
    returncode: int
    wall: float
    user: float
    sys: float
    maxrss_kib: int
    stdout: str
    stderr: str
    killed: bool = False
    """True when `kill_after` fired and SIGKILL ended the process."""

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    def json(self) -> Any:
        return json.loads(self.stdout)

    def check(self, *codes: int) -> Measured:
        if self.returncode not in (codes or (0,)):
            raise RuntimeError(
                f"{' '.join(self.argv)} exited {self.returncode}:\n{self.stderr[-3000:]}"
            )
        return self


class _Spawner:
    """bench/spawner.py, started once: it starts every measured child (see its docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = subprocess.Popen(
                    [sys.executable, str(BENCH_DIR / "spawner.py")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                atexit.register(self._process.kill)
            assert self._process.stdin is not None
            assert self._process.stdout is not None
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            answer: dict[str, Any] = json.loads(self._process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"spawner: {answer['error']} (running {request['argv']})")
        return answer


_SPAWNER = _Spawner()


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    timeout: float = 3600.0,
    kill_after: float | None = None,
) -> Measured:
    """Run `argv` to its end and read its own rusage; `kill_after` seconds sends SIGKILL."""
    answer = _SPAWNER.run(
        {
            "argv": list(argv),
            "cwd": None if cwd is None else str(cwd),
            "env": env,
            "input": input_text,
            "timeout": timeout,
            "kill_after": kill_after,
        }
    )
    return Measured(argv=list(argv), **answer)


@dataclass
class SimulatorProcess:
    """`choreo-ingest simulate serve --control` on a free loopback port, as its own process.

    `api` is the generation it serves, always passed as `--api`: "v1" (the simulator's default,
    every OpenChoreo release) or "orgs" (the organization-era API the first benchmarks measured).
    With `oauth_client_id` and `oauth_client_secret` it serves `POST /oauth2/token` and requires
    its tokens, which live `token_lifetime` seconds."""

    orgs: int = 2
    projects: int = 4
    components: int = 25
    seed: int = 0
    error_rate: float = 0.0
    rate_limit: float | None = None
    cursor_ttl: float = 300.0
    latency: float = 0.0
    hidden_fraction: float = 0.05
    api: str = "v1"
    endpoints_max: int | None = None
    """`--endpoints-max` (None: the simulator's default, 3); the org-era generator draws each
    component's endpoint count uniformly from 0..endpoints_max, so 1 gives half of them one."""
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    token_lifetime: int = 3600
    url: str = ""
    _process: subprocess.Popen[str] | None = field(default=None, repr=False)
    _control_token: str | None = field(default=None, repr=False)
    _stderr: list[str] = field(default_factory=list, repr=False)

    def start(self) -> SimulatorProcess:
        argv = [
            *cli(), "simulate", "serve", "--port", "0", "--control",
            "--orgs", str(self.orgs), "--projects", str(self.projects),
            "--components", str(self.components), "--seed", str(self.seed),
            "--error-rate", str(self.error_rate), "--cursor-ttl", str(self.cursor_ttl),
            "--latency", str(self.latency), "--hidden-fraction", str(self.hidden_fraction),
            "--api", self.api,
        ]  # fmt: skip
        if self.rate_limit is not None:
            argv += ["--rate-limit", str(self.rate_limit)]
        if self.endpoints_max is not None:
            argv += ["--endpoints-max", str(self.endpoints_max)]
        env = None
        if self.oauth_client_id is not None:
            argv += ["--oauth-client-id", self.oauth_client_id]
            argv += ["--token-lifetime", str(self.token_lifetime)]
            # the secrets through the environment, not the command line (`ps` shows argv); the
            # static token is the bench's own key to the /_control/ routes, which need one too
            self._control_token = secrets.token_urlsafe(24)
            env = {
                **os.environ,
                "SIMULATOR_OAUTH_CLIENT_SECRET": self.oauth_client_secret or "",
                "SIMULATOR_TOKEN": self._control_token,
            }
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self._process.stderr is not None
        line = self._process.stderr.readline()
        if "openchoreo simulator at " not in line:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line}{''.join(self._stderr)}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        if self.oauth_client_id is not None:  # its token endpoint, on a line of its own
            said = self._process.stderr.readline()
            if not said.startswith("its token endpoint: "):
                self._stderr.append(said)
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line)

    @property
    def root(self) -> str:
        return self.url.rsplit("/api/", 1)[0]

    @property
    def token_url(self) -> str:
        return f"{self.root}/oauth2/token"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def control(self, method: str, route: str, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {self._control_token}"} if self._control_token else {}
        response = httpx.request(
            method, f"{self.root}/_control/{route}", params=params, headers=headers, timeout=120.0
        )
        body = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"control {route}: HTTP {response.status_code}: {body}")
        return body["data"]

    def stats(self) -> dict[str, Any]:
        return dict(self.control("GET", "stats"))

    def reset_stats(self) -> None:
        self.control("POST", "reset_stats")

    def world(self) -> dict[str, Any]:
        """The world dump in the served generation's shapes (`?api=`, always explicit)."""
        return dict(self.control("GET", "world", api=self.api))

    def errors(self) -> str:
        """What the simulator wrote to stderr after its URL line (tracebacks of its bugs)."""
        return "".join(self._stderr)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_config(
    directory: Path,
    url: str,
    *,
    api: str = "auto",
    oauth: dict[str, str] | None = None,
    metrics: bool = True,
    **incremental: Any,
) -> Path:
    """A config file for `url` with the state file (and metrics textfile) in `directory`.

    `api` is `openchoreo.api` (org-era benchmarks pass "orgs": under "auto" a cycle would first
    try v1's namespace listing, one request the floor does not make); `oauth` is
    `openchoreo.auth.oauth` (tokenUrl, clientId, clientSecret). `incremental` keys are the YAML
    names (burstLength, chunkSize, ...)."""
    openchoreo: dict[str, Any] = {"baseUrl": url, "api": api}
    if oauth is not None:
        openchoreo["auth"] = {"oauth": dict(oauth)}
    openchoreo["incremental"] = {"restLength": 30, **incremental}
    document: dict[str, Any] = {
        "openchoreo": openchoreo,
        "state": {"path": str(directory / "state.db")},
    }
    if metrics:
        document["metrics"] = {"textfile": str(directory / "metrics.prom")}
    path = directory / "choreo-ingest.yaml"
    path.touch(mode=0o600)  # it may hold a client secret: readable by its owner only
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def ingest(config: Path, *args: str, **kwargs: Any) -> Measured:
    """`choreo-ingest --config CONFIG ARGS...`, measured."""
    return run_measured([*cli(), "--config", str(config), *args], **kwargs)


def status(config: Path) -> dict[str, Any]:
    """The one provider's entry of `status --json`."""
    document = ingest(config, "status", "--json").check().json()
    return dict(document["providers"][0])


def metric_value(textfile: Path, name: str) -> float | None:
    """The value of an unlabelled-but-for-provider series in a Prometheus textfile."""
    for line in textfile.read_text().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"choreo-bench-{prefix}-") as directory:
        yield Path(directory)


@dataclass(frozen=True)
class Result:
    benchmark: str
    target: str
    measured: str
    passed: bool | None
    """None: a figure reported for context, with no target."""


@dataclass(frozen=True)
class World:
    """A simulated platform's shape: namespaces (orgs) x projects x components per project."""

    namespaces: int
    projects: int
    components: int
    """Components per project."""

    @property
    def total(self) -> int:
        return self.namespaces * self.projects * self.components

    @property
    def label(self) -> str:
        return f"{self.total // 1000}k" if self.total >= 1000 else str(self.total)

    def __str__(self) -> str:
        return f"{self.total:,} components ({self.namespaces}x{self.projects}x{self.components})"


def fetch_token(simulator: SimulatorProcess, client_id: str, client_secret: str) -> str:
    """An access token from the simulator's OAuth2 token endpoint (client credentials)."""
    response = httpx.post(
        simulator.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        },
        timeout=30.0,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def summarize(results: Sequence[Result], started: float) -> int:
    """Print the table and the count of missed targets; the exit code (1 if any was missed)."""
    print_table(results)
    failed = [result for result in results if result.passed is False]
    print(f"{len(failed)} target(s) missed; {time.perf_counter() - started:.0f} s in all")
    return 1 if failed else 0


def print_table(results: Sequence[Result]) -> None:
    headers = ("benchmark", "target", "measured", "")
    rows = [
        (r.benchmark, r.target, r.measured, {True: "PASS", False: "FAIL", None: "info"}[r.passed])
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(4)]
    line = "  ".join("-" * width for width in widths)
    print(line)
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
        if row is headers:
            print(line)
    print(line)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"
