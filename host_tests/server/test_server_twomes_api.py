"""Issue #14 (server side): the Twomes account API as Twomes does it, a reference server set up as a
plain Twomes v1 server (no firmware API, no admin API, a device type without booted_fw), and the tools
using the Twomes API where it suffices."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest
from server_helpers import Twomes, bearer, check_framing, detail

from twtools.cli import main
from twtools.server.app import DeviceTypeSpec
from twtools.server.testing import ReferenceServer

T0 = 1795348243


def _token() -> str:
    return f"{secrets.randbelow(10**16):016d}"


# ------------------------------------------------------------------------------ Twomes account API


def test_account_is_created_by_an_admin_and_activated_by_its_token(http: httpx.Client, tw: Twomes) -> None:
    r = http.post("/account", json={}, headers=tw.admin)
    assert r.status_code == 200, r.text
    account = r.json()
    assert set(account) == {"id", "pseudonym", "activation_token", "firebase_url"}
    assert 800000 <= account["pseudonym"] <= 899999 and len(account["activation_token"]) >= 32
    first = http.post("/account/activate", json={"activation_token": account["activation_token"]})
    second = http.post("/account/activate", json={"activation_token": account["activation_token"]})
    assert first.status_code == second.status_code == 200
    old, new = first.json()["session_token"], second.json()["session_token"]
    assert old != new
    dev = tw.register()
    r = http.post(
        "/account/device/activate", json={"activation_token": dev.activation_token}, headers=bearer(old)
    )
    assert (r.status_code, detail(r)) == (401, "Invalid account session token")  # replaced by the second
    r = http.post(
        "/account/device/activate", json={"activation_token": dev.activation_token}, headers=bearer(new)
    )
    assert r.status_code == 200 and r.json()["name"] == dev.name
    # As Twomes: the account's activation token is used up by the first use of a session token.
    r = http.post("/account/activate", json={"activation_token": account["activation_token"]})
    assert (r.status_code, detail(r)) == (404, "No account found for provided activation token")
    assert tw.device(dev.name)["state"] == "attached"


def test_account_pseudonyms(http: httpx.Client, tw: Twomes) -> None:
    pseudonym = 800000 + secrets.randbelow(100000)
    r = http.post("/account", json={"pseudonym": pseudonym, "tz_name": "Europe/Amsterdam"}, headers=tw.admin)
    if r.status_code == 400:  # taken by a random one already: pick another
        pseudonym = 800000 + (pseudonym + 1 - 800000) % 100000
        r = http.post("/account", json={"pseudonym": pseudonym}, headers=tw.admin)
    assert r.status_code == 200 and r.json()["pseudonym"] == pseudonym
    r = http.post("/account", json={"pseudonym": pseudonym}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (400, "Account pseudonym already in use")
    for bad in (
        {"pseudonym": 799999},
        {"pseudonym": 900000},
        {"location": {"longitude": 200, "latitude": 0}},
    ):
        assert http.post("/account", json=bad, headers=tw.admin).status_code == 422
    assert http.post("/account", json={}).status_code == 403
    assert http.post("/account", json={}, headers=bearer("MQ.nope")).status_code == 401
    r = http.post("/account/activate", json={"activation_token": "not-a-token"})
    assert (r.status_code, detail(r)) == (404, "No account found for provided activation token")


def test_device_type_spec() -> None:
    spec = DeviceTypeSpec.parse("Plain-Test=heartbeat, temperature:C")
    assert spec == DeviceTypeSpec("Plain-Test", (("heartbeat", ""), ("temperature", "C")))
    for bad in ("Plain-Test", "Plain-Test=", "bad name=x", "T=a,a"):
        with pytest.raises(ValueError):
            DeviceTypeSpec.parse(bad)


# -------------------------------------------------------------------- a plain Twomes server (no extras)


@pytest.fixture(scope="module")
def plain() -> Iterator[ReferenceServer]:
    with ReferenceServer(
        access_log=False, plain_twomes=True, device_types=["Plain-Test=heartbeat,batteryVoltage:V"]
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def plain_http(plain: ReferenceServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=plain.url, timeout=30, trust_env=False, event_hooks={"response": [check_framing]}
    ) as http:
        yield http


def _cli(capsys: pytest.CaptureFixture[str], server: ReferenceServer, *args: str) -> tuple[int, str, str]:
    code = main(["server", args[0], "--url", server.url, "--admin-token", server.admin_token, *args[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_plain_twomes_server_has_no_firmware_or_admin_api(
    plain: ReferenceServer, plain_http: httpx.Client
) -> None:
    admin = bearer(plain.admin_token)
    r = plain_http.get("/device/firmware/target", headers=bearer("MQ.x"))
    assert (r.status_code, detail(r)) == (404, "Not Found")
    assert "x-twomes-firmware-api" not in r.headers  # how a device tells a plain Twomes server
    assert plain_http.get("/admin/devices", headers=admin).status_code == 404
    doc = plain_http.get("/openapi.json").json()
    assert not [p for p in doc["paths"] if p.startswith(("/admin", "/device/firmware"))]


def test_tools_provision_a_device_on_a_plain_twomes_server(
    capsys: pytest.CaptureFixture[str], plain: ReferenceServer, plain_http: httpx.Client
) -> None:
    name, token = Twomes.new_name(), _token()
    line = json.dumps({"name": name, "device_type": "Plain-Test", "activation_token": token})
    # A name alone needs the admin API: a clear line instead of "Not Found".
    code, _, err = _cli(capsys, plain, "attach", name)
    assert code == 1 and "no admin API (a plain Twomes server)" in err and "--activation-token" in err
    code, out, err = _cli(capsys, plain, "register", line, "--attach")
    assert code == 0, err
    assert out.startswith(f"registered {name} (Plain-Test)\nattached {name} to new account ")
    assert "account session token: " in out
    # The device can now activate, read its type's properties and upload.
    r = plain_http.post("/device/activate", json={"activation_token": token})
    assert r.status_code == 200, r.text
    device = bearer(r.json()["session_token"])
    me = plain_http.get("/device", headers=device).json()
    assert [p["name"] for p in me["device_type"]["properties"]] == ["heartbeat", "batteryVoltage"]
    body = {
        "upload_time": T0,
        "property_measurements": [
            {"property_name": "heartbeat", "measurements": [{"timestamp": T0, "value": "1"}]},
            {"property_name": "booted_fw", "measurements": [{"timestamp": T0, "value": "1.0.0"}]},
            {"property_name": "new_fw", "measurements": [{"timestamp": T0, "value": "1.0.0"}]},
        ],
    }
    r = plain_http.post("/device/measurements/variable-interval", json=body, headers=device)
    assert (r.status_code, detail(r)) == (400, "Invalid property name(s): {'booted_fw', 'new_fw'}")
    body["property_measurements"] = body["property_measurements"][:1]
    r = plain_http.post("/device/measurements/variable-interval", json=body, headers=device)
    assert (r.status_code, r.json()["size"]) == (200, 1)


def test_attach_with_the_activation_token_or_a_boot_log(
    capsys: pytest.CaptureFixture[str], plain: ReferenceServer, plain_http: httpx.Client, tmp_path: object
) -> None:
    admin = bearer(plain.admin_token)
    devices = []
    for _ in range(2):
        name, token = Twomes.new_name(), _token()
        body = {"name": name, "device_type": "Plain-Test", "activation_token": token}
        assert plain_http.post("/device", json=body, headers=admin).status_code == 200
        devices.append((name, token, body))
    (name, token, _), (name2, _, body2) = devices
    code, out, err = _cli(capsys, plain, "attach", name, "--activation-token", token)
    assert code == 0, err
    account_token = out.split("account session token: ")[1].strip()
    log = plain.workdir / "boot.log"
    log.write_text(f"I (512) twomes: activation line\n{json.dumps(body2)}\nI (600) twomes: waiting\n")
    code, out, err = _cli(capsys, plain, "attach", str(log), "--account-token", account_token)
    assert (code, out) == (0, f"attached {name2} to the given account\n"), err
    code, _, err = _cli(capsys, plain, "attach", name, "--activation-token", token, "--account-id", "3")
    assert code == 1 and "--account-token" in err
