"""What every answer goes through: the ``Host`` allow-list and the security headers.

Both are plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would buffer the streamed
exports). The allow-list defeats DNS rebinding: a page on another site whose name was made to
resolve to this server reaches it with its own name in ``Host``, which is not on the list.
The probes (/healthz, /readyz) answer whatever the ``Host``: they carry no data, and a load
balancer or kubelet asks by an address nobody lists.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The pages draw only what the server sent: no inline script or style element, no other
# origin, no frame around them. The <link rel="icon" href="data:,"> of the pages is an image.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers without CSP 2
    (b"referrer-policy", b"no-referrer"),
]
PROBES = frozenset({"/healthz", "/readyz"})
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def host_of(header: str) -> str:
    """The host name of a ``Host`` header: no port, no IPv6 brackets, lower case, no final dot."""
    value = header.strip()
    if value.startswith("["):
        return value[1 : value.find("]")].lower() if "]" in value else ""
    return value.split(":", 1)[0].lower().rstrip(".")


def _name(host: str) -> str:
    """A name or address as given (not a Host header: no port), bare and in lower case."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def is_loopback(host: str) -> bool:
    """Whether an address to listen on (or a name) reaches this machine only."""
    name = _name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_hosts(bound: str, base_url_host: str | None = None) -> list[str]:
    """The bound address (unless it is every address), localhost, and the base URL's host."""
    names = [_name(bound), *LOCAL_NAMES, _name(base_url_host or "")]
    return list(dict.fromkeys(n for n in names if n not in WILDCARD_ADDRESSES))


def _matches(host: str, allowed: frozenset[str]) -> bool:
    if not host:
        return False
    if host in allowed or "*" in allowed:
        return True
    # "*.example.com" allows every name below example.com
    return any(pattern.startswith("*.") and host.endswith(pattern[1:]) for pattern in allowed)


class AllowedHosts:
    """Answers 400 to a request whose ``Host`` is not on the list (None: any host)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str] | None) -> None:
        self.app = app
        self.hosts = None if hosts is None else frozenset(_name(h) for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hosts is None or scope["type"] != "http" or scope.get("path") in PROBES:
            await self.app(scope, receive, send)
            return
        given = [v for k, v in scope.get("headers", []) if k == b"host"]
        if len(given) == 1 and _matches(host_of(given[0].decode("latin-1")), self.hosts):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "Host header not allowed"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds HEADERS to every answer (an answer's own value of one wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def checked_base_url(url: str) -> str:
    """A base URL for links (``http(s)://host[:port][/prefix]``), without its final slash; else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"base URL {url!r} is not http(s)://host[:port][/path]")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"base URL {url!r} must not hold a user or password")
    return url.rstrip("/")


def default_base_url(host: str, port: int) -> str | None:
    """``http://HOST:PORT`` for the address listened on; None (relative links) for every address."""
    if _name(host) in WILDCARD_ADDRESSES:
        return None
    return f"http://[{host}]:{port}" if ":" in host and not host.startswith("[") else f"http://{host}:{port}"
