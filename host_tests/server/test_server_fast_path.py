"""The device's fast path (module twtools.server.fastpath) answers exactly as the FastAPI routes do.

Two apps on one database: one with the fast path (the default), one without. Every request below is
sent to both, in-process (ASGI), and the answers must be the same: status, headers, body (a new
session token and the server's time compared by their form). Each case also says who must answer
it on the fast-path app: the fast path itself (a plainly good request, or an error after it took a
rate-limit token or wrote) or the FastAPI route it hands the request to (anything else) - so a fast
path that always stepped aside would fail here too.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from twtools.server.app import create_app
from twtools.server.fastpath import DevicePath
from twtools.server.ratelimit import Rate

VARIABLE = "/device/measurements/variable-interval"
FIXED = "/device/measurements/fixed-interval"
ACTIVATE = "/device/activate"
T0 = 1795348243
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    by_route: bool  # the FastAPI app was called


@dataclass
class Request:
    path: str
    body: bytes | list[bytes]  # a list: one ASGI message per part
    token: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes | None = b"application/json"
    disconnect: bool = False  # the client leaves after the parts


class Side:
    """One app (with or without the fast path) and the device tokens it has seen."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.route_calls = 0
        self.fast: DevicePath | None = None

    async def start(self) -> None:
        # count what reaches the FastAPI app behind the fast path
        stack = self.app.device_path
        if isinstance(stack, DevicePath):
            self.fast = stack
            inner = stack.app

            async def counted(scope: Any, receive: Any, send: Any) -> None:
                self.route_calls += 1
                await inner(scope, receive, send)

            stack.app = counted

    async def send(self, req: Request) -> Answer:
        parts = req.body if isinstance(req.body, list) else [req.body]
        headers = list(req.headers)
        if req.content_type is not None:
            headers.append((b"content-type", req.content_type))
        if req.token is not None:
            headers.append((b"authorization", b"Bearer " + req.token.encode()))
        if not isinstance(req.body, list):
            headers.append((b"content-length", str(len(req.body)).encode()))
        messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": p, "more_body": i < len(parts) - 1 or req.disconnect}
            for i, p in enumerate(parts)
        ]
        if req.disconnect:
            messages.append({"type": "http.disconnect"})

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        out: dict[str, Any] = {"status": 0, "headers": [], "body": b""}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
                out["headers"] = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": req.path,
            "raw_path": req.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        before = self.route_calls
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # an app that raises after answering (Starlette's 500 path)
            out.setdefault("raised", repr(exc))
        return Answer(out["status"], out["headers"], out["body"], self.route_calls > before)


def _normal(answer: Answer) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The answer with a new session token and the server's time replaced by their form (the bytes
    otherwise as sent; the Content-Length must be the body's)."""
    assert dict(answer.headers)[b"content-length"] == str(len(answer.body)).encode()
    body = answer.body
    if answer.status == 200:
        value = json.loads(body)
        for key, form in (("session_token", TOKEN_RE), ("server_time", TIME_RE)):
            if key in value:
                assert form.match(value[key]), value
                body = body.replace(value[key].encode(), b"<" + key.encode() + b">")
    headers = [(k, b"<n>" if k == b"content-length" else v) for k, v in answer.headers]
    return answer.status, headers, body


@asynccontextmanager
async def _sides(tmp_path: Path) -> AsyncIterator[tuple[Side, Side, dict[str, Any]]]:
    db, files = tmp_path / "t.sqlite3", tmp_path / "files"
    rate = Rate.parse("3/3600")  # the address limiter: the 4th failed guess is a 429
    fast_app = create_app(db, files, address_rate=rate)
    admin = fast_app.state.initial_admin_token
    route_app = create_app(db, files, address_rate=rate, fast_path=False)
    async with fast_app.router.lifespan_context(fast_app), route_app.router.lifespan_context(route_app):
        fast, route = Side(fast_app), Side(route_app)
        await fast.start()
        await route.start()
        assert fast.fast is not None and route.fast is None
        yield fast, route, await _provision(route, admin)


async def _admin(side: Side, admin: str, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    answer = await side.send(Request(path, json.dumps(body).encode(), token=token or admin))
    assert answer.status in (200, 201), (path, answer)
    return json.loads(answer.body)


async def _provision(side: Side, admin: str) -> dict[str, Any]:
    """Three attached devices (one per app, one spare) and one not attached."""
    account = await _admin(side, admin, "/admin/accounts", {"name": "owner"})
    out: dict[str, Any] = {"activation": {}}
    for k, label in enumerate(("a", "b", "spare", "loose")):
        act = f"{label}-activation-token-{k}".ljust(20, "x")
        await _admin(
            side,
            admin,
            "/device",
            {"name": f"TWOMES-F00{k:03X}", "device_type": "Generic-Test", "activation_token": act},
        )
        if label != "loose":
            await _admin(
                side, admin, "/account/device/activate", {"activation_token": act}, account["session_token"]
            )
        out["activation"][label] = act
    return out


def _upload(t: int, values: int = 4, prop: str = "heartbeat") -> bytes:
    return json.dumps(
        {
            "upload_time": t + 100,
            "property_measurements": [
                {
                    "property_name": prop,
                    "measurements": [{"timestamp": t + i, "value": str(i)} for i in range(values)],
                }
            ],
        }
    ).encode()


def _fixed(t: int, interval: float = 60, values: int = 3) -> bytes:
    return json.dumps(
        {
            "upload_time": t + 1000,
            "property_measurements": [
                {
                    "property_name": "heartbeat",
                    "timestamp": t,
                    "timestamp_type": "start",
                    "interval": interval,
                    "measurements": [str(i) for i in range(values)],
                }
            ],
        }
    ).encode()


# (name, request for a device token, who answers on the fast-path app: "fast" or "route")
Case = tuple[str, Callable[[str], Request], str]
UPLOAD_CASES: list[Case] = [
    ("variable", lambda tok: Request(VARIABLE, _upload(T0), tok), "fast"),
    ("repeated", lambda tok: Request(VARIABLE, _upload(T0), tok), "fast"),
    ("fixed", lambda tok: Request(FIXED, _fixed(T0 + 10), tok), "fast"),
    ("in parts", lambda tok: Request(VARIABLE, [_upload(T0 + 20)[:7], _upload(T0 + 20)[7:]], tok), "fast"),
    (
        "charset",
        lambda tok: Request(VARIABLE, _upload(T0 + 30), tok, content_type=b"Application/JSON; charset=utf-8"),
        "fast",
    ),
    ("unknown property", lambda tok: Request(VARIABLE, _upload(T0 + 40, prop="nope"), tok), "fast"),
    ("no token", lambda tok: Request(VARIABLE, _upload(T0 + 50)), "route"),
    (
        "basic auth",
        lambda tok: Request(
            VARIABLE, _upload(T0 + 50), headers=[(b"authorization", b"Basic " + tok.encode())]
        ),
        "route",
    ),
    (
        "empty bearer",
        lambda tok: Request(VARIABLE, _upload(T0 + 50), headers=[(b"authorization", b"Bearer  ")]),
        "route",
    ),
    ("wrong token", lambda tok: Request(VARIABLE, _upload(T0 + 50), tok[:-2] + "zz"), "route"),
    (
        "wrong token, bad body",
        lambda tok: Request(VARIABLE, b'{"upload_time": []}', tok[:-2] + "zz"),
        "route",
    ),
    (  # "NA": device 4, the one never activated (no session token stored)
        "another device's id",
        lambda tok: Request(VARIABLE, _upload(T0 + 50), "NA" + tok[tok.index(".") :]),
        "route",
    ),
    ("not a token", lambda tok: Request(VARIABLE, _upload(T0 + 50), "abc"), "route"),
    ("not json", lambda tok: Request(VARIABLE, b'{"upload_time": 1,', tok), "route"),
    ("nan", lambda tok: Request(VARIABLE, _upload(T0 + 50).replace(b'"0"', b"NaN"), tok), "route"),
    (
        "lone surrogate",
        lambda tok: Request(VARIABLE, _upload(T0 + 50).replace(b'"heartbeat"', b'"\\ud800"'), tok),
        "route",
    ),
    ("a list", lambda tok: Request(VARIABLE, b"[1, 2]", tok), "route"),
    (
        "naive time",
        lambda tok: Request(
            VARIABLE,
            _upload(T0 + 50).replace(
                b'"upload_time": %d' % (T0 + 150), b'"upload_time": "2026-01-01T00:00:00"'
            ),
            tok,
        ),
        "route",
    ),
    ("fixed out of range", lambda tok: Request(FIXED, _fixed(253402300000, interval=10_000), tok), "route"),
    ("text/plain", lambda tok: Request(VARIABLE, _upload(T0 + 50), tok, content_type=b"text/plain"), "route"),
    ("no content type", lambda tok: Request(VARIABLE, _upload(T0 + 50), tok, content_type=None), "route"),
    ("empty body", lambda tok: Request(VARIABLE, b"", tok), "route"),
    (
        "declared too large",
        lambda tok: Request(VARIABLE, _upload(T0 + 50), tok, headers=[(b"content-length", b"70000")]),
        "route",
    ),
    ("sent too large", lambda tok: Request(VARIABLE, [b" " * 40000, b" " * 30000], tok), "route"),
    ("client left", lambda tok: Request(VARIABLE, [_upload(T0 + 60)[:10]], tok, disconnect=True), "route"),
]


@pytest.mark.parametrize("order", ["fast first", "route first"])
def test_uploads_are_answered_alike(tmp_path: Path, order: str) -> None:
    async def main() -> None:
        async with _sides(tmp_path) as (fast, route, provisioned):
            tokens = {}
            for side, label in ((fast, "a"), (route, "b")):
                answer = await side.send(
                    Request(
                        ACTIVATE, json.dumps({"activation_token": provisioned["activation"][label]}).encode()
                    )
                )
                assert answer.status == 200, answer
                tokens[id(side)] = json.loads(answer.body)["session_token"]
            for name, make, who in UPLOAD_CASES:
                pair = [fast, route] if order == "fast first" else [route, fast]
                answers = {id(side): await side.send(make(tokens[id(side)])) for side in pair}
                a, b = answers[id(fast)], answers[id(route)]
                assert _normal(a) == _normal(b), name
                assert a.by_route == (who == "route"), (
                    f"{name}: answered by the {'route' if a.by_route else 'fast path'}"
                )
            # both devices hold the same measurements
            rows = (
                fast.app.state.db.connect()
                .execute(
                    "SELECT d.name, count(*) FROM measurement m JOIN device d ON d.id = m.device_id GROUP BY d.name ORDER BY d.name"
                )
                .fetchall()
            )
            assert [r[1] for r in rows] == [4 + 3 + 4 + 4] * 2

    asyncio.run(main())


def test_activations_are_answered_alike(tmp_path: Path) -> None:
    async def main() -> None:
        async with _sides(tmp_path) as (fast, route, provisioned):
            act = provisioned["activation"]

            def body(token: str) -> bytes:
                return json.dumps({"activation_token": token}).encode()

            cases: list[tuple[str, Request, str]] = [
                ("good", Request(ACTIVATE, body(act["spare"])), "fast"),
                ("again", Request(ACTIVATE, body("  " + act["spare"] + " ")), "fast"),
                ("not attached", Request(ACTIVATE, body(act["loose"])), "fast"),
                ("too short", Request(ACTIVATE, body("short")), "route"),
                ("no field", Request(ACTIVATE, b'{"token": "x"}'), "route"),
                (
                    "not json",
                    Request(
                        ACTIVATE, b"activation_token=x", content_type=b"application/x-www-form-urlencoded"
                    ),
                    "route",
                ),
                ("unknown 1", Request(ACTIVATE, body("unknown-token-1")), "fast"),
                ("unknown 2", Request(ACTIVATE, body("unknown-token-2")), "fast"),
                ("unknown 3", Request(ACTIVATE, body("unknown-token-3")), "fast"),
                ("over the rate", Request(ACTIVATE, body("unknown-token-4")), "fast"),
                ("good but over the rate", Request(ACTIVATE, body(act["spare"])), "fast"),
            ]
            seen = []
            for name, req, who in cases:
                a = await fast.send(req)
                b = await route.send(req)
                assert _normal(a) == _normal(b), name
                assert a.by_route == (who == "route"), name
                seen.append(a.status)
            assert seen == [200, 200, 403, 422, 422, 422, 404, 404, 404, 429, 429]
            retry = dict(a.headers)[b"retry-after"]
            assert retry.isdigit() and int(retry) > 0

    asyncio.run(main())


def test_an_unexpected_error_is_a_500_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:

    async def main() -> None:
        async with _sides(tmp_path) as (fast, route, provisioned):
            answer = await fast.send(
                Request(ACTIVATE, json.dumps({"activation_token": provisioned["activation"]["a"]}).encode())
            )
            token = json.loads(answer.body)["session_token"]

            def broken(conn: Any, device_type_id: int) -> dict[str, int]:
                raise RuntimeError("disk on fire")

            fast.app.state.db.property_ids = broken
            answer = await fast.send(Request(VARIABLE, _upload(T0), token))
            assert (answer.status, json.loads(answer.body)) == (500, {"detail": "Internal server error"})
            assert not answer.by_route

    asyncio.run(main())
    assert "unhandled error in POST /device/measurements/variable-interval" in caplog.text
    assert "disk on fire" in caplog.text


@pytest.mark.parametrize("micro", [0, 1, 123456, 999999])
def test_the_upload_answer_is_the_response_models(micro: int) -> None:
    from datetime import UTC, datetime

    from pydantic import TypeAdapter

    from twtools.server import schemas as s
    from twtools.server.app import upload_answer

    model = TypeAdapter(s.MeasurementsUploadResult)
    result = {"server_time": datetime(2026, 12, 5, 3, 4, 5, micro, tzinfo=UTC), "size": 4}
    assert upload_answer(result) == model.dump_json(model.validate_python(result))
