"""The API's URLs as the client sends them: the API root of a configured base URL, and a
request's absolute URL with its query encoded as httpx encodes `params`."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

API_PREFIX = "/api/v1"


def api_root(base_url: str) -> str:
    """The configured base URL with the `/api/v1` prefix, whether or not it was given with it."""
    base = base_url.rstrip("/")
    return base if base.endswith(API_PREFIX) else base + API_PREFIX


def source_address(base_url: str) -> str:
    """The API root of `base_url` as one server is named however it is spelt: scheme and host
    in lower case, no default port, no trailing slash; without what is not an address (user
    information, a query, a fragment), which could hold a secret."""
    try:
        parts = urlsplit(base_url.strip())
        port = parts.port
    except ValueError:  # the configuration refuses such a URL before any burst
        return api_root(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    default = port is None or port == {"http": 80, "https": 443}.get(scheme)
    return api_root(f"{scheme}://{host}{'' if default else f':{port}'}{parts.path}")


def request_url(api: str, path: str, params: Mapping[str, str | int] | None) -> str:
    """The request's absolute URL below `api`: given a path and `params`, httpx parses three
    URLs a request (base, path, query), half of building the request and about a tenth of its
    CPU."""
    url = f"{api}/{path.lstrip('/')}"
    if not params:
        return url
    return url + "?" + urlencode([(key, _query_value(value)) for key, value in params.items()])


def _query_value(value: str | int) -> str:
    if isinstance(value, bool):  # as httpx writes them
        return "true" if value else "false"
    return str(value)
