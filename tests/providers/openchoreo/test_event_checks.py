"""Which events each OpenChoreo API generation takes, ignores or refuses, before they are queued."""

from __future__ import annotations

from typing import Any

import pytest

from choreo_ingest.config import Config, OpenChoreoConfig
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo.api_orgs import ORGS
from choreo_ingest.providers.openchoreo.api_v1 import V1


def provider(api: str) -> OpenChoreoProvider:
    return OpenChoreoProvider(Config(openchoreo=OpenChoreoConfig(api=api)))


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"kind": "Widget", "name": "a", "action": "created"}, "unknown kind 'Widget'"),
        ({"kind": "component", "name": "a", "action": "created"}, "unknown kind"),
        ({"kind": "Organization", "name": "a", "action": "renamed"}, "unknown action"),
        ({"kind": "Project", "name": "shop", "action": "created"}, "'namespace'"),
        (
            {"kind": "Component", "name": "c", "namespace": "acme", "project": "",
             "action": "created"},
            "needs a non-empty 'project'",
        ),
        ({"kind": "Organization", "name": "acme/shop", "action": "deleted"}, "not an Open"),
        ({"kind": "Component", "name": "..", "namespace": "a", "action": "x"}, "unknown action"),
        (
            {"kind": "Component", "name": "..", "namespace": "a", "project": "p",
             "action": "created"},
            "name '..' is not an OpenChoreo name",
        ),
        (
            {"kind": "Project", "name": "shop", "namespace": "Acme", "action": "created"},
            "namespace 'Acme' is not an OpenChoreo name",
        ),
    ],
    ids=["unknown-kind", "kind-is-case-sensitive", "unknown-action", "project-without-namespace",
         "component-with-an-empty-project", "name-with-slash", "kind-checked-before-name",
         "dot-dot-name", "uppercase-namespace"],
)  # fmt: skip
def test_org_era_refuses_with_its_reason(event: dict[str, Any], problem: str) -> None:
    found = ORGS.event_problem(event)

    assert found is not None
    assert problem in found
    assert provider("orgs").event_problem(event) == found


def v1_event(
    kind: str, name: str = "a", namespace: str | None = "n", action: str = "created"
) -> dict[str, Any]:
    body = {"kind": kind, "name": name, "action": action}
    return body if namespace is None else {**body, "namespace": namespace}


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (v1_event("component"), "not a resource kind"),
        (v1_event("Component", namespace=None), "needs a namespace"),
        (v1_event("Workload", namespace="", action="updated"), "needs a namespace"),
        (v1_event("Component", name="a/b"), "not an OpenChoreo name"),
        (v1_event("Project", name="p", namespace="N"), "needs a namespace"),
        (v1_event("Component", name="system:admin"), "not an OpenChoreo name"),
        (v1_event("Environment", name=""), "not a resource name"),
    ],
    ids=["lower-case-kind", "component-without-namespace",
         "workload-with-empty-namespace", "name-with-slash", "uppercase-namespace",
         "ingested-kind-name-with-colon", "ignored-kind-empty-name"],
)  # fmt: skip
def test_v1_refuses_with_its_reason(event: dict[str, Any], problem: str) -> None:
    found = V1.event_problem(event)

    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    "event",
    [
        {"kind": "Namespace", "name": "acme", "namespace": "", "action": "created"},
        {"kind": "Project", "name": "shop", "namespace": "acme", "action": "updated"},
        {"kind": "Component", "name": "api", "namespace": "acme", "action": "deleted"},
        {"kind": "Workload", "name": "api-workload", "namespace": "acme", "action": "updated"},
    ],
    ids=["namespace", "project", "component", "workload"],
)
def test_v1_takes_the_forwarders_four_ingested_kinds(event: dict[str, Any]) -> None:
    assert V1.event_problem(event) is None
    assert not V1.is_ignored(event)


@pytest.mark.parametrize("action", ["patched", "Created", "renamed"])
def test_v1_takes_any_action_since_it_re_reads_what_the_event_names(action: str) -> None:
    """OpenChoreo's own provider ignores `action` too; the org era refuses one it does not know."""
    event = v1_event("Component", action=action)
    assert V1.event_problem(event) is None
    assert provider("v1").event_problem(event) is None
    assert provider("auto").event_problem(event) is None
    assert ORGS.event_problem({**event, "project": "p"}) is not None


@pytest.mark.parametrize(
    "event",
    [
        {"kind": "ReleaseBinding", "name": "api-dev", "namespace": "acme", "action": "updated"},
        {"kind": "ClusterComponentType", "name": "service", "namespace": "", "action": "created"},
        {"kind": "Environment", "name": "dev", "namespace": "acme", "action": "deleted"},
        {"kind": "ClusterRole", "name": "system:admin", "namespace": "", "action": "updated"},
        {"kind": "ConfigMap", "name": "Foo_Bar", "namespace": "acme", "action": "created"},
    ],
    ids=["namespaced", "cluster-scoped", "deleted", "name-with-colon", "name-not-dns"],
)
def test_v1_acknowledges_and_ignores_other_kinds(event: dict[str, Any]) -> None:
    assert V1.event_problem(event) is None
    assert V1.is_ignored(event)
    assert provider("v1").is_ignored(event)
    assert provider("auto").is_ignored(event)


def test_auto_takes_an_event_either_generation_takes() -> None:
    org_era = {"kind": "Organization", "name": "acme", "action": "created"}
    v1 = {"kind": "Workload", "name": "w", "namespace": "acme", "action": "updated"}

    assert provider("auto").event_problem(org_era) is None
    assert not provider("auto").is_ignored(org_era)
    assert provider("auto").event_problem(v1) is None
    assert provider("v1").is_ignored(org_era)  # a kind v1 does not have: acknowledged
    assert provider("orgs").event_problem(v1) is not None


def test_org_era_ignores_nothing() -> None:
    event = {
        "kind": "Component",
        "name": "c",
        "namespace": "a",
        "project": "p",
        "action": "updated",
    }

    assert ORGS.event_problem(event) is None
    assert not provider("orgs").is_ignored(event)


@pytest.mark.parametrize(
    "event",
    [
        {"kind": "Component", "name": "cart", "namespace": "acme", "action": "updated"},
        {"kind": "Component", "name": "cart", "namespace": "acme", "project": "shop",
         "action": "deleted"},
    ],
    ids=["without-project", "with-project"],
)  # fmt: skip
def test_org_era_takes_a_component_event_with_or_without_its_project(
    event: dict[str, Any],
) -> None:
    """The document's event: `"project"?: "<project>"`."""
    assert ORGS.event_problem(event) is None
    assert provider("orgs").event_problem(event) is None
