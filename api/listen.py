"""The sockets ``runlytics serve`` listens on, bound by the command before uvicorn starts.

Left to uvicorn, a port in use or a host that can't be listened on was uvicorn's log (six lines
of INFO and ERROR) and exit 3. Bound here, it is one line of the command's (CannotListen); and
as the command itself holds the port from then on, no other process can take it between a check
and the server's start.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import uvicorn


class CannotListen(Exception):
    """The host and port can't be listened on; the message names both and why, on one line."""


def bound_sockets(host: str, port: int) -> list[socket.socket]:
    """A socket bound to each address ``host`` resolves to, as uvicorn's own start binds them
    (asyncio's create_server: every address, an IPv6 socket for IPv6 alone, SO_REUSEADDR)."""
    try:
        # "" is every interface, as asyncio takes it
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise CannotListen(f"cannot listen on {host} port {port}: {error.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):  # each address once, in order
            sockets.append(_bound(family, kind, proto, address))
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise CannotListen(_why(error, host, port)) from None
    return sockets


def _bound(family: socket.AddressFamily, kind: socket.SocketKind, proto: int, address: Any) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        # as uvicorn: a restarted server need not wait out the old one's connections in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # the IPv4 address, if any, has a socket of its own
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _why(error: OSError, host: str, port: int) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host or 'every interface'} is in use"
    return f"cannot listen on {host or 'every interface'} port {port}: {error.strerror or error}"


class Server(uvicorn.Server):
    """uvicorn's server on sockets bound before it, saying where it listens as it does on its own
    ("Uvicorn running on http://HOST:PORT"): on sockets handed to it, uvicorn leaves that unsaid."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            self._log_started_message(sockets)
