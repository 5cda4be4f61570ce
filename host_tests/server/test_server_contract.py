"""The committed API contract (docs/openapi.json) is exactly what the server serves."""

from __future__ import annotations

import json

import httpx
import pytest

from twtools import REPO
from twtools.cli import main

OPENAPI = REPO / "docs" / "openapi.json"

EXPECTED_OPERATIONS = {
    ("post", "/device"),
    ("get", "/device"),
    ("post", "/account/device/activate"),
    ("post", "/account"),
    ("post", "/account/activate"),
    ("post", "/device/activate"),
    ("post", "/device/measurements/variable-interval"),
    ("post", "/device/measurements/fixed-interval"),
    ("get", "/device/firmware/target"),
    ("get", "/device/firmware/installed"),
    ("get", "/device/firmware/releases/{release_id}/image"),
    ("post", "/device/firmware/confirm"),
    ("post", "/admin/tokens"),
    ("get", "/admin/tokens"),
    ("delete", "/admin/tokens/{token_id}"),
    ("get", "/admin/accounts"),
    ("delete", "/admin/accounts/{account_id}/token"),
    ("post", "/admin/accounts/{account_id}/token"),
    ("get", "/admin/firmware/{release_id}/image"),
    ("get", "/admin/device-types"),
    ("post", "/admin/device-types"),
    ("put", "/admin/device-types/{name}/target"),
    ("post", "/admin/accounts"),
    ("get", "/admin/devices"),
    ("get", "/admin/devices/{name}"),
    ("patch", "/admin/devices/{name}"),
    ("post", "/admin/devices/{name}/attach"),
    ("put", "/admin/devices/{name}/target"),
    ("get", "/admin/devices/{name}/measurements"),
    ("post", "/admin/firmware"),
    ("get", "/admin/firmware"),
}


def test_committed_openapi_equals_served(http: httpx.Client) -> None:
    r = http.get("/openapi.json")
    assert r.status_code == 200
    committed = json.loads(OPENAPI.read_text())
    assert r.json() == committed, (
        "docs/openapi.json is stale: run `twomes server openapi > docs/openapi.json`"
    )


def test_openapi_command_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["server", "openapi"]) == 0
    assert capsys.readouterr().out == OPENAPI.read_text()


def test_openapi_lists_every_operation_with_its_security() -> None:
    doc = json.loads(OPENAPI.read_text())
    operations = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert operations == EXPECTED_OPERATIONS
    security = {(m, p): item[m].get("security") for p, item in doc["paths"].items() for m in item}
    assert security[("post", "/device/activate")] is None
    assert security[("post", "/device")] == [{"AdminToken": []}]
    assert security[("post", "/account/device/activate")] == [{"AccountToken": []}]
    assert security[("get", "/device/firmware/target")] == [{"DeviceToken": []}]
    upload = doc["paths"]["/admin/firmware"]["post"]["requestBody"]["content"]["multipart/form-data"][
        "schema"
    ]
    assert set(upload["required"]) == {"file", "version", "kind", "device_type"}


def test_openapi_declares_the_statuses_every_operation_can_give() -> None:
    doc = json.loads(OPENAPI.read_text())
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert "413" in codes, (method, path)  # a body (or a declared Content-Length) over the limit
            if op.get("security"):
                assert {"401", "403"} <= codes, (method, path)
            if op.get("parameters") or op.get("requestBody"):
                assert "422" in codes, (method, path)
    for path in ("/device/activate", "/account/device/activate", "/account/activate"):
        too_many = doc["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in too_many["headers"]
