"""A world's records in their OpenChoreo v1 shapes (shared/openchoreo-v1-api.md, "Resource shapes").

The world keeps organization-era records (records.py); the v1 API serves them converted here: an
org is a Namespace, a project a Project, a component a Component, and a component's `workload`
one Workload (two for a few generated components) with a free-form name. A generated item also
gets v1-only extras drawn from its position in the world (owner annotations, labels, cluster-scoped
types, workload names that are not `<component>-workload`, endpoint visibility, blank schemas);
an added item gets none, so a test sees exactly what it put in. A record's own `annotations` and
`labels` fields (v1-only: the org-era API never shows them) replace the drawn extras.
Pure functions; they take over the records they are given (pass private copies).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from choreo_ingest.simulator.records import MAX_NAME_LENGTH, Draws, Record, schema_content

API_VERSION: Final = "openchoreo.dev/v1alpha1"
DISPLAY_NAME: Final = "openchoreo.dev/display-name"
DESCRIPTION: Final = "openchoreo.dev/description"
OWNER: Final = "backstage.io/owner"
CONTROL_PLANE_LABEL: Final = "openchoreo.dev/control-plane"
V1_ONLY_FIELDS: Final = ("annotations", "labels")
"""Record fields only the v1 API shows: extra metadata annotations and labels."""

GENERATED_HEAD: Final = re.compile(r"^(cmp-[0-9]+(?:x[0-9]+)?)-")
"""The org-wide numbered head every generated component name and its workloads' names share."""

TEAMS: Final = ("platform", "payments", "identity", "web", "data", "sre")
WORKLOAD_WORDS: Final = (
    "amber", "heron", "swift", "delta", "cobalt", "maple", "otter", "quartz", "lumen", "falcon",
)  # fmt: skip
LEGACY_TYPES: Final = {
    "Service": "deployment/service",
    "WebApplication": "deployment/web-app",
    "ScheduledTask": "cronjob/scheduled-task",
    "ManualTask": "job/manual-task",
    "Webhook": "deployment/webhook",
    "APIProxy": "proxy/api-proxy",
    "TestRunner": "job/test-runner",
    "EventHandler": "deployment/event-handler",
}
SCHEMA_TYPES: Final = {
    "HTTP": "openapi", "REST": "openapi", "gRPC": "proto", "GraphQL": "graphql",
    "Websocket": "asyncapi",
}  # fmt: skip
VISIBILITIES: Final = ("project", "namespace", "internal", "external")
READY: Final = {"Ready": ("True", "Ready"), "NotReady": ("False", "NotReady")}
SECOND_WORKLOAD_ENDPOINT: Final = "sidecar-admin"


def namespace(record: Record) -> Record:
    """An org as a Namespace: `{metadata, status: {phase}}`, no apiVersion or kind."""
    metadata: Record = {"name": record["name"]}
    annotations = {**_text_annotations(record), **(record.get("annotations") or {})}
    if annotations:
        metadata["annotations"] = annotations
    metadata["creationTimestamp"] = record.get("createdAt")
    metadata["labels"] = {CONTROL_PLANE_LABEL: "true", **(record.get("labels") or {})}
    phase = "Active"
    if record.get("deletionTimestamp"):
        metadata["deletionTimestamp"] = record["deletionTimestamp"]
        phase = "Terminating"
    return {"metadata": metadata, "status": {"phase": phase}}


def project(record: Record, namespace_name: str, rng: Draws | None) -> Record:
    owner = _drawn_owner(rng, 0.4)
    typed = rng is not None and rng.random() < 0.5
    spec: Record = {}
    if "deploymentPipeline" in record:
        spec["deploymentPipelineRef"] = {
            "kind": "DeploymentPipeline",
            "name": record["deploymentPipeline"],
        }
    if typed:
        spec["type"] = {"kind": "ProjectType", "name": "default"}
    return {
        "apiVersion": API_VERSION,
        "kind": "Project",
        "metadata": _metadata(record, namespace_name, owner, {}),
        "spec": spec,
        "status": _status(record),
    }


def component(record: Record, namespace_name: str, rng: Draws | None) -> Record:
    owner = _drawn_owner(rng, 0.35)
    cluster_type = rng is not None and rng.random() < 0.1
    cluster_workflow = rng is not None and rng.random() < 0.2
    labelled = rng is not None and rng.random() < 0.5
    project_name = record["projectName"]
    labels = {"openchoreo.dev/project": project_name} if labelled else {}
    spec: Record = {
        "owner": {"projectName": project_name},
        "componentType": {
            "kind": "ClusterComponentType" if cluster_type else "ComponentType",
            "name": component_type(record.get("type")),
        },
        "autoDeploy": bool(record.get("autoDeploy", False)),
    }
    workflow = record.get("componentWorkflow")
    if workflow is not None:
        repository = workflow.get("systemParameters", {}).get("repository", {})
        spec["workflow"] = {
            "kind": "ClusterWorkflow" if cluster_workflow else "Workflow",
            "name": workflow.get("name"),
            "parameters": {"repository": repository},
        }
    return {
        "apiVersion": API_VERSION,
        "kind": "Component",
        "metadata": _metadata(record, namespace_name, owner, labels),
        "spec": spec,
        "status": _status(record),
    }


def component_type(org_era_type: str | None) -> str:
    """A v1 component type name (`deployment/service`): legacy org-era types mapped."""
    if not org_era_type:
        return "deployment/service"
    return LEGACY_TYPES.get(org_era_type, org_era_type)


def workloads(detail: Record, namespace_name: str, rng: Draws | None) -> list[Record]:
    """The Workloads of a component detail, sorted by name: none without a `workload` field."""
    workload = detail.get("workload")
    if workload is None:
        return []
    name = detail["name"]
    roll = rng.random() if rng is not None else 0.0
    words = rng.sample(WORKLOAD_WORDS, 2) if rng is not None else []
    second = rng is not None and rng.random() < 0.08
    if roll < 0.75:
        primary = suffixed(name, "workload")
    elif roll < 0.85:
        primary = suffixed(name, "wl")
    else:  # random words after the generated head: pairing by name cannot work
        head = GENERATED_HEAD.match(name)
        primary = suffixed(head.group(1) if head else name, "-".join(words))
    endpoints = {
        key: endpoint(value, rng) for key, value in (workload.get("endpoints") or {}).items()
    }
    image = _image(workload)
    spec_endpoints = endpoints if "endpoints" in workload else None
    result = [workload_resource(primary, namespace_name, detail, image, spec_endpoints)]
    if second:
        extra = {"type": "HTTP", "port": 9100, "visibility": ["project"]}
        if rng is not None and rng.random() < 0.5:
            extra["schema"] = {"type": "openapi", "content": schema_content("HTTP", name, "admin")}
        sidecar = f"{image.rsplit(':', 1)[0]}-sidecar:v1"
        endpoints_2 = {SECOND_WORKLOAD_ENDPOINT: extra}
        result.append(
            workload_resource(suffixed(name, "wl-2"), namespace_name, detail, sidecar, endpoints_2)
        )
    return sorted(result, key=_resource_name)


def workload_resource(
    name: str,
    namespace_name: str,
    detail: Mapping[str, Any],
    image: str,
    endpoints: Mapping[str, Any] | None,
) -> Record:
    """A Workload owned by the component `detail`; `endpoints` None leaves the map out."""
    spec: Record = {
        "owner": {"projectName": detail["projectName"], "componentName": detail["name"]},
        "container": {"image": image},
    }
    if endpoints is not None:
        spec["endpoints"] = dict(endpoints)
    uid = Draws(0, "workload-uid", detail.get("uid"), name).uid()
    metadata: Record = {"name": name, "namespace": namespace_name, "uid": uid}
    metadata["creationTimestamp"] = detail.get("createdAt")
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": metadata,
        "spec": spec,
        "status": {},
    }


def endpoint(org_era: Mapping[str, Any], rng: Draws | None) -> Record:
    """An endpoint in its v1 form: `REST` is `HTTP`, schema types are spec languages."""
    result: Record = dict(org_era)
    result["type"] = "HTTP" if org_era.get("type") == "REST" else org_era.get("type")
    schema = org_era.get("schema")
    if isinstance(schema, Mapping):
        converted = dict(schema)
        if "type" in schema:
            converted["type"] = SCHEMA_TYPES.get(schema["type"], schema["type"])
        result["schema"] = converted
    if rng is None:
        return result
    visibility = rng.sample(VISIBILITIES, rng.randint(1, 2))
    roll, blank, base = rng.random(), rng.random(), rng.random()
    if roll < 0.6:
        result["visibility"] = visibility
    if roll < 0.2:
        result["displayName"] = f"{result['type']} endpoint"
    if base < 0.4 and result["type"] in ("HTTP", "GraphQL", "Websocket"):
        result["basePath"] = "/api" if base < 0.3 else "/"
    if blank < 0.15 and "content" in result.get("schema", {}):
        result["schema"]["content"] = "   \n"
    return result


def suffixed(name: str, suffix: str) -> str:
    """`<name>-<suffix>`, shortened to a Kubernetes name (63 characters at most)."""
    room = MAX_NAME_LENGTH - len(suffix) - 1
    return f"{name[:room].rstrip('-')}-{suffix}"


def _metadata(
    record: Record, namespace_name: str, drawn: Record, labels: Mapping[str, str]
) -> Record:
    metadata: Record = {"name": record["name"], "namespace": namespace_name}
    if "uid" in record:
        metadata["uid"] = record["uid"]
    labels = record.get("labels", labels)
    if labels:
        metadata["labels"] = dict(labels)
    annotations = {**_text_annotations(record), **record.get("annotations", drawn)}
    if annotations:
        metadata["annotations"] = annotations
    metadata["creationTimestamp"] = record.get("createdAt")
    if record.get("deletionTimestamp"):
        metadata["deletionTimestamp"] = record["deletionTimestamp"]
    return metadata


def _text_annotations(record: Record) -> dict[str, str]:
    annotations = {}
    if "displayName" in record:
        annotations[DISPLAY_NAME] = record["displayName"]
    if "description" in record:
        annotations[DESCRIPTION] = record["description"]
    return annotations


def _drawn_owner(rng: Draws | None, chance: float) -> Record:
    if rng is None:
        return {}
    roll, team = rng.random(), rng.choice(TEAMS)
    if roll < chance * 0.75:
        return {OWNER: f"group:default/team-{team}"}
    if roll < chance:
        return {OWNER: f"team-{team}"}
    return {}


def _status(record: Record) -> Record:
    """Conditions with a `Ready` condition from the org-era status; none without one."""
    status = record.get("status")
    if status is None:
        return {}
    value, reason = READY.get(status, ("Unknown", "Pending"))
    condition = {
        "type": "Ready",
        "status": value,
        "lastTransitionTime": record.get("createdAt"),
        "reason": reason,
    }
    if value != "True":
        condition["message"] = f"the resource is {reason.lower()}"
    return {"conditions": [condition]}


def _image(workload: Mapping[str, Any]) -> str:
    containers: Mapping[str, Any] = workload.get("containers") or {}
    main: Mapping[str, Any] = containers.get("main") or next(iter(containers.values()), {})
    return str(main.get("image", "registry.example.com/unknown:latest"))


def _resource_name(resource: Record) -> str:
    return str(resource["metadata"]["name"])
