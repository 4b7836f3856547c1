"""The simulator as a test seam, and what a complete, exact catalog of a simulated world holds.

`simulator_transport(api)` serves the simulator's pure handler to httpx in-process (no
sockets; request bodies included, for the OAuth2 token endpoint). `expected_refs(world)` and
`expected_counts(world)` compute, from the world's own query API and the documented entity
mapping alone, the refs a finished cycle must leave in the catalog: nothing more, nothing less.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import yaml

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.engine import ProviderOutcome
from choreo_ingest.invocation import run_once
from choreo_ingest.models import Delta, EntityIteratorResult, Event, SweepFollower, entity_ref
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo.entities import ORGANIZATION_NAMESPACE, api_entity_name
from choreo_ingest.providers.openchoreo.naming import (
    entity_name,
    namespace_name,
    v1_api_entity_name,
)
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World
from choreo_ingest.simulator.options import ApiGeneration
from choreo_ingest.testing import FakeClock

PROVIDER = "openchoreo"
IN_PROCESS_URL = "http://openchoreo.test/api/v1"
CLI_TIMEOUT_SECONDS = 60
INHERITED_SETTINGS = ("CHOREO_INGEST_CONFIG", "CHOREO_INGEST_DB", "OPENCHOREO_TOKEN")


def simulator_transport(api: SimulatorApi) -> httpx.MockTransport:
    """The simulator's pure handler as an in-process httpx transport (no sockets).

    Any host works: `httpx.Client(transport=simulator_transport(api),
    base_url="http://openchoreo.test/api/v1")` reaches the API routes, `http://openchoreo.test/`
    the public routes and `POST /oauth2/token`; the `Host` header names the token issuer.
    Request bodies reach the handler; the server's loopback socket is never involved.
    """

    def handle(request: httpx.Request) -> httpx.Response:
        answer = api.handle(
            request.method,
            request.url.path,
            request.url.query.decode(),
            dict(request.headers),
            request.read(),
        )
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)

    return httpx.MockTransport(handle)


def walk_v1(
    client: httpx.Client, path: str, **params: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every item of a v1 listing (`{items, pagination}`) and the pages it came in; the walk
    ends only where a page has no `nextCursor`, and fails on a cursor that does not advance."""
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    query: dict[str, Any] = dict(params)
    while True:
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        items.extend(page["items"])
        cursor = page["pagination"].get("nextCursor")
        if not cursor:
            return items, pages
        assert cursor != query.get("cursor"), "the cursor did not advance"
        query["cursor"] = cursor


def ingest_world(
    state_path: Path,
    world: World,
    clock: Clock,
    *,
    force: bool = False,
    api: ApiGeneration = "orgs",
) -> ProviderOutcome:
    """One `run` against `world` in-process, served as the `api` generation (v1 or orgs); on a
    clock that does not move while the burst runs, that is a whole cycle (one page per
    `next()`, five items per page)."""
    config = Config(
        openchoreo=OpenChoreoConfig(
            base_url=IN_PROCESS_URL, incremental=IncrementalConfig(chunk_size=5)
        ),
        providers=(PROVIDER,),
    )
    simulator = SimulatorApi(world, SimulatorOptions(api=api), clock)
    provider = OpenChoreoProvider(config, transport=simulator_transport(simulator))
    result = run_once(config, state_path, clock, force=force, providers={PROVIDER: provider})
    [outcome] = result.providers
    assert outcome.cycle_completed, outcome
    return outcome


def endpoint_names(detail: Mapping[str, Any]) -> list[str]:
    """The endpoint names of a component detail (`workload.endpoints` keys)."""
    workload = detail.get("workload") or {}
    return sorted(workload.get("endpoints") or {})


def iter_expected(world: World) -> Iterator[tuple[str, str]]:
    """(kind, ref) of every entity a complete walk of `world` as it stands now must produce."""
    for org in world.orgs():
        org_name = org["name"]
        namespace = namespace_name(org_name)
        yield "Domain", entity_ref("Domain", ORGANIZATION_NAMESPACE, entity_name(org_name))
        for project in world.projects(org_name):
            project_name = project["name"]
            yield "System", entity_ref("System", namespace, entity_name(project_name))
            for item in world.components(org_name, project_name):
                component = item["name"]
                yield "Component", entity_ref("Component", namespace, entity_name(component))
                detail = world.component(org_name, project_name, component)
                for endpoint in endpoint_names(detail):
                    yield "API", entity_ref("API", namespace, api_entity_name(component, endpoint))


def expected_refs(world: World) -> set[str]:
    refs = [ref for _, ref in iter_expected(world)]
    assert len(refs) == len(set(refs)), "the world maps two resources onto one ref"
    return set(refs)


def expected_counts(world: World) -> dict[str, int]:
    """Entities per kind, for the kinds the world has (as `Store.entity_counts` gives them)."""
    return dict(Counter(kind for kind, _ in iter_expected(world)))


def ref_of(body: Mapping[str, Any]) -> str:
    metadata = body["metadata"]
    return entity_ref(body["kind"], metadata["namespace"], metadata["name"])


def unresolved_refs(bodies: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every `spec.domain`, `spec.system`, `spec.providesApis` and `spec.consumesApis` that
    names no entity here."""
    bodies = list(bodies)
    present = {ref_of(body) for body in bodies}
    problems = []
    for body in bodies:
        namespace, spec = body["metadata"]["namespace"], body["spec"]
        wanted: list[tuple[str, str]] = []
        if "domain" in spec:
            wanted.append(("domain", spec["domain"]))
        if "system" in spec:
            wanted.append(("system", spec["system"]))
        wanted += [("api", ref) for ref in spec.get("providesApis", [])]
        wanted += [("api", ref) for ref in spec.get("consumesApis", [])]
        for kind, target in wanted:
            if _resolve(kind, target, namespace) not in present:
                problems.append(f"{ref_of(body)} -> {kind} {target}")
    return problems


def _resolve(kind: str, target: str, namespace: str) -> str:
    """A (possibly short) Backstage ref made full: `[kind:][namespace/]name`."""
    if ":" in target:
        kind, target = target.split(":", 1)
    if "/" in target:
        namespace, target = target.split("/", 1)
    return entity_ref(kind, namespace, target)


def write_config(path: Path, base_url: str | None, **sections: Any) -> Path:
    """A YAML config file: `openchoreo.baseUrl` plus any top-level sections given.

    `incremental={...}` and `token=...` go below `openchoreo`; other keywords are top-level
    sections (`metrics={"textfile": ...}`).
    """
    openchoreo: dict[str, Any] = {}
    if base_url is not None:
        openchoreo["baseUrl"] = base_url
    if "token" in sections:
        openchoreo["token"] = sections.pop("token")
    if "incremental" in sections:
        openchoreo["incremental"] = sections.pop("incremental")
    document = {"openchoreo": openchoreo, **sections} if openchoreo else sections
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


def plain(stderr: str) -> str:
    """`stderr` as a terminal shows it: each error or warning line the CLI wrote as a JSON
    record (off a terminal, as logging does) turned back into its plain line
    (`choreo-ingest: error: <message>`); any other line as it is."""
    lines = []
    for line in stderr.splitlines(keepends=True):
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("logger") == "choreo_ingest.cli" and record.get("event") in LINE_LEVELS:
            ending = line[len(line.rstrip("\r\n")) :]
            line = f"choreo-ingest: {record['level']}: {record['message']}{ending}"
        lines.append(line)
    return "".join(lines)


LINE_LEVELS = ("error", "warning")


def one_error_line(stderr: str) -> str:
    """The error a command printed: exactly one line, and not a bug report."""
    lines = plain(stderr).splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("choreo-ingest: error: "), stderr
    assert "internal error" not in lines[0]
    return lines[0]


def run_cli(
    *args: str | Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    unset: Sequence[str] = (),
    entry: Sequence[str] = ("-m", "choreo_ingest"),
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """`python -m choreo_ingest ARGS` off a TTY (pipes), with none of the caller's
    choreo-ingest settings (nor the variables in `unset`) in its environment; `env` adds
    variables. `entry` replaces `-m choreo_ingest` (a `-c` wrapper that sets something up, then
    runs the CLI with the ARGS after its own)."""
    skipped = (*INHERITED_SETTINGS, *unset)
    environment = {k: v for k, v in os.environ.items() if k not in skipped}
    environment.update({"COLUMNS": "200", "NO_COLOR": "1"}, **(env or {}))
    return subprocess.run(
        [sys.executable, *entry, *map(str, args)],
        cwd=cwd,
        env=environment,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
        umask=umask,
    )


def expected_catalog(world: World) -> dict[str, set[str]]:
    """The v1 catalog of `world` as a finished cycle must leave it: ref -> the refs it provides
    (`providesApis`, for components; else empty). From the world's own v1 query API and the
    mapping rules of `openchoreo-v1-api.md`: APIs only for endpoints with schema content of a
    component's first workload by name."""
    found: dict[str, set[str]] = {}
    for namespace in world.v1_namespaces():
        ns = namespace["metadata"]["name"]
        found[entity_ref("Domain", "default", entity_name(ns))] = set()
        for project in world.v1_projects(ns):
            found[entity_ref("System", ns, entity_name(project["metadata"]["name"]))] = set()
        for component in world.v1_components(ns):
            name = component["metadata"]["name"]
            project = component["spec"]["owner"]["projectName"]
            workloads = sorted(world.v1_workloads(ns, name), key=lambda w: w["metadata"]["name"])
            endpoints = workloads[0]["spec"].get("endpoints", {}) if workloads else {}
            apis = {
                entity_ref("API", ns, v1_api_entity_name(project, name, endpoint))
                for endpoint, details in endpoints.items()
                if ((details.get("schema") or {}).get("content") or "").strip()
            }
            found[entity_ref("Component", ns, entity_name(name))] = apis
            for api in apis:
                found[api] = set()
    return found


def list_pages_at(world: World, limit: int) -> int:
    """How many list pages a flat walk of `world` reads at `limit` items a page."""
    api = SimulatorApi(world, SimulatorOptions(api="v1"))
    with httpx.Client(transport=simulator_transport(api), base_url=IN_PROCESS_URL) as client:
        namespaces, pages = walk_v1(client, "/namespaces", limit=limit)
        total = len(pages)
        for namespace in namespaces:
            ns = namespace["metadata"]["name"]
            for listing in ("projects", "workloads", "components"):
                total += len(walk_v1(client, f"/namespaces/{ns}/{listing}", limit=limit)[1])
        return total


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """`condition()`'s first true value, polled every 0.05 s; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class PausingProvider:
    """The OpenChoreo provider, whose burst ends (the clock moved past `burst_length`, as if its
    deadline had passed) right after the page that holds `pause_after` (an entity's ref or an
    index row's key), or after `pages_left` pages; remembers every ref its pages returned."""

    def __init__(self, inner: OpenChoreoProvider, clock: FakeClock, *, burst_length: float) -> None:
        self._inner, self._clock, self._burst_length = inner, clock, burst_length
        self.pause_after: str | None = None
        self.pages_left: int | None = None
        self.traversed: list[str] = []

    @property
    def name(self) -> str:
        return self._inner.name

    def around(self, burst: BurstContext) -> AbstractContextManager[Any]:
        return self._inner.around(burst)

    def handle_event(self, context: Any, event: Event) -> Delta:
        return self._inner.handle_event(context, event)

    @property
    def sweep_follower(self) -> SweepFollower:
        return self._inner.sweep_follower

    def next(self, context: Any, cursor: Any) -> EntityIteratorResult:
        page = self._inner.next(context, cursor)
        refs = [entity.ref for entity in page.entities]
        self.traversed += refs
        if self.pages_left is not None:
            self.pages_left -= 1
        written = [*refs, *(row.key for row in page.index)]
        if self.pause_after in written or self.pages_left == 0:
            self.pause_after = self.pages_left = None
            self._clock.advance(self._burst_length + 1)
        return page
