"""The OpenChoreo API's address as `openchoreo.baseUrl` gives it: its API root, and the name of
the server it reaches (what a cycle records as its source). Light: the idle `run` asks it whether
the server changed since the cycle in progress began."""

from __future__ import annotations

from urllib.parse import urlsplit

API_PREFIX = "/api/v1"


def api_root(base_url: str) -> str:
    """The configured base URL with the `/api/v1` prefix, whether or not it was given with it,
    its path's repeated slashes made one (`http://host//api/v1`: a Go server answers such a
    path with a redirect, which no API client follows)."""
    scheme, separator, rest = base_url.partition("://")
    authority, slash, path = rest.partition("/")
    if separator and slash:
        path = "/".join(segment for segment in path.split("/") if segment)
        base_url = f"{scheme}://{authority}/{path}"
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
