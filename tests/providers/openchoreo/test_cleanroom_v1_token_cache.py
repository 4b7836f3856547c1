"""`openchoreo.auth.oauth.tokenCacheFile` against the clean-room OpenChoreo v1 API and its
identity provider (tests/cleanroom_v1.py), with `run` as a process of its own each time, as cron
starts it.

README ("Connect to OpenChoreo v1.x" and the configuration table): with the setting, cron calls
share one token until `exp - 60 s` instead of asking for one each; the file is mode 0600 and
holds the token, never the client secret; the token is refreshed before it expires and once
after a 401, and no request is sent without one; the token is never printed. The API document
(Auth): the JWT's `exp` is authoritative, and a client refreshes once on a 401.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import yaml
from cleanroom_v1 import Running, running
from cleanroom_v1_cli import assert_every_request_authorized, status, write_config
from cleanroom_v1_http import Request, json_answer
from cleanroom_v1_worlds import showcase

from sim_support import run_cli

SHORT_LIFETIME = 4  # seconds of a JWT's life: enough for one run, past its exp soon after


def bearer_of(request: Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def secret_spellings(server: Running) -> list[str]:
    """The client secret as it could leak: raw, form- or URL-encoded, in an HTTP Basic value."""
    identity = server.identity
    secret = identity.client_secret
    basic = base64.b64encode(f"{identity.client_id}:{secret}".encode()).decode()
    return [secret, quote_plus(secret), quote(secret, safe=""), basic]


def run(here: Path, config: Path, umask: int = 0o000) -> subprocess.CompletedProcess[str]:
    """`choreo-ingest -vv run --force --json` (the most a run logs), by default under umask 000:
    the loosest mode a file it makes could be given."""
    return run_cli("-vv", "run", "--force", "--json", "--config", config, cwd=here, umask=umask)


def test_run_processes_share_one_cached_token_until_it_expires_or_is_refused(
    here: Path,
) -> None:
    with running() as server:
        showcase(server.api)
        identity, api = server.identity, server.api
        config = write_config(here, server)
        cache = here / "token.json"
        document = yaml.safe_load(config.read_text())
        document["openchoreo"]["auth"]["oauth"]["tokenCacheFile"] = str(cache)
        config.write_text(yaml.safe_dump(document))

        shared = [run(here, config, umask=0o277)]  # no write bit for the owner either
        modes = [cache.stat().st_mode & 0o777]
        shared += [run(here, config) for _ in range(2)]
        grants_shared = len(identity.requests)
        bearers_shared = {bearer_of(r) for r in api.api_requests()}
        cached_text = cache.read_text()

        # The cached token refused (revoked at the identity provider): one 401, one new grant.
        identity.revoke_all()
        identity.lifetime = SHORT_LIFETIME
        before = len(api.api_requests())
        refused = run(here, config)
        after_401 = api.api_requests()[before:]
        grants_401 = len(identity.requests) - grants_shared
        renewed = next(iter(set(identity.tokens) - bearers_shared), "")
        cached_after_401 = cache.read_text()
        modes.append(cache.stat().st_mode & 0o777)  # written under umask 000

        # Past the renewed token's exp: the next call asks for a new one before any request.
        identity.lifetime = 3600
        time.sleep(max(0.0, identity.tokens[renewed] - time.time() + 0.2))
        before, grants_before = len(api.api_requests()), len(identity.requests)
        expired = run(here, config)
        after_expiry = api.api_requests()[before:]
        grants_expiry = len(identity.requests) - grants_before

        # An API that refuses every token: refreshed once, not again, and the burst fails.
        def refuse_all(request: Request) -> tuple[int, dict[str, str], bytes] | None:
            if not request.path.startswith("/api/v1/"):
                return None
            return json_answer(401, {"error": "INVALID_TOKEN", "message": "invalid token"})

        api.hooks.append(refuse_all)
        before, grants_before = len(api.api_requests()), len(identity.requests)
        failed = run(here, config)
        after_refusals = api.api_requests()[before:]
        grants_refusals = len(identity.requests) - grants_before
        shown = status(config)
        tokens = list(identity.tokens)

    assert [done.returncode for done in shared] == [0, 0, 0], [d.stderr[-2000:] for d in shared]
    assert grants_shared == 1
    assert len(bearers_shared) == 1
    assert modes == [0o600, 0o600]
    assert [s for s in secret_spellings(server) if s in cached_text] == []
    assert next(iter(bearers_shared)) in cached_text

    assert refused.returncode == 0, refused.stderr[-2000:]
    assert grants_401 == 1
    assert [r.status for r in after_401].count(401) == 1
    assert after_401[0].status == 401
    assert {bearer_of(r) for r in after_401[1:]} == {renewed}
    assert renewed in cached_after_401

    assert expired.returncode == 0, expired.stderr[-2000:]
    assert grants_expiry == 1
    assert [r.status for r in after_expiry if r.status == 401] == []
    assert renewed not in {bearer_of(r) for r in after_expiry}

    assert failed.returncode == 3, failed.stderr[-2000:]
    assert grants_refusals == 1
    assert len(after_refusals) == 2
    assert bearer_of(after_refusals[0]) != bearer_of(after_refusals[1])

    assert_every_request_authorized(server)  # never without a token, whatever was refused

    printed = [done.stdout + done.stderr for done in (*shared, refused, expired, failed)]
    printed.append(json.dumps(shown))
    secrets = [*secret_spellings(server), *tokens, *(t.rsplit(".", 1)[1] for t in tokens)]
    assert [[s for s in secrets if s in text] for text in printed] == [[] for _ in printed]
