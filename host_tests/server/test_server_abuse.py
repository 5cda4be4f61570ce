"""Issue #12: the server holds under abuse - strict input, rate limits, keyed hashes, no duplicates,
revocable tokens, private files, targeted-only downloads. (Slow clients: test_server_slow_clients.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_helpers import Twomes, bearer, check_framing, detail

from twtools.server.ratelimit import Rate, RateLimiter, retry_after
from twtools.server.testing import ReferenceServer, ServerStartError

T0 = 1795348243


def _raw_post(http: httpx.Client, path: str, raw: str | bytes, headers: dict[str, str]) -> httpx.Response:
    return http.post(path, content=raw, headers={**headers, "content-type": "application/json"})


def _upload(
    value: object = '"1"', name: object = '"heartbeat"', ts: object = T0, upload_time: object = T0
) -> str:
    """A variable-interval body as raw JSON text (so NaN, 1e400 and lone surrogates can be written)."""
    return (
        f'{{"upload_time": {upload_time}, "property_measurements": [{{"property_name": {name}, '
        f'"measurements": [{{"timestamp": {ts}, "value": {value}}}]}}]}}'
    )


# ------------------------------------------------------------------------------------------ strict input


@pytest.mark.parametrize(
    "raw",
    [
        _upload(upload_time="1e400"),
        _upload(upload_time="-1e400"),
        _upload(upload_time="NaN"),
        _upload(upload_time="Infinity"),
        _upload(ts="1e400"),
        _upload(value='"\\ud800"'),
        _upload(name='"heart\\udfffbeat"'),
        _upload(upload_time="1" * 5000),  # an integer Python will not even parse
        '{"upload_time": ' + "[" * 100_00 + "]" * 100_00 + "}",  # deeper than the JSON decoder goes
    ],
)
def test_bad_json_numbers_and_strings_are_422_and_the_connection_lives_on(
    http: httpx.Client, tw: Twomes, raw: str
) -> None:
    dev = tw.provision()
    r = _raw_post(http, "/device/measurements/variable-interval", raw, dev.headers)
    assert r.status_code == 422, r.text
    assert detail(r)[0]["type"] == "json_invalid"
    # The same keep-alive connection still works, and nothing was stored.
    r = http.get(f"/admin/devices/{dev.name}/measurements", headers=tw.admin)
    assert (r.status_code, r.json()) == (200, [])


@pytest.mark.parametrize(
    "ts",
    [
        '"0001-01-01T00:00:00+14:00"',
        '"9999-12-31T23:59:59-14:00"',
        '"1900-01-01T00:00:00Z"',
        '"1969-12-31T23:59:59Z"',
        "-1",
        "253402300800",
        '"253402300800"',
        '"99999999999999999999999999999999999999999999"',
    ],
)
def test_timestamps_out_of_range_are_422_on_every_upload_path(
    http: httpx.Client, tw: Twomes, ts: str
) -> None:
    dev = tw.provision()
    r = _raw_post(http, "/device/measurements/variable-interval", _upload(ts=ts), dev.headers)
    assert r.status_code == 422, r.text
    r = _raw_post(http, "/device/measurements/variable-interval", _upload(upload_time=ts), dev.headers)
    assert r.status_code == 422, r.text
    fixed = (
        f'{{"upload_time": {T0}, "property_measurements": [{{"property_name": "heartbeat", "timestamp": {ts},'
        ' "timestamp_type": "start", "interval": 60, "measurements": ["1"]}]}'
    )
    r = _raw_post(http, "/device/measurements/fixed-interval", fixed, dev.headers)
    assert r.status_code == 422, r.text
    r = http.get(f"/admin/devices/{dev.name}/measurements", headers=tw.admin)
    assert (r.status_code, r.json()) == (200, [])


def test_the_edges_of_the_time_range_are_stored_and_read_back(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.provision()
    for ts in ('"1970-01-01T00:00:00Z"', '"9999-12-31T23:59:59Z"', '"1970-01-01T14:00:00+14:00"'):
        r = _raw_post(
            http, "/device/measurements/variable-interval", _upload(ts=ts, value=json.dumps(ts)), dev.headers
        )
        assert r.status_code == 200, r.text
    r = http.get(f"/admin/devices/{dev.name}/measurements", headers=tw.admin)
    assert r.status_code == 200
    assert [m["timestamp"] for m in r.json()] == ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]


@pytest.mark.parametrize(
    ("timestamp", "timestamp_type", "interval", "count"),
    [
        (T0, "start", 253402300799, 2),  # the second value lies past 9999
        (T0, "end", 253402300799, 2),  # the first value lies before 1970
        (10, "end", 6, 3),  # 10 - 2 * 6 < 0
    ],
)
def test_fixed_interval_times_must_stay_in_range(
    http: httpx.Client, tw: Twomes, timestamp: int, timestamp_type: str, interval: int, count: int
) -> None:
    dev = tw.provision()
    body = {
        "upload_time": T0,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "timestamp": timestamp,
                "timestamp_type": timestamp_type,
                "interval": interval,
                "measurements": ["1"] * count,
            }
        ],
    }
    r = http.post("/device/measurements/fixed-interval", json=body, headers=dev.headers)
    assert r.status_code == 422, r.text
    assert detail(r)[0]["loc"] == ["body", "property_measurements", 0, "interval"]
    r = http.post(
        "/device/measurements/fixed-interval",
        json={**body, "property_measurements": [{**body["property_measurements"][0], "measurements": ["1"]}]},
        headers=dev.headers,
    )
    assert r.status_code == (422 if timestamp_type == "start" and timestamp > 253402300799 else 200)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/firmware/12345678901234567890123/image"),
        ("GET", "/admin/devices/TWOMES-000000/measurements?limit=31507947776553579970560"),
        ("GET", "/admin/devices/TWOMES-000000/measurements?limit=0"),
        ("DELETE", "/admin/tokens/99999999999999999999"),
        ("DELETE", "/admin/accounts/0/token"),
    ],
)
def test_ids_and_limits_are_bounded(http: httpx.Client, tw: Twomes, method: str, path: str) -> None:
    r = http.request(method, path, headers=tw.admin)
    assert r.status_code == 422, r.text


def test_device_ids_in_paths_and_bodies_are_bounded(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.provision()
    r = http.get("/device/firmware/releases/12345678901234567890123/image", headers=dev.headers)
    assert r.status_code == 422 and r.headers["x-twomes-firmware-api"] == "1"
    for body in ({"release_id": 2**63}, {"release_id": 0}, {"release_id": -5}):
        r = http.put(f"/admin/devices/{dev.name}/target", json=body, headers=tw.admin)
        assert r.status_code == 422, r.text
    r = http.post(f"/admin/devices/{dev.name}/attach", json={"account_id": 10**30}, headers=tw.admin)
    assert r.status_code == 422, r.text


def test_a_validation_error_with_an_unprintable_input_is_still_a_422(http: httpx.Client, tw: Twomes) -> None:
    # A valid JSON body whose value pydantic echoes back: the answer itself must be valid JSON.
    dev = tw.provision()
    r = http.post(
        "/device/measurements/variable-interval",
        json={"upload_time": "x" * 10, "property_measurements": [{"property_name": 5, "measurements": 7}]},
        headers=dev.headers,
    )
    assert r.status_code == 422
    assert {e["loc"][1] for e in detail(r)} == {"upload_time", "property_measurements"}


# ---------------------------------------------------------------------------------------- idempotency


def test_the_same_upload_three_times_is_stored_once(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.provision()
    body = {
        "upload_time": T0 + 600,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "measurements": [{"timestamp": T0, "value": "1"}, {"timestamp": T0 + 60, "value": "2"}],
            },
            {"property_name": "booted_fw", "measurements": [{"timestamp": T0, "value": "1.0.0"}]},
        ],
    }
    for _ in range(3):
        r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
        assert (r.status_code, r.json()["size"]) == (200, 3)
    # A re-send with one new measurement stores only that one; an ISO form of a stored time is the same time.
    body["property_measurements"][0]["measurements"].append({"timestamp": T0 + 120, "value": "3"})
    body["property_measurements"][1]["measurements"][0]["timestamp"] = "2026-11-22T12:50:43+01:00"
    r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    assert r.status_code == 200
    fixed = {
        "upload_time": T0 + 600,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "timestamp": T0 + 60,
                "timestamp_type": "start",
                "interval": 60,
                "measurements": ["changed", "changed", "4"],
            }
        ],
    }
    for _ in range(2):
        assert (
            http.post("/device/measurements/fixed-interval", json=fixed, headers=dev.headers).status_code
            == 200
        )
    rows = http.get(f"/admin/devices/{dev.name}/measurements", headers=tw.admin).json()
    assert [(m["property_name"], m["value"]) for m in rows] == [
        ("heartbeat", "1"),
        ("booted_fw", "1.0.0"),
        ("heartbeat", "2"),
        ("heartbeat", "3"),
        ("heartbeat", "4"),
    ]


def test_two_devices_may_share_a_timestamp(http: httpx.Client, tw: Twomes) -> None:
    a, b = tw.provision(), tw.provision()
    for dev in (a, b):
        r = _raw_post(http, "/device/measurements/variable-interval", _upload(), dev.headers)
        assert r.status_code == 200
        assert len(http.get(f"/admin/devices/{dev.name}/measurements", headers=tw.admin).json()) == 1


# ------------------------------------------------------------------------------- activation: limits


def test_rate_limiter_with_a_controlled_clock() -> None:
    now = [1000.0]
    limiter = RateLimiter(Rate(3, 10.0), clock=lambda: now[0], max_keys=2)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(10.0)
    now[0] += 5
    assert limiter.take("a") == pytest.approx(5.0)  # the refused attempt spent nothing
    now[0] += 5
    assert limiter.take("a") == 0.0
    limiter.refund("a")
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0
    assert limiter.take("c") == 0.0  # the table holds 2 keys: "a" (least recently used) is forgotten
    assert len(limiter) == 2
    assert limiter.take("a") == 0.0
    assert retry_after(0.2) == "1" and retry_after(5.01) == "6"
    assert Rate.parse("30/2") == Rate(30, 2.0)
    for bad in ("30", "0/2", "3/0", "a/b", "3/nan"):
        with pytest.raises(ValueError):
            Rate.parse(bad)


@pytest.fixture(scope="module")
def strict_server() -> Iterator[ReferenceServer]:
    """A server with small activation limits (5 failed guesses per address, 3 activations per device)."""
    with ReferenceServer(
        access_log=False,
        extra_args=[
            "--activation-rate-address",
            "5/60",
            "--activation-rate-device",
            "3/60",
            "--min-token-length",
            "8",
        ],
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict(strict_server: ReferenceServer) -> Iterator[Twomes]:
    with httpx.Client(
        base_url=strict_server.url, timeout=30, trust_env=False, event_hooks={"response": [check_framing]}
    ) as http:
        yield Twomes(strict_server, http)


def test_wrong_guesses_from_one_address_get_429_with_retry_after(strict: Twomes) -> None:
    dev = strict.attach(strict.register())
    answers = [
        strict.http.post("/device/activate", json={"activation_token": f"{i:016d}"}).status_code
        for i in range(8)
    ]
    assert answers == [404] * 5 + [429] * 3
    r = strict.http.post("/device/activate", json={"activation_token": "0" * 16})
    assert (r.status_code, detail(r)) == (
        429,
        "Too many activation attempts from this address; try again later",
    )
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # While the address is blocked, even the right token waits (nothing is looked up) ...
    assert (
        strict.http.post("/device/activate", json={"activation_token": dev.activation_token}).status_code
        == 429
    )
    # ... and the account endpoint, the other place a token can be tried, shares the limit.
    r = strict.http.post(
        "/account/device/activate",
        json={"activation_token": "1" * 16},
        headers=bearer(dev.account_token or ""),
    )
    assert r.status_code == 429 and "retry-after" in r.headers


def test_activations_of_one_device_are_limited() -> None:
    args = ["--activation-rate-device", "3/60", "--activation-rate-address", "2/60"]
    with (
        ReferenceServer(access_log=False, extra_args=args) as srv,
        httpx.Client(base_url=srv.url, timeout=30, trust_env=False) as http,
    ):
        tw = Twomes(srv, http)
        dev = tw.attach(tw.register())
        answers = [
            http.post("/device/activate", json={"activation_token": dev.activation_token}) for _ in range(5)
        ]
        # Successful activations never count against the address (a fleet behind one NAT).
        assert http.post("/device/activate", json={"activation_token": "9" * 16}).status_code == 404
        last = answers[2].json()["session_token"]
        assert http.get("/device", headers=bearer(last)).status_code == 200  # the last issued token is valid
    codes = [a.status_code for a in answers]
    assert codes == [200, 200, 200, 429, 429]
    assert answers[3].json()["detail"] == "Too many activations of this device; try again later"
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60


def test_twomes_style_tokens_register_with_min_token_length_8(strict: Twomes) -> None:
    name = strict.new_name()
    body = {"name": name, "device_type": "Generic-Test", "activation_token": "3375550652"}
    assert strict.http.post("/device", json=body, headers=strict.admin).status_code == 200
    body = {"name": strict.new_name(), "device_type": "Generic-Test", "activation_token": "1234567"}
    assert strict.http.post("/device", json=body, headers=strict.admin).status_code == 422


# --------------------------------------------------------------------------- activation: keyed hashes


def _query(server: ReferenceServer, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(server.db_path, isolation_level=None)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_activation_tokens_are_stored_with_a_keyed_hash(tw: Twomes, server: ReferenceServer) -> None:
    dev = tw.register()
    secret = Path(str(server.db_path) + ".secret")
    key = bytes.fromhex(secret.read_text().strip())
    assert len(key) == 32
    [(stored,)] = _query(server, "SELECT activation_token_hash FROM device WHERE name = ?", dev.name)
    import hmac

    assert stored == "k1:" + hmac.new(key, dev.activation_token.encode(), hashlib.sha256).hexdigest()
    assert hashlib.sha256(dev.activation_token.encode()).hexdigest() not in stored
    assert dev.activation_token not in server.db_path.read_bytes().decode("latin-1")


def test_a_schema_1_plain_hash_still_activates_and_is_upgraded(tw: Twomes, server: ReferenceServer) -> None:
    dev = tw.attach(tw.register())
    plain = hashlib.sha256(dev.activation_token.encode()).hexdigest()
    _query(server, "UPDATE device SET activation_token_hash = ? WHERE name = ?", plain, dev.name)
    tw.activate(dev)
    [(stored,)] = _query(server, "SELECT activation_token_hash FROM device WHERE name = ?", dev.name)
    assert stored.startswith("k1:")
    tw.activate(dev)  # and found by the keyed hash from now on


def test_the_server_refuses_to_start_without_its_secret(tmp_path: Path) -> None:
    work = tmp_path / "srv"
    with ReferenceServer(work, access_log=False) as srv:
        srv.client.register_device(
            {"name": "TWOMES-ABCDEF", "device_type": "Generic-Test", "activation_token": "1" * 16}
        )
    secret = Path(str(work / "twomes.sqlite3") + ".secret")
    original = secret.read_text()
    secret.unlink()
    with pytest.raises(ServerStartError, match="server secret .* is missing"):
        ReferenceServer(work, access_log=False).start()
    assert not secret.exists()  # not silently replaced by a new one
    secret.write_text(os.urandom(32).hex())
    with pytest.raises(ServerStartError, match="does not belong to"):
        ReferenceServer(work, access_log=False).start()
    secret.write_text(original)
    with ReferenceServer(work, access_log=False) as srv:
        assert srv.client.device("TWOMES-ABCDEF")["state"] == "registered"


# ------------------------------------------------------------------------------------ admin: tokens


def test_admin_tokens_are_listed_and_revoked(http: httpx.Client, tw: Twomes) -> None:
    other = http.post("/admin/tokens", headers=tw.admin).json()["token"]
    listed = http.get("/admin/tokens", headers=tw.admin).json()
    assert all(set(t) == {"id", "created_on", "revoked_on", "current"} for t in listed)
    assert [t["current"] for t in listed].count(True) == 1
    assert all(other not in json.dumps(t) for t in listed)
    mine = next(t["id"] for t in listed if t["current"])
    other_id = max(t["id"] for t in listed)
    assert http.get("/admin/devices", headers=bearer(other)).status_code == 200
    r = http.delete(f"/admin/tokens/{mine}", headers=tw.admin)
    assert (r.status_code, detail(r)) == (409, "Cannot revoke the token used for this request")
    r = http.delete(f"/admin/tokens/{other_id}", headers=tw.admin)
    assert r.status_code == 200 and r.json()["revoked_on"] is not None
    r = http.get("/admin/devices", headers=bearer(other))
    assert (r.status_code, detail(r)) == (401, "Invalid admin session token")
    again = http.delete(f"/admin/tokens/{other_id}", headers=tw.admin)  # again: no change
    assert again.status_code == 200 and again.json()["revoked_on"] == r.json().get(
        "revoked_on", again.json()["revoked_on"]
    )
    entry = next(t for t in http.get("/admin/tokens", headers=tw.admin).json() if t["id"] == other_id)
    assert entry["revoked_on"] == again.json()["revoked_on"]
    r = http.delete("/admin/tokens/999999", headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Token not found")


def test_account_tokens_are_listed_revoked_and_renewed(http: httpx.Client, tw: Twomes) -> None:
    dev = tw.register()
    account_id, token = tw.account("revocable")
    accounts = http.get("/admin/accounts", headers=tw.admin).json()
    entry = next(a for a in accounts if a["id"] == account_id)
    assert entry == {**entry, "name": "revocable", "token_revoked_on": None, "devices": 0}
    r = http.delete(f"/admin/accounts/{account_id}/token", headers=tw.admin)
    assert r.status_code == 200 and r.json()["token_revoked_on"] is not None
    r = http.post(
        "/account/device/activate", json={"activation_token": dev.activation_token}, headers=bearer(token)
    )
    assert (r.status_code, detail(r)) == (401, "Invalid account session token")
    renewed = http.post(f"/admin/accounts/{account_id}/token", headers=tw.admin)
    assert renewed.status_code == 201
    new_token = renewed.json()["session_token"]
    r = http.post(
        "/account/device/activate", json={"activation_token": dev.activation_token}, headers=bearer(new_token)
    )
    assert r.status_code == 200
    entry = next(a for a in http.get("/admin/accounts", headers=tw.admin).json() if a["id"] == account_id)
    assert entry["devices"] == 1 and entry["token_revoked_on"] is None
    assert http.delete("/admin/accounts/999999/token", headers=tw.admin).status_code == 404


# ------------------------------------------------------------------------------------- private files


def test_files_the_server_writes_are_private(tw: Twomes, server: ReferenceServer) -> None:
    tw.publish(b"private release", "9.9.9-private")
    paths = [
        server.db_path,
        Path(str(server.db_path) + ".secret"),
        Path(str(server.db_path) + "-wal"),
        server.token_path,
        server.log_path,
        *sorted((server.files_dir / "releases").iterdir()),
    ]
    for path in paths:
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert server.db_path.exists() and server.log_path.exists()
    for directory in (server.files_dir, server.files_dir / "releases"):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0, directory


def test_files_of_an_older_server_are_made_private_at_start(tmp_path: Path) -> None:
    work = tmp_path / "srv"
    with ReferenceServer(work, access_log=False):
        pass
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    db = work / "twomes.sqlite3"
    db.chmod(0o644)
    with ReferenceServer(work, access_log=False):
        assert stat.S_IMODE(db.stat().st_mode) == 0o600


# -------------------------------------------------------------------------- releases: targeted only


def test_a_release_is_downloadable_only_once_targeted(http: httpx.Client, tw: Twomes) -> None:
    dev, other = tw.provision(), tw.provision()
    draft = tw.publish(b"draft release", "0.0.1-draft")
    r = http.get(draft["url"], headers=dev.headers)
    assert (r.status_code, detail(r)) == (404, "Release not found")
    # The admin can always fetch it.
    r = http.get(f"/admin/firmware/{draft['id']}/image", headers=tw.admin)
    assert (r.status_code, r.content) == (200, b"draft release")
    r = http.get(f"/admin/firmware/{draft['id']}/image", headers={**tw.admin, "range": "bytes=0-4"})
    assert (r.status_code, r.content) == (206, b"draft")
    assert http.get(f"/admin/firmware/{draft['id']}/image", headers=dev.headers).status_code == 401
    # Targeted at one device: that device may download it, another of the type may not.
    assert (
        http.put(
            f"/admin/devices/{dev.name}/target", json={"release_id": draft["id"]}, headers=tw.admin
        ).status_code
        == 200
    )
    assert http.get(draft["url"], headers=dev.headers).content == b"draft release"
    assert http.get(draft["url"], headers=other.headers).status_code == 404
    r = http.get("/admin/firmware/987654/image", headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Release not found")
