"""Helpers shared by the reference-server tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from twtools.server.testing import ReferenceServer

FIRMWARE_HEADER = "x-twomes-firmware-api"


def check_framing(response: httpx.Response) -> None:
    """Every answer of the server is framed by Content-Length (never chunked), as Twomes' are."""
    assert "transfer-encoding" not in response.headers, response.request.url
    assert "content-length" in response.headers, response.request.url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Provisioned:
    name: str
    activation_token: str
    account_id: int | None = None
    account_token: str | None = None
    session_token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        assert self.session_token is not None
        return bearer(self.session_token)


class Twomes:
    """Helpers driving a server through its HTTP API the way an operator, app and device do."""

    _counter = itertools.count(secrets.randbelow(0x400000))

    def __init__(self, server: ReferenceServer, http: httpx.Client) -> None:
        self.server = server
        self.http = http
        self.admin = bearer(server.admin_token)

    @classmethod
    def new_name(cls) -> str:
        return f"TWOMES-{next(cls._counter) % 0x1000000:06X}"

    @staticmethod
    def new_activation_token() -> str:
        return secrets.token_hex(8)

    def register(self, device_type: str = "Generic-Test", name: str | None = None) -> Provisioned:
        dev = Provisioned(name or self.new_name(), self.new_activation_token())
        body = {"name": dev.name, "device_type": device_type, "activation_token": dev.activation_token}
        r = self.http.post("/device", json=body, headers=self.admin)
        assert r.status_code == 200, r.text
        return dev

    def account(self, name: str = "owner") -> tuple[int, str]:
        r = self.http.post("/admin/accounts", json={"name": name}, headers=self.admin)
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["session_token"]

    def attach(self, dev: Provisioned) -> Provisioned:
        dev.account_id, dev.account_token = self.account()
        r = self.http.post(
            "/account/device/activate",
            json={"activation_token": dev.activation_token},
            headers=bearer(dev.account_token),
        )
        assert r.status_code == 200, r.text
        return dev

    def activate(self, dev: Provisioned) -> str:
        r = self.http.post("/device/activate", json={"activation_token": dev.activation_token})
        assert r.status_code == 200, r.text
        dev.session_token = r.json()["session_token"]
        return dev.session_token

    def provision(self, device_type: str = "Generic-Test") -> Provisioned:
        dev = self.attach(self.register(device_type))
        self.activate(dev)
        return dev

    def device(self, name: str) -> dict[str, Any]:
        r = self.http.get(f"/admin/devices/{name}", headers=self.admin)
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def publish(
        self, data: bytes, version: str, kind: str = "bundle", device_type: str = "Generic-Test"
    ) -> dict[str, Any]:
        r = self.http.post(
            "/admin/firmware",
            data={"version": version, "kind": kind, "device_type": device_type},
            files={"file": ("fw.bin", data, "application/octet-stream")},
            headers=self.admin,
        )
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result

    def new_device_type(self, properties: tuple[str, ...] = ("temperature",)) -> str:
        name = f"Test-{secrets.token_hex(4)}"
        body = {
            "name": name,
            "display_name": f"{name} device",
            "installation_manual_url": "https://example.org/manual",
            "properties": [{"name": p, "unit": ""} for p in properties],
        }
        r = self.http.post("/admin/device-types", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return name


def detail(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()["detail"]
