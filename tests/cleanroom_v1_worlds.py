"""Worlds for the clean-room OpenChoreo v1 fake (cleanroom_v1.py): builders of its projects,
components and workloads, the showcase (one namespace of every shape `openchoreo-v1-api.md`
names), names Backstage would refuse as they are, a bulk world of several pages a listing, and
a namespace of workloads that depend on other components' endpoints.
"""

from __future__ import annotations

from typing import Any

from cleanroom_v1 import OpenChoreoV1

OPENAPI = "openapi: 3.0.0\ninfo: {title: Cart, version: '1'}\npaths: {}\n"
PROTO = 'syntax = "proto3";\nservice Cart { rpc Get (Req) returns (Res); }\n'
SDL = "type Query { cart(id: ID!): Cart }\n"
ASYNC = "asyncapi: 2.6.0\ninfo: {title: Live, version: '1'}\nchannels: {}\n"
RAW = 'syntax = "proto3";\nmessage Ping {}\n'

LONG_PROJECT = "platform-observability-and-telemetry-services"  # 45
LONG_COMPONENT = "telemetry-collector-and-forwarder-service-for-all-the-clusters0"  # 63
LONG_ENDPOINT = "metrics-and-traces-http-endpoint"


def component(
    name: str,
    project: str,
    *,
    ctype: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ready: str | None = None,
    workflow: dict[str, Any] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"owner": {"projectName": project}}
    if ctype is not None:
        spec["componentType"] = ctype
        spec["autoDeploy"] = True
    if workflow is not None:
        spec["workflow"] = workflow
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"openchoreo.dev/name": name}, **meta},
        "spec": spec,
    }
    if annotations:
        body["metadata"]["annotations"] = annotations
    if ready is not None:
        body["status"] = {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "lastTransitionTime": "2025-03-02T11:00:05Z",
                    "reason": "Reconciled" if ready == "True" else "Pending",
                }
            ],
        }
    return body


def workload(
    name: str, project: str, comp: str, endpoints: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "owner": {"projectName": project, "componentName": comp},
        "container": {"image": f"registry.example.com/{comp}:v1", "args": ["--port", "8080"]},
    }
    if endpoints is not None:
        spec["endpoints"] = endpoints
    return {"metadata": {"name": name}, "spec": spec, "status": {}}


def project(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name},
        "spec": {
            "deploymentPipelineRef": {"kind": "DeploymentPipeline", "name": "default"},
            "type": {"kind": "ClusterProjectType", "name": "default"},
        },
        "status": {"conditions": []},
    }
    if annotations:
        body["metadata"]["annotations"] = annotations
    return body


def repo(url: str) -> dict[str, Any]:
    return {
        "kind": "ClusterWorkflow",
        "name": "docker",
        "parameters": {"repository": {"url": url, "revision": {"branch": "main"}, "appPath": "/"}},
    }


def put_service(
    api: OpenChoreoV1,
    namespace: str,
    project: str,
    name: str,
    workload_name: str,
    endpoints: dict[str, Any] | None = None,
) -> None:
    """A ready `deployment/service` component and its workload, put in that order."""
    service = {"kind": "ComponentType", "name": "deployment/service"}
    api.put("components", namespace, component(name, project, ctype=service, ready="True"))
    api.put("workloads", namespace, workload(workload_name, project, name, endpoints))


def showcase(api: OpenChoreoV1) -> None:
    """One namespace of every shape the document names, a second small one, and a Kubernetes
    namespace that is not OpenChoreo's."""
    api.add_namespace(
        "acme",
        annotations={
            "openchoreo.dev/display-name": "ACME Corp ☕",
            "openchoreo.dev/description": "Everything ACME runs,\nin two lines",
        },
    )
    api.add_namespace("globex")
    api.add_namespace("initech", phase="Terminating", deletionTimestamp="2026-01-05T00:00:00Z")
    api.add_namespace("kube-system", control_plane=False)
    api.put(
        "projects",
        "acme",
        project(
            "shop",
            {
                "openchoreo.dev/display-name": "Web Shop",
                "openchoreo.dev/description": "Sells things",
                "backstage.io/owner": "group:default/shop-team",
            },
        ),
    )
    api.put("projects", "acme", project("internal"))
    api.put("projects", "acme", project(LONG_PROJECT))
    api.put(
        "components",
        "acme",
        component(
            "cart",
            "shop",
            ctype={"kind": "ComponentType", "name": "deployment/service"},
            annotations={
                "openchoreo.dev/display-name": "Shopping Cart",
                "openchoreo.dev/description": "Holds what you buy",
                "backstage.io/owner": "group:default/cart-team",
            },
            ready="True",
            workflow=repo("https://github.com/acme/cart"),
        ),
    )
    api.put(
        "workloads",
        "acme",
        workload(
            "cart-7d9f6b",  # free-form: not <component>-workload
            "shop",
            "cart",
            {
                "rest": {
                    "type": "HTTP",
                    "port": 8080,
                    "targetPort": 8080,
                    "visibility": ["project", "external"],
                    "displayName": "Cart REST",
                    "basePath": "/api",
                    "schema": {"type": "openapi", "content": OPENAPI},
                },
                "rpc": {
                    "type": "gRPC",
                    "port": 9090,
                    "visibility": ["namespace"],
                    "schema": {"type": "gRPC", "content": PROTO},
                },
                "graph": {
                    "type": "GraphQL",
                    "port": 8081,
                    "schema": {"type": "GraphQL", "content": SDL},
                },
                "live": {
                    "type": "Websocket",
                    "port": 8082,
                    "visibility": [],
                    "schema": {"type": "AsyncAPI", "content": ASYNC},
                },
                "raw-tcp": {"type": "TCP", "port": 5432},
                "udp-stats": {
                    "type": "UDP",
                    "port": 8125,
                    "schema": {"type": "openapi", "content": "  \n\t"},
                },
                "tcp-proto": {"type": "TCP", "port": 7000, "schema": {"content": RAW}},
            },
        ),
    )
    api.put(
        "components",
        "acme",
        component(
            "checkout",
            "shop",
            ctype={"kind": "ComponentType", "name": "deployment/web-app"},
            ready="False",
            workflow=repo("https://gitlab.example.com/acme/checkout"),
            deletionTimestamp="2026-01-02T03:04:05Z",
        ),
    )
    api.put(
        "workloads",
        "acme",
        workload("checkout-workload", "shop", "checkout", {"web": {"type": "HTTP", "port": 80}}),
    )
    api.put("components", "acme", component("worker", "internal"))  # nothing optional
    api.put(
        "components",
        "acme",
        component(
            "reporter",
            "internal",
            ctype={"kind": "ClusterComponentType", "name": "cronjob/report"},
            ready="Unknown",
            workflow={"kind": "Workflow", "name": "buildpacks", "parameters": {}},
        ),
    )
    api.put("workloads", "acme", workload("reporter-batch", "internal", "reporter"))  # no endpoints
    api.put(
        "components",
        "acme",
        component(
            "vault",
            "shop",
            ctype={"kind": "ComponentType", "name": "statefulset/db"},
            ready="True",
        ),
    )
    api.hidden.add(("Component", "acme", "vault"))  # the caller's role may not view it
    put_service(
        api,
        "acme",
        LONG_PROJECT,
        LONG_COMPONENT,
        "telemetry",
        {LONG_ENDPOINT: {"type": "HTTP", "port": 4318, "schema": {"content": OPENAPI}}},
    )
    api.put("projects", "globex", project("web", {"backstage.io/owner": "user:default/jdoe"}))
    api.put(
        "components",
        "globex",
        component("site", "web", ctype={"kind": "ComponentType", "name": "deployment/web"}),
    )


ODD_PROJECT = "p" * 40 + ".team-" + "x" * 30  # 76: Kubernetes allows 253, Backstage 63
ODD_COMPONENT = "c" * 60 + "--" + "d" * 58  # 120, a double hyphen
BIG = "openapi: 3.0.0\n" + "# a long spec\n" * 30000  # ~420 KB


def odd_names(api: OpenChoreoV1) -> None:
    api.add_namespace("odd")
    api.put("projects", "odd", project(ODD_PROJECT))
    api.put("projects", "odd", project("team.alpha"))
    api.put(
        "components",
        "odd",
        component(
            ODD_COMPONENT, ODD_PROJECT, ctype={"kind": "ComponentType", "name": "deployment/x"}
        ),
    )
    api.put("components", "odd", component("api.v2", "team.alpha"))
    api.put(
        "workloads",
        "odd",
        workload(
            "w1",
            ODD_PROJECT,
            ODD_COMPONENT,
            {
                "http": {"type": "HTTP", "port": 80, "schema": {"content": OPENAPI}},
            },
        ),
    )
    api.put(
        "workloads",
        "odd",
        workload(
            "w2",
            "team.alpha",
            "api.v2",
            {
                "big": {"type": "HTTP", "port": 80, "schema": {"content": BIG}},
                "Rest_API": {"type": "HTTP", "port": 81, "schema": {"content": OPENAPI}},
            },
        ),
    )


BULK = {"bulk-a": 150, "bulk-b": 110, "bulk-c": 40}


def bulk(api: OpenChoreoV1, sizes: dict[str, int] = BULK) -> set[str]:
    """A few hundred components in several namespaces, workloads named out of step with their
    components, a component in 17 hidden from the caller. Returns the refs the catalog must
    hold."""
    expected: set[str] = set()
    for namespace, count in sizes.items():
        api.add_namespace(namespace)
        expected.add(f"domain:default/{namespace}")
        for p in range(4):
            api.put("projects", namespace, project(f"p{p}"))
            expected.add(f"system:{namespace}/p{p}")
        for i in range(count):
            name, proj = f"svc-{i:03d}", f"p{i % 4}"
            endpoints = {}
            if i % 2 == 0:
                endpoints["http"] = {
                    "type": "HTTP",
                    "port": 8080,
                    "schema": {"type": "openapi", "content": OPENAPI},
                }
            put_service(api, namespace, proj, name, f"wl-{999 - i}", endpoints)
            if i % 17 == 5:
                api.hidden.add(("Component", namespace, name))
                continue
            expected.add(f"component:{namespace}/{name}")
            if i % 2 == 0:
                expected.add(f"api:{namespace}/{proj}-{name}-http")
    return expected


DEPS = "deps"
"""The namespace of `dependencies`."""
TELEMETRY = "telemetry-gateway"  # with LONG_PROJECT and `otlp`: a 68-character API name
STUB_TYPES = {
    "http": "HTTP",
    "grpc": "gRPC",
    "graphql": "GraphQL",
    "ws": "Websocket",
    "tcp": "TCP",
    "udp": "UDP",
}
"""The endpoints of `deps/inventory` (none with a schema) and their types."""
Dependency = tuple[str | None, str, str]
"""(project, None for the consumer's own; component; endpoint)."""


def needs(*targets: Dependency) -> list[dict[str, Any]]:
    """`spec.dependencies.endpoints` (OpenChoreo's WorkloadConnection) for (project or None for
    the consumer's own, component, endpoint) triples."""
    found = []
    for number, (target_project, target, endpoint) in enumerate(targets):
        connection: dict[str, Any] = {
            "component": target,
            "name": endpoint,
            "visibility": "project" if target_project is None else "namespace",
            "envBindings": {"address": f"DEP_{number}_URL", "host": f"DEP_{number}_HOST"},
        }
        if target_project is not None:
            connection["project"] = target_project
        found.append(connection)
    return found


def consumer(api: OpenChoreoV1, project_name: str, name: str, *targets: Dependency) -> None:
    """A ready service without endpoints whose workload depends on `targets` (`needs`)."""
    service = {"kind": "ComponentType", "name": "deployment/service"}
    api.put("components", DEPS, component(name, project_name, ctype=service, ready="True"))
    load = workload(f"{name}-wl", project_name, name)
    load["spec"]["dependencies"] = {"endpoints": needs(*targets)}
    api.put("workloads", DEPS, load)


def dependencies(api: OpenChoreoV1) -> None:
    """One namespace of workloads that depend on endpoints of every shape: with and without
    a schema, in the consumer's project and in another (named, or left empty), on the two
    components whose APIs would share a name, on a name past 63 characters, on nothing, and on
    `shop/late`, which this world does not hold (a test adds it later)."""
    api.add_namespace(DEPS)
    for name in ("shop", "pay", "a", "a-b", LONG_PROJECT):
        api.put("projects", DEPS, project(name))
    http = {"type": "HTTP", "port": 8080, "schema": {"type": "openapi", "content": OPENAPI}}
    put_service(api, DEPS, "shop", "orders", "orders-wl", {"api": http, "admin": {"type": "HTTP"}})
    stubs: dict[str, Any] = {
        name: {"type": kind, "port": 7000 + n} for n, (name, kind) in enumerate(STUB_TYPES.items())
    }
    stubs["udp"]["schema"] = {"type": "openapi", "content": " \n"}  # blank: no schema
    put_service(api, DEPS, "shop", "inventory", "inventory-wl", stubs)
    put_service(api, DEPS, "pay", "billing", "billing-wl", {"rest": http})
    put_service(api, DEPS, "a", "b-c", "b-c-wl", {"e": http})
    put_service(api, DEPS, "a-b", "c", "c-wl", {"e": http})
    put_service(api, DEPS, LONG_PROJECT, TELEMETRY, "telemetry-wl", {"otlp": http})
    collided = [("a", "b-c", "e"), ("a-b", "c", "e")]
    consumer(api, "a", "aaa", (None, "b-c", "e"), *collided[1:])  # first: before its targets
    consumer(api, "pay", "ledger", ("shop", "orders", "api"), (None, "billing", "rest"))
    consumer(
        api,
        "shop",
        "web",
        (None, "orders", "api"),
        ("", "orders", "api"),  # empty: its own project, as absent
        (None, "orders", "admin"),  # no schema
        (None, "inventory", "grpc"),  # no schema
        ("pay", "billing", "rest"),
        ("shop", "billing", "rest"),  # not billing's project
        ("nope", "orders", "api"),  # no such project
        *collided,
        (LONG_PROJECT, TELEMETRY, "otlp"),
        (None, "nowhere", "api"),
        (None, "late", "api"),
    )
