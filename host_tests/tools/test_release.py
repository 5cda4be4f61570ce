"""`twomes release`: bundle built with build.build_bundle, images checked with esp32image, published on a
real reference server and made the device type's target."""

from __future__ import annotations

import hashlib

import pytest

from twtools import esp32image as e
from twtools.build import BUNDLE_MAGIC
from twtools.cli import main
from twtools.server.testing import ReferenceServer


@pytest.fixture(scope="module")
def server():
    with ReferenceServer() as s:
        yield s


def _admin(server):
    return ["--server", server.url, "--admin-token", server.admin_token]


def test_bundle_built_published_and_targeted(tmp_path, server, capsys):
    out = tmp_path / "b.bundle"
    argv = ["release", "--version", "1.2.0", "--mpy", "--out", str(out), *_admin(server), "--target"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    data = out.read_bytes()
    assert data.startswith(BUNDLE_MAGIC)
    # build.build_bundle's format; what matters here: the version is stamped, the app is inside
    assert b"1.2.0" in data[: len(BUNDLE_MAGIC) + 40]
    assert b"twomes/__init__.mpy" in data
    rel = [r for r in server.client.releases() if r["version"] == "1.2.0"][0]
    assert rel["kind"] == "bundle" and rel["sha256"] == hashlib.sha256(data).hexdigest()
    types = {t["name"]: t for t in server.client.device_types()}
    assert types["Generic-Test"]["target"]["id"] == rel["id"]
    assert f"release {rel['id']} is now the target of Generic-Test" in text

    # the same version again: refused in plain words
    assert main(["release", "--version", "1.2.0", "--out", str(out), *_admin(server)]) == 1
    assert "release a new version" in capsys.readouterr().err


def test_bundle_without_server(tmp_path, capsys):
    out = tmp_path / "x.bundle"
    assert main(["release", "--version", "9.9.9", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not published" in text and "(ROMFS image)" in text
    assert out.read_bytes()[:3] == b"\xd2\xcd\x31"  # the default form: a ROMFS image, as the app ships
    assert main(["release", "--version", "9.9.9", "--mpy", "--romfs", "--out", str(out)]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["release", "--version", "9.9.9", "--out", str(out), "--target"]) == 2
    assert "--target needs --server" in capsys.readouterr().err


def test_images_checked_and_published(tmp_path, server, capsys):
    app = e.build_app_image("v1.29.0-twomes.3")
    img = tmp_path / "micropython.bin"
    img.write_bytes(app)
    assert main(["release", "--version", "v1.29.0-twomes.3", "--image", str(img), *_admin(server)]) == 0
    rel = [r for r in server.client.releases() if r["kind"] == "image"][0]
    assert rel["size"] == len(app) and rel["sha256"] == hashlib.sha256(app).hexdigest()
    capsys.readouterr()

    # a merged firmware.bin: its app part is what gets published
    merged = tmp_path / "firmware.bin"
    app2 = e.build_app_image("v1.29.0-twomes.4")
    merged.write_bytes(e.build_merged_firmware(app2))
    cut = tmp_path / "cut.bin"
    rc = main(
        [
            "release",
            "--version",
            "v1.29.0-twomes.4",
            "--image",
            str(merged),
            "--out",
            str(cut),
            *_admin(server),
        ]
    )
    assert rc == 0
    assert "merged flash image; OTA installs only its app part" in capsys.readouterr().out
    assert cut.read_bytes() == app2
    rel = [r for r in server.client.releases() if r["version"] == "v1.29.0-twomes.4"][0]
    assert rel["sha256"] == hashlib.sha256(app2).hexdigest()

    # versions that disagree: refused (the device would refuse the image), nothing published
    before = len(server.client.releases())
    assert main(["release", "--version", "2.0.0", "--image", str(img), *_admin(server)]) == 2
    assert "the image says version 'v1.29.0-twomes.3' but the release is '2.0.0'" in capsys.readouterr().err
    assert len(server.client.releases()) == before

    # not an image: refused, nothing published
    bad = tmp_path / "notes.txt"
    bad.write_text("release notes\n" * 10)
    before = len(server.client.releases())
    assert main(["release", "--version", "3.0.0", "--image", str(bad), *_admin(server)]) == 2
    assert "is not an ESP32 app image: not an ESP32 image" in capsys.readouterr().err
    assert len(server.client.releases()) == before

    img5 = tmp_path / "v5.bin"
    img5.write_bytes(e.build_app_image("v1.29.0-twomes.5"))
    assert (
        main(
            ["release", "--version", "v1.29.0-twomes.5", "--image", str(img5), "--device-type", "Nope"]
            + _admin(server)
        )
        == 1
    )
    assert 'Unknown device type "Nope"' in capsys.readouterr().err


def test_signed_bundle_release(tmp_path, server, capsys):
    from twtools import keys

    key = tmp_path / "release.key"
    pub = keys.new_key(key)
    out = tmp_path / "s.bundle"
    args = ["release", "--version", "4.0.0", "--out", str(out), *_admin(server)]
    assert main([*args, "--key", str(key)]) == 2
    assert "--counter" in capsys.readouterr().err
    assert main([*args, "--counter", "2"]) == 2
    assert "--counter needs --key" in capsys.readouterr().err
    assert main([*args, "--key", str(key), "--counter", "2"]) == 0
    assert "signed manifest" in capsys.readouterr().out
    rel = [r for r in server.client.releases() if r["version"] == "4.0.0"][0]
    data = out.read_bytes()
    assert rel["manifest"] == keys.manifest_text(
        "Generic-Test", "bundle", "4.0.0", 2, len(data), hashlib.sha256(data).hexdigest()
    )
    assert keys.verify_text(bytes.fromhex(pub), rel["manifest"], rel["signature"])
    # the device's own check agrees (device/twomes/update/signing.py on CPython)
    from twomes.update import signing

    assert signing.check_release(rel, [pub], "Generic-Test")["counter"] == 2
