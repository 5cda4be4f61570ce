"""Measurement uploads (variable and fixed interval), their validation, and body size limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from server_helpers import Provisioned, Twomes, detail

T0 = 1795348243  # 2026-11-22T11:50:43Z


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def stored(tw: Twomes, dev: Provisioned) -> list[tuple[str, str, str]]:
    r = tw.http.get(f"/admin/devices/{dev.name}/measurements", params={"limit": 10_000}, headers=tw.admin)
    assert r.status_code == 200
    return [(m["property_name"], m["timestamp"], m["value"]) for m in r.json()]


def heartbeats(values: list[str], start: int = T0, upload_time: int = T0) -> dict[str, object]:
    """A fixed-interval upload: heartbeat `values`, one a second from `start`."""
    return {
        "upload_time": upload_time,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "timestamp": start,
                "timestamp_type": "start",
                "interval": 1,
                "measurements": values,
            }
        ],
    }


@pytest.fixture
def dev(tw: Twomes) -> Provisioned:
    return tw.provision()


def test_variable_interval_upload(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    body = {
        "upload_time": T0 + 600,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "measurements": [{"timestamp": T0, "value": "1"}, {"timestamp": T0 + 0.5, "value": "2"}],
            },
            {
                "property_name": "booted_fw",
                "measurements": [{"timestamp": "2026-11-22T12:50:43+01:00", "value": "v3.0.0"}],
            },
            {
                "property_name": "batteryVoltage",
                "measurements": [{"timestamp": "2026-11-22T11:40:00Z", "value": "3.7"}],
            },
        ],
    }
    before = datetime.now(UTC)
    r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    assert r.status_code == 200, r.text
    result = r.json()
    assert set(result) == {"server_time", "size"}
    assert result["size"] == 4
    server_time = datetime.fromisoformat(result["server_time"])
    assert abs((server_time - before).total_seconds()) < 30
    # Stored in time order (newest last), times normalised to UTC.
    assert stored(tw, dev) == [
        ("batteryVoltage", "2026-11-22T11:40:00Z", "3.7"),
        ("heartbeat", iso(T0), "1"),
        ("booted_fw", iso(T0), "v3.0.0"),
        ("heartbeat", "2026-11-22T11:50:43.500000Z", "2"),
    ]


@pytest.mark.parametrize("n", [3, 16, 17, 40])  # one INSERT up to 16 measurements, executemany above
def test_a_measurement_already_stored_keeps_its_first_value(
    http: httpx.Client, tw: Twomes, dev: Provisioned, n: int
) -> None:
    url = "/device/measurements/variable-interval"
    first = {
        "upload_time": T0,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "measurements": [{"timestamp": T0 + k, "value": f"a{k}"} for k in range(0, n, 2)],
            }
        ],
    }
    assert http.post(url, json=first, headers=dev.headers).json()["size"] == len(range(0, n, 2))
    # every second one again with another value, and the new ones twice within the upload
    again = [{"timestamp": T0 + k, "value": f"b{k}"} for k in range(n)]
    again += [{"timestamp": T0 + k, "value": f"c{k}"} for k in range(1, n, 2)]
    body = {
        "upload_time": T0 + 1,
        "property_measurements": [{"property_name": "heartbeat", "measurements": again}],
    }
    r = http.post(url, json=body, headers=dev.headers)
    assert r.status_code == 200 and r.json()["size"] == len(again)  # as Twomes: the upload's measurements
    assert stored(tw, dev) == [
        ("heartbeat", iso(T0 + k), f"a{k}" if k % 2 == 0 else f"b{k}") for k in range(n)
    ]


def test_numeric_string_timestamps_are_unix_seconds(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    body = {
        "upload_time": str(T0),
        "property_measurements": [
            {"property_name": "heartbeat", "measurements": [{"timestamp": str(T0), "value": "1"}]}
        ],
    }
    assert (
        http.post("/device/measurements/variable-interval", json=body, headers=dev.headers).status_code == 200
    )
    assert stored(tw, dev) == [("heartbeat", iso(T0), "1")]


@pytest.mark.parametrize(
    "timestamp",
    ["2026-11-22T11:50:43", "2026-11-22", "yesterday", -1, 1e300, True, None, [T0], "NaN"],
)
def test_bad_timestamp_is_422(http: httpx.Client, tw: Twomes, dev: Provisioned, timestamp: object) -> None:
    body = {
        "upload_time": T0,
        "property_measurements": [
            {"property_name": "heartbeat", "measurements": [{"timestamp": timestamp, "value": "1"}]}
        ],
    }
    r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    assert r.status_code == 422, r.text
    (error,) = detail(r)
    assert error["loc"] == ["body", "property_measurements", 0, "measurements", 0, "timestamp"]
    assert stored(tw, dev) == []


def test_naive_upload_time_is_422(http: httpx.Client, dev: Provisioned) -> None:
    body = {"upload_time": "2026-11-22T11:50:43", "property_measurements": []}
    r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    assert r.status_code == 422
    assert "time zone" in detail(r)[0]["msg"]


@pytest.mark.parametrize("value", [1, 3.7, None, True, {"v": 1}])
def test_values_must_be_strings(http: httpx.Client, dev: Provisioned, value: object) -> None:
    body = {
        "upload_time": T0,
        "property_measurements": [
            {"property_name": "heartbeat", "measurements": [{"timestamp": T0, "value": value}]}
        ],
    }
    r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    assert r.status_code == 422


def test_invalid_property_names_are_400_and_nothing_is_stored(
    http: httpx.Client, tw: Twomes, dev: Provisioned
) -> None:
    body = {
        "upload_time": T0,
        "property_measurements": [
            {"property_name": "heartbeat", "measurements": [{"timestamp": T0, "value": "1"}]},
            {"property_name": "temperature", "measurements": [{"timestamp": T0, "value": "20.5"}]},
            {"property_name": "co2", "measurements": []},
        ],
    }
    r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    assert (r.status_code, detail(r)) == (400, "Invalid property name(s): {'co2', 'temperature'}")
    r = http.post(
        "/device/measurements/fixed-interval",
        json={
            "upload_time": T0,
            "property_measurements": [
                {
                    "property_name": "temperature",
                    "timestamp": T0,
                    "timestamp_type": "start",
                    "interval": 60,
                    "measurements": ["1"],
                }
            ],
        },
        headers=dev.headers,
    )
    assert (r.status_code, detail(r)) == (400, "Invalid property name(s): {'temperature'}")
    assert stored(tw, dev) == []  # the valid part of a rejected upload is not kept either


def test_property_of_another_device_type_is_invalid(http: httpx.Client, tw: Twomes) -> None:
    other_type = tw.new_device_type(("temperature",))
    dev = tw.provision(other_type)
    body = {
        "upload_time": T0,
        "property_measurements": [
            {"property_name": "heartbeat", "measurements": [{"timestamp": T0, "value": "1"}]}
        ],
    }
    r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    assert (r.status_code, detail(r)) == (400, "Invalid property name(s): {'heartbeat'}")
    body["property_measurements"][0]["property_name"] = "temperature"  # type: ignore[index]
    assert (
        http.post("/device/measurements/variable-interval", json=body, headers=dev.headers).status_code == 200
    )


def test_fixed_interval_start_and_end(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    body = {
        "upload_time": T0 + 3600,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "timestamp": T0,
                "timestamp_type": "start",
                "interval": 600,
                "measurements": ["a", "b", "c"],
            },
            {
                "property_name": "batteryVoltage",
                "timestamp": iso(T0 + 1000),
                "timestamp_type": "end",
                "interval": 10.5,
                "measurements": ["3.1", "3.2"],
            },
        ],
    }
    r = http.post("/device/measurements/fixed-interval", json=body, headers=dev.headers)
    assert r.status_code == 200, r.text
    assert r.json()["size"] == 5
    assert stored(tw, dev) == [
        ("heartbeat", iso(T0), "a"),
        ("heartbeat", iso(T0 + 600), "b"),
        ("batteryVoltage", iso(T0 + 989.5), "3.1"),
        ("batteryVoltage", iso(T0 + 1000), "3.2"),
        ("heartbeat", iso(T0 + 1200), "c"),
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp_type": "middle"},
        {"interval": 0},
        {"interval": -60},
        {"interval": "often"},
        {"timestamp": "2026-11-22T11:50:43"},
        {"measurements": [1, 2]},
        {"measurements": "1,2"},
    ],
)
def test_fixed_interval_validation(
    http: httpx.Client, tw: Twomes, dev: Provisioned, change: dict[str, object]
) -> None:
    pm = {
        "property_name": "heartbeat",
        "timestamp": T0,
        "timestamp_type": "start",
        "interval": 60,
        "measurements": ["1"],
    }
    pm.update(change)
    r = http.post(
        "/device/measurements/fixed-interval",
        json={"upload_time": T0, "property_measurements": [pm]},
        headers=dev.headers,
    )
    assert r.status_code == 422, r.text
    assert stored(tw, dev) == []


def test_measurements_limit_gives_the_newest(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    body = heartbeats([str(i) for i in range(10)])
    assert http.post("/device/measurements/fixed-interval", json=body, headers=dev.headers).status_code == 200
    r = http.get(f"/admin/devices/{dev.name}/measurements", params={"limit": 3}, headers=tw.admin)
    assert [m["value"] for m in r.json()] == ["7", "8", "9"]
    r = http.get(f"/admin/devices/{dev.name}/measurements", params={"limit": 0}, headers=tw.admin)
    assert r.status_code == 422
    r = http.get("/admin/devices/TWOMES-NOPE00/measurements", headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Device not found")


# ------------------------------------------------------------------------------------------ body limits


def _big_upload(n_values: int) -> bytes:
    return json.dumps(heartbeats(["x" * 10] * n_values)).encode()


def test_json_body_at_the_limit_is_accepted(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    data = _big_upload(4000)
    assert len(data) < 64 * 1024
    pad = 64 * 1024 - len(data)
    data = data[:-1] + b" " * pad + data[-1:]  # exactly 64 KiB of valid JSON
    assert len(data) == 64 * 1024
    r = http.post(
        "/device/measurements/fixed-interval",
        content=data,
        headers={**dev.headers, "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert len(stored(tw, dev)) == 4000


def test_json_body_over_64k_is_413(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    data = _big_upload(5000)
    assert len(data) > 64 * 1024
    r = http.post(
        "/device/measurements/fixed-interval",
        content=data,
        headers={**dev.headers, "content-type": "application/json"},
    )
    assert (r.status_code, detail(r)) == (413, "Request body too large")
    assert stored(tw, dev) == []


def test_chunked_json_body_over_64k_is_413(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    data = _big_upload(5000)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    r = http.post(
        "/device/measurements/fixed-interval",
        content=chunks(),
        headers={**dev.headers, "content-type": "application/json"},
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert (r.status_code, detail(r)) == (413, "Request body too large")
    assert stored(tw, dev) == []
    # The server is fine afterwards.
    assert http.get("/device", headers=dev.headers).status_code == 200


def test_oversized_body_is_refused_before_authentication(http: httpx.Client) -> None:
    r = http.post("/device/activate", content=b"{" + b" " * (70 * 1024) + b"}")
    assert (r.status_code, detail(r)) == (413, "Request body too large")


def test_older_pages_follow_the_cursor_exactly_while_new_measurements_come_in(
    tw: Twomes, dev: Provisioned
) -> None:
    """A full page's `Link: rel="next"` leads to the older page by a cursor: exact when newer
    measurements arrive between the pages and when measurements share a timestamp (the cursor is a
    row, not a time); the last page has no link. A cursor of another device is refused."""
    t0 = 1_700_000_000
    both = {  # two properties at each of 30 times: 60 measurements, in pairs that share a timestamp
        "upload_time": t0 + 100,
        "property_measurements": [
            {
                "property_name": p,
                "measurements": [{"timestamp": t0 + k, "value": f"{p[0]}{k}"} for k in range(30)],
            }
            for p in ("heartbeat", "batteryVoltage")
        ],
    }
    up = "/device/measurements/variable-interval"
    assert tw.http.post(up, json=both, headers=dev.headers).status_code == 200
    url = f"/admin/devices/{dev.name}/measurements"
    r = tw.http.get(url, params={"limit": 25}, headers=tw.admin)
    newer = heartbeats(["n0", "n1"], start=t0 + 1000, upload_time=t0 + 1100)  # in before the next page
    assert (
        tw.http.post("/device/measurements/fixed-interval", json=newer, headers=dev.headers).status_code
        == 200
    )
    pages = [r.json()]
    while "next" in r.links:
        r = tw.http.get(r.links["next"]["url"], headers=tw.admin)
        assert r.status_code == 200, r.text
        pages.append(r.json())
    assert [len(p) for p in pages] == [25, 25, 10]
    rows = [m for page in reversed(pages) for m in page]  # oldest first
    assert sorted(m["value"] for m in rows) == sorted(f"{c}{k}" for c in "hb" for k in range(30))
    assert [m["timestamp"] for m in rows] == sorted(m["timestamp"] for m in rows)
    assert [m["value"] for m in tw.server.client.measurements(dev.name, page=7)][-2:] == ["n0", "n1"]
    assert len(tw.server.client.measurements(dev.name, page=7)) == 62
    half = tw.http.get(url, params={"limit": 31}, headers=tw.admin)  # 62: the second page is the last
    last = tw.http.get(half.links["next"]["url"], headers=tw.admin)
    assert (len(last.json()), "next" in last.links) == (31, False)

    cursor = httpx.URL(tw.http.get(url, params={"limit": 1}, headers=tw.admin).links["next"]["url"]).params
    other = tw.provision()
    r = tw.http.get(f"/admin/devices/{other.name}/measurements", params=cursor, headers=tw.admin)
    assert (r.status_code, detail(r)) == (400, "Invalid cursor: not one of this device's measurements")
    for bad in ("0", "x", "-3"):
        assert tw.http.get(url, params={"before": bad}, headers=tw.admin).status_code == 422


def test_measurements_and_devices_come_in_bounded_pages(tw: Twomes, dev: Provisioned) -> None:
    """Admin reads are paginated with a bounded default: the newest 1,000 measurements unless asked,
    older ones with `skip`; devices 100 at a time by id, the next page after the last id."""
    t0 = 1_700_000_000
    body = heartbeats([str(k) for k in range(1500)], start=t0, upload_time=t0 + 2000)
    r = tw.http.post("/device/measurements/fixed-interval", json=body, headers=dev.headers)
    assert r.status_code == 200, r.text
    url = f"/admin/devices/{dev.name}/measurements"
    page = tw.http.get(url, headers=tw.admin).json()
    assert [m["value"] for m in page] == [str(k) for k in range(500, 1500)]  # the newest, oldest first
    older = tw.http.get(url, params={"skip": 1000}, headers=tw.admin).json()
    assert [m["value"] for m in older] == [str(k) for k in range(500)]
    assert tw.http.get(url, params={"limit": 10_001}, headers=tw.admin).status_code == 422
    names = {tw.register().name for _ in range(3)}
    first = tw.http.get("/admin/devices", params={"limit": 2}, headers=tw.admin).json()
    assert len(first) == 2
    rest = tw.http.get(
        "/admin/devices", params={"limit": 1000, "after": first[-1]["id"]}, headers=tw.admin
    ).json()
    everything = [d["name"] for d in first + rest]
    assert names <= set(everything) and len(everything) == len(set(everything))
    assert tw.http.get("/admin/devices", params={"limit": 1001}, headers=tw.admin).status_code == 422
    client_all = tw.server.client.devices(page=2)
    assert [d["name"] for d in client_all] == everything
    assert len(tw.server.client.measurements(dev.name, page=400)) == 1500
