"""Pieces both OpenChoreo mappings share (the organization era in `entities`, v1 in
`entities_v1`): the entity envelope, metadata with our annotations, and readers for the loosely
typed values OpenChoreo sends (blank strings, ports, schemas, repositories).

Everything here is pure and deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from choreo_ingest.config_values import is_url_host
from choreo_ingest.errors import PermanentError
from choreo_ingest.logs import scrub_secrets
from choreo_ingest.models import JSON, Entity
from choreo_ingest.providers.openchoreo.naming import lower_kebab, tags

API_VERSION = "backstage.io/v1alpha1"
MANAGED_LABEL = "openchoreo.io/managed"
LOCATION = "backstage.io/managed-by-location"
ORIGIN_LOCATION = "backstage.io/managed-by-origin-location"
SOURCE_LOCATION = "backstage.io/source-location"
PREFIX = "openchoreo.io/"
DELETION_TIMESTAMP = "deletion-timestamp"
"""Annotation key (under PREFIX) of a resource on its way out: its entity stays until it is gone."""
UNKNOWN = "unknown"

_ENDPOINT_API_TYPES = {
    "rest": "openapi",
    "http": "openapi",
    "graphql": "graphql",
    "grpc": "grpc",
    "websocket": "asyncapi",
    "tcp": "tcp",
    "udp": "udp",
}


def entity(kind: str, metadata: dict[str, Any], spec: dict[str, JSON], *, scope: str) -> Entity:
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}
    return Entity(kind, metadata["namespace"], metadata["name"], body, scope)


def metadata(
    name: str,
    namespace: str,
    provider: str,
    openchoreo: Mapping[str, str | None],
    *,
    title: object = None,
    description: object = None,
    entity_tags: list[str] | None = None,
) -> dict[str, Any]:
    """`metadata` with `openchoreo.io/<key>` annotations (None values left out), our location
    annotations and managed label; blank titles and descriptions are left out (Backstage
    rejects an empty title)."""
    annotations = {PREFIX + key: value for key, value in openchoreo.items() if value is not None}
    annotations[LOCATION] = annotations[ORIGIN_LOCATION] = f"provider:{provider}"
    body: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "annotations": annotations,
        "labels": {MANAGED_LABEL: "true"},
    }
    shown = text(title)
    if shown:
        body["title"] = shown
    about = text(description)
    if about:
        body["description"] = about
    if entity_tags:
        body["tags"] = entity_tags
    return body


def required_name(value: object, what: str, resource: Mapping[str, Any]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PermanentError(f"OpenChoreo {what} without a name: {preview(resource)}")
    return value


def text(value: object) -> str | None:
    """A string stripped of surrounding blanks, without NUL characters (PostgreSQL, Backstage's
    usual database, cannot store them); None for blanks and non-strings."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        return value.strip() or None
    return None


def port(value: object) -> str | None:
    """A port as the string an annotation holds; None when it is not a port number (1-65535)."""
    if isinstance(value, str):
        digits = value.strip()
        # A port has at most 5 digits: int() of 4,300 or more raises (CPython's limit).
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 5 else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return str(value)
    return None


def as_mapping(value: object) -> Mapping[str, Any]:
    # What JSON decodes to (a dict, or None for a missing key) skips the ABC check, a third of
    # the mapping's time.
    if type(value) is dict:
        return value
    if value is None:
        return _EMPTY
    return value if isinstance(value, Mapping) else _EMPTY


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def preview(resource: Mapping[str, Any]) -> str:
    """The start of `resource` as JSON, for an error; secrets masked before it is cut."""
    return scrub_secrets(json.dumps(resource, sort_keys=True, default=str))[:200]


def type_tags(openchoreo_type: str | None) -> list[str]:
    """`deployment/web-app` -> [`deployment`, `web-app`]; `ScheduledTask` -> [`scheduled-task`]."""
    if not openchoreo_type:
        return []
    return tags(lower_kebab(part) for part in openchoreo_type.split("/"))


def endpoint_api_type(endpoint_type: str | None) -> str:
    """The API `spec.type` for an endpoint type: `REST`/`HTTP` -> `openapi`, `gRPC` -> `grpc`..."""
    if not endpoint_type:
        return UNKNOWN
    return _ENDPOINT_API_TYPES.get(endpoint_type.lower()) or lower_kebab(endpoint_type) or UNKNOWN


def schema_content(details: Mapping[str, Any]) -> str | None:
    """An endpoint's inline schema text without NUL characters (as `text` drops them); None
    when absent or blank."""
    content = as_mapping(details.get("schema")).get("content")
    if content is None:
        return None
    if isinstance(content, str):
        if "\x00" in content:
            content = content.replace("\x00", "")
        return content if content.strip() else None
    if isinstance(content, Mapping | list) and content:
        return json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False)
    return None


def source_location(parameters: Mapping[str, Any], *, tree: bool = True) -> str | None:
    """`url:<repository>` in Backstage's location format, from build parameters that hold
    `repository: {url, revision: {branch}}` (a `revision` beside `repository` also counts),
    when the repository is an http(s) URL, or a GitHub or GitLab SSH address (taken as its
    https URL).

    With `tree`, GitHub and GitLab get their branch-tree URL when the branch is known; other
    hosts get the repository URL alone, since their tree-URL conventions differ. Credentials,
    query and fragment are left out (`https://user:token@host/r?private_token=...`): the
    annotation is for everyone to read.
    """
    repository = as_mapping(parameters.get("repository"))
    url = _forge_https(text(repository.get("url")) or "")
    if not url:
        return None
    host = _FORGE_PREFIXES.get(url[: url.find("/", 8) + 1]) if _is_simple(url) else None
    if host is None:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return None
        host = parts.hostname or ""
        if parts.scheme.lower() not in ("http", "https") or not is_url_host(
            host, bracketed="[" in parts.netloc
        ):
            return None
        netloc = parts.netloc.rpartition("@")[2]  # without user and password
        url = urlunsplit((parts.scheme, netloc, _escaped_path(parts.path), "", ""))
    revision = as_mapping(repository.get("revision")) or as_mapping(parameters.get("revision"))
    branch = text(revision.get("branch")) if tree else None
    base = url.rstrip("/").removesuffix(".git")
    if branch and host in ("github.com", "gitlab.com") and base.count("/") > 2:
        path = "/tree/" if host == "github.com" else "/-/tree/"
        return f"url:{base}{path}{quote(branch, safe='/')}/"
    return f"url:{url}"


def _escaped_path(path: str) -> str:
    """`path` as a URL carries it: spaces and other characters a URL cannot hold
    percent-encoded (UTF-8), its escapes left as they are, a `%` that starts none escaped."""
    return quote(_LONE_PERCENT.sub("%25", path), safe="/%:@!$&'()*+,;=~")


_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

_SSH_FORGE = re.compile(r"(?:ssh://)?git@(github\.com|gitlab\.com)[:/](?P<path>[^\s?#]+)")
"""A GitHub or GitLab SSH address: `git@github.com:org/repo.git`, `ssh://git@gitlab.com/g/r`."""


def _forge_https(url: str) -> str:
    """A GitHub or GitLab SSH address as the https URL of the same repository; else `url`."""
    match = _SSH_FORGE.fullmatch(url)
    return f"https://{match[1]}/{match['path'].removesuffix('.git')}" if match else url


def _is_simple(url: str) -> bool:
    """A printable ASCII URL with no user, query, fragment, nor a character its path would
    escape (`_escaped_path`): taken as it stands."""
    return url.isascii() and url.isprintable() and not any(mark in url for mark in _NOT_SIMPLE)


_NOT_SIMPLE = frozenset('@?# %"<>\\^`{|}')


_FORGE_PREFIXES = {
    f"{scheme}://{host}/": host
    for scheme in ("http", "https")
    for host in ("github.com", "gitlab.com")
}
"""URL starts whose host `urlsplit` would give as it stands (the common case, without parsing)."""
