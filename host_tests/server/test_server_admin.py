"""Admin API: device types, accounts, attaching, device listing and state, renaming (repurposing)."""

from __future__ import annotations

import secrets

import httpx
import pytest
from server_helpers import Twomes, bearer, detail

GENERIC_PROPERTIES = [
    {"name": "heartbeat", "unit": ""},
    {"name": "booted_fw", "unit": ""},
    {"name": "new_fw", "unit": ""},
    {"name": "batteryVoltage", "unit": "V"},
]


def test_generic_test_type_is_seeded(http: httpx.Client, tw: Twomes) -> None:
    r = http.get("/admin/device-types", headers=tw.admin)
    assert r.status_code == 200
    generic = next(t for t in r.json() if t["name"] == "Generic-Test")
    assert generic["display_name"] == "Generic test device"
    assert generic["properties"] == GENERIC_PROPERTIES
    assert "target" in generic


def test_create_device_type(http: httpx.Client, tw: Twomes) -> None:
    name = f"DSMR-P1-gateway-{secrets.token_hex(3)}"
    body = {
        "name": name,
        "display_name": "P1 gateway",
        "installation_manual_url": "https://example.org/p1",
        "properties": [{"name": "eMeterReadingSupply", "unit": "kWh"}, {"name": "heartbeat"}],
    }
    r = http.post("/admin/device-types", json=body, headers=tw.admin)
    assert r.status_code == 201
    assert r.json() == {
        "name": name,
        "display_name": "P1 gateway",
        "installation_manual_url": "https://example.org/p1",
        "properties": [{"name": "eMeterReadingSupply", "unit": "kWh"}, {"name": "heartbeat", "unit": ""}],
        "target": None,
    }
    assert name in [t["name"] for t in http.get("/admin/device-types", headers=tw.admin).json()]
    r = http.post("/admin/device-types", json=body, headers=tw.admin)
    assert (r.status_code, detail(r)) == (409, f'Device type "{name}" already exists')
    # The new type can be used at once.
    dev = tw.provision(name)
    r = http.get("/device", headers=dev.headers)
    assert r.json()["device_type"]["name"] == name
    assert [p["name"] for p in r.json()["properties"]] == ["eMeterReadingSupply", "heartbeat"]


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"name": "has space"},
        {"name": "x" * 65},
        {"display_name": ""},
        {"properties": [{"name": "a"}, {"name": "a"}]},
        {"properties": [{"name": ""}]},
        {"properties": "heartbeat"},
    ],
)
def test_create_device_type_validation(http: httpx.Client, tw: Twomes, change: dict[str, object]) -> None:
    body: dict[str, object] = {"name": f"T-{secrets.token_hex(3)}", "display_name": "T", "properties": []}
    body.update(change)
    r = http.post("/admin/device-types", json=body, headers=tw.admin)
    assert r.status_code == 422, r.text


def test_create_account(http: httpx.Client, tw: Twomes) -> None:
    r = http.post("/admin/accounts", json={"name": "Household 17"}, headers=tw.admin)
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "name", "session_token"}
    assert body["name"] == "Household 17"
    other = http.post("/admin/accounts", json={"name": "Household 17"}, headers=tw.admin).json()
    assert other["id"] != body["id"] and other["session_token"] != body["session_token"]
    for bad in ({}, {"name": ""}, {"name": 5}):
        assert http.post("/admin/accounts", json=bad, headers=tw.admin).status_code == 422


def test_admin_attach(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    account_id, _ = tw.account()
    r = http.post(f"/admin/devices/{dev.name}/attach", json={"account_id": account_id}, headers=tw.admin)
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["account_id"]) == ("attached", account_id)
    # Same account again: fine. Another account: the same rule as the account call.
    r = http.post(f"/admin/devices/{dev.name}/attach", json={"account_id": account_id}, headers=tw.admin)
    assert r.status_code == 200
    other_id, _ = tw.account()
    r = http.post(f"/admin/devices/{dev.name}/attach", json={"account_id": other_id}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (400, "Device already activated")
    # The device can now activate.
    assert http.post("/device/activate", json={"activation_token": dev.activation_token}).status_code == 200


def test_admin_attach_errors(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    account_id, _ = tw.account()
    r = http.post("/admin/devices/TWOMES-NOPE00/attach", json={"account_id": account_id}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Device not found")
    r = http.post(f"/admin/devices/{dev.name}/attach", json={"account_id": 999999}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Account not found")
    for bad in ({}, {"account_id": "1"}, {"account_id": None}):
        r = http.post(f"/admin/devices/{dev.name}/attach", json=bad, headers=tw.admin)
        assert r.status_code == 422
    assert tw.device(dev.name)["state"] == "registered"


def test_device_listing_and_states(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    one = tw.device(dev.name)
    assert set(one) == {
        "id",
        "name",
        "device_type",
        "state",
        "account_id",
        "created_on",
        "activated_on",
        "installed_version",
        "installed_release_id",
        "confirmed_on",
        "last_seen",
        "target",
        "target_source",
    }
    assert one["device_type"] == "Generic-Test"
    assert (one["state"], one["account_id"], one["activated_on"], one["last_seen"]) == (
        "registered",
        None,
        None,
        None,
    )
    tw.attach(dev)
    assert tw.device(dev.name)["state"] == "attached"
    tw.activate(dev)
    activated = tw.device(dev.name)
    assert activated["state"] == "activated" and activated["activated_on"] and activated["last_seen"]
    listing = http.get("/admin/devices", headers=tw.admin).json()
    assert activated in listing
    ids = [d["id"] for d in listing]
    assert ids == sorted(ids)
    r = http.get("/admin/devices/TWOMES-NOPE00", headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Device not found")


def test_rename_and_repurpose(http: httpx.Client, tw: Twomes) -> None:
    """The seed's repurposing: rename the old entry to NAME-OLD, then register the erased device anew."""
    old = tw.provision()
    r = http.patch(f"/admin/devices/{old.name}", json={"name": f"{old.name}-OLD"}, headers=tw.admin)
    assert r.status_code == 200
    assert r.json()["name"] == f"{old.name}-OLD"
    assert r.json()["state"] == "activated"
    assert http.get(f"/admin/devices/{old.name}", headers=tw.admin).status_code == 404

    new = tw.register(name=old.name)  # same name, new activation token (flash was erased)
    tw.attach(new)
    tw.activate(new)
    me = http.get("/device", headers=new.headers).json()
    assert me["name"] == old.name and me["id"] != http.get("/device", headers=old.headers).json()["id"]
    assert http.get("/device", headers=old.headers).json()["name"] == f"{old.name}-OLD"


def test_rename_errors(http: httpx.Client, tw: Twomes) -> None:
    a, b = tw.register(), tw.register()
    r = http.patch(f"/admin/devices/{a.name}", json={"name": b.name}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (409, "Device name already in use")
    r = http.patch("/admin/devices/TWOMES-NOPE00", json={"name": tw.new_name()}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Device not found")
    for bad in ({}, {"name": "my-device"}, {"name": "TWOMES-abcdef"}):
        r = http.patch(f"/admin/devices/{a.name}", json=bad, headers=tw.admin)
        assert r.status_code == 422
    r = http.patch(f"/admin/devices/{a.name}", json={"name": a.name}, headers=tw.admin)
    assert r.status_code == 200  # renaming to itself changes nothing
    assert tw.device(a.name)["name"] == a.name


def test_account_token_only_attaches(http: httpx.Client, tw: Twomes) -> None:
    _, account_token = tw.account()
    assert http.get("/admin/devices", headers=bearer(account_token)).status_code == 401
    assert http.get("/device", headers=bearer(account_token)).status_code == 401
