"""Driving choreo-ingest's CLI in process against the clean-room OpenChoreo v1 fake
(cleanroom_v1.py), and reading what it made: the config it runs with, runs until a cycle
completes, export, status, entity refs, the YAML mirror, and the checks every test makes of the
catalog (Backstage's names, resolved refs) and of the API requests (each with an issued token).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from cleanroom_v1 import Running, running
from cleanroom_v1_worlds import showcase
from ports import free_port
from typer.testing import CliRunner, Result

from choreo_ingest.cli.app import app

DEFAULT_OWNER = "group:default/platform-team"
BACKSTAGE_NAME = re.compile(r"^(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")  # catalog-model's
BACKSTAGE_NAMESPACE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def cli(*args: str | Path, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def write_config(
    directory: Path,
    server: Running,
    *,
    base_suffix: str = "/api/v1",
    chunk_size: int = 100,
    secret: str | None = None,
    mirror: bool = False,
    mapping: dict[str, Any] | None = None,
    **incremental: Any,
) -> Path:
    config = {
        "openchoreo": {
            "baseUrl": server.api_url + base_suffix,
            "api": "auto",
            "auth": {
                "oauth": {
                    "tokenUrl": server.token_url,
                    "clientId": server.identity.client_id,
                    "clientSecretFile": str(directory / "client-secret"),
                }
            },
            "incremental": {"chunkSize": chunk_size, "burstLength": 20, **incremental},
        },
        "mapping": {"defaultOwner": DEFAULT_OWNER, **(mapping or {})},
        "state": {"path": str(directory / "state.db")},
    }
    if mirror:
        config["catalog"] = {"directory": str(directory / "catalog")}
    (directory / "client-secret").write_text(
        (secret if secret is not None else server.identity.client_secret) + "\n"
    )
    (directory / "client-secret").chmod(0o600)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def run_cycle(config: Path, *, max_runs: int = 12) -> list[dict[str, Any]]:
    """`run --force --json` until a cycle completes; the run documents."""
    documents = []
    for _ in range(max_runs):
        result = cli("--config", config, "run", "--force", "--json")
        document = json.loads(result.stdout)
        documents.append(document)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        if any(p["cycleCompleted"] for p in document["providers"]):
            return documents
    raise AssertionError(f"no cycle completed in {max_runs} runs: {documents[-1]}")


@contextmanager
def showcase_ingested(directory: Path, **options: Any) -> Iterator[tuple[Running, Path]]:
    """The servers up with the showcase (cleanroom_v1_worlds.py), a config written in `directory`
    (write_config's `options`) and a first cycle run to completion: the server and the config."""
    with running() as server:
        showcase(server.api)
        config = write_config(directory, server, **options)
        run_cycle(config)
        yield server, config


@contextmanager
def serving(config: Path, log: Path, *verbosity: str) -> Iterator[str]:
    """`choreo-ingest [verbosity] serve` with `config` as its own process on a free loopback
    port, its stderr in `log`: its base URL. SIGTERM on exit, which must end it with 0."""
    port = free_port()
    command = [sys.executable, "-m", "choreo_ingest", *verbosity, "serve"]
    command += ["--listen", f"127.0.0.1:{port}", "--config", str(config)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            assert process.wait(15) == 0, log.read_text()[-2000:]


def wait_for(check: Callable[[], Any], what: str, log: Path | None = None) -> None:
    """Until `check()` is true (an HTTP error or a missing key counts as not yet), at most 15 s;
    else fail with `what` and the end of `log`."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what}: {log.read_text()[-2000:] if log else ''}")


def export(config: Path) -> list[dict[str, Any]]:
    result = cli("--config", config, "export", "--format", "ndjson")
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def status(config: Path) -> dict[str, Any]:
    result = cli("--config", config, "status", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def by_ref(entities: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {ref_of(e): e for e in entities}


def ref_of(entity: dict[str, Any]) -> str:
    meta = entity["metadata"]
    return f"{entity['kind'].lower()}:{meta.get('namespace', 'default')}/{meta['name']}"


def full_ref(ref: str, kind: str, namespace: str) -> str:
    """A Backstage ref as `kind:namespace/name`, the kind and namespace filled in as Backstage
    does (kind from the relation, namespace from the entity that holds the ref)."""
    if ":" not in ref.split("/")[0]:
        ref = f"{kind}:{ref}"
    found_kind, _, rest = ref.partition(":")
    if "/" not in rest:
        rest = f"{namespace}/{rest}"
    return f"{found_kind.lower()}:{rest}"


def mirrored(directory: Path) -> dict[str, dict[str, Any]]:
    """The YAML mirror: `<directory>/<kind>/<namespace>/<name>.yaml`, by ref."""
    found = {}
    for path in sorted(directory.glob("*/*/*.yaml")):
        kind, namespace, name = path.parent.parent.name, path.parent.name, path.stem
        found[f"{kind}:{namespace}/{name}"] = yaml.safe_load(path.read_text())
    return found


def annotations(entity: dict[str, Any]) -> dict[str, str]:
    return entity["metadata"].get("annotations", {})


def assert_every_request_authorized(server: Running) -> None:
    issued = set(server.identity.tokens)
    api_requests = server.api.api_requests()
    assert api_requests
    unauthenticated = [r.path for r in api_requests if "authorization" not in r.headers]
    assert unauthenticated == []
    foreign = [
        r.path
        for r in api_requests
        if r.headers["authorization"].removeprefix("Bearer ") not in issued
    ]
    assert foreign == []


def assert_catalog_consistent(entities: list[dict[str, Any]]) -> None:
    """No duplicates, valid names, and every system/domain/providesApis/consumesApis ref
    resolves."""
    refs = Counter(ref_of(e) for e in entities)
    assert [ref for ref, n in refs.items() if n > 1] == []
    known = set(refs)
    for e in entities:
        meta = e["metadata"]
        assert len(meta["name"]) <= 63, meta["name"]
        assert BACKSTAGE_NAME.match(meta["name"]), meta["name"]
        namespace = meta.get("namespace", "default")
        assert len(namespace) <= 63, namespace
        assert BACKSTAGE_NAMESPACE.match(namespace), namespace
        spec = e.get("spec", {})
        if "system" in spec:
            assert full_ref(spec["system"], "system", namespace) in known, (meta, spec["system"])
        if "domain" in spec:
            assert full_ref(spec["domain"], "domain", namespace) in known, (meta, spec["domain"])
        for api in [*spec.get("providesApis", []), *spec.get("consumesApis", [])]:
            assert full_ref(api, "api", namespace) in known, (meta["name"], api)
        managed = annotations(e).get("backstage.io/managed-by-location", "")
        assert managed != "provider:OpenChoreoEntityProvider"
