"""How the HTTP client reaches the API, from the config and the environment: the TLS context,
and the proxy the environment sets for a URL (`HTTPS_PROXY`, `ALL_PROXY`, ...), which httpx
uses as curl does. That proxy is named in the errors of requests sent through it, so that a
refused connection or an unusable proxy is not taken for the API's fault; its value is never
shown (a proxy URL may hold a password)."""

from __future__ import annotations

import functools
import os
import ssl
from urllib.parse import urlsplit

from choreo_ingest.config import OpenChoreoConfig
from choreo_ingest.errors import ConfigError

_SCHEMES = ("http", "https", "all")


def proxy_variable(url: str) -> str | None:
    """The environment variable whose proxy requests to `url` go through, or None (none set, or
    `NO_PROXY` names its host)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if os.environ.get(name, "").strip():
            return None if _bypassed(parts.hostname or "") else name
    return None


def proxy_variables() -> list[str]:
    """Every proxy variable set: httpx sets up each one's proxy when a client is made, whatever
    host it will be used for."""
    names = (f"{scheme}_proxy" for scheme in _SCHEMES)
    return [n for name in names for n in (name, name.upper()) if os.environ.get(n, "").strip()]


def _bypassed(host: str) -> bool:
    listed = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    entries = [item.strip().lower() for item in listed.split(",")]
    if "*" in entries:
        return True
    names = (entry.removeprefix("*").lstrip(".") for entry in entries)
    return any(
        name and (host.lower() == name or host.lower().endswith("." + name)) for name in names
    )


def proxy_note(variable: str | None) -> str | None:
    """What an error about a request says of the proxy it went through, if any."""
    return f"through the proxy ${variable} sets" if variable else None


def with_proxy_note(text: str, variable: str | None) -> str:
    """`text`, the error of a request, with the proxy it went through named after it."""
    note = proxy_note(variable)
    return f"{text} ({note})" if note else text


def unusable_proxy(error: Exception) -> ConfigError | None:
    """httpx could not make a client (`error`): the proxies the environment sets as the cause
    (httpx sets up every one, whatever host it is for), or None when none is set."""
    variables = proxy_variables()
    if not variables:
        return None
    if isinstance(error, ImportError):
        reason = "a SOCKS proxy needs the socksio package (pip install 'httpx[socks]')"
    else:
        reason = "not a proxy URL (http://, https:// or socks5://host:port)"
    named = " or ".join(f"${name}" for name in variables)
    return ConfigError(f"the proxy cannot be used: {reason}; fix or unset it", path=named)


def tls_verify(config: OpenChoreoConfig) -> ssl.SSLContext | bool:
    if config.insecure_skip_verify:
        return False
    try:
        return _tls_context(config.ca_bundle)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"cannot load CA bundle {config.ca_bundle}: {error}", path="openchoreo.caBundle"
        ) from None


@functools.lru_cache(maxsize=4)
def _tls_context(cafile: str | None) -> ssl.SSLContext:
    """One context per CA bundle for the process: loading the trust store costs ~40 ms, and a
    client is built per burst and per inbox drain (serve drains for every few events)."""
    return ssl.create_default_context(cafile=cafile)
