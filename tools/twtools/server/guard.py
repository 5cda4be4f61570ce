"""Slow and idle clients: uvicorn's h11 protocol with deadlines and a bound on open connections.

uvicorn itself waits forever for a request head or a request body that never completes, so a few
thousand half-open connections hold the server's file descriptors. :func:`guarded_protocol` makes a
protocol class (passed to ``uvicorn.Config(http=...)``) that enforces, per connection:

* the request head must be complete ``header_timeout`` seconds after the connection opened or the
  previous response ended (uvicorn's keep-alive time-out closes idle connections sooner);
* a request body must be complete ``body_timeout`` seconds after its head; for the firmware upload
  (large, admin only) the limit is ``body_timeout`` seconds *without any progress* instead;
* a response the client does not read is given up after ``send_timeout`` seconds of a full send buffer;
* at most ``max_connections`` connections: a new one first replaces the oldest connection that is
  still waiting for a request head (then the oldest one still sending a body); only when every
  connection is busy with a request is the new one answered 503 and closed.

A connection that misses a deadline before its request was answered gets ``408 Request timeout``
(JSON) and is closed; one that stops reading its response is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("twtools.server")

UPLOAD_ROUTE = (b"POST", "/admin/firmware")


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("header_timeout", "body_timeout", "send_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


def _raw_answer(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


REQUEST_TIMEOUT = _raw_answer(408, "Request Timeout", "Request timeout")
OVERLOADED = _raw_answer(503, "Service Unavailable", "Too many connections")
BAD_REQUEST = _raw_answer(400, "Bad Request", "Invalid HTTP request")


class _Registry:
    """The open connections of one server, by what they are waiting for (oldest first)."""

    def __init__(self) -> None:
        self.count = 0
        self.waiting_head: OrderedDict[GuardedProtocolBase, None] = OrderedDict()
        self.sending_body: OrderedDict[GuardedProtocolBase, None] = OrderedDict()
        self.timed_out = 0
        self.evicted = 0
        self.refused = 0

    def place(self, proto: GuardedProtocolBase, phase: str) -> None:
        self.waiting_head.pop(proto, None)
        self.sending_body.pop(proto, None)
        if phase == "head":
            self.waiting_head[proto] = None
        elif phase == "body":
            self.sending_body[proto] = None

    def victim(self) -> GuardedProtocolBase | None:
        for table in (self.waiting_head, self.sending_body):
            if table:
                return next(iter(table))
        return None


class GuardedProtocolBase(H11Protocol):
    limits: ConnectionLimits = ConnectionLimits()
    registry: _Registry = _Registry()

    _phase = "new"
    _timer: asyncio.TimerHandle | None = None
    _send_timer: asyncio.TimerHandle | None = None
    _counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        reg = self.registry
        if reg.count >= self.limits.max_connections:
            victim = reg.victim()
            if victim is None:
                reg.refused += 1
                self.transport.write(OVERLOADED)
                self.transport.close()
                return
            reg.evicted += 1
            victim._expire()
        reg.count += 1
        self._counted = True
        self._enter("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._counted:
            self._counted = False
            self.registry.count -= 1
            self.registry.place(self, "gone")
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track(progress=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track(progress=False)

    def send_400_response(self, msg: str) -> None:
        self._cancel()
        self.transport.write(BAD_REQUEST)
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # -- deadlines

    def _track(self, progress: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._phase != "head":
                self._enter("head")
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._enter("body")
            elif progress and self._is_upload():
                self._arm(self.limits.body_timeout)  # a large upload: a limit on silence, not on total
        elif self._phase != "app":
            self._enter("app")

    def _is_upload(self) -> bool:
        scope: dict[str, Any] | None = self.scope  # type: ignore[assignment]
        return scope is not None and (scope["method"].encode(), scope["path"]) == UPLOAD_ROUTE

    def _enter(self, phase: str) -> None:
        self._phase = phase
        self.registry.place(self, phase)
        if phase == "head":
            self._arm(self.limits.header_timeout)
        elif phase == "body":
            self._arm(self.limits.body_timeout)
        else:
            self._cancel()

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, self._expire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        """Deadline missed (or evicted): 408 if nothing was answered yet, then close."""
        self._cancel()
        self.registry.place(self, "gone")
        if self.transport is None or self.transport.is_closing():
            return
        self.registry.timed_out += 1
        cycle = self.cycle
        if self._phase == "head":
            answer = self._has_partial_head()  # a silent (or idle keep-alive) connection is just closed
        else:  # "body": unless the app has answered already (e.g. 401 before reading the body)
            answer = self._phase == "body" and (cycle is None or not cycle.response_started)
        if answer:
            self.transport.write(REQUEST_TIMEOUT)
        self._phase = "closed"
        self.transport.close()

    def _has_partial_head(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _send_stalled(self) -> None:
        self._send_timer = None
        if self.transport is not None and not self.transport.is_closing():
            log.warning(
                "closing a connection that has not read its response for %g s", self.limits.send_timeout
            )
            self.transport.abort()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocolBase]:
    """A protocol class for one server: its own limits and its own table of connections."""
    return type("GuardedH11Protocol", (GuardedProtocolBase,), {"limits": limits, "registry": _Registry()})
