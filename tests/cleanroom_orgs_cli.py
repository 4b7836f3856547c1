"""Driving the real choreo-ingest CLI in process against the clean-room organization-era
server (`cleanroom_orgs.py`), for `test_cleanroom_orgs_*.py`: a config pointing at it, `run
--force` until a cycle completes, `export`, `status --json`, and org-era events queued with
`event`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from cleanroom_orgs import TOKEN, Server
from cli_support import invoke

PROVIDER = "openchoreo"


def write_config(
    tmp_path: Path,
    server: Server,
    *,
    token: str = TOKEN,
    chunk: int = 7,
    api: str = "orgs",
    **incremental: Any,
) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    document = {
        "openchoreo": {
            "baseUrl": server.base_url,
            "api": api,
            "auth": {"tokenFile": str(token_file)},
            "incremental": {"chunkSize": chunk, "burstLength": 30, **incremental},
        },
        "state": {"path": str(tmp_path / "state.db")},
        "providers": [PROVIDER],
    }
    path = tmp_path / "choreo-ingest.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def cli_json(*args: str | Path) -> tuple[int, dict[str, Any], str]:
    result = invoke(*args)
    assert result.stdout.strip(), (result.exit_code, result.stderr[-2000:])
    return result.exit_code, json.loads(result.stdout), result.stderr


def run(config: Path, *, force: bool = True) -> tuple[int, dict[str, Any]]:
    code, document, _ = cli_json(
        "run", *(["--force"] if force else []), "--json", "--config", config
    )
    return code, document


def event(
    kind: str, name: str, org: str, action: str, project: str | None = None
) -> dict[str, str]:
    """An org-era event as OpenChoreo's forwarder posts it (`project` only for components)."""
    body = {"kind": kind, "name": name, "namespace": org, "action": action}
    if project is not None:
        body["project"] = project
    return body


def queue_events(tmp_path: Path, config: Path, events: list[dict[str, str]]) -> None:
    source = tmp_path / "events.ndjson"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    code, receipt, stderr = cli_json("event", source, "--json", "--config", config)
    assert code == 0, (receipt, stderr)
    assert receipt["stored"] == len(events), receipt


def provider_of(document: dict[str, Any]) -> dict[str, Any]:
    [provider] = document["providers"]
    return provider


def run_cycle(config: Path, max_runs: int = 10) -> list[dict[str, Any]]:
    """`run --force` until a cycle completes; every run must succeed."""
    done: list[dict[str, Any]] = []
    for _ in range(max_runs):
        code, document = run(config)
        assert code == 0, document
        provider = provider_of(document)
        assert provider["error"] is None, provider
        done.append(provider)
        if provider["cycleCompleted"]:
            return done
    raise AssertionError(f"no cycle completed in {max_runs} runs: {done[-1]}")


def export(config: Path) -> list[dict[str, Any]]:
    result = invoke("export", "--format", "ndjson", "--config", config)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def status(config: Path) -> dict[str, Any]:
    code, document, _ = cli_json("status", "--json", "--config", config)
    assert code == 0, document
    return provider_of(document)
