"""How the HTTP client reaches the API, from the config and the environment: the TLS context,
and the proxy the environment sets for a URL (`HTTPS_PROXY`, `ALL_PROXY`, ...), which httpx
uses as curl does. That proxy is named in the errors of requests sent through it, so that a
refused connection or an unusable proxy is not taken for the API's fault; its value is never
shown (a proxy URL may hold a password)."""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import ssl
from urllib.parse import unquote, urlsplit

from choreo_ingest.config import OpenChoreoConfig
from choreo_ingest.errors import ConfigError
from choreo_ingest.logs import register_secret
from choreo_ingest.version import __version__


def default_user_agent() -> str:
    return f"choreo-ingest/{__version__}"


def proxy_variable(url: str) -> str | None:
    """The environment variable whose proxy requests to `url` go through, or None (none set, or
    `NO_PROXY` names its host, a domain above it, or a network holding its address)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if os.environ.get(name, "").strip():
            return None if _bypassed(parts.hostname or "") else name
    return None


def proxy_url(variable: str | None) -> str | None:
    """The proxy the variable sets, as httpx takes it (`proxy.corp:3128` is an http:// one).

    The client reads the environment's proxies through these functions, not through httpx's
    own (`trust_env`): httpx takes `NO_PROXY=10.0.0.0/8` for a host name, so an address in that
    network would go through the proxy, and it refuses to make any client at all where an IPv6
    network is listed (`fd00::/8`), as dual-stack clusters list them."""
    if variable is None:
        return None
    value = os.environ.get(variable, "").strip()
    return value if "://" in value else f"http://{value}"


def _bypassed(host: str) -> bool:
    """As curl reads `NO_PROXY`: `*`, a host or a domain above it, an address, a network."""
    listed = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    entries = [item.strip().lower() for item in listed.split(",")]
    if "*" in entries or _in_listed_network(host, entries):
        return True
    names = (entry.removeprefix("*").lstrip(".").strip("[]") for entry in entries)
    return any(
        name and (host.lower() == name or host.lower().endswith("." + name)) for name in names
    )


def _in_listed_network(host: str, entries: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in entries:
        if "/" not in entry:
            continue
        try:
            network = ipaddress.ip_network(entry.replace("[", "").replace("]", ""), strict=False)
        except ValueError:
            continue
        if address.version == network.version and address in network:
            return True
    return False


def register_proxy_secrets(variable: str | None) -> None:
    """Mask in every text from now on what of the proxy `variable` sets its answer may quote
    (a proxy may echo the request it refused): the password in its URL (or its user, which may
    be a key of its own: `http://KEY@proxy`), and the Basic credential httpx sends it as
    `Proxy-Authorization`."""
    try:
        parts = urlsplit(proxy_url(variable) or "")
        user, password = parts.username, parts.password
    except ValueError:
        return
    if user is None and password is None:
        return
    pair = f"{unquote(user or '')}:{unquote(password or '')}"
    register_secret(unquote(password) if password else unquote(user or ""))
    register_secret(base64.b64encode(pair.encode()).decode("ascii"))


def proxy_note(variable: str | None) -> str | None:
    """What an error about a request says of the proxy it went through, if any."""
    return f"through the proxy ${variable} sets" if variable else None


def with_proxy_note(text: str, variable: str | None) -> str:
    """`text`, the error of a request, with the proxy it went through named after it."""
    note = proxy_note(variable)
    return f"{text} ({note})" if note else text


def unusable_proxy(error: Exception, variable: str | None) -> ConfigError | None:
    """httpx could not make a client (`error`) to send requests through the proxy `variable`
    sets: that proxy as the cause, or None when the requests go through none."""
    if variable is None:
        return None
    if isinstance(error, ImportError):
        reason = "a SOCKS proxy needs the socksio package (pip install 'httpx[socks]')"
    else:
        reason = "not a proxy URL (http://, https:// or socks5://host:port)"
    return ConfigError(f"the proxy cannot be used: {reason}; fix or unset it", path=f"${variable}")


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
