"""Backstage's naming, tag and ref rules, the sanitizers onto them, and `validate_entity`."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from choreo_ingest.config import MappingConfig
from choreo_ingest.providers.openchoreo.entities import (
    api_entity_name,
    component_entities,
    organization_namespace,
    validate_entity,
)
from choreo_ingest.providers.openchoreo.naming import (
    EntityRefError,
    entity_name,
    entity_ref_of,
    hashed_entity_name,
    is_valid_entity_name,
    is_valid_namespace,
    is_valid_tag,
    lower_kebab,
    namespace_name,
    owner_problem,
    parse_entity_ref,
    short_hash,
    tag,
    tags,
    v1_api_entity_name,
)

HASH = r"[0-9a-f]{8}"


class TestApiEntityName:
    @pytest.mark.parametrize(
        ("component_name", "endpoint", "expected"),
        [
            ("orders", "http", "orders-http"),
            ("orders", "v1.rest_api", "orders-v1.rest_api"),
            ("orders", "REST_api.v1", rf"orders-rest_api\.v1-{HASH}"),
            ("orders", "my endpoint", rf"orders-my-endpoint-{HASH}"),
            ("orders", "Çafé", rf"orders-cafe-{HASH}"),
            ("orders", "日本語", rf"orders-{HASH}"),
            ("orders", "", rf"orders-{HASH}"),
            ("orders", "a..b", "orders-a..b"),
            ("orders", "-leading", "orders--leading"),
            ("orders", "trailing.", rf"orders-trailing-{HASH}"),
            ("orders", "slash/inside", rf"orders-slash-inside-{HASH}"),
            ("orders", "e" * 70, rf"orders-e{{47}}-{HASH}"),
        ],
        ids=[
            "valid-kept",
            "dots-and-underscores-kept",
            "upper-case",
            "space",
            "accents",
            "non-ascii-only",
            "empty",
            "double-dot-is-valid",
            "dash-run-is-valid",
            "trailing-dot",
            "slash",
            "70-chars",
        ],
    )
    def test_sanitizes_to_backstage_names(
        self, component_name: str, endpoint: str, expected: str
    ) -> None:
        name = api_entity_name(component_name, endpoint)
        assert re.fullmatch(expected, name), name
        assert is_valid_entity_name(name)
        assert name == name.lower()

    def test_hash_suffix_is_stable_across_releases(self) -> None:
        # A changed algorithm would rename every sanitized API in existing catalogs.
        assert api_entity_name("orders", "REST_api.v1") == "orders-rest_api.v1-3a5b31a8"

    def test_long_name_is_cut_to_63_characters(self) -> None:
        assert len(api_entity_name("c" * 63, "e" * 70)) == 63

    def test_distinct_endpoints_never_share_a_name_even_ignoring_case(self) -> None:
        long = "x" * 70
        names = [
            "api",
            "Api",
            "API",
            "a b",
            "a-b",
            "a_b",
            "a.b",
            "a--b",
            "a  b",
            "a/b",
            "a:b",
            "日本",
            "中文",
            "",
            " ",
            "  ",
            long + "1",
            long + "2",
            "ü",
            "u",
            "Ü",
        ]
        produced = {api_entity_name("orders", name).lower() for name in names}
        assert len(produced) == len(names)


class TestV1ApiEntityName:
    @pytest.mark.parametrize(
        ("project", "component_name", "endpoint", "expected"),
        [
            ("shop", "orders", "http", "shop-orders-http"),
            ("shop", "orders", "v1.rest_api", "shop-orders-v1.rest_api"),
            ("shop", "orders", "my endpoint", rf"shop-orders-my-endpoint-{HASH}"),
            ("shop", "orders", "My Endpoint", rf"shop-orders-my-endpoint-{HASH}"),
            ("shop", "orders", "日本語", rf"shop-orders-{HASH}"),
            ("shop", "orders", "", rf"shop-orders-{HASH}"),
            ("shop", "orders", "e" * 60, rf"shop-orders-e{{42}}-{HASH}"),
            ("p" * 63, "c" * 63, "e" * 63, rf"p{{54}}-{HASH}"),
        ],
        ids=[
            "valid-kept",
            "dots-and-underscores-kept",
            "space",
            "upper-case-and-space",
            "non-ascii",
            "empty-endpoint",
            "too-long",
            "all-parts-63",
        ],
    )
    def test_project_component_endpoint_made_valid(
        self, project: str, component_name: str, endpoint: str, expected: str
    ) -> None:
        name = v1_api_entity_name(project, component_name, endpoint)
        assert re.fullmatch(expected, name), name
        assert is_valid_entity_name(name)
        assert len(name) <= 63
        assert name == name.lower()

    @pytest.mark.parametrize(
        ("project", "component_name", "endpoint", "expected"),
        [
            ("web", "cart", "httpApi", "web-cart-httpApi"),
            ("shop", "orders", "REST", "shop-orders-REST"),
            ("Shop", "Orders", "v1.Rest_API", "Shop-Orders-v1.Rest_API"),
        ],
    )
    def test_a_valid_joined_name_keeps_its_capitals(
        self, project: str, component_name: str, endpoint: str, expected: str
    ) -> None:
        """As OpenChoreo's own provider names it: its users' refs stay as they are."""
        assert v1_api_entity_name(project, component_name, endpoint) == expected

    def test_hash_suffix_is_stable_across_releases(self) -> None:
        # A changed algorithm would rename every sanitized v1 API in existing catalogs.
        assert (
            v1_api_entity_name("shop", "orders", "my endpoint")
            == "shop-orders-my-endpoint-8177b457"
        )

    def test_ambiguous_triples_share_their_plain_name(self) -> None:
        """OpenChoreo's provider joins with `-` too; the caller resolves this clash."""
        assert v1_api_entity_name("a", "b-c", "e") == v1_api_entity_name("a-b", "c", "e")
        assert v1_api_entity_name("a", "b-c", "e") == "a-b-c-e"

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            (("a", "b-c", "É"), ("a-b", "c", "É")),
            (("a", "b-c d", "e"), ("a-b", "c d", "e")),
            (
                ("x" * 40, "y" * 20 + "-" + "y" * 20, "e"),
                ("x" * 40 + "-" + "y" * 20, "y" * 20, "e"),
            ),
        ],
        ids=["non-ascii", "space", "too-long"],
    )
    def test_ambiguous_triples_never_share_a_sanitized_name(
        self, first: tuple[str, str, str], second: tuple[str, str, str]
    ) -> None:
        """The hash covers the whole unsanitized triple, not the joined string."""
        assert "-".join(first) == "-".join(second)
        assert v1_api_entity_name(*first) != v1_api_entity_name(*second)

    def test_distinct_endpoints_of_one_component_never_share_a_name_by_sanitizing(self) -> None:
        endpoints = ["api", "a b", "a-b", "a_b", "", " ", "日本", "中文", "ü", "u", "A B"]
        produced = {v1_api_entity_name("shop", "orders", e).lower() for e in endpoints}
        assert len(produced) == len(endpoints)

    def test_endpoints_that_differ_only_in_case_share_a_name_up_to_case(self) -> None:
        """Backstage takes them for one entity: the caller's claims keep them apart."""
        names = [v1_api_entity_name("shop", "orders", e) for e in ("api", "Api", "API")]
        assert names == ["shop-orders-api", "shop-orders-Api", "shop-orders-API"]
        assert {name.lower() for name in names} == {"shop-orders-api"}


class TestHashedEntityName:
    def test_always_carries_the_hash_of_its_key(self) -> None:
        assert hashed_entity_name("orders-http", "k1") == f"orders-http-{short_hash('k1')}"
        assert hashed_entity_name("orders-http", "k1") != hashed_entity_name("orders-http", "k2")

    @pytest.mark.parametrize("raw", ["a" * 80, "Has Space", "日本", ""], ids=str)
    def test_is_a_valid_name(self, raw: str) -> None:
        name = hashed_entity_name(raw, raw)
        assert is_valid_entity_name(name)
        assert name == name.lower()


@pytest.mark.parametrize(
    ("kind", "namespace", "name", "expected"),
    [
        ("Component", "acme", "orders", "component:acme/orders"),
        ("Domain", "default", "acme", "domain:default/acme"),
        ("API", "Acme", "orders", rf"api:acme-{HASH}/orders"),
    ],
    ids=["component", "domain", "namespace-made-valid"],
)
def test_entity_ref_of(kind: str, namespace: str, name: str, expected: str) -> None:
    assert re.fullmatch(expected, entity_ref_of(kind, namespace, name))


@pytest.mark.parametrize(
    ("owner", "usable"),
    [
        ("team-x", True),
        ("Team-X", True),
        ("group:team-x", True),
        ("group:default/team-x", True),
        ("user:acme/jane", True),
        ("a b", False),
        ("group:", False),
        ("x/y/z", False),
        ("system:acme/shop", False),
        ("group:Acme/team", True),  # Backstage compares refs case-insensitively
        ("Group:Default/Team", True),
        ("group:Ac me/team", False),
        ("", False),
        (7, False),
    ],
    ids=str,
)
def test_owner_problem(owner: Any, usable: bool) -> None:
    assert (owner_problem(owner) is None) is usable


class TestNames:
    @pytest.mark.parametrize(
        "raw",
        ["acme", "a", "a" * 63, "shop-2", "x.y_z"],
        ids=["plain", "one", "63", "dash", "dots"],
    )
    def test_valid_lower_case_names_are_kept(self, raw: str) -> None:
        assert entity_name(raw) == raw

    @pytest.mark.parametrize(
        "raw",
        ["Acme", "a" * 64, "has space", "-x", "", "ü"],
        ids=["upper", "64", "space", "dash", "empty", "umlaut"],
    )
    def test_invalid_names_become_valid_and_distinct(self, raw: str) -> None:
        name = entity_name(raw)
        assert is_valid_entity_name(name)
        assert name != raw

    def test_a_kubernetes_name_over_63_characters_is_cut_and_joined_to_its_hash_by_underscore(
        self,
    ) -> None:
        long = "proj-" + "k" * 70

        assert re.fullmatch(rf"proj-k{{49}}_{HASH}", entity_name(long))

    def test_no_kubernetes_name_can_be_the_cut_form_of_another(self) -> None:
        # before, `<first 54>-<hash>` was itself a valid Kubernetes name: a project so named
        # took the long project's System (and its owner) in the catalog
        long = "proj-" + "k" * 70
        cut_as_before = "proj-" + "k" * 49 + "-" + short_hash(long)

        assert entity_name(cut_as_before) == cut_as_before
        assert entity_name(long) != cut_as_before

    @pytest.mark.parametrize(
        ("raw", "kept"),
        [
            ("acme", True),
            ("a-b", True),
            ("Acme", False),
            ("a.b", False),
            ("a_b", False),
            ("a" * 64, False),
        ],
        ids=["plain", "dash", "upper", "dot", "underscore", "64"],
    )
    def test_namespaces_are_dns_labels(self, raw: str, kept: bool) -> None:
        namespace = namespace_name(raw)
        assert is_valid_namespace(namespace)
        assert (namespace == raw) is kept
        assert organization_namespace(raw) == namespace


class TestTags:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("deployment", "deployment"),
            ("Web App", "web-app"),
            ("deployment/web-app", "deployment-web-app"),
            ("C++", "c++"),
            ("C#", "c#"),
            ("gRPC", "grpc"),
            ("--x--", "x"),
            ("Çafé ünï", "cafe-uni"),
            ("日本", None),
            ("", None),
            ("t" * 70, "t" * 63),
            ("a" * 62 + "-b", "a" * 62),
        ],
        ids=[
            "plain",
            "space",
            "slash",
            "plus",
            "hash",
            "mixed-case",
            "edge-dashes",
            "accents",
            "non-ascii",
            "empty",
            "too-long",
            "cut-at-dash",
        ],
    )
    def test_tag_rules(self, raw: str, expected: str | None) -> None:
        assert tag(raw) == expected
        if expected is not None:
            assert is_valid_tag(expected)

    def test_empty_and_duplicate_tags_are_dropped_in_order(self) -> None:
        assert tags(["Web App", None, "", "web-app", "deployment", "日本", "WEB APP"]) == [
            "web-app",
            "deployment",
        ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ScheduledTask", "scheduled-task"),
        ("APIProxy", "api-proxy"),
        ("WebApplication", "web-application"),
        ("REST_api.v1", "rest-api-v1"),
        ("web-app", "web-app"),
        ("HTTP2Server", "http2-server"),
    ],
    ids=["camel", "acronym", "two-words", "separators", "kebab", "digits"],
)
def test_lower_kebab(raw: str, expected: str) -> None:
    assert lower_kebab(raw) == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("api:acme/x", ("api", "acme", "x")),
        ("acme/x", ("System", "acme", "x")),
        ("x", ("System", "home", "x")),
        ("group:default/guests", ("group", "default", "guests")),
        ("default/acme", ("System", "default", "acme")),
    ],
    ids=["full", "no-kind", "bare", "owner", "namespaced"],
)
def test_parse_entity_ref_applies_defaults(ref: str, expected: tuple[str, str, str]) -> None:
    assert parse_entity_ref(ref, default_kind="System", default_namespace="home") == expected


@pytest.mark.parametrize(
    "ref",
    ["", "api:", ":x", "acme/", "/x"],
    ids=["empty", "no-name", "no-kind", "ns-no-name", "no-ns"],
)
def test_parse_entity_ref_rejects_malformed(ref: str) -> None:
    with pytest.raises(EntityRefError):
        parse_entity_ref(ref, default_kind="System")


_GOOD = component_entities(
    {"name": "orders", "type": "Service", "workload": {"endpoints": {"http": {"type": "REST"}}}},
    "acme",
    "shop",
    MappingConfig(),
    "openchoreo",
)[0].body
_DROP = object()


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of a valid Component body with one field set (or dropped, with `_DROP`)."""
    body = copy.deepcopy(dict(_GOOD))
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


ANNOTATIONS = ("metadata", "annotations")
LABELS = ("metadata", "labels")
MANAGED = "openchoreo.io/managed"
REJECTED = [
    ("name-space", ("metadata", "name"), "has space", "metadata.name"),
    ("name-64", ("metadata", "name"), "n" * 64, "metadata.name"),
    ("name-trailing-dash", ("metadata", "name"), "x-", "metadata.name"),
    ("name-newline", ("metadata", "name"), "x\n", "metadata.name"),
    ("namespace-upper", ("metadata", "namespace"), "Acme", "metadata.namespace"),
    ("namespace-underscore", ("metadata", "namespace"), "a_b", "metadata.namespace"),
    ("title-empty", ("metadata", "title"), "", "metadata.title"),
    ("title-blank", ("metadata", "title"), "  ", "metadata.title"),
    ("description-null", ("metadata", "description"), None, "metadata.description"),
    ("annotation-null", (*ANNOTATIONS, "openchoreo.io/uid"), None, "metadata.annotations"),
    ("annotation-int", (*ANNOTATIONS, "openchoreo.io/port"), 80, "metadata.annotations"),
    ("annotation-key-slashes", (*ANNOTATIONS, "a/b/c"), "x", "metadata.annotations"),
    ("annotation-key-prefix", (*ANNOTATIONS, "Bad_Prefix/x"), "x", "metadata.annotations"),
    ("label-space", (*LABELS, MANAGED), "yes please", "metadata.labels"),
    ("label-64", (*LABELS, MANAGED), "x" * 64, "metadata.labels"),
    ("tag-upper", ("metadata", "tags"), ["Web"], "metadata.tags"),
    ("tag-double-dash", ("metadata", "tags"), ["a--b"], "metadata.tags"),
    ("tags-not-list", ("metadata", "tags"), "web", "metadata.tags"),
    ("kind-unknown", ("kind",), "Template", "kind"),
    ("kind-list", ("kind",), ["Component"], "kind"),
    ("api-version-k8s", ("apiVersion",), "v1", "apiVersion"),
    ("api-version-unknown", ("apiVersion",), "backstage.io/v1", "apiVersion"),
    ("foreign-root-field", ("status",), {}, "status"),
    ("metadata-missing", ("metadata",), _DROP, "metadata"),
    ("spec-list", ("spec",), [], "spec"),
    ("type-missing", ("spec", "type"), _DROP, "spec.type"),
    ("lifecycle-empty", ("spec", "lifecycle"), "", "spec.lifecycle"),
    ("owner-number", ("spec", "owner"), 3, "spec.owner"),
    ("owner-a-system", ("spec", "owner"), "system:acme/shop", "spec.owner"),
    ("system-no-name", ("spec", "system"), "acme/", "spec.system"),
    ("provided-api-empty", ("spec", "providesApis"), [""], "spec.providesApis"),
    ("provided-apis-not-list", ("spec", "providesApis"), "api:acme/x", "spec.providesApis"),
    ("provided-api-bad-ns", ("spec", "providesApis"), ["api:Acme Corp/x"], "spec.providesApis"),
    ("api-without-definition", ("kind",), "API", "spec.definition"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"), [case[1:] for case in REJECTED], ids=[case[0] for case in REJECTED]
)
def test_validate_entity_rejects_what_backstage_rejects(
    path: tuple[str, ...], value: Any, field: str
) -> None:
    problems = validate_entity(_with(path, value))
    assert any(problem.startswith(field) for problem in problems), problems


def test_validate_entity_accepts_the_unchanged_base() -> None:
    assert validate_entity(_with(("metadata", "name"), "orders")) == []


@pytest.mark.parametrize("body", [None, [], "entity"], ids=["none", "list", "string"])
def test_validate_entity_rejects_non_objects(body: Any) -> None:
    assert validate_entity(body) == ["entity: not an object"]
