"""The virtual board's two ways of holding the app: "romfs", as it ships (a ROMFS image in the "romfs"
partition, mounted at /rom, run in place from memory outside the MicroPython heap), and "mpy" (.mpy
files in /lib, loaded into the heap). The ROMFS side is what MicroPython's ESP32 port offers a ROMFS
build: vfs.rom_ioctl, the partition as a buffer, /rom and /rom/lib on sys.path."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import romfsutil  # host_tests/device: ROMFS images on both runtimes

from twtools.build import BOOT_MODULES, ROMFS_MAGIC
from twtools.heapbench import QSTR_MAIN, qstr_pools
from twtools.vboard.runner import MPY_HEAP, VirtualBoard

CFG = {"server_url": "http://127.0.0.1:9"}


def _portal_free(b: VirtualBoard) -> int:
    b.wait_for(r"state: portal", 20)
    m = re.search(r"\(free heap (\d+)\)", b.lines[b.last_index])
    assert m
    return int(m.group(1))


def test_shipping_mode_runs_the_app_from_rom_and_not_from_the_heap(tmp_path: Path) -> None:
    # the default: as it ships; both in the heap the .mpy mode needs (the comparison: the same heap)
    rom = VirtualBoard(tmp_path / "rom", config=CFG, heap=MPY_HEAP)
    mpy = VirtualBoard(tmp_path / "mpy", config=CFG, code="mpy", heap=MPY_HEAP, mac="24:6F:28:00:00:02")
    assert rom.code == "romfs"
    rom.install_app()
    mpy.install_app()
    image = (rom.state / "flash_romfs.bin").read_bytes()
    assert image.startswith(ROMFS_MAGIC) and len(image) == rom.romfs_partition()[1]
    lib = sorted(p.relative_to(rom.fs / "lib").as_posix() for p in (rom.fs / "lib").rglob("*.mpy"))
    assert lib == sorted(n.replace(".py", ".mpy") for n in BOOT_MODULES)  # only the boot-time code
    assert (mpy.fs / "lib" / "twomes" / "app.mpy").exists() and not (mpy.state / "flash_romfs.bin").exists()
    with rom, mpy:
        rom.start()
        mpy.start()
        free_rom, free_mpy = _portal_free(rom), _portal_free(mpy)
    # the same app in the same heap: its bytecode, constants and their strings are in flash
    assert free_rom - free_mpy > 8000, (free_rom, free_mpy)


MAIN = """
import gc, os, sys, vfs, esp32, machine
seg = vfs.rom_ioctl(2, 0)
half = len(seg) // 2
try:
    os.stat("stage")
    second = True
except OSError:
    second = False
if not second:
    print("@@ segments", vfs.rom_ioctl(1), "path", sys.path)
    # a program the device starts gets a sane environment (a power cut is `kill -9 $PPID` by os.system)
    print("@@ system", os.system("exit 3") >> 8)
    print("@@ rom", sorted(os.listdir("/rom")), open("/rom/version").read())
    # an update: the image goes into slot B through esp32.Partition, as on the chip
    p = esp32.Partition("romfs")
    first = p.ioctl(4, 0) // 2
    with open("b.img", "rb") as f:
        data = f.read()
    for i in range(0, len(data), 4096):
        p.ioctl(6, first + i // 4096)
    p.writeblocks(first, data + b"\\xff" * (-len(data) % 4))
    open("stage", "w").close()
    machine.reset()
# the boot after it mounts slot B where slot A was (what the boot does for the B slot)
gc.collect()
before = gc.mem_alloc()
vfs.umount("/rom")
vfs.mount(vfs.VfsRom(memoryview(seg)[half:]), "/rom")
import hello, pkg.mod
gc.collect()
print("@@ slot B", open("/rom/version").read(), hello.f(), pkg.mod.X, "heap", gc.mem_alloc() - before, len(seg))
"""


def test_slot_b_written_through_the_partition_mounts_like_on_the_chip(tmp_path: Path) -> None:
    b = VirtualBoard(tmp_path / "b", config=CFG)
    b.install_app(version="1.0.0")
    (b.fs / "main.py").write_text(MAIN)
    (b.fs / "b.img").write_bytes(romfsutil.app("2.0.0", extra=b"#" * 5000 + b"\n"))
    with b:
        b.start()
        seg = b.wait_for(r"^@@ segments (\d+) path (.*)$", 20)
        assert seg.group(1) == "1"
        assert seg.group(2) == "['', '.frozen', '/rom', '/rom/lib', 'lib']"  # the ESP32 port's order
        assert b.wait_for(r"^@@ system (\d+)$", 5).group(1) == "3"
        rom = b.wait_for(r"^@@ rom (.*)$", 5).group(1)
        assert "'twomes'" in rom and rom.endswith("1.0.0")
        m = b.wait_for(r"^@@ slot B (\S+) 42 in flash heap (\d+) (\d+)$", 20)
    assert m.group(1) == "2.0.0" and b.boots == 2
    # the 512 KB partition and the modules' code are not in the heap: what importing from slot B kept
    # is the modules' objects (functions, dicts), a few hundred bytes
    assert int(m.group(3)) == 0x80000 and int(m.group(2)) < 2000, m.group(0)


def test_setup_mode_stays_within_five_qstr_pools(tmp_path: Path) -> None:
    """Every name a module holds is interned for good when it is imported (ROMFS keeps the text in
    flash, the pool entry is heap). The dynamic pools double: 20, 40, ... 320 entries (620 names), and
    the 621st name allocates a pool of 640 entries at once, 7.4 KB on the 64-bit unix port. Setup mode
    (portal, API, DNS, a credential test; Improv not used) stays below it, with room for the names a
    request or Improv adds (docs/heap.md, "The qstr pool")."""
    home = {"ssid": "home", "password": "correct horse", "rssi": -50}
    b = VirtualBoard(tmp_path / "b", air=[home], config=CFG)
    b.install_app()
    (b.fs / "main.py").write_text(QSTR_MAIN)
    with b:
        b.start()
        b.wait_for(r"state: portal", 20)
        for path in ("/", "/api/networks", "/api/status", "/generate_204"):  # (a probe: redirected)
            assert urllib.request.urlopen(b.portal_url + path, timeout=10).status == 200
        body = json.dumps({"ssid": "home", "password": "correct horse"}).encode()
        req = urllib.request.Request(b.portal_url + "/api/wifi", body, {"Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=10).status == 202
        start = b.wait_for(r"state: joining - testing", 20)
        b.wait_for(r"^qstr pool", 10, start=b.last_index)
    names, pools, state, _ = qstr_pools(b.lines)[-1]
    assert state == "joining", state
    print(f"\nsetup mode, credential test: {names} names in {pools} qstr pools")
    assert pools == 5 and names <= 600, (pools, names, start.group(0))
