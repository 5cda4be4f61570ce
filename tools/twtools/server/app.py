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

import json
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import db as dbm
from . import schemas as s
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


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class TwomesApp(FastAPI):
    """FastAPI with the firmware-API marker outside everything (so even a 500 carries it)."""

    def build_middleware_stack(self) -> ASGIApp:  # type: ignore[override]
        return FirmwareApiHeaderMiddleware(super().build_middleware_stack())


# ---------------------------------------------------------------------------------------------- auth


class _Bearer(HTTPBearer):
    """HTTPBearer answering 403 ``Not authenticated`` (no header, or not Bearer) as Twomes does."""

    def make_not_authenticated_error(self) -> HTTPException:
        return HTTPException(status_code=403, detail="Not authenticated")


admin_bearer = _Bearer(scheme_name="AdminToken", description="Admin session token.")
account_bearer = _Bearer(scheme_name="AccountToken", description="Account (owner app) session token.")
device_bearer = _Bearer(
    scheme_name="DeviceToken", description="Device session token from `/device/activate`."
)


def get_db(request: Request) -> dbm.Database:
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
            row = conn.execute("SELECT token_hash FROM admin_token WHERE id = ?", (ident,)).fetchone()
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
            row = conn.execute("SELECT session_token_hash FROM account WHERE id = ?", (ident,)).fetchone()
        if row is not None and dbm.token_matches(token, row["session_token_hash"]):
            return ident
    raise HTTPException(status_code=401, detail="Invalid account session token")


@dataclass(frozen=True)
class AuthedDevice:
    id: int
    name: str
    device_type_id: int


def require_device(
    database: DB, credentials: Annotated[HTTPAuthorizationCredentials, Depends(device_bearer)]
) -> AuthedDevice:
    """Checks the device session token and records the device as seen now."""
    token = credentials.credentials
    ident = dbm.token_ident(token)
    if ident is not None:
        with database.write() as conn:
            row = conn.execute(
                "SELECT id, name, device_type_id, session_token_hash FROM device WHERE id = ?", (ident,)
            ).fetchone()
            if row is not None and dbm.token_matches(token, row["session_token_hash"]):
                conn.execute("UPDATE device SET last_seen = ? WHERE id = ?", (dbm.utcnow(), ident))
                return AuthedDevice(row["id"], row["name"], row["device_type_id"])
    raise HTTPException(status_code=401, detail="Invalid device session token")


Admin = Annotated[int, Depends(require_admin)]
Account = Annotated[int, Depends(require_account)]
Device = Annotated[AuthedDevice, Depends(require_device)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": s.ErrorDetail} for code in codes}


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


def _store_measurements(
    database: dbm.Database,
    device: AuthedDevice,
    upload_time: float,
    items: list[tuple[str, list[tuple[float, str]]]],
) -> dict[str, Any]:
    """Store one upload atomically; 400 when a property is not one of the device type's."""
    server_time = datetime.now(UTC)
    with database.write() as conn:
        rows = conn.execute(
            "SELECT id, name FROM property WHERE device_type_id = ?", (device.device_type_id,)
        ).fetchall()
        property_ids = {r["name"]: r["id"] for r in rows}
        invalid = {name for name, _ in items} - property_ids.keys()
        if invalid:
            names = "{" + ", ".join(repr(n) for n in sorted(invalid)) + "}"
            raise HTTPException(status_code=400, detail=f"Invalid property name(s): {names}")
        size = sum(len(values) for _, values in items)
        cur = conn.execute(
            "INSERT INTO upload (device_id, server_time, device_time, size) VALUES (?, ?, ?, ?)",
            (device.id, server_time.isoformat(timespec="microseconds"), upload_time, size),
        )
        upload_id = cur.lastrowid
        conn.executemany(
            "INSERT INTO measurement (device_id, property_id, upload_id, timestamp, value) VALUES (?, ?, ?, ?, ?)",
            [
                (device.id, property_ids[name], upload_id, ts, value)
                for name, values in items
                for ts, value in values
            ],
        )
    return {"server_time": server_time, "size": size}


# ------------------------------------------------------------------------------- Twomes device API

twomes = APIRouter(tags=["Twomes device API"])


@twomes.post(
    "/device",
    response_model=s.DeviceItem,
    responses=_errors(400, 401, 403),
    summary="Register a device (admin)",
)
def device_create(body: s.DeviceCreate, database: DB, _admin: Admin) -> dict[str, Any]:
    activation_hash = dbm.hash_secret(body.activation_token)
    with database.write() as conn:
        type_row = conn.execute("SELECT id FROM device_type WHERE name = ?", (body.device_type,)).fetchone()
        if type_row is None:
            raise HTTPException(status_code=400, detail=f'Unknown device type "{body.device_type}"')
        if conn.execute("SELECT 1 FROM device WHERE name = ?", (body.name,)).fetchone():
            raise HTTPException(status_code=400, detail="Device name already in use")
        if conn.execute(
            "SELECT 1 FROM device WHERE activation_token_hash = ?", (activation_hash,)
        ).fetchone():
            raise HTTPException(status_code=400, detail="Activation token already in use")
        cur = conn.execute(
            "INSERT INTO device (name, device_type_id, activation_token_hash, created_on) VALUES (?, ?, ?, ?)",
            (body.name, type_row["id"], activation_hash, dbm.utcnow()),
        )
        return _device_json(_device_row_by_id(conn, int(cur.lastrowid or 0)))


@twomes.post(
    "/account/device/activate",
    response_model=s.DeviceItem,
    responses=_errors(400, 401, 403, 404),
    summary="Attach a device to the caller's account (account)",
)
def account_device_activate(body: s.ActivationRequest, database: DB, account_id: Account) -> dict[str, Any]:
    with database.write() as conn:
        row = conn.execute(
            f"{_DEVICE_SQL} WHERE d.activation_token_hash = ?", (dbm.hash_secret(body.activation_token),)
        ).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="No device found for provided activation token")
        _attach(conn, row, account_id)
        return _device_json(_device_row_by_id(conn, row["id"]))


@twomes.post(
    "/device/activate",
    response_model=s.SessionToken,
    responses=_errors(403, 404),
    summary="Activate: get a new device session token (no auth)",
)
def device_activate(body: s.ActivationRequest, database: DB) -> dict[str, str]:
    with database.write() as conn:
        row = conn.execute(
            "SELECT id, account_id FROM device WHERE activation_token_hash = ?",
            (dbm.hash_secret(body.activation_token),),
        ).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="No device found for provided activation token")
        if row["account_id"] is None:
            raise HTTPException(status_code=403, detail="Device not attached to account")
        token, token_hash = dbm.new_token(row["id"])
        now = dbm.utcnow()
        conn.execute(
            "UPDATE device SET session_token_hash = ?, activated_on = COALESCE(activated_on, ?), last_seen = ?"
            " WHERE id = ?",
            (token_hash, now, now, row["id"]),
        )
    return {"session_token": token}


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
def upload_variable(body: s.MeasurementsUploadVariable, database: DB, device: Device) -> dict[str, Any]:
    items = [
        (pm.property_name, [(s.timestamp_seconds(m.timestamp), m.value) for m in pm.measurements])
        for pm in body.property_measurements
    ]
    return _store_measurements(database, device, s.timestamp_seconds(body.upload_time), items)


@twomes.post(
    "/device/measurements/fixed-interval",
    response_model=s.MeasurementsUploadResult,
    responses=_errors(400, 401, 403),
    summary="Upload measurements taken at a fixed interval (device)",
)
def upload_fixed(body: s.MeasurementsUploadFixed, database: DB, device: Device) -> dict[str, Any]:
    items: list[tuple[str, list[tuple[float, str]]]] = []
    for pm in body.property_measurements:
        first = s.timestamp_seconds(pm.timestamp)
        if pm.timestamp_type == "end":
            first -= (len(pm.measurements) - 1) * pm.interval
        items.append(
            (pm.property_name, [(first + i * pm.interval, v) for i, v in enumerate(pm.measurements)])
        )
    return _store_measurements(database, device, s.timestamp_seconds(body.upload_time), items)


# ------------------------------------------------------------------------------------- firmware API

firmware = APIRouter(prefix="/device/firmware", tags=["Firmware API"])


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
        **_errors(401, 403, 404),
    },
    summary="Download a release file, whole or one byte range (device)",
)
def firmware_image(release_id: int, request: Request, database: DB, device: Device) -> Response:
    with database.read() as conn:
        row = _device_row_by_id(conn, device.id)
        release = _release_by_id(conn, release_id)
    targets = {row["target_release_id"], row["type_target_release_id"]}
    if release is None or (release["device_type_id"] != device.device_type_id and release_id not in targets):
        raise HTTPException(status_code=404, detail="Release not found")
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

admin = APIRouter(prefix="/admin", tags=["Admin API"], responses=_errors(401, 403))


@admin.post("/tokens", status_code=201, response_model=s.AdminToken, summary="Create another admin token")
def admin_token_create(database: DB, _admin: Admin) -> dict[str, str]:
    with database.write() as conn:
        return {"token": dbm.create_admin_token(conn)}


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


@admin.post("/accounts", status_code=201, response_model=s.AccountCreated, summary="Create an owner account")
def account_create(body: s.AccountCreate, database: DB, _admin: Admin) -> dict[str, Any]:
    with database.write() as conn:
        cur = conn.execute(
            "INSERT INTO account (name, session_token_hash, created_on) VALUES (?, '', ?)",
            (body.name, dbm.utcnow()),
        )
        account_id = int(cur.lastrowid or 0)
        token, token_hash = dbm.new_token(account_id)
        conn.execute("UPDATE account SET session_token_hash = ? WHERE id = ?", (token_hash, account_id))
    return {"id": account_id, "name": body.name, "session_token": token}


@admin.get("/devices", response_model=list[s.AdminDevice], summary="List devices")
def devices_list(database: DB, _admin: Admin) -> list[dict[str, Any]]:
    with database.read() as conn:
        rows = conn.execute(f"{_DEVICE_SQL} ORDER BY d.id").fetchall()
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
    responses=_errors(404),
    summary="A device's measurements, oldest first (newest last)",
)
def device_measurements(
    name: str,
    database: DB,
    _admin: Admin,
    limit: Annotated[int | None, Query(ge=1, description="Only the newest `limit` measurements.")] = None,
) -> list[dict[str, Any]]:
    with database.read() as conn:
        row = _device_row_by_name(conn, name)
        sql = (
            "SELECT p.name AS property_name, m.timestamp, m.value, m.id FROM measurement m"
            " JOIN property p ON p.id = m.property_id WHERE m.device_id = ?"
        )
        if limit is None:
            rows = conn.execute(f"{sql} ORDER BY m.timestamp, m.id", (row["id"],)).fetchall()
        else:
            rows = conn.execute(
                f"{sql} ORDER BY m.timestamp DESC, m.id DESC LIMIT ?", (row["id"], limit)
            ).fetchall()
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
    device_type: Annotated[str | None, Query(description="Only releases of this device type.")] = None,
) -> list[dict[str, Any]]:
    with database.read() as conn:
        if device_type is None:
            rows = conn.execute(f"{_RELEASE_SQL} ORDER BY r.id").fetchall()
        else:
            rows = conn.execute(f"{_RELEASE_SQL} WHERE t.name = ? ORDER BY r.id", (device_type,)).fetchall()
    return [_release_json(r) for r in rows]


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


def create_app(
    db_path: str | Path,
    files_dir: str | Path,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    *,
    initialise: bool = True,
) -> FastAPI:
    """Build the server application.

    With ``initialise`` (the default) the database is created and seeded if new, and stale temporary
    upload files are removed; ``app.state.initial_admin_token`` is the first admin token when the
    database was empty, else None. ``initialise=False`` only builds the app (for the OpenAPI document).
    """
    if max_upload < 1:
        raise ValueError("max_upload must be positive")
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
    app.state.db = dbm.Database(db_path)
    app.state.files_dir = Path(files_dir)
    app.state.max_upload = max_upload
    app.state.initial_admin_token = None
    if initialise:
        app.state.initial_admin_token = app.state.db.initialise()
        release_dir(app.state.files_dir).mkdir(parents=True, exist_ok=True)
        removed = remove_stale_uploads(app.state.files_dir)
        if removed:
            log.warning("removed %d unfinished upload(s)", removed)

    app.add_middleware(
        BodyLimitMiddleware, json_limit=JSON_BODY_LIMIT, upload_limit=max_upload + MULTIPART_OVERHEAD
    )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return _json_error(500, "Internal server error")

    app.include_router(twomes)
    app.include_router(firmware)
    app.include_router(admin)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the server (no database is touched)."""
    app = create_app(Path(os.devnull), Path(os.devnull), initialise=False)
    return app.openapi()


def openapi_json() -> str:
    """The OpenAPI document as committed in docs/openapi.json."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
