"""The soak's end checks: the catalog against the simulator's world, the change log replayed,
health, and the metrics textfile.

The expected catalog is the simulator's world dump (`GET /_control/world?api=...`) mapped with
the product's own mapping functions: for the organization era `entities.py` (org, project,
component detail), for v1 `entities_v1.py` (namespace, project, component joined with its first
workload by name and its project's owner annotation; API names as the provider settles them).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import PROVIDER, ingest
from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest.config import MappingConfig
from choreo_ingest.providers.openchoreo import entities_v1
from choreo_ingest.providers.openchoreo.entities import (
    component_entities,
    organization_entity,
    project_entity,
)
from choreo_ingest.providers.openchoreo.naming import (
    hashed_entity_name,
    namespace_name,
    v1_api_entity_name,
)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append(Check(name, passed, detail))

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def expected_catalog(world: dict[str, Any], api: str = "orgs") -> dict[str, Mapping[str, Any]]:
    """ref -> body of every entity the simulator's world (dumped with `?api=<api>`) maps to."""
    return expected_v1_catalog(world) if api == "v1" else expected_orgs_catalog(world)


def expected_orgs_catalog(world: dict[str, Any]) -> dict[str, Mapping[str, Any]]:
    """ref -> body of every entity the org-era world maps to (the product's own mapping)."""
    mapping = MappingConfig()
    expected: dict[str, Mapping[str, Any]] = {}
    for org in world["orgs"]:
        entity = organization_entity(org, mapping, PROVIDER)
        expected[entity.ref] = entity.body
    for project in world["projects"]:
        entity = project_entity(project, project["orgName"], mapping, PROVIDER)
        expected[entity.ref] = entity.body
    for detail in world["components"]:
        for entity in component_entities(
            detail, detail["orgName"], detail["projectName"], mapping, PROVIDER
        ):
            expected[entity.ref] = entity.body
    return expected


def first_workloads(world: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, component) -> the component's first workload by name (the one it is mapped
    with), paired through `spec.owner.componentName`."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for workload in world["workloads"]:
        meta, owner = workload["metadata"], workload["spec"].get("owner") or {}
        key = (str(meta["namespace"]), str(owner.get("componentName")))
        known = first.get(key)
        if known is None or meta["name"] < known["metadata"]["name"]:
            first[key] = workload
    return first


def v1_api_names(
    world: dict[str, Any], first: dict[tuple[str, str], dict[str, Any]], mapping: MappingConfig
) -> tuple[dict[tuple[str, str, str, str], str], int]:
    """(namespace, project, component, endpoint) -> API entity name, and how many plain names
    two endpoints claimed. As the provider settles them (providers/openchoreo/api_names.py):
    `v1_api_entity_name`, and when two triples meet on one plain name the one that sorts first
    keeps it and the others get `<project>-<component>-<endpoint>` with a hash of the triple."""
    claims: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for component in world["components"]:
        meta = component["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        project = component["spec"]["owner"]["projectName"]
        workload = first.get((namespace, name))
        for endpoint in entities_v1.api_endpoint_names(workload, mapping):
            plain = v1_api_entity_name(project, name, endpoint)
            claims.setdefault((namespace_name(namespace), plain), []).append(
                (project, name, endpoint)
            )
    names: dict[tuple[str, str, str, str], str] = {}
    contested = 0
    namespaces = {namespace_name(c["metadata"]["namespace"]): c["metadata"]["namespace"]
                  for c in world["components"]}  # fmt: skip
    for (backstage_namespace, plain), triples in claims.items():
        winner = min(triples)
        contested += len(triples) > 1
        for project, component, endpoint in triples:
            name = plain
            if (project, component, endpoint) != winner:
                name = hashed_entity_name(
                    f"{project}-{component}-{endpoint}", f"{project}/{component}/{endpoint}"
                )
            names[(namespaces[backstage_namespace], project, component, endpoint)] = name
    return names, contested


def expected_v1_catalog(world: dict[str, Any]) -> dict[str, Mapping[str, Any]]:
    """ref -> body of every entity the v1 world maps to (`entities_v1`): each component joined
    with its first workload by name and its project's `backstage.io/owner` annotation."""
    mapping = MappingConfig()
    expected: dict[str, Mapping[str, Any]] = {}
    for namespace in world["namespaces"]:
        entity = entities_v1.namespace_entity(namespace, mapping, PROVIDER)
        expected[entity.ref] = entity.body
    owners: dict[tuple[str, str], str | None] = {}
    for project in world["projects"]:
        meta = project["metadata"]
        entity = entities_v1.project_entity(project, mapping, PROVIDER)
        expected[entity.ref] = entity.body
        owners[(meta["namespace"], meta["name"])] = entities_v1.project_owner(project)
    first = first_workloads(world)
    api_names, _ = v1_api_names(world, first, mapping)
    for component in world["components"]:
        meta = component["metadata"]
        namespace = meta["namespace"]
        project = component["spec"]["owner"]["projectName"]
        for entity in entities_v1.component_entities(
            component,
            first.get((namespace, meta["name"])),
            owners.get((namespace, project)),
            mapping,
            PROVIDER,
            api_name=functools.partial(_api_name, api_names, namespace),
        ):
            expected[entity.ref] = entity.body
    return expected


def _api_name(
    names: dict[tuple[str, str, str, str], str],
    namespace: str,
    project: str,
    component: str,
    endpoint: str,
) -> str:
    return names[(namespace, project, component, endpoint)]


def exported_catalog(config: Path) -> list[dict[str, Any]]:
    export = ingest(config, "export", "--format", "ndjson").check()
    return [json.loads(line) for line in export.stdout.splitlines() if line.strip()]


def body_ref(body: dict[str, Any]) -> str:
    metadata = body["metadata"]
    return f"{body['kind'].lower()}:{metadata['namespace']}/{metadata['name']}"


def check_catalog(
    verdict: Verdict, config: Path, world: dict[str, Any], api: str = "orgs"
) -> set[str]:
    """Every ref, kind and body equal to the world's; returns the catalog's refs."""
    expected = expected_catalog(world, api)
    bodies = exported_catalog(config)
    refs = [body_ref(body) for body in bodies]
    duplicates = [ref for ref, count in Counter(refs).items() if count > 1]
    catalog = {body_ref(body): body for body in bodies}
    missing = sorted(set(expected) - set(catalog))
    extra = sorted(set(catalog) - set(expected))
    differing = sorted(ref for ref in set(expected) & set(catalog) if expected[ref] != catalog[ref])
    kinds = Counter(body["kind"] for body in bodies)
    verdict.add(
        "catalog equals the world",
        not (missing or extra or differing or duplicates),
        f"{len(catalog):,} entities ({', '.join(f'{n:,} {k}' for k, n in sorted(kinds.items()))}); "
        f"missing {len(missing)} {missing[:3]}, extra {len(extra)} {extra[:3]}, "
        f"different bodies {len(differing)} {differing[:3]}, duplicates {len(duplicates)}",
    )
    return set(catalog)


def check_change_log(verdict: Verdict, config: Path, catalog_refs: set[str]) -> int:
    """Replaying upserts and deletes in seq order gives the catalog's refs; returns the rows."""
    rows = ingest(config, "changes", "--json").check().json()
    rows = rows["changes"] if isinstance(rows, dict) else rows
    live: set[str] = set()
    last_seq = 0
    ordered = True
    for row in rows:
        ordered = ordered and row["seq"] > last_seq
        last_seq = row["seq"]
        if row["op"] == "upsert":
            live.add(row["ref"])
        else:
            live.discard(row["ref"])
    verdict.add(
        "change log replays to the catalog",
        ordered and live == catalog_refs,
        f"{len(rows):,} rows, seq increasing: {ordered}; replayed {len(live):,} live refs; "
        f"only in replay {len(live - catalog_refs)}, only in catalog {len(catalog_refs - live)}",
    )
    return len(rows)


def check_health(verdict: Verdict, config: Path) -> None:
    health = ingest(config, "health", "--json")
    verdict.add("health is green", health.returncode == 0, f"exit {health.returncode}")


def metrics(textfile: Path) -> dict[str, float]:
    """`name{labels}` -> value for every sample; raises if the file does not parse."""
    samples = {}
    for family in text_string_to_metric_families(textfile.read_text()):
        for sample in family.samples:
            labels = sorted(sample.labels.items())
            shown = ",".join(f"{key}={value}" for key, value in labels if key != "provider")
            samples[f"{sample.name}{{{shown}}}"] = sample.value
    return samples


def check_metrics(verdict: Verdict, textfile: Path, catalog_size: int) -> dict[str, float]:
    try:
        found = metrics(textfile)
    except (OSError, ValueError) as error:
        verdict.add("metrics textfile parses", False, str(error))
        return {}
    entities = sum(
        value for name, value in found.items() if name.startswith("choreo_ingest_entities{")
    )
    verdict.add(
        "metrics textfile parses",
        entities == catalog_size,
        f"{len(found)} samples; choreo_ingest_entities sums to {entities:,.0f}",
    )
    return found
