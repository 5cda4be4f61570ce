"""Firmware: publishing (streamed uploads), targets, installed/confirm, ranged downloads, the API marker."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import FIRMWARE_HEADER, Provisioned, Twomes, bearer, check_framing, detail

from twtools.server.testing import ReferenceServer


def _version() -> str:
    return f"1.{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"


def _release_files(server: ReferenceServer) -> list[str]:
    return sorted(p.name for p in (server.files_dir / "releases").iterdir())


def _no_temp_files(server: ReferenceServer) -> bool:
    return not [n for n in _release_files(server) if not n.startswith("release-")]


@pytest.fixture(scope="module")
def image() -> bytes:
    return os.urandom(300_000)


@pytest.fixture(scope="module")
def release(tw: Twomes, image: bytes) -> dict[str, Any]:
    return tw.publish(image, _version(), "image")


@pytest.fixture
def dev(tw: Twomes) -> Provisioned:
    return tw.provision()


# ----------------------------------------------------------------------------------------------- publish


def test_publish_release(http: httpx.Client, tw: Twomes, server: ReferenceServer) -> None:
    data = os.urandom(12345)
    version = _version()
    r = http.post(
        "/admin/firmware",
        data={"version": version, "kind": "bundle", "device_type": "Generic-Test"},
        files={"file": ("app.tar", data, "application/x-tar")},
        headers=tw.admin,
    )
    assert r.status_code == 201, r.text
    rel = r.json()
    assert set(rel) == {
        "id",
        "version",
        "kind",
        "device_type",
        "size",
        "sha256",
        "created_on",
        "url",
        "manifest",
        "signature",
    }
    assert rel["manifest"] is None and rel["signature"] is None  # unsigned
    assert rel["version"] == version
    assert rel["kind"] == "bundle"
    assert rel["device_type"] == "Generic-Test"
    assert rel["size"] == len(data)
    assert rel["sha256"] == hashlib.sha256(data).hexdigest()
    assert rel["url"] == f"/device/firmware/releases/{rel['id']}/image"
    assert (server.files_dir / "releases" / f"release-{rel['id']}.bin").read_bytes() == data
    listed = http.get("/admin/firmware", headers=tw.admin).json()
    assert rel in listed
    only_generic = http.get(
        "/admin/firmware", params={"device_type": "Generic-Test"}, headers=tw.admin
    ).json()
    assert rel in only_generic and all(x["device_type"] == "Generic-Test" for x in only_generic)
    assert http.get("/admin/firmware", params={"device_type": "Nope"}, headers=tw.admin).json() == []
    assert _no_temp_files(server)


def test_publish_same_version_is_409_per_device_type(
    http: httpx.Client, tw: Twomes, server: ReferenceServer
) -> None:
    version = _version()
    tw.publish(b"one", version)
    before = _release_files(server)
    r = http.post(
        "/admin/firmware",
        data={"version": version, "kind": "bundle", "device_type": "Generic-Test"},
        files={"file": ("fw.bin", b"two", "application/octet-stream")},
        headers=tw.admin,
    )
    assert (r.status_code, detail(r)) == (
        409,
        f'Release version "{version}" already exists for device type "Generic-Test"',
    )
    assert _release_files(server) == before
    # The same version for another device type is fine.
    other = tw.new_device_type()
    assert tw.publish(b"three", version, device_type=other)["device_type"] == other


def test_publish_unknown_device_type_is_400(http: httpx.Client, tw: Twomes, server: ReferenceServer) -> None:
    before = _release_files(server)
    r = http.post(
        "/admin/firmware",
        data={"version": "1.0.0", "kind": "image", "device_type": "No-Such-Type"},
        files={"file": ("fw.bin", b"data", "application/octet-stream")},
        headers=tw.admin,
    )
    assert (r.status_code, detail(r)) == (400, 'Unknown device type "No-Such-Type"')
    assert _release_files(server) == before


@pytest.mark.parametrize(
    ("fields", "file", "loc"),
    [
        ({"version": "1.0.0", "kind": "firmware", "device_type": "Generic-Test"}, b"x", "kind"),
        ({"version": "1.0 beta", "kind": "bundle", "device_type": "Generic-Test"}, b"x", "version"),
        ({"version": "../1.0", "kind": "bundle", "device_type": "Generic-Test"}, b"x", "version"),
        ({"version": "1" * 65, "kind": "bundle", "device_type": "Generic-Test"}, b"x", "version"),
        ({"version": "", "kind": "bundle", "device_type": "Generic-Test"}, b"x", "version"),
        ({"kind": "bundle", "device_type": "Generic-Test"}, b"x", "version"),
        ({"version": "1.0.0", "device_type": "Generic-Test"}, b"x", "kind"),
        ({"version": "1.0.0", "kind": "bundle"}, b"x", "device_type"),
        ({"version": "1.0.0", "kind": "bundle", "device_type": "Generic-Test"}, None, "file"),
        ({"version": "1.0.0", "kind": "bundle", "device_type": "Generic-Test"}, b"", "file"),
    ],
)
def test_publish_validation_is_422(
    http: httpx.Client,
    tw: Twomes,
    server: ReferenceServer,
    fields: dict[str, str],
    file: bytes | None,
    loc: str,
) -> None:
    before = _release_files(server)
    files = (
        {"file": ("fw.bin", file, "application/octet-stream")} if file is not None else {"other": ("x", b"1")}
    )
    r = http.post("/admin/firmware", data=fields, files=files, headers=tw.admin)
    assert r.status_code == 422, r.text
    assert ["body", loc] in [e["loc"] for e in detail(r)]
    assert _release_files(server) == before


def test_publish_needs_multipart(http: httpx.Client, tw: Twomes) -> None:
    r = http.post("/admin/firmware", json={"version": "1.0.0"}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (415, "Expected a multipart/form-data body")


def test_publish_truncated_multipart_is_400(http: httpx.Client, tw: Twomes, server: ReferenceServer) -> None:
    before = _release_files(server)
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n' + b"A" * 5000
    )  # no closing boundary
    r = http.post(
        "/admin/firmware",
        content=body,
        headers={**tw.admin, "content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert (r.status_code, detail(r)) == (400, "Invalid multipart body")
    assert _release_files(server) == before


@pytest.fixture(scope="module")
def small_server() -> Iterator[ReferenceServer]:
    with ReferenceServer(max_upload=1024 * 1024, access_log=False) as srv:
        yield srv


def _multipart(boundary: str, fields: dict[str, str], file_chunks: Iterator[bytes]) -> Iterator[bytes]:
    for name, value in fields.items():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="fw.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from file_chunks
    yield f"\r\n--{boundary}--\r\n".encode()


def test_upload_at_the_limit_is_accepted(small_server: ReferenceServer) -> None:
    data = os.urandom(1024 * 1024)
    with httpx.Client(base_url=small_server.url, timeout=60, trust_env=False) as client:
        r = client.post(
            "/admin/firmware",
            data={"version": "1.0.0", "kind": "image", "device_type": "Generic-Test"},
            files={"file": ("fw.bin", data, "application/octet-stream")},
            headers=bearer(small_server.admin_token),
        )
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(data)


def test_upload_over_the_limit_is_413(small_server: ReferenceServer) -> None:
    releases = small_server.client.releases()
    with httpx.Client(base_url=small_server.url, timeout=60, trust_env=False) as client:
        # Declared Content-Length over the limit: refused before the body is read.
        r = client.post(
            "/admin/firmware",
            data={"version": "2.0.0", "kind": "image", "device_type": "Generic-Test"},
            files={"file": ("fw.bin", os.urandom(3 * 1024 * 1024), "application/octet-stream")},
            headers=bearer(small_server.admin_token),
        )
        assert (r.status_code, detail(r)) == (413, "Request body too large")
        # A file just over the limit in a body under the multipart allowance: refused while streaming.
        r = client.post(
            "/admin/firmware",
            data={"version": "2.0.1", "kind": "image", "device_type": "Generic-Test"},
            files={"file": ("fw.bin", os.urandom(1024 * 1024 + 1), "application/octet-stream")},
            headers=bearer(small_server.admin_token),
        )
        assert (r.status_code, detail(r)) == (413, "Request body too large")
        # Chunked (no Content-Length): refused once the file passes the limit.
        boundary = "b0undary"
        chunks = (os.urandom(64 * 1024) for _ in range(40))
        fields = {"version": "2.0.2", "kind": "image", "device_type": "Generic-Test"}
        r = client.post(
            "/admin/firmware",
            content=_multipart(boundary, fields, chunks),
            headers={
                **bearer(small_server.admin_token),
                "content-type": f"multipart/form-data; boundary={boundary}",
            },
        )
        assert (r.status_code, detail(r)) == (413, "Request body too large")
    assert small_server.client.releases() == releases
    assert _no_temp_files(small_server)


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs /proc to read the server's memory use"
)
def test_50mb_upload_is_streamed_not_buffered(tw: Twomes, server: ReferenceServer, dev: Provisioned) -> None:
    size_mb = 50
    peak_before = _vm_hwm_kib(server.pid)
    digest = hashlib.sha256()

    def file_chunks() -> Iterator[bytes]:
        for _ in range(size_mb):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            yield block

    boundary = "twomes-" + secrets.token_hex(8)
    version = _version()
    fields = {"version": version, "kind": "image", "device_type": "Generic-Test"}
    with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as client:
        r = client.post(
            "/admin/firmware",
            content=_multipart(boundary, fields, file_chunks()),
            headers={**tw.admin, "content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert r.status_code == 201, r.text
    rel = r.json()
    assert rel["size"] == size_mb * 1024 * 1024
    assert rel["sha256"] == digest.hexdigest()
    r = tw.http.put(f"/admin/devices/{dev.name}/target", json={"release_id": rel["id"]}, headers=tw.admin)
    assert r.status_code == 200
    growth_mb = (_vm_hwm_kib(server.pid) - peak_before) / 1024
    assert growth_mb < 20, f"server peak RSS grew by {growth_mb:.1f} MB during a {size_mb} MB upload"

    # And it downloads back, streamed, byte for byte.
    down = hashlib.sha256()
    total = 0
    with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as client:
        with client.stream("GET", rel["url"], headers=dev.headers) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-length"] == str(rel["size"])
            for chunk in resp.iter_bytes():
                down.update(chunk)
                total += len(chunk)
    assert total == rel["size"]
    assert down.hexdigest() == rel["sha256"]
    growth_mb = (_vm_hwm_kib(server.pid) - peak_before) / 1024
    assert growth_mb < 20, f"server peak RSS grew by {growth_mb:.1f} MB after a {size_mb} MB download"


# ------------------------------------------------------------------------------------------------ targets


def test_target_resolution(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    other = tw.provision()
    type_rel = tw.publish(b"type target", _version())
    own_rel = tw.publish(b"own target", _version())
    r = http.put(
        "/admin/device-types/Generic-Test/target", json={"release_id": type_rel["id"]}, headers=tw.admin
    )
    assert r.status_code == 200
    assert r.json()["name"] == "Generic-Test"
    assert r.json()["target"] == type_rel
    r = http.get("/device/firmware/target", headers=dev.headers)
    assert r.status_code == 200
    assert r.json() == {"release": type_rel}
    assert tw.device(dev.name)["target"] == type_rel
    assert tw.device(dev.name)["target_source"] == "device_type"

    r = http.put(f"/admin/devices/{dev.name}/target", json={"release_id": own_rel["id"]}, headers=tw.admin)
    assert r.status_code == 200
    assert (r.json()["target"], r.json()["target_source"]) == (own_rel, "device")
    assert http.get("/device/firmware/target", headers=dev.headers).json() == {"release": own_rel}
    assert http.get("/device/firmware/target", headers=other.headers).json() == {"release": type_rel}

    # Clearing the device's own target falls back to the type's; clearing that leaves none.
    assert (
        http.put(f"/admin/devices/{dev.name}/target", json={"release_id": None}, headers=tw.admin).status_code
        == 200
    )
    assert http.get("/device/firmware/target", headers=dev.headers).json() == {"release": type_rel}
    r = http.put("/admin/device-types/Generic-Test/target", json={"release_id": None}, headers=tw.admin)
    assert r.status_code == 200 and r.json()["target"] is None
    assert http.get("/device/firmware/target", headers=dev.headers).json() == {"release": None}
    assert tw.device(dev.name)["target_source"] is None


def test_target_errors(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    other_type = tw.new_device_type()
    foreign = tw.publish(b"other type", _version(), device_type=other_type)
    for path in ("/admin/device-types/Generic-Test/target", f"/admin/devices/{dev.name}/target"):
        r = http.put(path, json={"release_id": 999999}, headers=tw.admin)
        assert (r.status_code, detail(r)) == (404, "Release not found")
        r = http.put(path, json={"release_id": foreign["id"]}, headers=tw.admin)
        assert r.status_code == 400
        assert detail(r) == f'Release {foreign["id"]} is for device type "{other_type}", not "Generic-Test"'
        for bad in ({}, {"release_id": "1"}, {"release_id": 1.5}):
            assert http.put(path, json=bad, headers=tw.admin).status_code == 422
    r = http.put("/admin/device-types/Nope/target", json={"release_id": None}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Device type not found")
    r = http.put("/admin/devices/TWOMES-NOPE00/target", json={"release_id": None}, headers=tw.admin)
    assert (r.status_code, detail(r)) == (404, "Device not found")
    assert http.get("/device/firmware/target", headers=dev.headers).json() == {"release": None}


# -------------------------------------------------------------------------------------- installed/confirm


def test_installed_and_confirm(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    r = http.get("/device/firmware/installed", headers=dev.headers)
    assert r.status_code == 200
    assert r.json() == {"version": None, "release_id": None, "confirmed_on": None}

    r = http.post("/device/firmware/confirm", json={"version": "0.0.1-local"}, headers=dev.headers)
    assert r.status_code == 200
    unknown = r.json()
    assert unknown["version"] == "0.0.1-local" and unknown["release_id"] is None and unknown["confirmed_on"]
    assert http.get("/device/firmware/installed", headers=dev.headers).json() == unknown

    rel = tw.publish(b"known", _version())
    r = http.post("/device/firmware/confirm", json={"version": rel["version"]}, headers=dev.headers)
    assert r.status_code == 200
    known = r.json()
    assert (known["version"], known["release_id"]) == (rel["version"], rel["id"])
    assert known["confirmed_on"] > unknown["confirmed_on"]
    assert http.get("/device/firmware/installed", headers=dev.headers).json() == known
    admin_view = tw.device(dev.name)
    assert admin_view["installed_version"] == rel["version"]
    assert admin_view["installed_release_id"] == rel["id"]
    assert admin_view["confirmed_on"] == known["confirmed_on"]


def test_confirm_matches_only_releases_of_the_device_type(
    http: httpx.Client, tw: Twomes, dev: Provisioned
) -> None:
    version = _version()
    tw.publish(b"other", version, device_type=tw.new_device_type())
    r = http.post("/device/firmware/confirm", json={"version": version}, headers=dev.headers)
    assert r.status_code == 200 and r.json()["release_id"] is None


@pytest.mark.parametrize("body", [{}, {"version": ""}, {"version": "x" * 65}, {"version": 1}])
def test_confirm_validation(http: httpx.Client, dev: Provisioned, body: dict[str, object]) -> None:
    r = http.post("/device/firmware/confirm", json=body, headers=dev.headers)
    assert r.status_code == 422
    assert r.headers[FIRMWARE_HEADER] == "1"


# ----------------------------------------------------------------------------------------------- download


@pytest.fixture
def reader(tw: Twomes, release: dict[str, Any]) -> Provisioned:
    """A device whose own target is ``release`` (only a targeted release can be downloaded)."""
    dev = tw.provision()
    r = tw.http.put(f"/admin/devices/{dev.name}/target", json={"release_id": release["id"]}, headers=tw.admin)
    assert r.status_code == 200, r.text
    return dev


def _get(http: httpx.Client, rel: dict[str, Any], dev: Provisioned, **headers: str) -> httpx.Response:
    return http.get(rel["url"], headers={**dev.headers, **headers})


def test_download_whole(
    http: httpx.Client, reader: Provisioned, release: dict[str, Any], image: bytes
) -> None:
    r = _get(http, release, reader)
    assert r.status_code == 200
    assert r.content == image
    assert r.headers["content-length"] == str(len(image))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == f'"{release["sha256"]}"'
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers[FIRMWARE_HEADER] == "1"
    assert "content-range" not in r.headers


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),  # first byte
        ("bytes=1000-1999", 1000, 1999),  # middle
        ("bytes=299999-299999", 299999, 299999),  # last byte
        ("bytes=299999-", 299999, 299999),  # last byte, open-ended
        ("bytes=250000-", 250000, 299999),
        ("bytes=-1", 299999, 299999),  # suffix
        ("bytes=-4096", 300000 - 4096, 299999),
        ("bytes=-999999", 0, 299999),  # suffix longer than the file: all of it
        ("bytes=299000-999999", 299000, 299999),  # end past the file is clamped
        ("bytes=0-", 0, 299999),
    ],
)
def test_download_range(
    http: httpx.Client,
    reader: Provisioned,
    release: dict[str, Any],
    image: bytes,
    header: str,
    first: int,
    last: int,
) -> None:
    assert len(image) == 300_000
    r = _get(http, release, reader, range=header)
    assert r.status_code == 206
    assert r.content == image[first : last + 1]
    assert r.headers["content-length"] == str(last - first + 1)
    assert r.headers["content-range"] == f"bytes {first}-{last}/{len(image)}"
    assert r.headers["etag"] == f'"{release["sha256"]}"'
    assert r.headers[FIRMWARE_HEADER] == "1"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=300000-",  # starts at the end
        "bytes=400000-500000",
        "bytes=500-100",  # backwards
        "bytes=-0",
        "bytes=-",
        "bytes=abc-def",
        "bytes=0-1,5-6",  # several ranges: not supported
        "items=0-10",
        "0-10",
    ],
)
def test_download_bad_range_is_416(
    http: httpx.Client, reader: Provisioned, release: dict[str, Any], image: bytes, header: str
) -> None:
    r = _get(http, release, reader, range=header)
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(image)}"
    assert r.headers[FIRMWARE_HEADER] == "1"
    assert detail(r) == "Requested range not satisfiable"


def test_resume_with_if_range(
    http: httpx.Client, reader: Provisioned, release: dict[str, Any], image: bytes
) -> None:
    etag = f'"{release["sha256"]}"'
    r = _get(http, release, reader, range="bytes=100-", **{"if-range": etag})
    assert r.status_code == 206 and r.content == image[100:]
    r = _get(http, release, reader, range="bytes=100-", **{"if-range": '"something-else"'})
    assert r.status_code == 200 and r.content == image


def test_download_resumed_in_pieces_reassembles(
    http: httpx.Client, reader: Provisioned, release: dict[str, Any], image: bytes
) -> None:
    parts = []
    for start in range(0, len(image), 65536):
        r = _get(http, release, reader, range=f"bytes={start}-{start + 65535}")
        assert r.status_code == 206
        parts.append(r.content)
    assembled = b"".join(parts)
    assert hashlib.sha256(assembled).hexdigest() == release["sha256"]


def test_download_release_of_another_type_is_404(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    foreign = tw.publish(b"not for you", _version(), device_type=tw.new_device_type())
    r = http.get(foreign["url"], headers=dev.headers)
    assert (r.status_code, detail(r)) == (404, "Release not found")
    assert r.headers[FIRMWARE_HEADER] == "1"
    r = http.get("/device/firmware/releases/987654/image", headers=dev.headers)
    assert (r.status_code, detail(r)) == (404, "Release not found")
    assert r.headers[FIRMWARE_HEADER] == "1"
    r = http.get("/device/firmware/releases/abc/image", headers=dev.headers)
    assert r.status_code == 422 and r.headers[FIRMWARE_HEADER] == "1"


def test_download_missing_file_is_a_clear_500(
    http: httpx.Client, tw: Twomes, server: ReferenceServer, dev: Provisioned
) -> None:
    rel = tw.publish(b"will vanish", _version())
    r = http.put(f"/admin/devices/{dev.name}/target", json={"release_id": rel["id"]}, headers=tw.admin)
    assert r.status_code == 200
    (server.files_dir / "releases" / f"release-{rel['id']}.bin").unlink()
    r = http.get(rel["url"], headers=dev.headers)
    assert (r.status_code, detail(r)) == (500, "Release file missing on the server")
    assert r.headers[FIRMWARE_HEADER] == "1"


# ------------------------------------------------------------------------------------- the API marker


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/device/firmware/target", None),
        ("GET", "/device/firmware/installed", None),
        ("POST", "/device/firmware/confirm", {"version": "1"}),
        ("GET", "/device/firmware/releases/1/image", None),
        ("GET", "/device/firmware/unknown", None),
        ("DELETE", "/device/firmware/target", None),
    ],
)
def test_every_firmware_response_is_marked(
    http: httpx.Client, dev: Provisioned, method: str, path: str, body: dict[str, str] | None
) -> None:
    for headers in ({}, bearer("MQ.bad"), dev.headers):  # 403, 401, and whatever the real call gives
        r = http.request(method, path, json=body, headers=headers)
        assert r.headers.get(FIRMWARE_HEADER) == "1", (headers, r.status_code)


def test_plain_twomes_paths_are_not_marked(http: httpx.Client, tw: Twomes, dev: Provisioned) -> None:
    """A device tells a plain Twomes server (404 without the header) from a firmware-API error."""
    r = http.get("/no/such/path", headers=dev.headers)
    assert (r.status_code, detail(r)) == (404, "Not Found")
    assert FIRMWARE_HEADER not in r.headers
    r = http.get("/device/firmwarex", headers=dev.headers)
    assert r.status_code == 404 and FIRMWARE_HEADER not in r.headers
    for r in (
        http.get("/device", headers=dev.headers),
        http.post("/device/activate", json={"activation_token": "0000000000"}),
        http.get("/admin/devices", headers=tw.admin),
    ):
        assert FIRMWARE_HEADER not in r.headers


def test_the_framing_check_is_active(http: httpx.Client) -> None:
    assert check_framing in http.event_hooks["response"]


def test_abandoned_upload_leaves_nothing_behind(tw: Twomes, server: ReferenceServer) -> None:
    before = _release_files(server)
    releases = tw.http.get("/admin/firmware", headers=tw.admin).json()
    host, port = server.url.removeprefix("http://").split(":")
    head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n' + os.urandom(
        200_000
    )
    request = (
        f"POST /admin/firmware HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {server.admin_token}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 5000000\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request + head)
        deadline = time.monotonic() + 10
        while _no_temp_files(server):  # the server streams the file part to a temporary file ...
            assert time.monotonic() < deadline, "no temporary upload file appeared"
            time.sleep(0.02)
    # ... and removes it once the client is gone.
    deadline = time.monotonic() + 10
    while not _no_temp_files(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _release_files(server) == before
    assert tw.http.get("/admin/firmware", headers=tw.admin).json() == releases
