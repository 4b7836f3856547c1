"""`serve`'s events secret against the clean-room OpenChoreo v1 API (tests/cleanroom_v1.py),
`serve` as its own process, posted to as OpenChoreo's event forwarder posts.

The forwarder (`openchoreo-v1-api.md`, Events) sends `{kind, name, namespace, action}` with no
auth header and no signature, so README ("Run it as a service: serve", Security;
examples/kubernetes/README.md, "Restricting the webhook") has the operator set
`serve.events.secretFile` and append the secret to the webhook URL
(`.../api/events/http/openchoreo/<secret>`), or send it as `X-Choreo-Ingest-Secret`. A post
without it, or with a wrong one, is refused `403` and stores nothing; the secret never reaches a
log line, a metric label, a document of `serve`'s or an error body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml
from cleanroom_v1 import running
from cleanroom_v1_cli import by_ref, export, serving, wait_for, write_config
from cleanroom_v1_worlds import component, showcase

# As `openssl rand -base64 24` makes them: "/", "+" and "=" travel in the URL as they are.
SECRET = "Qm9vdHN0cmFw+c2VjcmV0/X2ZvcndhcmRlcg=="
WRONG_PREFIX = SECRET[:-6]  # a copy cut short
WRONG_LONGER = SECRET + "x"
HELM_ROUTE = "/api/events/http/openchoreo"  # the forwarder's Helm default, our alias
OWN_ROUTE = "/events/openchoreo"


def spellings_of(secret: str) -> list[str]:
    """The secret as it might leak: whole, percent-encoded, and each part between its "/"."""
    return [secret, quote(secret, safe=""), quote(secret), *secret.split("/")]


def leaked(text: str) -> list[str]:
    return [s for s in {*spellings_of(SECRET), WRONG_PREFIX, WRONG_LONGER} if s in text]


def event(name: str, action: str) -> dict[str, str]:
    return {"kind": "Component", "name": name, "namespace": "acme", "action": action}


def post(base: str, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """A post as the forwarder sends it: JSON, no Authorization header."""
    return httpx.post(
        base + path,
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=10,
    )


def test_serve_applies_only_events_carrying_its_secret_and_never_shows_the_secret(
    here: Path,
) -> None:
    with running() as server:
        showcase(server.api)
        config = write_config(here, server)
        (here / "events-secret").write_text(SECRET + "\n")
        (here / "events-secret").chmod(0o600)
        document = yaml.safe_load(config.read_text())
        document["serve"] = {"events": {"secretFile": str(here / "events-secret")}}
        config.write_text(yaml.safe_dump(document))
        api = server.api
        with serving(config, here / "serve.log", "-vv") as base:
            wait_for(
                lambda: httpx.get(base + "/status").json()["providers"][0]["lastCompletedAt"],
                "no cycle completed",
                here / "serve.log",
            )
            api.put("components", "acme", component("payments", "shop"))
            api.delete("components", "acme", "worker")
            api.put("components", "acme", component("ledger", "shop"))
            api.put("components", "acme", component("billing", "shop"))
            before = len(api.api_requests())
            news = [event("payments", "created"), event("worker", "deleted")]
            refused = [
                post(base, HELM_ROUTE, news),  # the Helm default URL, no secret
                post(base, OWN_ROUTE, news),
                post(base, f"{HELM_ROUTE}/{WRONG_PREFIX}", news),
                post(base, f"{HELM_ROUTE}/{WRONG_LONGER}", news),
                post(base, f"{OWN_ROUTE}/{WRONG_PREFIX}", news),
                post(base, f"{HELM_ROUTE}/", news),  # an empty segment is no secret
                post(base, OWN_ROUTE, news, {"X-Choreo-Ingest-Secret": WRONG_PREFIX}),
                post(base, HELM_ROUTE, news, {"X-Choreo-Ingest-Secret": ""}),
            ]
            # Events are applied in arrival order: once this one is, any refused one stored
            # before it would have been too.
            marker = post(base, f"{HELM_ROUTE}/{SECRET}", event("ledger", "created"))
            wait_for(lambda: "component:acme/ledger" in by_ref(export(config)), "not applied")
            after_refused = by_ref(export(config))
            reread = {r.path for r in api.api_requests()[before:]}

            accepted = [
                post(base, f"{HELM_ROUTE}/{SECRET}", [event("payments", "created")]),
                post(
                    base, OWN_ROUTE, event("worker", "deleted"), {"X-Choreo-Ingest-Secret": SECRET}
                ),
                post(base, f"{OWN_ROUTE}/{SECRET}", event("billing", "created")),
            ]

            def applied() -> bool:
                refs = by_ref(export(config))
                wanted = {"component:acme/payments", "component:acme/billing"}
                return wanted <= set(refs) and "component:acme/worker" not in refs

            wait_for(applied, "events with the secret not applied", here / "serve.log")
            errors = [
                post(base, f"/api/events/http/nosuch/{SECRET}", event("a", "created")),  # 404
                post(base, f"{HELM_ROUTE}/{SECRET}", {"kind": "Component"}),  # 400
                post(base, f"{HELM_ROUTE}/{SECRET}", "not an event"),  # 400
                httpx.get(f"{base}{HELM_ROUTE}/{SECRET}"),  # 405
                httpx.put(f"{base}{OWN_ROUTE}/{WRONG_PREFIX}"),  # 405
            ]
            shown = {
                path: httpx.get(base + path).text
                for path in ("/metrics", "/status", "/health", "/providers", "/readyz", "/")
            }
        log = (here / "serve.log").read_text()

    assert [answer.status_code for answer in refused] == [403] * len(refused)
    assert [set(answer.json()) for answer in refused] == [{"error"}] * len(refused)
    assert "component:acme/worker" in after_refused
    assert "component:acme/payments" not in after_refused
    assert not [path for path in reread if path.endswith(("/payments", "/worker"))]

    assert marker.status_code == 202, marker.text
    assert [answer.status_code for answer in accepted] == [202, 202, 202]

    assert [answer.status_code for answer in errors] == [404, 400, 400, 405, 405]
    bodies = [answer.text for answer in (*refused, marker, *accepted, *errors)]
    assert [leaked(body) for body in bodies] == [[] for _ in bodies]
    assert {path: leaked(text) for path, text in shown.items()} == {path: [] for path in shown}
    assert leaked(log) == []
    # Not vacuous: every request was logged and counted, the refused ones as 403.
    assert log.count('"http_request"') >= len(refused) + len(accepted) + len(errors)
    counted = [line for line in shown["/metrics"].splitlines() if "http_requests_total{" in line]
    assert [line for line in counted if 'status="403"' in line and 'method="POST"' in line]
    assert [line for line in counted if 'status="202"' in line and 'method="POST"' in line]
