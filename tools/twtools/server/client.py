"""Typed HTTP client of the reference server's admin API (plus device registration), over httpx.

Every method maps to one endpoint and returns the decoded JSON; a non-2xx answer raises
:class:`ServerError` carrying the status and the server's ``detail`` text.
"""

from __future__ import annotations

import json
import mimetypes
import os
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, cast
from urllib.parse import quote

import httpx

DEFAULT_DEVICE_TYPE = "Generic-Test"


class Property(TypedDict):
    name: str
    unit: str


class Release(TypedDict):
    id: int
    version: str
    kind: Literal["bundle", "image"]
    device_type: str
    size: int
    sha256: str
    created_on: str
    url: str
    manifest: str | None
    signature: str | None


class DeviceTypeInfo(TypedDict):
    name: str
    display_name: str
    installation_manual_url: str


class DeviceType(DeviceTypeInfo):
    properties: list[Property]
    target: Release | None


class Device(TypedDict):
    """What ``POST /device`` answers (the Twomes device item)."""

    id: int
    name: str
    device_type: DeviceTypeInfo
    created_on: str
    activated_on: str | None


class AdminDevice(TypedDict):
    id: int
    name: str
    device_type: str
    state: Literal["registered", "attached", "activated"]
    account_id: int | None
    created_on: str
    activated_on: str | None
    installed_version: str | None
    installed_release_id: int | None
    confirmed_on: str | None
    last_seen: str | None
    target: Release | None
    target_source: Literal["device", "device_type"] | None


class Account(TypedDict):
    id: int
    name: str
    session_token: str


class AdminTokenInfo(TypedDict):
    id: int
    created_on: str
    revoked_on: str | None
    current: bool


class AccountInfo(TypedDict):
    id: int
    name: str
    created_on: str
    token_revoked_on: str | None
    devices: int


class TwomesAccount(TypedDict):
    """What ``POST /account`` answers (Twomes)."""

    id: int
    pseudonym: int
    activation_token: str
    firebase_url: str


class Measurement(TypedDict):
    property_name: str
    timestamp: str
    value: str


class ServerError(Exception):
    """The server answered with an error status; ``detail`` is its ``detail`` text."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.errors = errors or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> ServerError:
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, response.text.strip() or response.reason_phrase)
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, str):
            return cls(response.status_code, detail)
        if isinstance(detail, list):
            parts = []
            for err in detail:
                loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
            return cls(response.status_code, "; ".join(parts), detail)
        return cls(response.status_code, response.text.strip() or response.reason_phrase)


def ca_context(path: str | Path | None) -> ssl.SSLContext | bool:
    """An SSL context trusting the CA certificate in ``path`` (PEM or DER), or True (system CAs)."""
    if not path:
        return True
    data = Path(path).read_bytes()
    ctx = ssl.create_default_context()
    if data.lstrip().startswith(b"-----BEGIN"):
        ctx.load_verify_locations(cadata=data.decode())
    else:
        ctx.load_verify_locations(cadata=data)
    return ctx


class AdminClient:
    """Admin API client: ``AdminClient(url, admin_token)``; use as a context manager or call close()."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        *,
        timeout: float = 30.0,
        verify: ssl.SSLContext | bool | None = None,
    ) -> None:
        """``verify``: for https, an SSL context or True (system CAs); by default system CAs, or the CA
        file (PEM or DER) named by ``$TWOMES_CA`` (a reference server's local CA, `twomes server ca`)."""
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=httpx.Timeout(timeout),
            trust_env=False,
            verify=verify if verify is not None else ca_context(os.environ.get("TWOMES_CA")),
        )

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise ServerError.from_response(response)
        return response

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._response(method, path, **kwargs).json()

    # -- Twomes device API, admin side

    def register_device(self, payload: dict[str, Any] | str) -> Device:
        """``POST /device`` with the activation JSON a device prints (a dict or its JSON text)."""
        body = json.loads(payload) if isinstance(payload, str) else payload
        return cast(Device, self._request("POST", "/device", json=body))

    # -- Twomes account API (works on any Twomes v1 server)

    def create_twomes_account(self, pseudonym: int | None = None) -> TwomesAccount:
        """``POST /account`` (admin): an owner account and its activation token (for the owner's app)."""
        body = {"pseudonym": pseudonym} if pseudonym is not None else {}
        return cast(TwomesAccount, self._request("POST", "/account", json=body))

    def activate_account(self, activation_token: str) -> str:
        """``POST /account/activate``: the account session token the owner's app would get."""
        body = {"activation_token": activation_token}
        return cast(
            str, self._request("POST", "/account/activate", json=body, headers=_NO_AUTH)["session_token"]
        )

    def attach_twomes(
        self, activation_token: str, account_token: str | None = None
    ) -> tuple[Device, TwomesAccount | None]:
        """Attach a device the way the owner's app does on any Twomes server: with the device's activation
        token and an account session token (a new account is created and activated when none is given).
        Returns the device item and the new account (None when ``account_token`` was given)."""
        account: TwomesAccount | None = None
        if account_token is None:
            account = self.create_twomes_account()
            account_token = self.activate_account(account["activation_token"])
        device = self._request(
            "POST",
            "/account/device/activate",
            json={"activation_token": activation_token},
            headers={"Authorization": f"Bearer {account_token}"},
        )
        return cast(Device, device), account, account_token

    # -- tokens, accounts

    def create_token(self) -> str:
        """A new admin token (``POST /admin/tokens``)."""
        return cast(str, self._request("POST", "/admin/tokens")["token"])

    def tokens(self) -> list[AdminTokenInfo]:
        """The admin tokens (ids and dates, never the tokens); ``current`` marks this client's."""
        return cast(list[AdminTokenInfo], self._request("GET", "/admin/tokens"))

    def revoke_token(self, token_id: int) -> AdminTokenInfo:
        return cast(AdminTokenInfo, self._request("DELETE", f"/admin/tokens/{int(token_id)}"))

    def create_account(self, name: str) -> Account:
        return cast(Account, self._request("POST", "/admin/accounts", json={"name": name}))

    def accounts(self) -> list[AccountInfo]:
        return cast(list[AccountInfo], self._request("GET", "/admin/accounts"))

    def revoke_account_token(self, account_id: int) -> AccountInfo:
        return cast(AccountInfo, self._request("DELETE", f"/admin/accounts/{int(account_id)}/token"))

    def renew_account_token(self, account_id: int) -> Account:
        return cast(Account, self._request("POST", f"/admin/accounts/{int(account_id)}/token"))

    # -- device types

    def device_types(self) -> list[DeviceType]:
        return cast(list[DeviceType], self._request("GET", "/admin/device-types"))

    def create_device_type(
        self,
        name: str,
        display_name: str,
        properties: list[Property] | list[dict[str, str]],
        installation_manual_url: str = "",
    ) -> DeviceType:
        body = {
            "name": name,
            "display_name": display_name,
            "installation_manual_url": installation_manual_url,
            "properties": properties,
        }
        return cast(DeviceType, self._request("POST", "/admin/device-types", json=body))

    def set_type_target(self, device_type: str, release_id: int | None) -> DeviceType:
        return cast(
            DeviceType,
            self._request(
                "PUT", f"/admin/device-types/{_seg(device_type)}/target", json={"release_id": release_id}
            ),
        )

    # -- devices

    def devices(self, page: int = 500) -> list[AdminDevice]:
        """All devices (the server answers in pages: fetched one after the other)."""
        out: list[AdminDevice] = []
        while True:
            got = cast(
                list[AdminDevice],
                self._request(
                    "GET", "/admin/devices", params={"limit": page, "after": out[-1]["id"] if out else 0}
                ),
            )
            out += got
            if len(got) < page:
                return out

    def device(self, name: str) -> AdminDevice:
        return cast(AdminDevice, self._request("GET", f"/admin/devices/{_seg(name)}"))

    def attach(self, name: str, account_id: int | None = None) -> AdminDevice:
        """Attach a device to an account; without ``account_id`` a new owner account is created for it."""
        if account_id is None:
            account_id = self.create_account(f"owner of {name}")["id"]
        return cast(
            AdminDevice,
            self._request("POST", f"/admin/devices/{_seg(name)}/attach", json={"account_id": account_id}),
        )

    def rename(self, name: str, new: str) -> AdminDevice:
        return cast(AdminDevice, self._request("PATCH", f"/admin/devices/{_seg(name)}", json={"name": new}))

    def set_device_target(self, name: str, release_id: int | None) -> AdminDevice:
        return cast(
            AdminDevice,
            self._request("PUT", f"/admin/devices/{_seg(name)}/target", json={"release_id": release_id}),
        )

    def measurements(self, name: str, limit: int | None = None, page: int = 10_000) -> list[Measurement]:
        """The newest `limit` measurements (None: all), oldest first; fetched in pages, each older page
        by the cursor of the page before (its `Link: rel="next"`), so measurements that come in
        meanwhile neither repeat nor push a page's rows into the next."""
        out: list[Measurement] = []
        params: dict[str, int] = {}
        while limit is None or len(out) < limit:
            params["limit"] = page if limit is None else min(page, limit - len(out))
            response = self._response("GET", f"/admin/devices/{_seg(name)}/measurements", params=params)
            out = cast(list[Measurement], response.json()) + out
            nxt = response.links.get("next")
            if nxt is None:
                break
            params["before"] = int(httpx.URL(nxt["url"]).params["before"])
        return out

    # -- firmware

    def publish(
        self,
        path: str | Path,
        version: str,
        kind: Literal["bundle", "image"],
        device_type: str = DEFAULT_DEVICE_TYPE,
        manifest: str | None = None,
        signature: str | None = None,
    ) -> Release:
        """Upload a release file (streamed from disk, never read whole into memory), with its signed
        manifest and signature when given (`twomes release --key`)."""
        data = {"version": version, "kind": kind, "device_type": device_type}
        if manifest is not None and signature is not None:
            data |= {"manifest": manifest, "signature": signature}
        path = Path(path)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as handle:
            return cast(
                Release,
                self._request(
                    "POST",
                    "/admin/firmware",
                    data=data,
                    files={"file": (path.name, handle, media_type)},
                ),
            )

    def download(self, release_id: int, path: str | Path) -> int:
        """Save a release file (any release, targeted or not) to ``path``; returns its size."""
        with self._http.stream("GET", f"/admin/firmware/{int(release_id)}/image") as response:
            if response.is_error:
                response.read()
                raise ServerError.from_response(response)
            size = 0
            with Path(path).open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    size += len(chunk)
        return size

    def releases(self, device_type: str | None = None) -> list[Release]:
        params = {"device_type": device_type} if device_type is not None else None
        return cast(list[Release], self._request("GET", "/admin/firmware", params=params))

    # -- misc

    def openapi(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._request("GET", "/openapi.json"))


_NO_AUTH: dict[str, str] = {"Authorization": ""}


def _seg(value: str) -> str:
    """One URL path segment."""
    return quote(value, safe="")
