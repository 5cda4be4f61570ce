"""The host side of ROMFS bundles: `build_romfs` writes what MicroPython's own writer writes, what the
device's installer accepts, and what the port's VfsRom mounts and runs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import romfsutil
from mpremote.romfs import VfsRomWriter

from twtools.build import ROMFS_MAGIC, build_romfs
from twtools.vboard.runner import micropython_bin


def test_test_images_are_what_mpremote_writes() -> None:
    w = VfsRomWriter()
    w.mkfile("version", b"2.0.0")
    w.mkfile("hello.py", b"def f():\n    return 42\n")
    w.opendir("pkg")
    w.mkfile("__init__.py", b"")
    w.mkfile("mod.py", b"X = 'in flash'\n")
    w.closedir()
    assert w.finalise() == romfsutil.app("2.0.0")


def test_build_romfs_is_checked_by_the_device_and_runs_on_the_port(tmp_path: Path) -> None:
    from twomes.update import romfs

    dest = tmp_path / "app.romfs"
    size, sha = build_romfs(dest, "7.7.7")
    data = dest.read_bytes()
    assert data.startswith(ROMFS_MAGIC) and size == len(data) and sha == hashlib.sha256(data).hexdigest()
    romfs.check_head(data[:1024], size, "7.7.7")  # raises if the device would refuse it
    script = tmp_path / "run.py"
    script.write_text(
        "import vfs, sys\n"
        f"f = open({str(dest)!r}, 'rb'); img = f.read(); f.close()\n"
        "vfs.mount(vfs.VfsRom(img), '/rom'); sys.path[:] = ['/rom', '.frozen']\n"
        "import os; print(sorted(os.listdir('/rom')))\n"
        "import twomes; print(twomes.VERSION)\n"
        "print('otaboot' in ''.join(os.listdir('/rom')))\n"
    )
    out = subprocess.run([micropython_bin(), str(script)], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert "twomes" in lines[0] and "version" in lines[0]
    assert lines[1] == "7.7.7"
    assert lines[2] == "False"  # boot-time modules stay on the filesystem


def test_release_romfs_publishes_a_rom_image_as_a_bundle(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from twtools.cli import main
    from twtools.server.testing import ReferenceServer

    out = tmp_path / "r.romfs"
    with ReferenceServer(tmp_path / "srv", access_log=False) as server:
        admin = ["--server", server.url, "--admin-token", server.admin_token]
        assert main(["release", "--version", "1.3.0", "--romfs", "--out", str(out), *admin, "--target"]) == 0
        data = out.read_bytes()
        rel = [r for r in server.client.releases() if r["version"] == "1.3.0"][0]
        target = {t["name"]: t for t in server.client.device_types()}["Generic-Test"]["target"]
    assert "ROMFS image" in capsys.readouterr().out
    assert data.startswith(ROMFS_MAGIC) and b"version\x02\x051.3.0" in data[:32]
    assert rel["kind"] == "bundle" and rel["sha256"] == hashlib.sha256(data).hexdigest()
    assert target["id"] == rel["id"]


def test_release_romfs_and_image_together_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from twtools.cli import main

    assert main(["release", "--version", "1.3.0", "--romfs", "--image", str(tmp_path / "x.bin")]) == 2
    assert "give one of them" in capsys.readouterr().err
