"""``runlytics serve``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from runlytics.warehouse import db, migrate

from .errors import UserError
from .exits import EXIT_NOT_SERVING, EXIT_OK
from .reading import _existing_warehouse
from .status import _status_postgres

if TYPE_CHECKING:  # a type only
    import socket


def run_serve(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from runlytics.api import listen, metrics, security
    from runlytics.api.app import TOKEN_ENV, create_app

    if problem := metrics.stale_after_problem():  # refused, not read as the default (or as off)
        raise UserError(problem)
    target = db.resolve_target(args.db)
    read_db = None
    if args.read_db is not None:
        if not (isinstance(target, db.PostgresUrl) and db.is_postgres_url(args.read_db)):
            raise UserError("--read-db takes a postgresql:// URL, with --db postgresql://…")
        read_db = db.PostgresUrl(args.read_db)
    path = target if isinstance(target, db.PostgresUrl) else _existing_warehouse(args)
    try:
        base_url = security.checked_base_url(args.base_url) if args.base_url else None
        base_url = base_url or security.default_base_url(args.host, args.port)
        hosts = [h.strip() for given in args.allowed_hosts or [] for h in given.split(",") if h.strip()]
        hosts = hosts or security.default_hosts(args.host, urlsplit(base_url).hostname if base_url else None)
        app = create_app(  # an empty token: ValueError
            path, allowed_hosts=hosts, base_url=base_url, read_db=read_db, read_timeout=args.read_timeout
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    if isinstance(path, Path):
        migrate.ensure_current(path, wait=args.wait)
    else:
        _status_postgres(read_db or path)  # reachable, at this code's revision: else a one-line error
    sockets = listen.bound_sockets(args.host, args.port)  # CannotListen: exit 2 (cli/errors.py)
    if app.state.token is None and not security.is_loopback(args.host):
        print(
            f"runlytics serve: warning: listening on {args.host} without {TOKEN_ENV}: "
            "anyone who can reach this port can read the warehouse",
            file=sys.stderr,
        )
    return _run_server(app, args, sockets)


class _Terminated(Exception):
    """SIGTERM (``systemctl stop``, ``docker stop``), raised by ``_terminated``."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _run_server(app: Any, args: argparse.Namespace, sockets: list[socket.socket]) -> int:
    """uvicorn on the sockets bound for it, until stopped (SIGINT or SIGTERM, each a graceful
    shutdown: exit 0); exit 3 when it did not start, as uvicorn.run exits."""
    import uvicorn

    from runlytics.api import listen

    server = listen.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info"))
    # uvicorn sends the signal that stopped it again once it has shut down, to the handler it
    # found: Ctrl-C's raises KeyboardInterrupt, and SIGTERM's default ended the process 143
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        server.run(sockets=sockets)
    except (KeyboardInterrupt, _Terminated):  # uvicorn.run ignores Ctrl-C's too
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for sock in sockets:
            sock.close()
    return EXIT_OK if server.started else EXIT_NOT_SERVING
