"""The virtual board's two processes: the simulated hardware (vhwd.py) out of the device's heap, reached
through the tiny proxies that vboot installs as machine, network and esp32 (vproxy.py)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from twtools.vboard.runner import REBOOT_EXIT, VirtualBoard

HOME = {"ssid": "home", "password": "correct horse", "rssi": -50}

# main.py of a board that checks the hardware calls the app makes, as the app makes them
MAIN = """import gc
import os
import sys

gc.collect()
print("heap", gc.mem_alloc())
print("modules", sorted(sys.modules))
try:
    os.stat("/.fw")
    print("firmware ROM mounted")
except OSError:
    print("firmware ROM not mounted")
import probe
"""
PROBE = r"""
import errno
import gc
import sys

import esp32
import machine
import network
from esp32 import NVS, Partition

try:
    open("done").close()
    print("second boot")
    sys.exit(0)
except OSError:
    pass
n = NVS("probe")
buf = bytearray(8)
try:
    n.get_blob("k", buf)
except OSError as e:
    print("missing", e.errno == errno.ENOENT, e.args[0] == errno.ENOENT)
n.set_blob("k", b"\x00\xffab")
print("blob", n.get_blob("k", buf), bytes(buf[:4]) == b"\x00\xffab")
n.commit()
try:
    n.set_i32("i", 2**40)
except OverflowError:
    print("overflow")
try:
    network.WLAN(network.STA_IF).config("nope")
except ValueError as e:
    print("valueerror", e.args)
print("default", getattr(network, "NO_SUCH_CONSTANT", 7))
run = Partition(Partition.RUNNING)
print("running", run.info()[4], type(run.info()) is tuple)
nxt = run.get_next_update()
nxt.ioctl(6, 0)
nxt.writeblocks(0, b"\x12\x34\x56\x78" * 4, 0)
mv = memoryview(bytearray(12))
nxt.readblocks(0, mv[4:12], 4)
print("read", bytes(mv).hex())
print("find", [p.info()[4] for p in Partition.find(Partition.TYPE_APP)])
sta = network.WLAN(network.STA_IF)
sta.active(True)
print("mac", sta.config("mac").hex(), type(sta.scan()) is list)
print("essid", network.WLAN(network.AP_IF).config("essid") == "")
led = machine.Pin(2, machine.Pin.OUT)
button = machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP)
import time

t = time.ticks_us()
for i in range(200):
    button.value()
print("poll_us", time.ticks_diff(time.ticks_us(), t) // 200)
led.value(0)
gc.collect()
m = gc.mem_alloc()
for i in range(100):
    led.value(i & 1)
    button.value()
gc.collect()
print("kept", gc.mem_alloc() - m)  # methods are asked for once: nothing stays behind per call
print("led", led.value())
open("done", "w").close()
machine.reset()
"""


def _board(tmp_path: Path, main: str, probe: str = "") -> VirtualBoard:
    b = VirtualBoard(tmp_path / "b", air=[HOME], config={"server_url": "http://127.0.0.1:9"})
    b.install_app()
    (b.fs / "boot.py").write_text("")
    (b.fs / "main.py").write_text(main)
    (b.fs / "probe.py").write_text(probe)
    return b


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (its parent has not waited yet)
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_hardware_calls_cross_over_with_values_buffers_and_exceptions(tmp_path: Path) -> None:
    with _board(tmp_path, MAIN, PROBE) as b:
        b.start()
        b.wait_for(r"second boot", 30)
        out = "\n".join(b.lines)
        assert b.exit_codes[0] == REBOOT_EXIT  # machine.reset() over the proxy
        heap = int(re.search(r"^heap (\d+)", out, re.M).group(1))
        # the simulation is not in the device's heap (was ~18 KB): the port's own ~1 KB, the proxies'
        # objects and the vfs stand-in of the ROMFS mapping, their code in the firmware ROM outside the
        # heap (vmap.py): 5.0 KB measured (6.8 KB when their code was loaded into the heap)
        assert heap < 5600, out
        # no simulation module in the device; vfs: the ROMFS build's vfs (with rom_ioctl, vvfs.py); the
        # firmware ROM is mounted only while the start-up imports from it
        assert "modules ['esp32', 'machine', 'network', 'vfs']" in out
        assert "firmware ROM not mounted" in out
        assert "missing True True" in out
        assert "blob 4 True" in out
        assert "overflow" in out
        assert "valueerror ('unknown config param',)" in out
        assert "default 7" in out
        assert "running factory True" in out
        assert "read 000000001234567812345678" in out  # filled in place, through a memoryview slice
        assert "find ['factory', 'ota_0', 'ota_1']" in out
        assert "mac 246f28d3ad48 True" in out
        assert "essid True" in out
        assert "led 1" in out
        assert "kept 0" in out
        poll = int(re.search(r"^poll_us (\d+)", out, re.M).group(1))
        assert poll < 1000, out  # a few tens of microseconds; generous for a loaded machine
        assert b.nvs()["probe"]["k"] == ["blob", "00ff6162"]
        assert b.led() == (1, 99)


def test_no_process_outlives_its_board(tmp_path: Path) -> None:
    main = "import time\nimport machine\nprint('up')\nwhile True:\n    time.sleep(1)\n"
    with _board(tmp_path, main) as b:
        b.start()
        b.wait_for(r"^up$", 20)
        hw, dev = b._hw_proc, b._proc
        assert hw is not None and dev is not None
        b.power_cut()
        assert not _alive(hw.pid) and not _alive(dev.pid)
        mark = b.mark()
        b.power_on()
        b.wait_for(r"^up$", 20, start=mark)
        hw, dev = b._hw_proc, b._proc
        assert hw is not None and dev is not None
        os.kill(dev.pid, signal.SIGKILL)  # the firmware dies alone: its hardware process follows
        deadline = time.monotonic() + 5
        while _alive(hw.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(hw.pid)
        b.wait_for(r"firmware stopped, exit code -9", 5)
        mark = b.mark()
        b.power_on()
        b.wait_for(r"^up$", 20, start=mark)
        hw, dev = b._hw_proc, b._proc
        assert hw is not None and dev is not None
    assert not _alive(hw.pid) and not _alive(dev.pid)  # stop()


def test_hardware_process_dying_takes_the_device(tmp_path: Path) -> None:
    """A power cut inside the hardware (vcut) kills the hardware process; the device, waiting for its
    hardware call, must die at once too instead of carrying on."""
    main = (
        "import time\nimport esp32\nprint('up')\nn = esp32.NVS('x')\n"
        "while True:\n    n.set_i32('k', 1)\n    n.commit()\n    time.sleep_ms(1)\n"
    )
    with _board(tmp_path, main) as b:
        b.start()
        b.wait_for(r"^up$", 20)
        hw, dev = b._hw_proc, b._proc
        assert hw is not None and dev is not None
        os.kill(hw.pid, signal.SIGKILL)
        b.wait_for(r"firmware stopped, exit code -9", 5)
        assert not _alive(dev.pid)


CROWDED = [{"ssid": f"{i:02d}" * 16, "password": f"whatever{i}", "rssi": -40 - i} for i in range(30)]
# main.py of a board whose heap runs out while hardware answers come in (a scan of 30 networks with
# 32-byte names), bit by bit, until a scan goes through: every later call must still read its own answer
OUT_OF_HEAP = """import gc
import network


def run(sta):
    hog = []
    errors = 0
    n = 0
    try:
        while True:
            hog.append(bytearray(64))
    except MemoryError:
        pass
    for i in range(8):  # room for small things (the request), not for the answer
        hog.pop()
    while hog:
        try:
            n = len(sta.scan())
            break
        except MemoryError:
            errors += 1
            for i in range(4):
                hog.pop()
    hog = None
    gc.collect()
    return errors, n


sta = network.WLAN(network.STA_IF)
sta.active(True)
print("scan", len(sta.scan()))
errors, n = run(sta)
print("errors", errors, n)
print("then", len(sta.scan()), sta.config("mac").hex(), sta.isconnected())
"""


def test_the_proxy_stays_in_step_when_the_heap_runs_out_mid_answer(tmp_path: Path) -> None:
    b = VirtualBoard(tmp_path / "b", air=CROWDED, config={"server_url": "http://127.0.0.1:9"}, heap="32K")
    b.install_app()
    (b.fs / "boot.py").write_text("")
    (b.fs / "main.py").write_text(OUT_OF_HEAP)
    with b:
        b.start()
        b.wait_for(r"^then ", 30)
        out = "\n".join(b.lines)
        assert "scan 30" in out, out
        errors = int(re.search(r"^errors (\d+)", out, re.M).group(1))
        assert errors >= 1, out  # answers were cut by a MemoryError while being read
        assert "then 30 246f28d3ad48 False" in out, out  # and the calls after them read their own
