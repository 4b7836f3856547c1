"""Backstage's format rules (names, namespaces, tags, keys, refs, whole entities) and the
sanitizers that map free-form OpenChoreo strings onto them.

The predicates and `validate_entity` mirror `@backstage/catalog-model` (its validator functions,
`parseEntityRef` and the kind schemas). The sanitizers keep a valid value as it is and otherwise
make a valid one with a stable hash suffix, so two different inputs cannot meet on the same
output by sanitizing alone. Names and namespaces come out lower-case because Backstage compares
entity refs case-insensitively: `c-Api` and `c-api` would be one entity to it. The exception is
`v1_api_entity_name`, which keeps a valid name's case as OpenChoreo's own provider writes it;
its callers keep names that differ only in case apart (`api_names`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from choreo_ingest.errors import EntityRefError

MAX_NAME_LENGTH = 63
MAX_DNS_SUBDOMAIN_LENGTH = 253
HASH_LENGTH = 8

_OBJECT_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_LABEL = re.compile(r"[a-z0-9]+(?:-+[a-z0-9]+)*")
_TAG = re.compile(r"[a-z0-9+#]+(?:-[a-z0-9+#]+)*")
_API_VERSION_SUFFIX = re.compile(r"[a-z0-9A-Z]+")

_NOT_NAME_CHAR = re.compile(r"[^a-z0-9_.-]+")
_SEPARATOR_RUN = re.compile(r"[-_.]{2,}")
_NOT_LABEL_CHAR = re.compile(r"[^a-z0-9]+")
_NOT_TAG_CHAR = re.compile(r"[^a-z0-9+#]+")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


# --- predicates (Backstage's rules) -------------------------------------------------------


def is_valid_entity_name(value: object) -> bool:
    """`metadata.name`: 1-63 chars of `[A-Za-z0-9-_.]`, starting and ending alphanumeric."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_NAME_LENGTH
        and _OBJECT_NAME.fullmatch(value) is not None
    )


def is_valid_namespace(value: object) -> bool:
    """`metadata.namespace`: a DNS label, `[a-z0-9]` runs joined by dashes, at most 63 chars."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_NAME_LENGTH
        and _DNS_LABEL.fullmatch(value) is not None
    )


def is_valid_dns_subdomain(value: object) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_DNS_SUBDOMAIN_LENGTH
        and all(is_valid_namespace(part) for part in value.split("."))
    )


def is_valid_api_version(value: object) -> bool:
    """`apiVersion`: `[<dns-subdomain>/]<alphanumeric, at most 63>`."""
    return _is_valid_prefixed(value, _is_valid_api_version_suffix)


def is_valid_key(value: object) -> bool:
    """Label and annotation keys: `[<dns-subdomain>/]<entity-name-like part>`."""
    return _is_valid_prefixed(value, is_valid_entity_name)


def is_valid_label_value(value: object) -> bool:
    return value == "" or is_valid_entity_name(value)


def is_valid_tag(value: object) -> bool:
    """A tag: `[a-z0-9+#]` runs joined by single dashes, 1-63 chars.

    Newer catalog-model versions also allow `:`; we never write one, so the older, stricter
    rule is the one checked here.
    """
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_NAME_LENGTH
        and _TAG.fullmatch(value) is not None
    )


def _is_valid_api_version_suffix(value: str) -> bool:
    return 1 <= len(value) <= MAX_NAME_LENGTH and _API_VERSION_SUFFIX.fullmatch(value) is not None


def _is_valid_prefixed(value: object, is_valid_suffix: Callable[[str], bool]) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split("/")
    if len(parts) == 1:
        return is_valid_suffix(parts[0])
    if len(parts) == 2:  # a prefix and a name
        return is_valid_dns_subdomain(parts[0]) and is_valid_suffix(parts[1])
    return False


# --- entity refs ---------------------------------------------------------------------------


def parse_entity_ref(
    ref: str, *, default_kind: str | None = None, default_namespace: str = "default"
) -> tuple[str, str, str]:
    """Split a ref into (kind, namespace, name) the way Backstage's `parseEntityRef` does."""
    if not ref:
        raise EntityRefError("entity reference must not be empty")
    colon = ref.find(":")
    slash = ref.find("/")
    if slash != -1 and slash < colon:
        colon = -1
    kind = None if colon == -1 else ref[:colon]
    namespace = None if slash == -1 else ref[colon + 1 : slash]
    name = ref[max(colon + 1, slash + 1) :]
    if kind == "" or namespace == "" or name == "":
        raise EntityRefError(
            f"entity reference {ref!r} is not of the form [<kind>:][<namespace>/]<name>"
        )
    kind = kind or default_kind
    if not kind:
        raise EntityRefError(f"entity reference {ref!r} has no kind and none is implied")
    return kind, namespace or default_namespace, name


# --- whole entities ------------------------------------------------------------------------------

_KIND_SPEC_REQUIRED = {
    "Component": ("type", "lifecycle", "owner"),
    "API": ("type", "lifecycle", "owner", "definition"),
    "System": ("owner",),
    "Domain": ("owner",),
}
_KIND_SPEC_REFS: dict[str, tuple[tuple[str, str], ...]] = {
    "Component": (("system", "System"), ("subcomponentOf", "Component")),
    "API": (("system", "System"),),
    "System": (("domain", "Domain"),),
    "Domain": (("subdomainOf", "Domain"),),
}
_KIND_SPEC_REF_LISTS: dict[str, tuple[tuple[str, str], ...]] = {
    "Component": (("providesApis", "API"), ("consumesApis", "API")),
}
_ROOT_FIELDS = ("apiVersion", "kind", "metadata", "spec")
_OWNER_KINDS = ("group", "user")


def validate_entity(body: object) -> list[str]:
    """Problems Backstage would find in `body` (empty when it is fine), for the kinds we write.

    Mirrors the catalog-model policies (field formats, no foreign root fields, the envelope
    schema) and the kind validators; it also checks that refs are well formed and that owners
    are groups or users. Whether refs resolve needs the whole catalog and is not checked here.
    """
    if not isinstance(body, Mapping):
        return ["entity: not an object"]
    problems = [f"{key}: unknown root field" for key in body if key not in _ROOT_FIELDS]
    if not is_valid_api_version(body.get("apiVersion")):
        problems.append(f"apiVersion: {body.get('apiVersion')!r} is not a valid apiVersion")
    elif body.get("apiVersion") not in ("backstage.io/v1alpha1", "backstage.io/v1beta1"):
        problems.append(f"apiVersion: {body.get('apiVersion')!r} is not a Backstage apiVersion")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in _KIND_SPEC_REQUIRED:
        problems.append(f"kind: {kind!r} is not one of {sorted(_KIND_SPEC_REQUIRED)}")
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        return [*problems, "metadata: missing or not an object"]
    problems += _metadata_problems(metadata)
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return [*problems, "spec: missing or not an object"]
    if isinstance(kind, str) and kind in _KIND_SPEC_REQUIRED:
        namespace = metadata.get("namespace")
        namespace = namespace if isinstance(namespace, str) and namespace else "default"
        problems += _spec_problems(kind, spec, namespace)
    return problems


def _metadata_problems(metadata: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    name = metadata.get("name")
    if not is_valid_entity_name(name):
        problems.append(f"metadata.name: {name!r} is not a valid entity name")
    namespace = metadata.get("namespace")
    if namespace is not None and not is_valid_namespace(namespace):
        problems.append(f"metadata.namespace: {namespace!r} is not a valid namespace")
    if "title" in metadata and not _is_non_empty_str(metadata["title"]):
        problems.append(f"metadata.title: {metadata['title']!r} must be a non-empty string")
    if "description" in metadata and not isinstance(metadata["description"], str):
        problems.append(f"metadata.description: {metadata['description']!r} must be a string")
    for field, is_valid_value in (("labels", is_valid_label_value), ("annotations", _is_str)):
        pairs = metadata.get(field, {})
        if not isinstance(pairs, Mapping):
            problems.append(f"metadata.{field}: not an object")
            continue
        for key, value in pairs.items():
            if not is_valid_key(key):
                problems.append(f"metadata.{field}: key {key!r} is not valid")
            if not is_valid_value(value):
                problems.append(f"metadata.{field}.{key}: value {value!r} is not valid")
    entity_tags = metadata.get("tags", [])
    if not isinstance(entity_tags, list):
        problems.append("metadata.tags: not a list")
    else:
        problems += [
            f"metadata.tags: {t!r} is not a valid tag" for t in entity_tags if not is_valid_tag(t)
        ]
    return problems


def _spec_problems(kind: str, spec: Mapping[str, Any], namespace: str) -> list[str]:
    problems = [
        f"spec.{field}: {kind} needs a non-empty string"
        for field in _KIND_SPEC_REQUIRED[kind]
        if not _is_non_empty_str(spec.get(field))
    ]
    refs = [(f"spec.{f}", spec.get(f), k) for f, k in _KIND_SPEC_REFS.get(kind, ()) if f in spec]
    for field, default_kind in _KIND_SPEC_REF_LISTS.get(kind, ()):
        values = spec.get(field, [])
        if not isinstance(values, list):
            problems.append(f"spec.{field}: not a list")
            continue
        refs += [(f"spec.{field}[{i}]", value, default_kind) for i, value in enumerate(values)]
    for where, ref, default_kind in refs:
        problem = _ref_problem(ref, default_kind, namespace)
        if problem:
            problems.append(f"{where}: {problem}")
    owner = spec.get("owner")
    if _is_non_empty_str(owner):
        problem = owner_problem(owner, namespace)
        if problem:
            problems.append(f"spec.owner: {problem}")
    return problems


def _ref_problem(
    ref: object, default_kind: str, namespace: str, allowed_kinds: tuple[str, ...] = ()
) -> str | None:
    if not _is_non_empty_str(ref):
        return f"{ref!r} is not an entity ref"
    try:
        kind, ref_namespace, name = parse_entity_ref(
            ref, default_kind=default_kind, default_namespace=namespace
        )
    except EntityRefError as error:
        return str(error)
    if allowed_kinds and kind.lower() not in allowed_kinds:
        return f"{ref!r} refers to a {kind}, expected one of {list(allowed_kinds)}"
    # Backstage compares refs case-insensitively: `Group:Default/Team` is group default/team.
    if not is_valid_namespace(ref_namespace.lower()) or not is_valid_entity_name(name):
        return f"{ref!r} names an entity that cannot exist (bad namespace or name)"
    return None


def owner_problem(owner: object, namespace: str = "default") -> str | None:
    """Why `owner` cannot be an entity's `spec.owner` (None when it can): it must parse as an
    entity ref, name a Group (the default kind) or a User, and name an entity that can exist.

    A bare name (`team-x`) is fine: Backstage reads it as a group in the entity's namespace.
    """
    return _ref_problem(owner, "Group", namespace, allowed_kinds=_OWNER_KINDS)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_non_empty_str(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


# --- sanitizers ----------------------------------------------------------------------------


def short_hash(raw: str) -> str:
    """A stable 8-hex-digit digest of `raw` (not a secret: it only keeps names apart)."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]


@functools.lru_cache(maxsize=4096)  # a project's name, on each of its components and APIs
def entity_name(raw: str) -> str:
    """`raw` if it is a valid lower-case Backstage name, else a valid one with a hash suffix.

    OpenChoreo's own names (Kubernetes names) pass unchanged up to 63 characters. A longer one
    is cut and joined to its hash by `_`, which no Kubernetes name holds: no other object's
    name can be the cut one (`<first 54 characters>-<hash>` could, and would take its entity).
    """
    if _is_plain_name(raw):
        return raw
    return hashed_entity_name(raw, raw, joint="_")


def hashed_entity_name(raw: str, key: str, *, joint: str = "-") -> str:
    """`raw` made a valid name (sanitized, cut to fit) that always ends in a hash of `key`.

    For a name that must differ from `raw` even when `raw` is valid (its plain form is taken),
    and for names built by joining parts: `key` should encode the parts unambiguously, so two
    different inputs that join to one string still get different names.
    """
    base = _SEPARATOR_RUN.sub(lambda run: run.group(0)[0], _NOT_NAME_CHAR.sub("-", _ascii(raw)))
    return _with_hash(base.strip("-_."), key, "-_.", joint)


def _is_plain_name(raw: str) -> bool:
    return is_valid_entity_name(raw) and raw == raw.lower()


@functools.lru_cache(maxsize=4096)  # a namespace's name, on everything in it
def namespace_name(raw: str) -> str:
    """`raw` if it is a valid Backstage namespace (a DNS label), else a valid one with a hash."""
    if is_valid_namespace(raw):
        return raw
    return _with_hash(_NOT_LABEL_CHAR.sub("-", _ascii(raw)).strip("-"), raw, "-")


def api_entity_name(component: str, endpoint: str) -> str:
    """The API entity name of a component's endpoint: `<component>-<endpoint>`, made valid.

    Distinct endpoints of one component never share a name: unchanged names differ because
    their inputs do, and every changed name carries a hash of its whole unsanitized input.
    """
    joined = f"{component}-{endpoint}"
    return joined if _is_plain_name(joined) else hashed_entity_name(joined, joined)


def v1_api_entity_name(project: str, component: str, endpoint: str) -> str:
    """The API entity name of an endpoint under the v1 API: `<project>-<component>-<endpoint>`,
    the name OpenChoreo's own Backstage provider gives it, made valid.

    A valid joined name is kept as it is, capitals too, so refs stay those that provider's users
    already have. Otherwise the name is sanitized, cut to fit 63 characters and given a hash of
    the whole unsanitized triple (not of the joined string), so two different triples never
    meet on one sanitized name.

    Two triples can still meet on one *plain* name: (`a`, `b-c`, `e`) and (`a-b`, `c`, `e`)
    both give `a-b-c-e`, as they do in OpenChoreo's provider; so can two that differ only in
    case (`httpApi`, `httpapi`), which Backstage takes for one entity. Telling those apart needs
    the whole catalog, so it is the caller's job (it passes its own `api_name` to the mapping).
    """
    joined = f"{project}-{component}-{endpoint}"
    if is_valid_entity_name(joined):
        return joined
    return hashed_entity_name(joined, json.dumps([project, component, endpoint]))


def entity_ref_of(kind: str, namespace: str, name: str) -> str:
    """The full ref (`component:acme/orders`) of the entity we write for the OpenChoreo
    resource `name` in `namespace`, both made valid as the mappings make them."""
    return f"{kind.lower()}:{namespace_name(namespace)}/{entity_name(name)}"


@functools.lru_cache(maxsize=4096)  # the same few types, names and labels, on every component
def tag(raw: str) -> str | None:
    """`raw` as a Backstage tag (lower-case, invalid runs -> `-`, at most 63); None if empty."""
    cleaned = _NOT_TAG_CHAR.sub("-", _ascii(raw)).strip("-")
    cleaned = cleaned[:MAX_NAME_LENGTH].rstrip("-")
    return cleaned or None


def tags(raws: Iterable[str | None]) -> list[str]:
    """Sanitized tags in input order, without empty ones or repeats."""
    out: list[str] = []
    for raw in raws:
        cleaned = tag(raw) if raw else None
        if cleaned and cleaned not in out:
            out.append(cleaned)
    return out


@functools.lru_cache(maxsize=4096)
def lower_kebab(raw: str) -> str:
    """`ScheduledTask` -> `scheduled-task`, `APIProxy` -> `api-proxy`, `a_b.c` -> `a-b-c`."""
    split = _CAMEL_BOUNDARY.sub("-", raw if raw.isascii() else unicodedata.normalize("NFKD", raw))
    return _NOT_LABEL_CHAR.sub("-", _ascii(split)).strip("-")


def _ascii(raw: str) -> str:
    """Lower-cased, accents dropped (`Café` -> `cafe`); other non-ASCII is left to callers."""
    if raw.isascii():  # nearly always: nothing to decompose
        return raw.lower()
    decomposed = unicodedata.normalize("NFKD", raw)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def _with_hash(base: str, raw: str, separators: str, joint: str = "-") -> str:
    digest = short_hash(raw)
    room = MAX_NAME_LENGTH - HASH_LENGTH - 1
    base = base[:room].rstrip(separators)
    return f"{base}{joint}{digest}" if base else digest
