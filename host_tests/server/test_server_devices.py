"""Twomes device API: register, attach (account), activate (token rotation, concurrency), GET /device."""

from __future__ import annotations

import secrets
import threading
from datetime import datetime

import httpx
import pytest
from server_helpers import FIRMWARE_HEADER, Twomes, bearer, detail


def _register(http: httpx.Client, tw: Twomes, **fields: str) -> httpx.Response:
    body = {
        "name": tw.new_name(),
        "device_type": "Generic-Test",
        "activation_token": tw.new_activation_token(),
    }
    body.update(fields)
    return http.post("/device", json=body, headers=tw.admin)


def test_register_device(http: httpx.Client, tw: Twomes) -> None:
    name, token = tw.new_name(), f"{secrets.randbelow(10**16):016d}"
    r = http.post(
        "/device",
        json={"name": name, "device_type": "Generic-Test", "activation_token": token},
        headers=tw.admin,
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "name", "device_type", "created_on", "activated_on"}
    assert isinstance(body["id"], int)
    assert body["name"] == name
    assert body["device_type"] == {
        "name": "Generic-Test",
        "display_name": "Generic test device",
        "installation_manual_url": "",
    }
    assert datetime.fromisoformat(body["created_on"]).tzinfo is not None
    assert body["activated_on"] is None
    assert FIRMWARE_HEADER not in r.headers
    assert tw.device(name)["state"] == "registered"


def test_register_duplicate_name(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    r = _register(http, tw, name=dev.name)
    assert (r.status_code, detail(r)) == (400, "Device name already in use")


def test_register_duplicate_activation_token(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    r = _register(http, tw, activation_token=dev.activation_token)
    assert (r.status_code, detail(r)) == (400, "Activation token already in use")


def test_register_unknown_device_type(http: httpx.Client, tw: Twomes) -> None:
    r = _register(http, tw, device_type="DSMR-P1-gateway-TinTsTrCO2")
    assert (r.status_code, detail(r)) == (400, 'Unknown device type "DSMR-P1-gateway-TinTsTrCO2"')


@pytest.mark.parametrize(
    "name",
    [
        "TWOMES-d3ad48",
        "TWOMES-D3AD4",
        "TWOMES_D3AD48",
        "twomes-D3AD48",
        "XTWOMES-D3AD48",
        " TWOMES-D3AD48",
        "",
    ],
)
def test_register_bad_name_is_422(http: httpx.Client, tw: Twomes, name: str) -> None:
    r = _register(http, tw, name=name)
    assert r.status_code == 422
    assert detail(r)[0]["loc"] == ["body", "name"]


def test_name_check_is_anchored_only_at_the_start(http: httpx.Client, tw: Twomes) -> None:
    name = tw.new_name() + "-OLD"
    r = _register(http, tw, name=name)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name


@pytest.mark.parametrize(
    ("length", "status"), [(1, 422), (7, 422), (8, 422), (15, 422), (16, 200), (1024, 200), (1025, 422)]
)
def test_activation_token_length(http: httpx.Client, tw: Twomes, length: int, status: int) -> None:
    token = (tw.new_activation_token() * 130)[:length]
    r = _register(http, tw, activation_token=token)
    assert r.status_code == status, r.text
    if status == 422:
        assert detail(r)[0]["loc"] == ["body", "activation_token"]


def test_register_missing_fields_and_bad_json(http: httpx.Client, tw: Twomes) -> None:
    r = http.post("/device", json={"name": tw.new_name()}, headers=tw.admin)
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in detail(r)} == {("body", "device_type"), ("body", "activation_token")}
    r = http.post("/device", content=b"{not json", headers={**tw.admin, "content-type": "application/json"})
    assert r.status_code == 422
    assert detail(r)[0]["type"] == "json_invalid"
    r = http.post("/device", json=["a"], headers=tw.admin)
    assert r.status_code == 422


def test_activation_token_whitespace_is_stripped(http: httpx.Client, tw: Twomes) -> None:
    token = tw.new_activation_token()
    r = _register(http, tw, activation_token=f"  {token}\n")
    assert r.status_code == 200
    r = _register(http, tw, activation_token=token)
    assert (r.status_code, detail(r)) == (400, "Activation token already in use")


# ------------------------------------------------------------------------------------- attach (account)


def test_account_attaches_device(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    account_id, account_token = tw.account("Alice")
    r = http.post(
        "/account/device/activate",
        json={"activation_token": dev.activation_token},
        headers=bearer(account_token),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == dev.name
    assert body["device_type"]["name"] == "Generic-Test"
    assert body["activated_on"] is None  # set when the device itself activates
    admin_view = tw.device(dev.name)
    assert admin_view["state"] == "attached"
    assert admin_view["account_id"] == account_id
    # Attaching again to the same account is harmless.
    r = http.post(
        "/account/device/activate",
        json={"activation_token": dev.activation_token},
        headers=bearer(account_token),
    )
    assert r.status_code == 200


def test_account_attach_unknown_token_is_404(http: httpx.Client, tw: Twomes) -> None:
    _, account_token = tw.account()
    r = http.post(
        "/account/device/activate", json={"activation_token": "nosuchtoken"}, headers=bearer(account_token)
    )
    assert (r.status_code, detail(r)) == (404, "No device found for provided activation token")


def test_account_attach_device_of_another_account_is_400(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.attach(tw.register())
    _, other_token = tw.account("Mallory")
    r = http.post(
        "/account/device/activate",
        json={"activation_token": dev.activation_token},
        headers=bearer(other_token),
    )
    assert (r.status_code, detail(r)) == (400, "Device already activated")
    assert tw.device(dev.name)["account_id"] == dev.account_id


def test_account_attach_malformed_is_422(http: httpx.Client, tw: Twomes) -> None:
    _, account_token = tw.account()
    r = http.post(
        "/account/device/activate", json={"activation_token": "short"}, headers=bearer(account_token)
    )
    assert r.status_code == 422


# --------------------------------------------------------------------------------------- device activate


def test_activate_unregistered_is_404(http: httpx.Client) -> None:
    r = http.post("/device/activate", json={"activation_token": "0123456789"})
    assert (r.status_code, detail(r)) == (404, "No device found for provided activation token")


def test_activate_unattached_is_403(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    r = http.post("/device/activate", json={"activation_token": dev.activation_token})
    assert (r.status_code, detail(r)) == (403, "Device not attached to account")
    assert tw.device(dev.name)["activated_on"] is None


@pytest.mark.parametrize(
    "body", [{}, {"activation_token": 12345678}, {"activation_token": "short"}, {"token": "0123456789"}]
)
def test_activate_malformed_is_422(http: httpx.Client, body: dict[str, object]) -> None:
    r = http.post("/device/activate", json=body)
    assert r.status_code == 422
    assert isinstance(detail(r), list)


def test_activate_returns_session_token_and_sets_activated_on_once(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.attach(tw.register())
    r = http.post("/device/activate", json={"activation_token": dev.activation_token})
    assert r.status_code == 200
    assert set(r.json()) == {"session_token"}
    first = tw.device(dev.name)
    assert first["state"] == "activated"
    assert first["activated_on"] is not None
    r2 = http.post("/device/activate", json={"activation_token": dev.activation_token})
    assert r2.status_code == 200
    assert tw.device(dev.name)["activated_on"] == first["activated_on"]


def test_reactivation_rotates_the_session_token(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.provision()
    old = dev.session_token
    assert http.get("/device", headers=bearer(old or "")).status_code == 200
    new = tw.activate(dev)
    assert new != old
    r = http.get("/device", headers=bearer(old or ""))
    assert (r.status_code, detail(r)) == (401, "Invalid device session token")
    assert http.get("/device", headers=bearer(new)).status_code == 200
    newest = tw.activate(dev)
    assert http.get("/device", headers=bearer(new)).status_code == 401
    assert http.get("/device", headers=bearer(newest)).status_code == 200


def test_concurrent_activation_leaves_exactly_one_valid_token(tw: Twomes) -> None:
    dev = tw.attach(tw.register())
    workers = 8  # within the per-device activation burst (10)
    barrier = threading.Barrier(workers)
    tokens: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def activate() -> None:
        try:
            with httpx.Client(base_url=tw.server.url, timeout=60.0, trust_env=False) as client:
                barrier.wait(timeout=30)
                r = client.post("/device/activate", json={"activation_token": dev.activation_token})
                assert r.status_code == 200, r.text
                with lock:
                    tokens.append(r.json()["session_token"])
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=activate) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(tokens) == workers
    assert len(set(tokens)) == workers  # every call issued a new token
    valid = [t for t in tokens if tw.http.get("/device", headers=bearer(t)).status_code == 200]
    assert len(valid) == 1
    assert tw.device(dev.name)["state"] == "activated"


# ------------------------------------------------------------------------------------------ GET /device


def test_get_device_self(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.provision()
    r = http.get("/device", headers=dev.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == dev.name
    assert body["activated_on"] is not None
    expected = [
        {"name": "heartbeat", "unit": ""},
        {"name": "booted_fw", "unit": ""},
        {"name": "new_fw", "unit": ""},
        {"name": "batteryVoltage", "unit": "V"},
    ]
    assert body["device_type"]["name"] == "Generic-Test"
    assert body["device_type"]["display_name"] == "Generic test device"
    assert body["device_type"]["properties"] == expected
    assert body["properties"] == expected
    assert "activation_token" not in body


def test_device_calls_update_last_seen(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.provision()
    before = tw.device(dev.name)["last_seen"]
    assert before is not None  # activation counts as contact
    seen = [before]
    for method, path, body in [
        ("GET", "/device", None),
        ("GET", "/device/firmware/target", None),
        ("GET", "/device/firmware/installed", None),
        ("POST", "/device/firmware/confirm", {"version": "1.0.0"}),
        (
            "POST",
            "/device/measurements/variable-interval",
            {"upload_time": 1795348843, "property_measurements": []},
        ),
    ]:
        assert http.request(method, path, json=body, headers=dev.headers).status_code == 200
        seen.append(tw.device(dev.name)["last_seen"])
    assert all(a < b for a, b in zip(seen, seen[1:], strict=False)), seen
    # A call with a wrong token does not count.
    http.get("/device", headers=bearer("MQ.wrong"))
    assert tw.device(dev.name)["last_seen"] == seen[-1]
