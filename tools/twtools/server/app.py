"""The Twomes reference provisioning server: FastAPI application factory.

Three groups of endpoints (see docs/api.md for the contract):

* the Twomes device API, compatible with a real Twomes backoffice server (same paths, bodies, status
  codes and error strings);
* the firmware API (ours): target release, installed version, image download with HTTP ranges,
  install confirmation; every response under ``/device/firmware/`` carries ``X-Twomes-Firmware-Api: 1``
  so a device can tell a plain Twomes server (404 without that header) from a real error;
* the admin API: tokens, device types, accounts, devices, firmware releases and targets.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import db as dbm
from . import fastpath
from . import schemas as s
from .ratelimit import Rate, RateLimiter, retry_after
from .storage import (
    BODY_TOO_LARGE,
    ReceivedUpload,
    UploadRejected,
    file_response,
    receive_upload,
    release_dir,
    release_filename,
    remove_stale_uploads,
)

log = logging.getLogger("twtools.server")

API_VERSION = "1"
FIRMWARE_API_HEADER = "X-Twomes-Firmware-Api"
FIRMWARE_API_VERSION = "1"
FIRMWARE_PATH_PREFIX = "/device/firmware/"
JSON_BODY_LIMIT = 64 * 1024
DEFAULT_MAX_UPLOAD = 128 * 1024 * 1024
# Room for the multipart framing and the text fields around the file part.
MULTIPART_OVERHEAD = 64 * 1024
UPLOAD_ROUTE = ("POST", "/admin/firmware")
# Activation tokens of new registrations: the length the device generates (16 decimal digits). Twomes
# itself accepts 8 (`--min-token-length 8` for devices of the Twomes generic firmware).
DEFAULT_MIN_TOKEN_LENGTH = 16
TWOMES_MIN_TOKEN_LENGTH = 8
# Failed activation attempts per client address, and activations per device.
DEFAULT_ADDRESS_RATE = Rate(30, 2.0)
DEFAULT_DEVICE_RATE = Rate(10, 6.0)
MAX_MEASUREMENTS_LIMIT = 10_000  # measurements per page at most
DEFAULT_MEASUREMENTS = 1_000  # per page unless asked
MAX_PAGE = 1_000  # admin list pages
DEFAULT_PAGE = 100

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[..., Awaitable[None]],
    ],
    Awaitable[None],
]


# ------------------------------------------------------------------------------------------ middleware


class FirmwareApiHeaderMiddleware:
    """Marks every response under ``/device/firmware/`` (errors included) with ``X-Twomes-Firmware-Api``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(FIRMWARE_PATH_PREFIX):
            await self.app(scope, receive, send)
            return

        async def marked_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-twomes-firmware-api"
                ]
                headers.append((FIRMWARE_API_HEADER.lower().encode(), FIRMWARE_API_VERSION.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, marked_send)


class BodyLimitMiddleware:
    """413 ``Request body too large`` for bodies over the limit: JSON bodies 64 KiB, uploads the configured max.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked body is
    counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if (scope["method"], scope["path"]) == UPLOAD_ROUTE else self.json_limit
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _json_error(413, BODY_TOO_LARGE)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(status_code=413, detail=BODY_TOO_LARGE)
            return message

        await self.app(scope, limited_receive, send)


class _BadJson(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJson(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> float:
    raise _BadJson(f"{name} is not a JSON number")


def strict_json(body: bytes) -> Any:
    """``body`` decoded as strict JSON: no ``NaN``/``Infinity``, no number out of the float range or of
    over 4300 digits, no lone surrogate (``"\\ud800"``) in a string or a name, nesting that Python can
    decode. Anything else raises ``json.JSONDecodeError`` (FastAPI answers 422 ``json_invalid``)."""
    try:
        value = json.loads(body, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError:
        raise
    except _BadJson as exc:
        raise json.JSONDecodeError(str(exc), _text(body), 0) from None
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", _text(body), 0) from None
    except ValueError as exc:  # bad UTF-8, an integer of over 4300 digits
        raise json.JSONDecodeError(str(exc).split(":")[0][:100] or "not JSON", _text(body), 0) from None
    if not _may_hold_surrogates(body):
        return value
    text = _text(body)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _valid_unicode(item):
                raise json.JSONDecodeError("a string holds a lone surrogate (not valid Unicode)", text, 0)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not _valid_unicode(key):
                    raise json.JSONDecodeError("a name holds a lone surrogate (not valid Unicode)", text, 0)
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
    return value


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _may_hold_surrogates(body: bytes) -> bool:
    """Whether ``json.loads(body)`` can give a string with a lone surrogate. It decodes UTF-8 with
    ``surrogatepass``, so only a ``\\u`` escape or an encoded surrogate (its lead byte is 0xED) can
    make one; a body in another encoding (UTF-16/32, told by its first bytes) is always checked."""
    return b"\\u" in body or b"\xed" in body or json.detect_encoding(body) != "utf-8"


class StrictJsonRequest(Request):
    """A request whose JSON body is decoded by :func:`strict_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """Every route decodes its JSON body strictly (bad numbers and strings are a 422, never a 500)."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain(value: Any) -> Any:
    """``value`` made safe for a JSON answer: non-finite floats and lone surrogates become text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and not _valid_unicode(value):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class TwomesApp(FastAPI):
    """FastAPI with the firmware-API marker outside everything (so even a 500 carries it)."""

    firmware_api = True
    declared_routes: list[Any] | None = None  # the OpenAPI document's order (see create_app)
    device_path: fastpath.DevicePath | None = None  # the device's fast path, in front (create_app)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if self.device_path is not None and scope["type"] == "http":
            scope["app"] = self  # as Starlette sets it: the handlers find the app's state there
            await self.device_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _framework(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None and self.declared_routes is not None:
            matched, self.router.routes = self.router.routes, self.declared_routes
            try:
                return super().openapi()
            finally:
                self.router.routes = matched
        return super().openapi()

    def build_middleware_stack(self) -> ASGIApp:  # type: ignore[override]
        stack = super().build_middleware_stack()
        if self.firmware_api:
            stack = FirmwareApiHeaderMiddleware(stack)
        return stack


# ---------------------------------------------------------------------------------------------- auth


class _Bearer(HTTPBearer):
    """HTTPBearer answering 403 ``Not authenticated`` (no header, or not Bearer) as Twomes does."""

    def make_not_authenticated_error(self) -> HTTPException:
        return HTTPException(status_code=403, detail="Not authenticated")


admin_bearer = _Bearer(scheme_name="AdminToken", description="Admin session token.")
account_bearer = _Bearer(scheme_name="AccountToken", description="Account (owner app) session token.")


async def get_db(request: Request) -> dbm.Database:
    database: dbm.Database = request.app.state.db
    return database


DB = Annotated[dbm.Database, Depends(get_db)]


def require_admin(
    database: DB, credentials: Annotated[HTTPAuthorizationCredentials, Depends(admin_bearer)]
) -> int:
    token = credentials.credentials
    ident = dbm.token_ident(token)
    if ident is not None:
        with database.read() as conn:
            row = conn.execute(
                "SELECT token_hash FROM admin_token WHERE id = ? AND revoked_on IS NULL", (ident,)
            ).fetchone()
        if row is not None and dbm.token_matches(token, row["token_hash"]):
            return ident
    raise HTTPException(status_code=401, detail="Invalid admin session token")


def require_account(
    database: DB, credentials: Annotated[HTTPAuthorizationCredentials, Depends(account_bearer)]
) -> int:
    token = credentials.credentials
    ident = dbm.token_ident(token)
    if ident is not None:
        with database.read() as conn:
            row = conn.execute(
                "SELECT session_token_hash, activation_token_hash FROM account"
                " WHERE id = ? AND token_revoked_on IS NULL",
                (ident,),
            ).fetchone()
        if row is not None and dbm.token_matches(token, row["session_token_hash"]):
            if row["activation_token_hash"] is not None:
                # As Twomes: the account's activation token is used up at the first use of a session token.
                with database.write() as conn:
                    conn.execute("UPDATE account SET activation_token_hash = NULL WHERE id = ?", (ident,))
            return ident
    raise HTTPException(status_code=401, detail="Invalid account session token")


@dataclass(frozen=True)
class AuthedDevice:
    id: int
    name: str
    device_type_id: int


class _DeviceBearer(_Bearer):
    """The device session token, checked against the database in the same dependency (FastAPI's cost
    per dependency is more than the check itself; this runs on every upload). Runs on the event loop:
    the check is one indexed read, no thread hop. With ``record_seen`` the device is recorded as seen
    now (a short write transaction); without, the endpoint records it in its own write transaction."""

    def __init__(self, *, record_seen: bool) -> None:
        super().__init__(
            scheme_name="DeviceToken", description="Device session token from `/device/activate`."
        )
        self.record_seen = record_seen

    async def __call__(self, request: Request) -> AuthedDevice:  # type: ignore[override]
        credentials = await super().__call__(request)
        assert credentials is not None  # auto_error: no token is a 403
        token = credentials.credentials
        database: dbm.Database = request.app.state.db
        device: AuthedDevice | None = None
        if not self.record_seen:
            device = _checked_device(database, token)
        elif (ident := dbm.token_ident(token)) is not None:

            def seen(conn: sqlite3.Connection) -> AuthedDevice | None:
                found = _device_of(conn.execute(_AUTH_DEVICE_SQL, (ident,)).fetchone(), token)
                if found is not None:
                    conn.execute("UPDATE device SET last_seen = ? WHERE id = ?", (dbm.utcnow(), ident))
                return found

            device = await database.transact(seen)
        if device is None:
            raise HTTPException(status_code=401, detail="Invalid device session token")
        return device


_AUTH_DEVICE_SQL = "SELECT id, name, device_type_id, session_token_hash FROM device WHERE id = ?"


def _checked_device(database: dbm.Database, token: str) -> AuthedDevice | None:
    """The device whose session token this is (one indexed read), or None."""
    ident = dbm.token_ident(token)
    return None if ident is None else _device_of(database.read_row(_AUTH_DEVICE_SQL, (ident,)), token)


def _device_of(row: Any, token: str) -> AuthedDevice | None:
    """The device of an ``_AUTH_DEVICE_SQL`` row if ``token`` is its session token, else None."""
    if row is None or not dbm.token_matches(token, row[3]):
        return None
    return AuthedDevice(row[0], row[1], row[2])


# Checks the device session token and records the device as seen now.
require_device = _DeviceBearer(record_seen=True)
# Checks the device session token only (a read): the endpoint records the device as seen in its own
# write transaction (uploads: one write transaction per request).
check_device = _DeviceBearer(record_seen=False)


Admin = Annotated[int, Depends(require_admin)]
Account = Annotated[int, Depends(require_account)]
Device = Annotated[AuthedDevice, Depends(require_device)]
CheckedDevice = Annotated[AuthedDevice, Depends(check_device)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": s.ErrorDetail} for code in codes}


_TOO_MANY = {
    429: {
        "model": s.ErrorDetail,
        "description": "Too many attempts; `Retry-After` tells the seconds to wait.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
    }
}
_TOO_LARGE = {413: {"model": s.ErrorDetail, "description": "Request body too large."}}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@dataclass
class Settings:
    """What the handlers need besides the database: the activation key, limits and rate limiters."""

    key: bytes
    min_token_length: int
    by_address: RateLimiter
    by_device: RateLimiter


def _guess(request: Request) -> tuple[Settings, tuple[str, str]]:
    """An activation-token guess from the client's address, within its rate (429 + Retry-After when
    over it). The caller refunds the guess when the token was right: only failed guesses count."""
    settings = _settings(request)
    return settings, _take_guess(settings, _client_address(request))


def _take_guess(settings: Settings, address: str) -> tuple[str, str]:
    """:func:`_guess` for a client address (the device fast path has no ``Request``)."""
    key = ("address", address)
    wait = settings.by_address.take(key)
    if wait:
        raise _too_many(wait, "activation attempts from this address")
    return key


def _too_many(wait: float, what: str) -> HTTPException:
    return HTTPException(
        status_code=429,
        detail=f"Too many {what}; try again later",
        headers={"Retry-After": retry_after(wait)},
    )


def _client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def _find_by_activation(conn: sqlite3.Connection, key: bytes, token: str, sql: str) -> sqlite3.Row | None:
    """The device row with this activation token; a schema-1 hash that matches is upgraded to the keyed one."""
    keyed, plain = dbm.activation_hashes(key, token)
    row: sqlite3.Row | None = conn.execute(
        f"{sql} WHERE d.activation_token_hash IN (?, ?)", (keyed, plain)
    ).fetchone()
    if row is not None and row["activation_token_hash"] == plain:
        conn.execute("UPDATE device SET activation_token_hash = ? WHERE id = ?", (keyed, row["id"]))
    return row


# --------------------------------------------------------------------------------------------- queries

_DEVICE_SQL = """
SELECT d.*, t.name AS type_name, t.display_name AS type_display_name,
       t.installation_manual_url AS type_manual_url, t.target_release_id AS type_target_release_id
FROM device d JOIN device_type t ON t.id = d.device_type_id
"""
_RELEASE_SQL = "SELECT r.*, t.name AS type_name FROM release r JOIN device_type t ON t.id = r.device_type_id"


def _release_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "version": row["version"],
        "kind": row["kind"],
        "device_type": row["type_name"],
        "size": row["size"],
        "sha256": row["sha256"],
        "created_on": row["created_on"],
        "url": f"/device/firmware/releases/{row['id']}/image",
        "manifest": row["manifest"],
        "signature": row["signature"],
    }


def _release_by_id(conn: sqlite3.Connection, release_id: int | None) -> sqlite3.Row | None:
    if release_id is None:
        return None
    row: sqlite3.Row | None = conn.execute(f"{_RELEASE_SQL} WHERE r.id = ?", (release_id,)).fetchone()
    return row


def _device_type_json(row: sqlite3.Row, prefix: str = "") -> dict[str, Any]:
    if prefix:
        return {
            "name": row[f"{prefix}name"],
            "display_name": row[f"{prefix}display_name"],
            "installation_manual_url": row[f"{prefix}manual_url"],
        }
    return {
        "name": row["name"],
        "display_name": row["display_name"],
        "installation_manual_url": row["installation_manual_url"],
    }


def _properties(conn: sqlite3.Connection, device_type_id: int) -> list[dict[str, str]]:
    rows = conn.execute(
        "SELECT name, unit FROM property WHERE device_type_id = ? ORDER BY id", (device_type_id,)
    ).fetchall()
    return [{"name": r["name"], "unit": r["unit"]} for r in rows]


def _device_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "device_type": _device_type_json(row, "type_"),
        "created_on": row["created_on"],
        "activated_on": row["activated_on"],
    }


def _admin_device_json(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    if row["target_release_id"] is not None:
        source, target_id = "device", row["target_release_id"]
    elif row["type_target_release_id"] is not None:
        source, target_id = "device_type", row["type_target_release_id"]
    else:
        source, target_id = None, None
    target = _release_by_id(conn, target_id)
    if row["activated_on"] is not None:
        state = "activated"
    elif row["account_id"] is not None:
        state = "attached"
    else:
        state = "registered"
    return {
        "id": row["id"],
        "name": row["name"],
        "device_type": row["type_name"],
        "state": state,
        "account_id": row["account_id"],
        "created_on": row["created_on"],
        "activated_on": row["activated_on"],
        "installed_version": row["installed_version"],
        "installed_release_id": row["installed_release_id"],
        "confirmed_on": row["confirmed_on"],
        "last_seen": row["last_seen"],
        "target": _release_json(target) if target is not None else None,
        "target_source": source,
    }


def _device_row_by_name(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(f"{_DEVICE_SQL} WHERE d.name = ?", (name,)).fetchone()
    if row is None:
        raise HTTPException(status_code=404, detail="Device not found")
    return row


def _device_row_by_id(conn: sqlite3.Connection, device_id: int) -> sqlite3.Row:
    row: sqlite3.Row = conn.execute(f"{_DEVICE_SQL} WHERE d.id = ?", (device_id,)).fetchone()
    return row


def _device_type_admin_json(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    target = _release_by_id(conn, row["target_release_id"])
    return {
        **_device_type_json(row),
        "properties": _properties(conn, row["id"]),
        "target": _release_json(target) if target is not None else None,
    }


def _attach(conn: sqlite3.Connection, device: sqlite3.Row, account_id: int) -> None:
    if device["account_id"] is not None and device["account_id"] != account_id:
        raise HTTPException(status_code=400, detail="Device already activated")
    if device["account_id"] is None:
        conn.execute("UPDATE device SET account_id = ? WHERE id = ?", (account_id, device["id"]))


def _check_target(
    conn: sqlite3.Connection, release_id: int | None, device_type_id: int, type_name: str
) -> None:
    if release_id is None:
        return
    release = _release_by_id(conn, release_id)
    if release is None:
        raise HTTPException(status_code=404, detail="Release not found")
    if release["device_type_id"] != device_type_id:
        raise HTTPException(
            status_code=400,
            detail=f'Release {release_id} is for device type "{release["type_name"]}", not "{type_name}"',
        )


_ROWS_PER_INSERT = 16


@functools.cache
def _insert_measurements(rows: int) -> str:
    return (
        "INSERT OR IGNORE INTO measurement (device_id, property_id, upload_id, timestamp, value) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    )


async def _store_measurements(
    database: dbm.Database,
    device: AuthedDevice,
    upload_time: float,
    items: list[tuple[str, list[tuple[float, str]]]],
) -> dict[str, Any]:
    """Store one upload atomically; 400 when a property is not one of the device type's.

    Idempotent: a measurement whose (device, property, timestamp) is already stored is skipped (the
    first value stays), so a device that re-sends an upload after a lost answer creates no duplicates.
    ``size`` is the number of measurements in the upload (as Twomes answers); the log tells the new ones.
    One unit of a write transaction, answered once committed (:meth:`db.Database.transact`).
    """
    server_time = datetime.now(UTC)
    now = server_time.isoformat(timespec="microseconds")
    size = sum(len(values) for _, values in items)

    def store(conn: sqlite3.Connection) -> int:
        # the device is seen now, in the upload's transaction (a device removed since the check: 401)
        seen = conn.execute("UPDATE device SET last_seen = ? WHERE id = ?", (now, device.id))
        if seen.rowcount != 1:
            raise HTTPException(status_code=401, detail="Invalid device session token")
        property_ids = database.property_ids(conn, device.device_type_id)
        invalid = {name for name, _ in items} - property_ids.keys()
        if invalid:
            names = "{" + ", ".join(repr(n) for n in sorted(invalid)) + "}"
            raise HTTPException(status_code=400, detail=f"Invalid property name(s): {names}")
        # The upload row and its measurements in a savepoint: a repeat (nothing new at all) is undone
        # by rolling back to it. Not by a DELETE of the upload row: with foreign keys on, SQLite then
        # looks for measurements of that upload, and nothing indexes measurement.upload_id (another
        # index would cost every upload), so each repeat read the whole table (3 ms at 80,000
        # measurements, on the event loop).
        conn.execute("SAVEPOINT upload")
        cur = conn.execute(
            "INSERT INTO upload (device_id, server_time, device_time, size) VALUES (?, ?, ?, ?)",
            (device.id, now, upload_time, size),
        )
        upload_id = cur.lastrowid
        before = conn.total_changes
        rows = [
            (device.id, property_ids[name], upload_id, ts, value)
            for name, values in items
            for ts, value in values
        ]
        if len(rows) > _ROWS_PER_INSERT:
            conn.executemany(_insert_measurements(1), rows)
        elif rows:  # one statement for a small upload (cheaper than executemany)
            conn.execute(_insert_measurements(len(rows)), [v for row in rows for v in row])
        stored = conn.total_changes - before
        if stored == 0:
            conn.execute("ROLLBACK TO upload")  # a repeat: no upload row
        elif stored != size:
            conn.execute("UPDATE upload SET size = ? WHERE id = ?", (stored, upload_id))
        conn.execute("RELEASE upload")
        return stored

    stored = await database.transact(store)
    if stored < size:
        log.info(
            "device %s: %d of %d measurements already stored (a repeated upload)",
            device.name,
            size - stored,
            size,
        )
    return {"server_time": server_time, "size": size}


# ------------------------------------------------------------------------------- Twomes device API

twomes = APIRouter(tags=["Twomes device API"], route_class=StrictJsonRoute, responses=_TOO_LARGE)


@twomes.post(
    "/device",
    response_model=s.DeviceItem,
    responses=_errors(400, 401, 403),
    summary="Register a device (admin)",
)
def device_create(body: s.DeviceCreate, request: Request, database: DB, _admin: Admin) -> dict[str, Any]:
    settings = _settings(request)
    if len(body.activation_token) < settings.min_token_length:
        n = settings.min_token_length
        raise RequestValidationError(
            [
                {
                    "type": "string_too_short",
                    "loc": ("body", "activation_token"),
                    "msg": f"String should have at least {n} characters (new registrations; the device prints {n})",
                    "input": None,
                    "ctx": {"min_length": n},
                }
            ]
        )
    keyed, plain = dbm.activation_hashes(settings.key, body.activation_token)
    with database.write() as conn:
        type_row = conn.execute("SELECT id FROM device_type WHERE name = ?", (body.device_type,)).fetchone()
        if type_row is None:
            raise HTTPException(status_code=400, detail=f'Unknown device type "{body.device_type}"')
        if conn.execute("SELECT 1 FROM device WHERE name = ?", (body.name,)).fetchone():
            raise HTTPException(status_code=400, detail="Device name already in use")
        if conn.execute(
            "SELECT 1 FROM device WHERE activation_token_hash IN (?, ?)", (keyed, plain)
        ).fetchone():
            raise HTTPException(status_code=400, detail="Activation token already in use")
        cur = conn.execute(
            "INSERT INTO device (name, device_type_id, activation_token_hash, created_on) VALUES (?, ?, ?, ?)",
            (body.name, type_row["id"], keyed, dbm.utcnow()),
        )
        return _device_json(_device_row_by_id(conn, int(cur.lastrowid or 0)))


@twomes.post(
    "/account",
    response_model=s.TwomesAccountItem,
    responses=_errors(400, 401, 403),
    summary="Create an owner account (admin), as Twomes: its activation token goes to the owner's app",
)
def twomes_account_create(
    body: s.TwomesAccountCreate, request: Request, database: DB, _admin: Admin
) -> dict[str, Any]:
    settings = _settings(request)
    activation_token = secrets.token_urlsafe(32)
    with database.write() as conn:
        if body.pseudonym is not None:
            if conn.execute("SELECT 1 FROM account WHERE pseudonym = ?", (body.pseudonym,)).fetchone():
                raise HTTPException(status_code=400, detail="Account pseudonym already in use")
            pseudonym = body.pseudonym
        else:
            try:
                pseudonym = dbm.free_pseudonym(conn)
            except ValueError:
                raise HTTPException(status_code=400, detail="No account pseudonym left") from None
        cur = conn.execute(
            "INSERT INTO account (name, session_token_hash, created_on, pseudonym, activation_token_hash)"
            " VALUES (?, '', ?, ?, ?)",
            (f"account {pseudonym}", dbm.utcnow(), pseudonym, dbm.keyed_hash(settings.key, activation_token)),
        )
        account_id = int(cur.lastrowid or 0)
    return {
        "id": account_id,
        "pseudonym": pseudonym,
        "activation_token": activation_token,
        "firebase_url": "",
    }


@twomes.post(
    "/account/activate",
    response_model=s.SessionToken,
    responses={**_errors(404), **_TOO_MANY},
    summary="Activate an account: a new account session token (no auth), as Twomes",
)
def twomes_account_activate(body: s.AccountActivate, request: Request, database: DB) -> dict[str, str]:
    settings, guess = _guess(request)
    with database.write() as conn:
        row = conn.execute(
            "SELECT id FROM account WHERE activation_token_hash = ?",
            (dbm.keyed_hash(settings.key, body.activation_token),),
        ).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="No account found for provided activation token")
        settings.by_address.refund(guess)
        token, token_hash = dbm.new_token(row["id"])
        conn.execute(
            "UPDATE account SET session_token_hash = ?, token_revoked_on = NULL, activated_on = ? WHERE id = ?",
            (token_hash, dbm.utcnow(), row["id"]),
        )
    return {"session_token": token}


@twomes.post(
    "/account/device/activate",
    response_model=s.DeviceItem,
    responses={**_errors(400, 401, 403, 404), **_TOO_MANY},
    summary="Attach a device to the caller's account (account)",
)
def account_device_activate(
    body: s.ActivationRequest, request: Request, database: DB, account_id: Account
) -> dict[str, Any]:
    settings, guess = _guess(request)
    with database.write() as conn:
        row = _find_by_activation(conn, settings.key, body.activation_token, _DEVICE_SQL)
        if row is None:
            raise HTTPException(status_code=404, detail="No device found for provided activation token")
        settings.by_address.refund(guess)
        _attach(conn, row, account_id)
        return _device_json(_device_row_by_id(conn, row["id"]))


@twomes.post(
    "/device/activate",
    response_model=s.SessionToken,
    responses={**_errors(403, 404), **_TOO_MANY},
    summary="Activate: get a new device session token (no auth)",
)
async def device_activate(body: s.ActivationRequest, request: Request) -> dict[str, str]:
    token = await _activate_device(
        request.app.state.db, _settings(request), _client_address(request), body.activation_token
    )
    return {"session_token": token}


async def _activate_device(
    database: dbm.Database, settings: Settings, address: str, activation_token: str
) -> str:
    """A new session token for the device with this activation token (the route's and the fast
    path's work): 429 over the address's or the device's rate, 404 unknown token, 403 not attached."""
    guess = _take_guess(settings, address)

    def activate(conn: sqlite3.Connection) -> str:
        row = _find_by_activation(
            conn,
            settings.key,
            activation_token,
            "SELECT d.id, d.account_id, d.activation_token_hash FROM device d",
        )
        if row is None:
            raise HTTPException(status_code=404, detail="No device found for provided activation token")
        settings.by_address.refund(guess)
        wait = settings.by_device.take(("device", row["id"]))
        if wait:
            raise _too_many(wait, "activations of this device")
        if row["account_id"] is None:
            raise HTTPException(status_code=403, detail="Device not attached to account")
        token, token_hash = dbm.new_token(row["id"])
        now = dbm.utcnow()
        conn.execute(
            "UPDATE device SET session_token_hash = ?, activated_on = COALESCE(activated_on, ?), last_seen = ?"
            " WHERE id = ?",
            (token_hash, now, now, row["id"]),
        )
        return token

    return await database.transact(activate)


@twomes.get(
    "/device",
    response_model=s.DeviceSelf,
    responses=_errors(401, 403),
    summary="The calling device, its type and the type's properties (device)",
)
def device_read_self(database: DB, device: Device) -> dict[str, Any]:
    with database.read() as conn:
        row = _device_row_by_id(conn, device.id)
        properties = _properties(conn, row["device_type_id"])
    result = _device_json(row)
    result["device_type"]["properties"] = properties
    result["properties"] = properties
    return result


@twomes.post(
    "/device/measurements/variable-interval",
    response_model=s.MeasurementsUploadResult,
    responses=_errors(400, 401, 403),
    summary="Upload measurements with their own timestamps (device)",
)
async def upload_variable(
    body: s.MeasurementsUploadVariable, request: Request, device: CheckedDevice
) -> dict[str, Any]:
    return await _store_measurements(
        request.app.state.db, device, s.timestamp_seconds(body.upload_time), _variable_items(body)
    )


def _variable_items(body: s.MeasurementsUploadVariable) -> list[tuple[str, list[tuple[float, str]]]]:
    return [
        (pm.property_name, [(s.timestamp_seconds(m.timestamp), m.value) for m in pm.measurements])
        for pm in body.property_measurements
    ]


@twomes.post(
    "/device/measurements/fixed-interval",
    response_model=s.MeasurementsUploadResult,
    responses=_errors(400, 401, 403),
    summary="Upload measurements taken at a fixed interval (device)",
)
async def upload_fixed(
    body: s.MeasurementsUploadFixed, request: Request, device: CheckedDevice
) -> dict[str, Any]:
    return await _store_measurements(
        request.app.state.db, device, s.timestamp_seconds(body.upload_time), _fixed_items(body)
    )


def _fixed_items(body: s.MeasurementsUploadFixed) -> list[tuple[str, list[tuple[float, str]]]]:
    """Each measurement with its time; 422 (``RequestValidationError``) when the times leave the range."""
    items: list[tuple[str, list[tuple[float, str]]]] = []
    errors: list[dict[str, Any]] = []
    for index, pm in enumerate(body.property_measurements):
        first = s.timestamp_seconds(pm.timestamp)
        if pm.timestamp_type == "end":
            first -= (len(pm.measurements) - 1) * pm.interval
        times = [first + i * pm.interval for i in range(len(pm.measurements))]
        if times and not (0 <= times[0] and times[-1] <= s.MAX_UNIX_TIME):
            errors.append(
                {
                    "type": "value_error",
                    "loc": ("body", "property_measurements", index, "interval"),
                    "msg": f"Value error, the measurements' times leave the range 0..{s.MAX_UNIX_TIME}",
                    "input": pm.interval,
                }
            )
        items.append((pm.property_name, list(zip(times, pm.measurements, strict=True))))
    if errors:
        raise RequestValidationError(errors)
    return items


# ------------------------------------------------------------------------- the device's fast path


async def _fast_activate(scope: fastpath.Scope, body: bytes) -> fastpath.Answer | None:
    """``POST /device/activate`` as its route answers it (module fastpath); None: leave it to the route."""
    try:
        request = s.ActivationRequest.model_validate(strict_json(body))
    except (json.JSONDecodeError, ValidationError):
        return None
    state = scope["app"].state
    client = scope.get("client")
    address = client[0] if client else "?"
    token = await _activate_device(state.db, state.settings, address, request.activation_token)
    return fastpath.Answer(_SESSION_TOKEN.dump_json(_SESSION_TOKEN.validate_python({"session_token": token})))


def _fast_upload(
    model: type[s.MeasurementsUploadVariable] | type[s.MeasurementsUploadFixed],
    items_of: Callable[[Any], list[tuple[str, list[tuple[float, str]]]]],
) -> fastpath.Handler:
    """An upload route's fast path: the bearer token, the body, then the route's work."""

    async def upload(scope: fastpath.Scope, body: bytes) -> fastpath.Answer | None:
        token = fastpath.bearer_token(scope)
        if token is None:
            return None
        try:
            upload = model.model_validate(strict_json(body))
            items = items_of(upload)
        except (json.JSONDecodeError, ValidationError, RequestValidationError):
            return None
        database: dbm.Database = scope["app"].state.db
        device = _checked_device(database, token)
        if device is None:
            return None
        result = await _store_measurements(database, device, s.timestamp_seconds(upload.upload_time), items)
        return fastpath.Answer(upload_answer(result))

    return upload


def upload_answer(result: dict[str, Any]) -> bytes:
    """An upload's answer as the route's response model writes it (``server_time``, always UTC, with
    ``Z`` and microseconds only when not 0), without building the model (test_server_fast_path)."""
    server_time = result["server_time"].replace(tzinfo=None).isoformat()
    return b'{"server_time":"%sZ","size":%d}' % (server_time.encode(), result["size"])


_SESSION_TOKEN = TypeAdapter(s.SessionToken)
FAST_HANDLERS: dict[str, fastpath.Handler] = {
    "/device/measurements/variable-interval": _fast_upload(s.MeasurementsUploadVariable, _variable_items),
    "/device/measurements/fixed-interval": _fast_upload(s.MeasurementsUploadFixed, _fixed_items),
    "/device/activate": _fast_activate,
}


# ------------------------------------------------------------------------------------- firmware API

ReleaseId = Annotated[int, PathParam(ge=1, le=dbm.MAX_ID)]

firmware = APIRouter(
    prefix="/device/firmware", tags=["Firmware API"], route_class=StrictJsonRoute, responses=_TOO_LARGE
)


@firmware.get(
    "/target",
    response_model=s.FirmwareTarget,
    responses=_errors(401, 403),
    summary="The release this device should run (device)",
)
def firmware_target(database: DB, device: Device) -> dict[str, Any]:
    with database.read() as conn:
        row = _device_row_by_id(conn, device.id)
        target_id = row["target_release_id"] or row["type_target_release_id"]
        release = _release_by_id(conn, target_id)
    return {"release": _release_json(release) if release is not None else None}


@firmware.get(
    "/installed",
    response_model=s.InstalledFirmware,
    responses=_errors(401, 403),
    summary="What the server believes is installed: the last confirmation (device)",
)
def firmware_installed(database: DB, device: Device) -> dict[str, Any]:
    with database.read() as conn:
        row = _device_row_by_id(conn, device.id)
    return {
        "version": row["installed_version"],
        "release_id": row["installed_release_id"],
        "confirmed_on": row["confirmed_on"],
    }


@firmware.get(
    "/releases/{release_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The whole file."},
        206: {
            "content": {"application/octet-stream": {}},
            "description": "One byte range (`Range: bytes=...`).",
        },
        416: {"model": s.ErrorDetail, "description": "Range not satisfiable; `Content-Range: bytes */size`."},
        500: {"model": s.ErrorDetail, "description": "The release file is missing or damaged on the server."},
        **_errors(401, 403, 404),
    },
    summary="Download a release file, whole or one byte range (device; only a release targeted at it)",
)
def firmware_image(release_id: ReleaseId, request: Request, database: DB, device: Device) -> Response:
    with database.read() as conn:
        row = _device_row_by_id(conn, device.id)
        release = _release_by_id(conn, release_id)
    # Only what the device is meant to install: its own target or its type's (a draft never targeted,
    # or another type's release, is not there for it).
    targets = {row["target_release_id"], row["type_target_release_id"]}
    if release is None or release_id not in targets:
        raise HTTPException(status_code=404, detail="Release not found")
    return _release_file(request, release)


def _release_file(request: Request, release: sqlite3.Row) -> Response:
    release_id = release["id"]
    path = release_dir(request.app.state.files_dir) / release["filename"]
    try:
        on_disk = path.stat().st_size
    except FileNotFoundError:
        log.error("release %s: file %s is missing", release_id, path)
        raise HTTPException(status_code=500, detail="Release file missing on the server") from None
    if on_disk != release["size"]:
        log.error("release %s: %s has %d bytes, expected %d", release_id, path, on_disk, release["size"])
        raise HTTPException(status_code=500, detail="Release file damaged on the server")
    return file_response(
        path,
        release["size"],
        release["sha256"],
        request.headers.get("range"),
        request.headers.get("if-range"),
    )


@firmware.post(
    "/confirm",
    response_model=s.InstalledFirmware,
    responses=_errors(401, 403),
    summary="Confirm the firmware version now running (device)",
)
def firmware_confirm(body: s.FirmwareConfirm, database: DB, device: Device) -> dict[str, Any]:
    now = dbm.utcnow()
    with database.write() as conn:
        release = conn.execute(
            "SELECT id FROM release WHERE device_type_id = ? AND version = ?",
            (device.device_type_id, body.version),
        ).fetchone()
        release_id = release["id"] if release is not None else None
        conn.execute(
            "UPDATE device SET installed_version = ?, installed_release_id = ?, confirmed_on = ? WHERE id = ?",
            (body.version, release_id, now, device.id),
        )
    return {"version": body.version, "release_id": release_id, "confirmed_on": now}


# ---------------------------------------------------------------------------------------- admin API

RowId = Annotated[int, PathParam(ge=1, le=dbm.MAX_ID)]

admin = APIRouter(
    prefix="/admin",
    tags=["Admin API"],
    route_class=StrictJsonRoute,
    responses={**_errors(401, 403), **_TOO_LARGE},
)


@admin.post("/tokens", status_code=201, response_model=s.AdminToken, summary="Create another admin token")
def admin_token_create(database: DB, _admin: Admin) -> dict[str, str]:
    with database.write() as conn:
        return {"token": dbm.create_admin_token(conn)}


@admin.get("/tokens", response_model=list[s.AdminTokenInfo], summary="List admin tokens (not their values)")
def admin_tokens_list(database: DB, admin_id: Admin) -> list[dict[str, Any]]:
    with database.read() as conn:
        rows = conn.execute("SELECT id, created_on, revoked_on FROM admin_token ORDER BY id").fetchall()
    return [
        {
            "id": r["id"],
            "created_on": r["created_on"],
            "revoked_on": r["revoked_on"],
            "current": r["id"] == admin_id,
        }
        for r in rows
    ]


@admin.delete(
    "/tokens/{token_id}",
    response_model=s.AdminTokenInfo,
    responses=_errors(404, 409),
    summary="Revoke an admin token (not the one making the request); answers the revoked entry",
)
def admin_token_revoke(token_id: RowId, database: DB, admin_id: Admin) -> dict[str, Any]:
    if token_id == admin_id:
        raise HTTPException(status_code=409, detail="Cannot revoke the token used for this request")
    with database.write() as conn:
        row = conn.execute("SELECT revoked_on FROM admin_token WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="Token not found")
        if row["revoked_on"] is None:
            conn.execute(
                "UPDATE admin_token SET revoked_on = ?, token_hash = '' WHERE id = ?",
                (dbm.utcnow(), token_id),
            )
        row = conn.execute(
            "SELECT id, created_on, revoked_on FROM admin_token WHERE id = ?", (token_id,)
        ).fetchone()
    return {
        "id": row["id"],
        "created_on": row["created_on"],
        "revoked_on": row["revoked_on"],
        "current": False,
    }


@admin.get("/device-types", response_model=list[s.DeviceTypeAdmin], summary="List device types")
def device_types_list(database: DB, _admin: Admin) -> list[dict[str, Any]]:
    with database.read() as conn:
        rows = conn.execute("SELECT * FROM device_type ORDER BY id").fetchall()
        return [_device_type_admin_json(conn, r) for r in rows]


@admin.post(
    "/device-types",
    status_code=201,
    response_model=s.DeviceTypeAdmin,
    responses=_errors(409),
    summary="Create a device type",
)
def device_type_create(body: s.DeviceTypeCreate, database: DB, _admin: Admin) -> dict[str, Any]:
    names = [p.name for p in body.properties]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "properties"),
                    "msg": f"Duplicate property name(s): {', '.join(duplicates)}",
                    "input": names,
                }
            ]
        )
    with database.write() as conn:
        if conn.execute("SELECT 1 FROM device_type WHERE name = ?", (body.name,)).fetchone():
            raise HTTPException(status_code=409, detail=f'Device type "{body.name}" already exists')
        type_id = dbm.create_device_type(
            conn,
            body.name,
            body.display_name,
            body.installation_manual_url,
            [(p.name, p.unit) for p in body.properties],
        )
        row = conn.execute("SELECT * FROM device_type WHERE id = ?", (type_id,)).fetchone()
        return _device_type_admin_json(conn, row)


@admin.put(
    "/device-types/{name}/target",
    response_model=s.DeviceTypeAdmin,
    responses=_errors(400, 404),
    summary="Set (or clear with null) the target release of a device type",
)
def device_type_target(name: str, body: s.TargetRequest, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        row = conn.execute("SELECT * FROM device_type WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="Device type not found")
        _check_target(conn, body.release_id, row["id"], row["name"])
        conn.execute(
            "UPDATE device_type SET target_release_id = ? WHERE id = ?", (body.release_id, row["id"])
        )
        row = conn.execute("SELECT * FROM device_type WHERE id = ?", (row["id"],)).fetchone()
        return _device_type_admin_json(conn, row)


_ACCOUNT_SQL = (
    "SELECT a.id, a.name, a.created_on, a.token_revoked_on,"
    " (SELECT count(*) FROM device d WHERE d.account_id = a.id) AS devices FROM account a"
)


def _account_row_json(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": r["id"],
        "name": r["name"],
        "created_on": r["created_on"],
        "token_revoked_on": r["token_revoked_on"],
        "devices": r["devices"],
    }


def _account_json(conn: sqlite3.Connection, account_id: int) -> dict[str, Any]:
    return _account_row_json(conn.execute(f"{_ACCOUNT_SQL} WHERE a.id = ?", (account_id,)).fetchone())


@admin.get("/accounts", response_model=list[s.AccountInfo], summary="List owner accounts (not their tokens)")
def accounts_list(database: DB, _admin: Admin) -> list[dict[str, Any]]:
    with database.read() as conn:
        rows = conn.execute(f"{_ACCOUNT_SQL} ORDER BY a.id").fetchall()
    return [_account_row_json(r) for r in rows]


@admin.delete(
    "/accounts/{account_id}/token",
    response_model=s.AccountInfo,
    responses=_errors(404),
    summary="Revoke an account's session token (the account and its devices stay); answers the account",
)
def account_token_revoke(account_id: RowId, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        row = conn.execute("SELECT token_revoked_on FROM account WHERE id = ?", (account_id,)).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="Account not found")
        if row["token_revoked_on"] is None:
            conn.execute(
                "UPDATE account SET session_token_hash = '', token_revoked_on = ? WHERE id = ?",
                (dbm.utcnow(), account_id),
            )
        return _account_json(conn, account_id)


@admin.post(
    "/accounts/{account_id}/token",
    status_code=201,
    response_model=s.AccountCreated,
    responses=_errors(404),
    summary="Give an account a new session token (the old one stops working)",
)
def account_token_renew(account_id: RowId, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        row = conn.execute("SELECT id, name FROM account WHERE id = ?", (account_id,)).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="Account not found")
        token, token_hash = dbm.new_token(account_id)
        conn.execute(
            "UPDATE account SET session_token_hash = ?, token_revoked_on = NULL WHERE id = ?",
            (token_hash, account_id),
        )
    return {"id": row["id"], "name": row["name"], "session_token": token}


@admin.post("/accounts", status_code=201, response_model=s.AccountCreated, summary="Create an owner account")
def account_create(body: s.AccountCreate, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        cur = conn.execute(
            "INSERT INTO account (name, session_token_hash, created_on, pseudonym, activated_on)"
            " VALUES (?, '', ?, ?, ?)",
            (body.name, dbm.utcnow(), dbm.free_pseudonym(conn), dbm.utcnow()),
        )
        account_id = int(cur.lastrowid or 0)
        token, token_hash = dbm.new_token(account_id)
        conn.execute("UPDATE account SET session_token_hash = ? WHERE id = ?", (token_hash, account_id))
    return {"id": account_id, "name": body.name, "session_token": token}


@admin.get(
    "/devices",
    response_model=list[s.AdminDevice],
    summary="List devices, one page: by id, `limit` (default 100) with an id above `after`",
)
def devices_list(
    database: DB,
    _admin: Admin,
    limit: Annotated[
        int,
        Query(
            ge=1, le=MAX_PAGE, description=f"Devices per page (default {DEFAULT_PAGE}, at most {MAX_PAGE})."
        ),
    ] = DEFAULT_PAGE,
    after: Annotated[
        int,
        Query(
            ge=0, le=s.MAX_ID, description="Only devices with an id above this (the next page: the last id)."
        ),
    ] = 0,
) -> list[dict[str, Any]]:
    with database.read() as conn:
        rows = conn.execute(f"{_DEVICE_SQL} WHERE d.id > ? ORDER BY d.id LIMIT ?", (after, limit)).fetchall()
        return [_admin_device_json(conn, r) for r in rows]


@admin.get("/devices/{name}", response_model=s.AdminDevice, responses=_errors(404), summary="One device")
def device_get(name: str, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.read() as conn:
        return _admin_device_json(conn, _device_row_by_name(conn, name))


@admin.patch(
    "/devices/{name}",
    response_model=s.AdminDevice,
    responses=_errors(404, 409),
    summary="Rename a device (repurposing: append -OLD to the old entry)",
)
def device_rename(name: str, body: s.DeviceRename, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        row = _device_row_by_name(conn, name)
        if body.name != name:
            if conn.execute("SELECT 1 FROM device WHERE name = ?", (body.name,)).fetchone():
                raise HTTPException(status_code=409, detail="Device name already in use")
            conn.execute("UPDATE device SET name = ? WHERE id = ?", (body.name, row["id"]))
        return _admin_device_json(conn, _device_row_by_id(conn, row["id"]))


@admin.post(
    "/devices/{name}/attach",
    response_model=s.AdminDevice,
    responses=_errors(400, 404),
    summary="Attach a device to an account (admin shortcut of /account/device/activate)",
)
def device_attach(name: str, body: s.AttachRequest, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        row = _device_row_by_name(conn, name)
        if conn.execute("SELECT 1 FROM account WHERE id = ?", (body.account_id,)).fetchone() is None:
            raise HTTPException(status_code=404, detail="Account not found")
        _attach(conn, row, body.account_id)
        return _admin_device_json(conn, _device_row_by_id(conn, row["id"]))


@admin.put(
    "/devices/{name}/target",
    response_model=s.AdminDevice,
    responses=_errors(400, 404),
    summary="Set (or clear with null) a device's own target release",
)
def device_target(name: str, body: s.TargetRequest, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        row = _device_row_by_name(conn, name)
        _check_target(conn, body.release_id, row["device_type_id"], row["type_name"])
        conn.execute("UPDATE device SET target_release_id = ? WHERE id = ?", (body.release_id, row["id"]))
        return _admin_device_json(conn, _device_row_by_id(conn, row["id"]))


@admin.get(
    "/devices/{name}/measurements",
    response_model=list[s.Measurement],
    responses={
        **_errors(400, 404),
        200: {
            "description": "One page, oldest first (newest last)",
            "headers": {
                "Link": {
                    "description": 'The next, older page (`<URL>; rel="next"`) when there are older measurements.',
                    "schema": {"type": "string"},
                }
            },
        },
    },
    summary="A device's measurements, oldest first (newest last)",
)
def device_measurements(
    name: str,
    request: Request,
    response: Response,
    database: DB,
    _admin: Admin,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_MEASUREMENTS_LIMIT,
            description=f"The newest `limit` measurements (default {DEFAULT_MEASUREMENTS}).",
        ),
    ] = DEFAULT_MEASUREMENTS,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=s.MAX_ID,
            description="Only measurements older than this cursor: the `before` of a page's `Link` (rel=next)."
            " Pages stay exact while new measurements come in, and an old page costs what a new one does.",
        ),
    ] = None,
    skip: Annotated[
        int,
        Query(
            ge=0,
            le=s.MAX_ID,
            description="Skip the newest `skip` first (the next, older page: skip + limit; `before` is cheaper).",
        ),
    ] = 0,
) -> list[dict[str, Any]]:
    with database.read() as conn:
        row = _device_row_by_name(conn, name)
        where, args = "m.device_id = ?", [row["id"]]
        if before is not None:
            # the cursor is the oldest row of the newer page; the order is (timestamp, id), both in the index
            at = conn.execute(
                "SELECT timestamp FROM measurement WHERE id = ? AND device_id = ?", (before, row["id"])
            ).fetchone()
            if at is None:
                raise HTTPException(
                    status_code=400, detail="Invalid cursor: not one of this device's measurements"
                )
            where += " AND (m.timestamp, m.id) < (?, ?)"
            args += [at[0], before]
        rows = conn.execute(
            "SELECT p.name AS property_name, m.timestamp, m.value, m.id FROM measurement m"
            f" JOIN property p ON p.id = m.property_id WHERE {where}"
            " ORDER BY m.timestamp DESC, m.id DESC LIMIT ? OFFSET ?",
            (*args, limit + 1, skip),  # one more: whether an older page exists
        ).fetchall()
    if len(rows) > limit:
        del rows[limit:]
        nxt = request.url.remove_query_params(["before", "skip"]).include_query_params(before=rows[-1]["id"])
        response.headers["Link"] = f'<{nxt}>; rel="next"'
    rows.reverse()
    return [
        {
            "property_name": r["property_name"],
            "timestamp": dbm.unix_to_iso(r["timestamp"]),
            "value": r["value"],
        }
        for r in rows
    ]


@admin.get("/firmware", response_model=list[s.Release], summary="List firmware releases")
def releases_list(
    database: DB,
    _admin: Admin,
    device_type: Annotated[
        str | None, Query(max_length=255, description="Only releases of this device type.")
    ] = None,
) -> list[dict[str, Any]]:
    with database.read() as conn:
        if device_type is None:
            rows = conn.execute(f"{_RELEASE_SQL} ORDER BY r.id").fetchall()
        else:
            rows = conn.execute(f"{_RELEASE_SQL} WHERE t.name = ? ORDER BY r.id", (device_type,)).fetchall()
    return [_release_json(r) for r in rows]


@admin.get(
    "/firmware/{release_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The whole file."},
        206: {"content": {"application/octet-stream": {}}, "description": "One byte range."},
        416: {"model": s.ErrorDetail, "description": "Range not satisfiable; `Content-Range: bytes */size`."},
        500: {"model": s.ErrorDetail, "description": "The release file is missing or damaged on the server."},
        **_errors(404),
    },
    summary="Download any release file, targeted or not (admin)",
)
def admin_release_image(release_id: ReleaseId, request: Request, database: DB, _admin: Admin) -> Response:
    with database.read() as conn:
        release = _release_by_id(conn, release_id)
    if release is None:
        raise HTTPException(status_code=404, detail="Release not found")
    return _release_file(request, release)


_UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "version", "kind", "device_type"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The release file."},
                        "version": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 64,
                            "pattern": s.VERSION_PATTERN,
                        },
                        "kind": {"type": "string", "enum": ["bundle", "image"]},
                        "device_type": {"type": "string", "description": "Name of an existing device type."},
                        "manifest": {
                            "type": "string",
                            "minLength": 2,
                            "maxLength": s.MANIFEST_MAX,
                            "description": "Signed release manifest (exact text, `twomes release --key`); "
                            "its fields must match the upload. Optional, with `signature`.",
                        },
                        "signature": {
                            "type": "string",
                            "pattern": s.SIGNATURE_PATTERN,
                            "description": "Ed25519 signature of `manifest`, hex. Required with `manifest`.",
                        },
                    },
                }
            }
        },
    }
}


@admin.post(
    "/firmware",
    status_code=201,
    response_model=s.Release,
    responses={
        **_errors(400, 409, 413, 415),
        422: {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
        },
    },
    openapi_extra=_UPLOAD_OPENAPI,
    summary="Publish a firmware release (multipart upload, streamed to disk)",
)
async def release_create(request: Request, _admin: Admin) -> dict[str, Any]:
    state = request.app.state
    try:
        upload = await receive_upload(request, state.files_dir, state.max_upload)
    except UploadRejected as exc:
        raise RequestValidationError(exc.errors) from None
    except ClientDisconnect:
        log.warning("firmware upload abandoned by the client; nothing stored")
        raise HTTPException(status_code=400, detail="Upload interrupted") from None
    try:
        form = _validate_release_form(upload)
        return await anyio.to_thread.run_sync(_publish_release, state.db, state.files_dir, upload, form)
    finally:
        upload.discard()


def _validate_release_form(upload: ReceivedUpload) -> s.ReleaseForm:
    errors: list[dict[str, Any]] = []
    form: s.ReleaseForm | None = None
    try:
        form = s.ReleaseForm.model_validate(upload.fields)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            errors.append({**err, "loc": ("body", *err["loc"])})
    if upload.file_parts == 0:
        errors.append({"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None})
    elif upload.size == 0:
        errors.append({"type": "value_error", "loc": ("body", "file"), "msg": "File is empty", "input": None})
    if form is not None and not errors:
        errors += _manifest_errors(form, upload)
    if errors or form is None:
        raise RequestValidationError(errors)
    return form


def _manifest_errors(form: s.ReleaseForm, upload: ReceivedUpload) -> list[dict[str, Any]]:
    """A signed manifest must describe this very upload (the server cannot check the signature: it has
    no keys; devices do). Returns validation errors, empty when fine or unsigned."""

    def err(loc: str, msg: str) -> list[dict[str, Any]]:
        return [{"type": "value_error", "loc": ("body", loc), "msg": msg, "input": None}]

    if (form.manifest is None) != (form.signature is None):
        return err(
            "signature" if form.signature is None else "manifest", "manifest and signature go together"
        )
    if form.manifest is None:
        return []
    try:
        m = json.loads(form.manifest)
    except ValueError:
        return err("manifest", "Manifest is not JSON")
    fields = {"counter", "device_type", "kind", "sha256", "size", "version"}
    if not isinstance(m, dict) or set(m) != fields:
        return err("manifest", "Manifest must have exactly: " + ", ".join(sorted(fields)))
    want = {
        "device_type": form.device_type,
        "kind": form.kind,
        "version": form.version,
        "size": upload.size,
        "sha256": upload.sha256,
    }
    wrong = [k for k, v in want.items() if m[k] != v]
    if wrong:
        return err("manifest", "Manifest does not match the upload: " + ", ".join(wrong))
    if not isinstance(m["counter"], int) or isinstance(m["counter"], bool) or not 0 <= m["counter"] < 2**31:
        return err("manifest", "Manifest counter must be 0..2147483647")
    return []


def _publish_release(
    database: dbm.Database, files_dir: Path, upload: ReceivedUpload, form: s.ReleaseForm
) -> dict[str, Any]:
    """Insert the release row and move the uploaded file into place, in one transaction."""
    assert upload.temp_path is not None
    final: Path | None = None
    try:
        with database.write() as conn:
            type_row = conn.execute(
                "SELECT id FROM device_type WHERE name = ?", (form.device_type,)
            ).fetchone()
            if type_row is None:
                raise HTTPException(status_code=400, detail=f'Unknown device type "{form.device_type}"')
            exists = conn.execute(
                "SELECT 1 FROM release WHERE device_type_id = ? AND version = ?",
                (type_row["id"], form.version),
            ).fetchone()
            if exists:
                raise HTTPException(
                    status_code=409,
                    detail=f'Release version "{form.version}" already exists for device type "{form.device_type}"',
                )
            cur = conn.execute(
                "INSERT INTO release (device_type_id, version, kind, size, sha256, filename, created_on,"
                " manifest, signature) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?)",
                (
                    type_row["id"],
                    form.version,
                    form.kind,
                    upload.size,
                    upload.sha256,
                    dbm.utcnow(),
                    form.manifest,
                    form.signature,
                ),
            )
            release_id = int(cur.lastrowid or 0)
            filename = release_filename(release_id)
            conn.execute("UPDATE release SET filename = ? WHERE id = ?", (filename, release_id))
            final = release_dir(files_dir) / filename
            os.replace(upload.temp_path, final)
            upload.temp_path = None
            _fsync_dir(final.parent)
            row = _release_by_id(conn, release_id)
            assert row is not None
            result = _release_json(row)
    except BaseException:
        # Rolled back: a file already moved into place would be an orphan.
        if final is not None:
            final.unlink(missing_ok=True)
        raise
    return result


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ factory


@dataclass(frozen=True)
class DeviceTypeSpec:
    """A device type to seed: ``NAME=prop[:unit],prop[:unit],...`` on the command line."""

    name: str
    properties: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> DeviceTypeSpec:
        name, sep, props = text.partition("=")
        name = name.strip()
        pairs = []
        for item in props.split(","):
            if item.strip():
                prop, _, unit = item.strip().partition(":")
                pairs.append((prop.strip(), unit.strip()))
        try:
            s.DeviceTypeCreate(
                name=name, display_name=name, properties=[{"name": p, "unit": u} for p, u in pairs]
            )
        except ValidationError as exc:
            raise ValueError(f"bad device type {text!r}: {exc.errors()[0]['msg']}") from None
        if not sep or not pairs or len({p for p, _ in pairs}) != len(pairs):
            raise ValueError(f"bad device type {text!r}: expected NAME=prop[:unit],... with distinct names")
        return cls(name, tuple(pairs))


def default_secret_path(db_path: str | Path) -> Path:
    """Where the server secret lives unless told otherwise: beside the database, ``<db>.secret``."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".secret")


def create_app(
    db_path: str | Path,
    files_dir: str | Path,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    *,
    initialise: bool = True,
    secret_path: str | Path | None = None,
    min_token_length: int = DEFAULT_MIN_TOKEN_LENGTH,
    address_rate: Rate = DEFAULT_ADDRESS_RATE,
    device_rate: Rate = DEFAULT_DEVICE_RATE,
    clock: Callable[[], float] | None = None,
    firmware_api: bool = True,
    admin_api: bool = True,
    device_types: Sequence[DeviceTypeSpec] = (),
    fast_path: bool = True,
    sync_interval: float | None = None,
) -> FastAPI:
    """Build the server application.

    With ``initialise`` (the default) the database is created and seeded if new (or migrated), the
    server secret is read (made on first start; ``secret_path``, default ``<db>.secret``) and stale
    temporary upload files are removed; ``app.state.initial_admin_token`` is the first admin token when
    the database was empty, else None. ``initialise=False`` only builds the app (for the OpenAPI
    document). Raises ``db.SecretError`` when the secret is missing or not this database's.

    ``firmware_api=False`` and ``admin_api=False`` make it a plain Twomes v1 server (no firmware API:
    ``GET /device/firmware/target`` is 404 without the marker header; no ``/admin/`` API), for testing
    devices and tools against what a real Twomes server offers. ``device_types`` are created at start
    when missing (Twomes seeds its device types in the database). ``fast_path`` (the default) answers
    the device's uploads and activations beneath FastAPI's per-request layers (module ``fastpath``);
    off, the FastAPI routes answer them (the same answers: tested).

    ``sync_interval`` (seconds) selects the bounded-loss durability mode (``db.Database``); the default
    None keeps every answered write on disk before its answer.
    """
    if max_upload < 1:
        raise ValueError("max_upload must be positive")
    if not TWOMES_MIN_TOKEN_LENGTH <= min_token_length <= 1024:
        raise ValueError(f"min_token_length must be {TWOMES_MIN_TOKEN_LENGTH}..1024")
    app = TwomesApp(
        title="Twomes reference provisioning server",
        version=API_VERSION,
        description=(
            "Reference server for Twomes MicroPython field devices: the Twomes device API (compatible with a "
            "real Twomes server), the firmware API (responses marked `X-Twomes-Firmware-Api: 1`) and an "
            "admin API. See docs/api.md."
        ),
        docs_url=None,
        redoc_url=None,
    )
    app.firmware_api = firmware_api  # type: ignore[attr-defined]
    app.state.db = dbm.Database(db_path, sync_interval=sync_interval)
    app.router.lifespan_context = app.state.db.lifespan  # the final sync on a clean shutdown
    app.state.files_dir = Path(files_dir)
    app.state.max_upload = max_upload
    limiter_clock = {"clock": clock} if clock is not None else {}
    app.state.settings = Settings(
        key=b"",
        min_token_length=min_token_length,
        by_address=RateLimiter(address_rate, **limiter_clock),
        by_device=RateLimiter(device_rate, **limiter_clock),
    )
    app.state.initial_admin_token = None
    key = b""
    if initialise:
        database: dbm.Database = app.state.db
        secret = Path(secret_path) if secret_path is not None else default_secret_path(db_path)
        key, _ = dbm.load_or_create_secret(secret, create=not database.secret_recorded())
        app.state.initial_admin_token = database.initialise(key)
        with database.write() as conn:
            for spec in device_types:
                if conn.execute("SELECT 1 FROM device_type WHERE name = ?", (spec.name,)).fetchone() is None:
                    dbm.create_device_type(conn, spec.name, spec.name, "", list(spec.properties))
        release_dir(app.state.files_dir).mkdir(parents=True, exist_ok=True)
        removed = remove_stale_uploads(app.state.files_dir)
        if removed:
            log.warning("removed %d unfinished upload(s)", removed)
    app.state.settings.key = key

    app.add_middleware(
        BodyLimitMiddleware, json_limit=JSON_BODY_LIMIT, upload_limit=max_upload + MULTIPART_OVERHEAD
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler, but an input that JSON cannot carry (NaN, a lone surrogate) is shown
        # as text instead of making the error answer itself fail.
        return JSONResponse({"detail": _plain(jsonable_encoder(_plain(exc.errors())))}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return _json_error(500, "Internal server error")

    # The routers' routes go straight into the app's route table (the same routes and OpenAPI document
    # as include_router): an included router is matched twice per request (once to pick the router,
    # once inside it), which cost more than the whole handler of an upload.
    routers = [twomes] + ([firmware] if firmware_api else []) + ([admin] if admin_api else [])
    for router in routers:
        app.router.routes.extend(router.routes)
    # Matched in this order: a device's frequent requests first (every route tried before the one
    # that matches costs a regex match: an upload was the 8th). Their paths are fixed and no other
    # route matches them, so what answers a request is unchanged; the OpenAPI document keeps the
    # declared order.
    app.declared_routes = list(app.router.routes)
    if fast_path:
        # the same paths, answered in front of FastAPI (module fastpath); what it declines goes to
        # the whole FastAPI app, its telemetry check and middlewares included
        app.device_path = fastpath.DevicePath(app._framework, FAST_HANDLERS, JSON_BODY_LIMIT)
    hot = [r for r in app.router.routes if isinstance(r, APIRoute) and r.path in HOT_PATHS]
    app.router.routes[:] = hot + [r for r in app.router.routes if r not in hot]
    return app


HOT_PATHS = (
    "/device/measurements/variable-interval",
    "/device/measurements/fixed-interval",
    "/device/activate",
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the server (no database is touched)."""
    app = create_app(Path(os.devnull), Path(os.devnull), initialise=False)
    return app.openapi()


def openapi_json() -> str:
    """The OpenAPI document as committed in docs/openapi.json."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
