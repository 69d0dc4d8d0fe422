"""HEAD answered as GET without its body (RFC 9110 §9.3.2): uptime monitors and load balancers
probe with HEAD, and the routes are declared for GET alone (FastAPI adds no HEAD, as Starlette's
own routes do). Plain ASGI middleware: the request goes on as a GET, every header of the GET's
answer (its status, ``Content-Type``, ``Content-Length``) goes back, and its body does not. The
answer is computed as for the GET (the export's stream included, then dropped); the schema
lists the GET operations only.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def without_body(message: Message) -> None:
            nonlocal ended
            if message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False) and not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, without_body)
