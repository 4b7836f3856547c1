"""choreo-ingest against the simulator's v1 API on a loopback port, through the command line, as
an operator runs it: OAuth2 client credentials from a secret file, cron-style calls, `check`."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from choreo_ingest.simulator import SimulatorApi, World

from backstage_validator import run_backstage_validator, skip_unless_backstage_validator
from sim_support import (
    expected_catalog,
    list_pages_at,
    plain,
    ref_of,
    run_cli,
    unresolved_refs,
    write_config,
)

pytestmark = pytest.mark.slow

CLIENT_ID = "choreo-ingest-e2e"
CLIENT_SECRET = "e2e-client-secret-9f3b7a21"


def write_oauth_config(
    directory: Path,
    base_url: str,
    secret: str,
    oauth: dict[str, str] | None = None,
    **incremental: Any,
) -> Path:
    secret_file = directory / "client-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    server = base_url.removesuffix("/api/v1")
    document = {
        "openchoreo": {
            "baseUrl": server,  # without /api/v1: as OpenChoreo's own clients accept it
            "auth": {
                "oauth": {
                    "tokenUrl": f"{server}/oauth2/token",
                    "clientId": CLIENT_ID,
                    "clientSecretFile": str(secret_file),
                    **(oauth or {}),
                }
            },
            "incremental": {"burstInterval": 1, **incremental},
        },
        "state": {"path": str(directory / "state.db")},
        "metrics": {"textfile": str(directory / "metrics.prom")},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_cron_style_calls_complete_a_v1_cycle_with_expiring_tokens(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    world = World.generate(3, 10, 100, seed=3)  # the issue's shape: 3 x 10 x 100
    api = serve(world, api="v1", oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET,
                token_lifetime=20, log_requests=True)  # fmt: skip
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET, chunkSize=100, burstLength=0.5)

    codes = []
    for _ in range(60):
        done = run_cli("run", "--json", "--config", config, cwd=tmp_path)
        codes.append(done.returncode)
        assert done.returncode == 0, done.stderr
        if json.loads(done.stdout)["providers"][0]["cycleCompleted"]:
            break
    else:
        pytest.fail(f"no cycle completed in {len(codes)} calls")
    status = json.loads(run_cli("status", "--json", "--config", config, cwd=tmp_path).stdout)
    exported = run_cli("export", "--config", config, cwd=tmp_path).stdout.splitlines()

    [provider] = status["providers"]
    assert (provider["api"], provider["attempts"], provider["lastError"]) == ("v1", 0, None)
    assert len(codes) > 1, "the cycle should take several bursts at this size"
    assert unresolved_refs(json.loads(line) for line in exported) == []
    assert {ref_of(json.loads(line)) for line in exported} == set(expected_catalog(world))
    skip_unless_backstage_validator()
    assert run_backstage_validator(exported) == []
    assert api.stats.responses_by_status.get(401, 0) == 0
    assert api.stats.requests_by_route.get("get_component", 0) == 0
    # Every page is read once, but for the page in flight when a burst's deadline cut its request
    # off, which the next call reads again: at most one repeat a call.
    reads = [
        (entry.path, sorted((key, tuple(values)) for key, values in entry.query.items()))
        for entry in api.request_log
        if entry.path.startswith("/api/")
    ]
    assert len(reads) == api.stats.api_requests
    repeats = len(reads) - len({repr(read) for read in reads})
    assert repeats <= len(codes) - 1
    assert api.stats.api_requests - repeats <= 1.01 * list_pages_at(world, 100)
    assert (
        'choreo_ingest_api_info{api="v1",provider="openchoreo"} 1.0'
        in (tmp_path / "metrics.prom").read_text()
    )


def test_cron_style_calls_share_one_token_through_the_token_cache_file(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    """Each call is its own process; `check` still asks for a token of its own, since one from
    the file proves nothing of the client's secret as it is now."""
    api = serve(World.generate(2, 3, 10, seed=3), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    cache = tmp_path / "token.json"
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET, {"tokenCacheFile": str(cache)})

    for _ in range(3):  # a whole cycle each, so that every call sends requests
        done = run_cli("run", "--force", "--json", "--config", config, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["providers"][0]["cycleCompleted"]

    assert api.stats.token_requests == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert CLIENT_SECRET not in cache.read_text(encoding="utf-8")
    assert run_cli("check", "--config", config, cwd=tmp_path).returncode == 0
    assert api.stats.token_requests == 2


def test_a_token_cache_file_any_user_may_read_is_not_used_and_comes_back_at_0600(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    api = serve(World.generate(1, 1, 2, seed=3), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    cache = tmp_path / "token.json"
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET, {"tokenCacheFile": str(cache)})
    assert run_cli("run", "--force", "--config", config, cwd=tmp_path).returncode == 0
    cache.chmod(0o644)

    assert run_cli("run", "--force", "--config", config, cwd=tmp_path).returncode == 0

    assert api.stats.token_requests == 2
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_check_says_whether_the_token_cache_file_can_be_written(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    api = serve(World.generate(1, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    key = "openchoreo.auth.oauth.tokenCacheFile"
    rows = {}
    for place in (tmp_path / "token.json", tmp_path / "missing" / "token.json"):
        config = write_oauth_config(
            tmp_path, api.url, CLIENT_SECRET, {"tokenCacheFile": str(place)}
        )
        checked = run_cli("check", "--json", "--config", config, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout
        [row] = [row for row in json.loads(checked.stdout)["checks"] if row["name"] == key]
        rows[place.parent.name] = row

    assert rows[tmp_path.name]["detail"].endswith("the token is kept there between calls")
    assert not rows[tmp_path.name].get("warning")
    assert rows["missing"]["warning"]
    assert "missing does not exist, so every call asks for a new token" in rows["missing"]["detail"]


def _directory(path: Path) -> str:
    path.mkdir()
    return "it is a directory, not a file"


def _null_device(path: Path) -> str:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return "not a regular file (a character device)"


@pytest.mark.parametrize("make", [_directory, _null_device], ids=["directory", "device"])
def test_check_warns_of_a_token_cache_file_that_is_no_file_and_run_leaves_it(
    tmp_path: Path, serve: Callable[..., SimulatorApi], make: Callable[[Path], str]
) -> None:
    """A directory: check said the token was kept there, and every call then logged
    token_cache_not_written. A device (`tokenCacheFile: /dev/null`) was renamed over."""
    api = serve(World.generate(1, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    place = tmp_path / "tokens"
    problem = make(place)
    kind = stat.S_IFMT(place.stat().st_mode)
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET, {"tokenCacheFile": str(place)})

    checked = run_cli("check", "--json", "--config", config, cwd=tmp_path)
    ran = run_cli("run", "--force", "--config", config, cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout  # a warning, as for a missing directory
    [row] = [
        row
        for row in json.loads(checked.stdout)["checks"]
        if row["name"] == "openchoreo.auth.oauth.tokenCacheFile"
    ]
    assert row["warning"], row
    assert row["detail"] == (f"{place}: {problem}, so every call asks for a new token (and warns)")
    assert "token_cache_not_written" not in checked.stderr  # its row says it, once
    assert ran.returncode == 0, ran.stderr
    assert "token_cache_not_written" in ran.stderr
    assert stat.S_IFMT(place.stat().st_mode) == kind


def test_a_client_held_to_http_basic_syncs_with_the_default_config_and_with_its_method(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    """Thunder holds a client to the method it was registered with; OpenChoreo registers some
    for `client_secret_basic`, which refuses the secret in the form body."""
    world = World.generate(2, 2, 3, seed=5)
    api = serve(world, api="v1", oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET,
                oauth_client_auth="client_secret_basic")  # fmt: skip

    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET, chunkSize=100)
    first = run_cli("run", "--json", "--config", config, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["providers"][0]["cycleCompleted"]
    assert first.stderr == ""
    assert api.stats.token_requests == 2  # the form body, refused; then HTTP Basic

    basic = {"clientAuthMethod": "client_secret_basic"}
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET, oauth=basic, chunkSize=100)
    second = run_cli("run", "--force", "--json", "--config", config, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert api.stats.token_requests == 3

    exported = run_cli("export", "--config", config, cwd=tmp_path).stdout.splitlines()
    assert {ref_of(json.loads(line)) for line in exported} == set(expected_catalog(world))


def test_wrong_client_secret_exits_2_naming_the_key_and_never_the_secret(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    """A setting to mend, as `check` says it is (2, not 3: upstream trouble); the burst's
    failure is recorded and backed off all the same."""
    api = serve(World.generate(1, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    wrong = "not-the-secret-5d1e8c"
    config = write_oauth_config(tmp_path, api.url, wrong)

    ran = run_cli("-vv", "run", "--json", "--config", config, cwd=tmp_path)
    status = run_cli("status", "--json", "--config", config, cwd=tmp_path)

    assert ran.returncode == 2, ran.stderr
    assert "openchoreo.auth.oauth.clientSecret" in ran.stderr
    assert "invalid_client" in ran.stderr
    [provider] = json.loads(status.stdout)["providers"]
    assert (provider["state"], provider["attempts"]) == ("backing_off", 1)
    assert "openchoreo.auth.oauth.clientSecret" in provider["lastError"]
    shown = ran.stdout + ran.stderr + status.stdout + status.stderr
    shown += (tmp_path / "metrics.prom").read_text()
    assert wrong not in shown
    assert CLIENT_SECRET not in shown
    assert api.stats.api_requests == 0, "never an unauthenticated call when auth is configured"


def test_check_reports_server_grant_and_api(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    api = serve(World.generate(2, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET)

    done = run_cli("check", "--json", "--config", config, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    checks = {item["name"]: item for item in json.loads(done.stdout)["checks"]}
    assert "security on" in checks["openchoreo.server"]["detail"]
    assert checks["openchoreo.auth.oauth.clientSecretFile"]["ok"]
    assert not checks["openchoreo.auth.oauth.clientSecretFile"]["warning"]
    assert "the v1 API" in checks["openchoreo.api"]["detail"]
    assert not checks["openchoreo.api"]["warning"]


def test_check_with_a_secret_file_gone_still_checks_the_server(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    """The public routes need no secret: a first `check` on a new install says whether the
    address answers while the secret is still to be put in place."""
    api = serve(World.generate(1, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET)
    (tmp_path / "client-secret").unlink()

    done = run_cli("check", "--json", "--config", config, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    checks = {item["name"]: item for item in json.loads(done.stdout)["checks"]}
    assert checks["openchoreo.server"]["ok"]
    assert "security on" in checks["openchoreo.server"]["detail"]
    assert not checks["openchoreo.auth.oauth.clientSecretFile"]["ok"]
    assert "openchoreo.api" not in checks
    assert api.stats.api_requests == 0


def test_check_with_an_unset_secret_variable_lists_its_checks(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    """`clientSecret: ${VAR}` with VAR unset in this shell: a failed check naming the key, beside
    the server's and the state's, not a document without checks."""
    api = serve(World.generate(1, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET)
    document = yaml.safe_load(config.read_text())
    oauth = document["openchoreo"]["auth"]["oauth"]
    del oauth["clientSecretFile"]
    oauth["clientSecret"] = "${CHOREO_INGEST_TEST_UNSET_SECRET}"
    config.write_text(yaml.safe_dump(document))

    done = run_cli("check", "--json", "--config", config, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    checks = {item["name"]: item for item in json.loads(done.stdout)["checks"]}
    assert checks["openchoreo.server"]["ok"]
    assert (
        "CHOREO_INGEST_TEST_UNSET_SECRET is not set"
        in (checks["openchoreo.auth.oauth.clientSecret"]["detail"])
    )
    assert checks["state.path"]["ok"]


def test_check_names_the_token_url_when_it_is_not_a_token_endpoint(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    api = serve(World.generate(1, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    wrong = {"tokenUrl": api.url.removesuffix("/api/v1") + "/oauth2/nope"}
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET, oauth=wrong)

    done = run_cli("check", "--json", "--config", config, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    failed = [item for item in json.loads(done.stdout)["checks"] if not item["ok"]]
    assert [item["name"] for item in failed] == ["openchoreo.auth.oauth.tokenUrl"]
    assert "HTTP 404" in failed[0]["detail"]


def test_check_does_not_claim_a_static_token_was_obtained(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    api = serve(World.generate(1, 1, 1), api="v1", token="right-token-2c9d")
    document = {
        "openchoreo": {"baseUrl": api.url, "auth": {"token": "${E2E_TOKEN}"}},
        "state": {"path": str(tmp_path / "state.db")},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))

    done = run_cli(
        "check", "--json", "--config", config, cwd=tmp_path, env={"E2E_TOKEN": "wrong-token-77ab"}
    )

    checks = {item["name"]: item for item in json.loads(done.stdout)["checks"]}
    assert "obtained" not in checks["openchoreo.auth.token"]["detail"]
    assert not checks["openchoreo.api"]["ok"]
    assert "HTTP 401" in checks["openchoreo.api"]["detail"]


def test_check_advises_the_client_auth_method_the_identity_provider_wants(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    api = serve(World.generate(1, 1, 1), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET,
                oauth_client_auth="client_secret_basic")  # fmt: skip
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET)

    done = run_cli("check", "--config", config, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert (
        "warning: openchoreo.auth.oauth.clientSecretFile: a token was obtained with the client "
        "secret sent as client_secret_basic, after the form body was refused: set "
        "openchoreo.auth.oauth.clientAuthMethod: client_secret_basic to save that request at "
        "every run"
    ) in plain(done.stderr)


def test_check_warns_when_the_client_sees_no_namespace(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    """A list never answers 403: a client without a role binding sees empty lists."""
    api = serve(World.generate(0, 0, 0), api="v1", oauth_client_id=CLIENT_ID,
                oauth_client_secret=CLIENT_SECRET)  # fmt: skip
    config = write_oauth_config(tmp_path, api.url, CLIENT_SECRET)

    done = run_cli("check", "--config", config, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    [warning] = [line for line in plain(done.stderr).splitlines() if "openchoreo.api" in line]
    assert warning.startswith("choreo-ingest: warning: openchoreo.api")
    mapping = yaml.safe_load(warning.partition("(keep the chart's defaults): ")[2])
    assert mapping == {  # one line a person can paste as an item of the Helm values' mappings
        "name": "choreo-ingest-catalog-reader-binding",
        "kind": "ClusterAuthzRoleBinding",
        "roleMappings": [
            {"roleRef": {"name": "backstage-catalog-reader", "kind": "ClusterAuthzRole"}}
        ],
        "entitlement": {"claim": "sub", "value": CLIENT_ID},
        "effect": "allow",
    }


def test_check_on_a_server_without_security_says_which_namespaces_it_lists(
    tmp_path: Path, serve: Callable[..., SimulatorApi]
) -> None:
    """No credentials (security off): no role to bind; OpenChoreo lists only its own namespaces."""
    api = serve(World.generate(0, 0, 0), api="v1")
    config = write_config(tmp_path / "config.yaml", api.url, state={"path": "state.db"})

    done = run_cli("check", "--config", config, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    [warning] = [line for line in plain(done.stderr).splitlines() if "openchoreo.api" in line]
    assert "lists no namespaces: OpenChoreo lists only the namespaces labelled" in warning
    assert "openchoreo.dev/control-plane=true" in warning
    assert "role" not in warning
