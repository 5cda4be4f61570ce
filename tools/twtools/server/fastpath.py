"""The device's frequent requests answered beneath FastAPI's per-request layers.

An upload or an activation through FastAPI passes its telemetry check, its middleware stack (error
and exception middlewares, an exit stack), the router, a ``Request`` object, dependency solving and
the response model's validation: ~70 us of CPU per request here, as much as the server's own work for an
upload (its SQLite writes included) and more than an activation's. Devices send these requests all
day; the rest of the API is rare.

:class:`DevicePath` sits in front of the FastAPI app (``TwomesApp.__call__``) and takes only
``POST`` to the paths it is given.
For each it reads the body, then calls the path's *handler*, which does the same checks the FastAPI
route does (strict JSON, the same pydantic model, the bearer token) with no side effect, and either
answers (:class:`Answer`, or an ``HTTPException`` once it has done something, such as taking a
rate-limit token) or returns ``None``: the request then goes to the FastAPI app with the body replayed
message by message, as it came, and the route answers it as if the fast path did not exist. So every
request that is not plainly good - a bad body, no token, a wrong one, too large, not JSON - gets
exactly the route's answer (its 403, 401, 413, 422), and the handlers share the routes' code for the
work itself (``app.py``). The equality of both ways is tested request by request
(``host_tests/server/test_server_fast_path.py``).

What it does not do: FastAPI's telemetry does not see the requests it answers (the server
configures none); those it declines go through the whole FastAPI app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("twtools.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    """A 200 with a JSON body (already encoded)."""

    body: bytes


# (scope, body) -> an Answer, or None to leave the request to the FastAPI route
Handler = Callable[[Scope, bytes], Awaitable[Answer | None]]


class DevicePath:
    """``POST`` to one of ``handlers``' paths: the handler first, the FastAPI app when it declines."""

    def __init__(self, app: ASGIApp, handlers: dict[str, Handler], body_limit: int) -> None:
        self.app = app
        self.handlers = handlers
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = await self._read(scope, receive, messages)
        answer: Answer | None = None
        try:
            if body is not None:
                answer = await handler(scope, body)
        except HTTPException as exc:  # after the handler did something: its answer, as FastAPI's
            await JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)(
                scope, receive, send
            )
            return
        except Exception:  # a request boundary: as the app's handler of unexpected errors
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            await JSONResponse({"detail": "Internal server error"}, status_code=500)(scope, receive, send)
            return
        if answer is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        # what a Starlette Response(answer.body, media_type="application/json") sends
        headers = [(b"content-length", b"%d" % len(answer.body)), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _read(self, scope: Scope, receive: Any, messages: list[Message]) -> bytes | None:
        """The whole body, or None (the messages read so far kept for the replay): over the limit,
        declared or sent, not JSON by its Content-Type, empty, or the client left."""
        length = content_type = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"content-length" and length is None:
                length = value
            elif name == b"content-type" and content_type is None:
                content_type = value
        json_type = content_type is not None and (
            content_type.split(b";", 1)[0].strip().lower() == b"application/json"
        )
        if not json_type or (length is not None and (not length.isdigit() or int(length) > self.body_limit)):
            return None
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return None
            size += len(message.get("body", b""))
            if size > self.body_limit:
                return None
            if not message.get("more_body", False):
                break
        if size == 0:
            return None
        return b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[Message], receive: Any) -> Callable[[], Awaitable[Message]]:
    """``receive`` that gives ``messages`` again first, then what ``receive`` gives."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        message: Message = await receive()
        return message

    return replayed


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, read as FastAPI's ``HTTPBearer``
    reads it (the first such header, the scheme in any case), or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None
