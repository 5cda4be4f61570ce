"""Authentication: 403 without a Bearer header, 401 with a bad token of each kind, hashed storage."""

from __future__ import annotations

import base64
import re
import sqlite3

import httpx
import pytest
from server_helpers import Twomes, bearer, detail

from twtools.server.testing import ReferenceServer

ADMIN_ENDPOINTS = [
    ("POST", "/device"),
    ("POST", "/admin/tokens"),
    ("GET", "/admin/device-types"),
    ("POST", "/admin/device-types"),
    ("PUT", "/admin/device-types/Generic-Test/target"),
    ("POST", "/admin/accounts"),
    ("GET", "/admin/devices"),
    ("GET", "/admin/devices/TWOMES-000000"),
    ("PATCH", "/admin/devices/TWOMES-000000"),
    ("POST", "/admin/devices/TWOMES-000000/attach"),
    ("PUT", "/admin/devices/TWOMES-000000/target"),
    ("GET", "/admin/devices/TWOMES-000000/measurements"),
    ("POST", "/admin/firmware"),
    ("GET", "/admin/firmware"),
]
DEVICE_ENDPOINTS = [
    ("GET", "/device"),
    ("POST", "/device/measurements/variable-interval"),
    ("POST", "/device/measurements/fixed-interval"),
    ("GET", "/device/firmware/target"),
    ("GET", "/device/firmware/installed"),
    ("GET", "/device/firmware/releases/1/image"),
    ("POST", "/device/firmware/confirm"),
]
ACCOUNT_ENDPOINTS = [("POST", "/account/device/activate")]
ALL_PROTECTED = ADMIN_ENDPOINTS + DEVICE_ENDPOINTS + ACCOUNT_ENDPOINTS

BAD_TOKENS = [
    "garbage",
    "MQ.not-the-right-secret",
    "MQ",
    ".abc",
    "MQ.",
    "a.b.c",
    "OTk5OTk5.abc",  # id 999999: no such row
    "LTE.abc",  # "-1"
    "!!!.abc",
]
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{20,}$")


def _call(
    http: httpx.Client, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    # An empty JSON body: authentication must be checked before the body is validated.
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return http.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path"), ALL_PROTECTED)
def test_no_authorization_header_is_403(http: httpx.Client, method: str, path: str) -> None:
    r = _call(http, method, path)
    assert r.status_code == 403
    assert detail(r) == "Not authenticated"


@pytest.mark.parametrize(("method", "path"), ALL_PROTECTED)
@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Token abc.def", "Bearer", "abc.def"])
def test_non_bearer_scheme_is_403(http: httpx.Client, method: str, path: str, value: str) -> None:
    r = _call(http, method, path, {"Authorization": value})
    assert r.status_code == 403
    assert detail(r) == "Not authenticated"


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
@pytest.mark.parametrize("token", BAD_TOKENS)
def test_bad_admin_token_is_401(http: httpx.Client, method: str, path: str, token: str) -> None:
    r = _call(http, method, path, bearer(token))
    assert r.status_code == 401
    assert detail(r) == "Invalid admin session token"


@pytest.mark.parametrize(("method", "path"), DEVICE_ENDPOINTS)
@pytest.mark.parametrize("token", BAD_TOKENS)
def test_bad_device_token_is_401(http: httpx.Client, method: str, path: str, token: str) -> None:
    r = _call(http, method, path, bearer(token))
    assert r.status_code == 401
    assert detail(r) == "Invalid device session token"


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ENDPOINTS)
@pytest.mark.parametrize("token", BAD_TOKENS)
def test_bad_account_token_is_401(http: httpx.Client, method: str, path: str, token: str) -> None:
    r = _call(http, method, path, bearer(token))
    assert r.status_code == 401
    assert detail(r) == "Invalid account session token"


def test_token_kinds_are_not_interchangeable(http: httpx.Client, tw: Twomes, server: ReferenceServer) -> None:
    dev = tw.provision()
    assert dev.session_token and dev.account_token
    # Device, account and admin rows all start at id 1, so the id parts collide: only the hash decides.
    assert http.get("/device", headers=bearer(server.admin_token)).status_code == 401
    assert http.get("/device", headers=bearer(dev.account_token)).status_code == 401
    r = http.get("/admin/devices", headers=bearer(dev.session_token))
    assert (r.status_code, detail(r)) == (401, "Invalid admin session token")
    r = http.get("/admin/devices", headers=bearer(dev.account_token))
    assert (r.status_code, detail(r)) == (401, "Invalid admin session token")
    r = http.post("/account/device/activate", json={"activation_token": "x" * 8}, headers=dev.headers)
    assert (r.status_code, detail(r)) == (401, "Invalid account session token")
    # ... while each one works where it belongs.
    assert http.get("/device", headers=dev.headers).status_code == 200
    assert http.get("/admin/devices", headers=tw.admin).status_code == 200


def test_scheme_is_case_insensitive(http: httpx.Client, server: ReferenceServer) -> None:
    r = http.get("/admin/devices", headers={"Authorization": f"bearer {server.admin_token}"})
    assert r.status_code == 200


def test_create_admin_token(http: httpx.Client, server: ReferenceServer) -> None:
    r1 = http.post("/admin/tokens", headers=bearer(server.admin_token))
    r2 = http.post("/admin/tokens", headers=bearer(server.admin_token))
    assert r1.status_code == r2.status_code == 201
    t1, t2 = r1.json()["token"], r2.json()["token"]
    assert t1 != t2 != server.admin_token
    for token in (t1, t2, server.admin_token):
        assert TOKEN_RE.match(token), token
        prefix = token.split(".")[0]
        assert base64.urlsafe_b64decode(prefix + "=" * (-len(prefix) % 4)).isdigit()
    # The new token works, including for making yet another token; the first one keeps working.
    assert http.get("/admin/devices", headers=bearer(t1)).status_code == 200
    assert http.post("/admin/tokens", headers=bearer(t2)).status_code == 201
    assert http.get("/admin/devices", headers=bearer(server.admin_token)).status_code == 200


def test_secrets_are_stored_only_as_hashes(http: httpx.Client, tw: Twomes, server: ReferenceServer) -> None:
    dev = tw.provision()
    extra_admin = http.post("/admin/tokens", headers=tw.admin).json()["token"]
    secrets_ = [dev.activation_token, dev.session_token, dev.account_token, extra_admin, server.admin_token]
    with sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        values = [v for t in tables for row in conn.execute(f"SELECT * FROM {t}") for v in row]
    conn.close()
    assert values, "expected some rows"
    for secret in secrets_:
        assert secret not in values
        assert not any(isinstance(v, str) and secret in v for v in values)
    raw = b"".join(p.read_bytes() for p in server.db_path.parent.glob("twomes.sqlite3*"))
    for secret in secrets_:
        assert secret is not None and secret.encode() not in raw


def test_tokens_are_not_logged(http: httpx.Client, tw: Twomes, server: ReferenceServer) -> None:
    dev = tw.provision()
    assert http.get("/device", headers=dev.headers).status_code == 200
    extra_admin = http.post("/admin/tokens", headers=tw.admin).json()["token"]
    log = server.log_text()
    assert '"GET /device HTTP/1.1" 200' in log  # the access log is on ...
    for secret in (dev.session_token, dev.account_token, dev.activation_token, extra_admin):
        assert secret is not None and secret not in log  # ... and never shows a token
