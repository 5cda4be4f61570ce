"""Signed releases on the reference server: `POST /admin/firmware` stores a manifest + signature that
describe the upload (refused otherwise), `GET /device/firmware/target` hands them to the device, and
the device's own check (device/twomes/update/signing.py, here on CPython) accepts exactly that; a
database of the first schema is migrated. `twomes keys new` / `twomes release --key` / `twomes server
publish --key` end to end."""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Provisioned, Twomes

from twtools import keys
from twtools.server.testing import ReferenceServer


def _version() -> str:
    return f"2.{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "release.key"
    keys.new_key(path)
    return path


def _signed_post(
    http: httpx.Client, tw: Twomes, data: bytes, version: str, manifest: str | None, signature: str | None
) -> httpx.Response:
    fields = {"version": version, "kind": "bundle", "device_type": "Generic-Test"}
    if manifest is not None:
        fields["manifest"] = manifest
    if signature is not None:
        fields["signature"] = signature
    return http.post(
        "/admin/firmware",
        data=fields,
        files={"file": ("b.bin", data, "application/octet-stream")},
        headers=tw.admin,
    )


def _manifest(data: bytes, version: str, **kw: Any) -> str:
    args: dict[str, Any] = {
        "device_type": "Generic-Test",
        "kind": "bundle",
        "version": version,
        "counter": 7,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    args.update(kw)
    return keys.manifest_text(**args)


def test_signed_release_reaches_the_device_and_verifies(
    http: httpx.Client, tw: Twomes, key_file: Path
) -> None:
    from twomes.update import signing

    key = keys.load_key(key_file)
    data = os.urandom(5000)
    version = _version()
    text = _manifest(data, version)
    sig = keys.sign_text(key, text)
    r = _signed_post(http, tw, data, version, text, sig)
    assert r.status_code == 201, r.text
    rel = r.json()
    assert rel["manifest"] == text and rel["signature"] == sig
    dev: Provisioned = tw.provision()
    assert (
        http.put(
            f"/admin/devices/{dev.name}/target", json={"release_id": rel["id"]}, headers=tw.admin
        ).status_code
        == 200
    )
    target = http.get("/device/firmware/target", headers=dev.headers).json()["release"]
    assert target == rel
    pub = keys.public_hex(key)
    # the device's check accepts it with the fleet's key, refuses it with another one
    m = signing.check_release(target, [pub], "Generic-Test")
    assert m["counter"] == 7 and m["sha256"] == hashlib.sha256(data).hexdigest()
    other = keys.public_hex(keys.load_key(_other_key(key_file.parent)))
    with pytest.raises(signing.Error, match="unknown key"):
        signing.check_release(target, [other], "Generic-Test")


def _other_key(d: Path) -> Path:
    path = d / "other.key"
    if not path.exists():
        keys.new_key(path)
    return path


def test_device_canonical_text_is_the_hosts(key_file: Path) -> None:
    import json

    import edsign

    text = _manifest(b"x" * 10, "1.0.0")
    assert edsign.canonical(json.loads(text)) == text


def test_manifest_must_describe_the_upload(http: httpx.Client, tw: Twomes, key_file: Path) -> None:
    key = keys.load_key(key_file)
    data = os.urandom(1000)
    version = _version()
    for text, word in (
        (_manifest(data, version, size=999), "size"),
        (_manifest(data, version, sha256="00" * 32), "sha256"),
        (_manifest(data, version + "1"), "version"),
        (_manifest(data, version, kind="image"), "kind"),
        (_manifest(data, version, device_type="Other"), "device_type"),
        ('{"size": 1}', "exactly"),
        ("not json", "not JSON"),
    ):
        r = _signed_post(http, tw, data, version, text, keys.sign_text(key, text))
        assert r.status_code == 422, (word, r.text)
        assert word in r.text, (word, r.text)
    text = _manifest(data, version)
    r = _signed_post(http, tw, data, version, text, None)
    assert r.status_code == 422 and "go together" in r.text
    r = _signed_post(http, tw, data, version, None, keys.sign_text(key, text))
    assert r.status_code == 422 and "go together" in r.text
    r = _signed_post(http, tw, data, version, text, "ab" * 63)
    assert r.status_code == 422 and "signature" in r.text
    r = _signed_post(http, tw, data, version, "x" * 513, keys.sign_text(key, text))
    assert r.status_code == 422 and "manifest" in r.text
    # nothing was stored by the refusals: the version is still free
    r = _signed_post(http, tw, data, version, text, keys.sign_text(key, text))
    assert r.status_code == 201, r.text


def test_database_without_signing_columns_gets_them(tmp_path: Path) -> None:
    db = tmp_path / "twomes.sqlite3"
    with ReferenceServer(tmp_path) as srv:
        rel = srv.client.publish(_file(tmp_path, b"old"), "1.0.0", "bundle")
        version = sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0]
    # a database made before signed releases: no manifest/signature columns
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE release DROP COLUMN manifest")
    conn.execute("ALTER TABLE release DROP COLUMN signature")
    conn.commit()
    conn.close()
    with ReferenceServer(tmp_path) as srv:
        listed = srv.client.releases()
        assert [(r["id"], r["manifest"], r["signature"]) for r in listed] == [(rel["id"], None, None)]
    conn = sqlite3.connect(db)
    assert {"manifest", "signature"} <= {row[1] for row in conn.execute("PRAGMA table_info(release)")}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version  # no schema number of its own


def _file(d: Path, data: bytes) -> Path:
    p = d / f"f-{secrets.token_hex(3)}.bin"
    p.write_bytes(data)
    return p


def _twomes(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twtools.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_keys_new_and_server_publish_signed(tmp_path: Path, server: ReferenceServer) -> None:
    key = tmp_path / "k" / "release.key"
    r = _twomes("keys", "new", "--out", str(key))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = (tmp_path / "k" / "release.key.pub").read_text().strip()
    assert len(pub) == 64 and pub in r.stdout and '"release_keys"' in r.stdout
    assert "PRIVATE KEY" in key.read_text() and pub not in key.read_text()
    again = _twomes("keys", "new", "--out", str(key))
    assert again.returncode == 2 and "exists" in again.stderr
    shown = _twomes("keys", "show", str(key))
    assert shown.stdout.strip() == pub

    fw = _file(tmp_path, os.urandom(2000))
    version = _version()
    admin = ["--url", server.url, "--admin-token", server.admin_token]
    r = _twomes(
        "server", "publish", str(fw), "--version", version, "--kind", "bundle", "--key", str(key), *admin
    )
    assert r.returncode == 1 and "--counter" in r.stderr
    r = _twomes(
        "server",
        "publish",
        str(fw),
        "--version",
        version,
        "--kind",
        "bundle",
        "--key",
        str(key),
        "--counter",
        "3",
        *admin,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "signed" in r.stdout
    rel = next(x for x in server.client.releases() if x["version"] == version)
    assert rel["manifest"] is not None and rel["signature"] is not None
    assert keys.verify_text(bytes.fromhex(pub), rel["manifest"], rel["signature"])
    assert '"counter":3' in rel["manifest"]


def test_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    key = tmp_path / "enc.key"
    env = {**os.environ, "MY_PASS": "correct horse"}
    r = _twomes("keys", "new", "--out", str(key), "--passphrase-env", "MY_PASS", env=env)
    assert r.returncode == 0, r.stderr
    assert "ENCRYPTED" in key.read_text()
    env_no = {k: v for k, v in os.environ.items() if k not in ("MY_PASS", keys.PASSPHRASE_ENV)}
    r = _twomes("keys", "show", str(key), env=env_no)
    assert r.returncode == 2 and "encrypted" in r.stderr
    r = _twomes("keys", "show", str(key), "--passphrase-env", "MY_PASS", env=env)
    assert r.returncode == 0 and len(r.stdout.strip()) == 64
    r = _twomes("keys", "show", str(key), "--passphrase-env", "MY_PASS", env={**env, "MY_PASS": "wrong"})
    assert r.returncode == 2 and "passphrase is wrong" in r.stderr


def test_server_publish_with_a_manifest_signed_elsewhere(
    tmp_path: Path, server: ReferenceServer, key_file: Path
) -> None:
    data = os.urandom(1500)
    fw = _file(tmp_path, data)
    version = _version()
    text = _manifest(data, version, counter=9)
    (tmp_path / "m.json").write_text(text + "\n")
    (tmp_path / "m.sig").write_text(keys.sign_text(keys.load_key(key_file), text) + "\n")
    admin = ["--url", server.url, "--admin-token", server.admin_token]
    base = ["server", "publish", str(fw), "--version", version, "--kind", "bundle", *admin]
    r = _twomes(*base, "--manifest", str(tmp_path / "m.json"))
    assert r.returncode == 1 and "go together" in r.stderr
    r = _twomes(*base, "--manifest", str(tmp_path / "m.json"), "--signature", str(tmp_path / "m.sig"))
    assert r.returncode == 0, r.stderr + r.stdout
    rel = next(x for x in server.client.releases() if x["version"] == version)
    assert rel["manifest"] == text  # the exact text, the trailing newline of the file dropped
    assert keys.verify_text(bytes.fromhex(keys.public_hex(keys.load_key(key_file))), text, rel["signature"])
