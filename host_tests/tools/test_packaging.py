"""MicroPython packaging: the mip package.json (checked against the device sources, and installed with
the real `mpremote mip install` on the unix port) and device/manifest.py (run with the manifest API's
path rules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serialboard import serial_board

from twtools import DEVICE_DIR, REPO, packaging
from twtools.build import device_sources, read_version


def test_package_json_lists_every_device_source_file():
    data = json.loads((REPO / "package.json").read_text())
    sources = {p.relative_to(REPO).as_posix() for p in device_sources()} | {"boot.py", "main.py"}
    listed = {src for _, src in data["urls"]}
    assert listed == sources, "run: python -m twtools.packaging"
    for dest, src in data["urls"]:
        assert (REPO / src).is_file()
        if src.startswith("device/"):
            assert dest == src.removeprefix("device/")  # on the board: lib/<path>
    assert data["version"] == read_version()
    assert (REPO / "package.json").read_text() == packaging.render(), "run: python -m twtools.packaging"


def test_mip_install_with_real_mpremote(tmp_path):
    with serial_board(tmp_path) as board:
        r = subprocess.run(
            [
                str(Path(sys.executable).parent / "mpremote"),
                "connect",
                board.pty_path,
                "mip",
                "install",
                "--target",
                "lib",
                str(REPO / "package.json"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    fs = board.fs
    for src in device_sources():
        rel = src.relative_to(DEVICE_DIR)
        assert (fs / "lib" / rel).read_bytes() == src.read_bytes()
    for name in ("boot.py", "main.py"):
        assert (fs / name).read_bytes() == (REPO / name).read_bytes()


class _ManifestAPI:
    """The path rules of MicroPython's tools/manifestfile.py: paths relative to the manifest's directory;
    package(p) freezes every .py under base_path/p as p/...; module(m) freezes base_path/m as m."""

    def __init__(self, **kwargs):
        self.frozen: dict[str, Path] = {}
        self.includes: list[str] = []
        self.meta: dict = {}
        self.kwargs = kwargs

    def run(self, manifest: Path) -> None:
        api = self

        class Options:
            def __init__(self, **kw):
                self.__dict__.update(kw)

            def defaults(self, **kw):
                for k, v in kw.items():
                    self.__dict__.setdefault(k, v)

        g = {
            "options": Options(**self.kwargs),
            "include": api.includes.append,
            "metadata": lambda **kw: api.meta.update(kw),
            "package": self.package,
            "module": self.module,
        }
        cwd = os.getcwd()
        os.chdir(manifest.parent)
        try:
            exec(compile(manifest.read_text(), str(manifest), "exec"), g)
        finally:
            os.chdir(cwd)

    def package(self, path, files=None, base_path="."):
        base = Path(base_path).resolve()
        for f in sorted((base / path).rglob("*.py")):
            self.frozen[f.relative_to(base).as_posix()] = f

    def module(self, path, base_path="."):
        f = Path(base_path).resolve() / path
        assert f.is_file(), f
        self.frozen[path] = f


@pytest.mark.parametrize("boot_main", [True, False])
def test_manifest_freezes_the_app(boot_main):
    api = _ManifestAPI(**({} if boot_main else {"boot_main": False}))
    api.run(DEVICE_DIR / "manifest.py")
    expected = {p.relative_to(DEVICE_DIR).as_posix(): p.resolve() for p in device_sources()}
    if boot_main:
        expected |= {"boot.py": (REPO / "boot.py").resolve(), "main.py": (REPO / "main.py").resolve()}
    assert api.frozen == expected
    assert api.includes == ["$(PORT_DIR)/boards/manifest.py"]
    assert api.meta["version"] == read_version()
