"""The virtual board's flash across its two processes: the device's partition proxy (vpart.py) posts
writes and erases without waiting for the hardware process (vhwd.py, vflash.py) and reads the flash file
itself. Each posted call must still be one durable write of its own for the power-cut harness (vcut):
a cut inside a run of posted writes leaves the writes before it done, the one it hits torn, and none
after it - exactly what the same cut did when every write waited for its answer."""

from __future__ import annotations

import time
from pathlib import Path

from twtools.vboard.runner import VirtualBoard

BLOCK = 4096
PART = 0x180000
# main.py: block 1 programmed to zeros (and read back: the hardware has done it); then, without a wait
# in between, block 0 erased and written in four 1 KB pieces (fills 1..4), block 1 erased and written
# in four pieces (fills 5..8); then read back.
MAIN = """import esp32
p = esp32.Partition("ota_0")
p.ioctl(6, 1)
p.writeblocks(1, bytes(4096), 0)
b = bytearray(16)
p.readblocks(1, b, 4080)
print("before", bytes(b).hex())
for blk in (0, 1):
    p.ioctl(6, blk)
    for i in range(4):
        p.writeblocks(blk, bytes([blk * 4 + i + 1]) * 1024, i * 1024)
b = bytearray(16)
for blk in (0, 1):
    for i in range(4):
        k = blk * 8 + i * 2
        p.readblocks(blk, memoryview(b)[k : k + 2], i * 1024 + 1022)
print("after", bytes(b).hex())
try:
    p.writeblocks(0, bytes(8), 4 * 1024 * 1024)
except OSError as e:
    print("range", e.args[0])
p.writeblocks(0, bytes(4), 0)
b = bytearray(8)
p.readblocks(0, b, 0)
print("still", bytes(b).hex())
print("blocks", p.ioctl(4, 0), p.ioctl(5, 0))
"""


def _board(path: Path, env: dict[str, str] | None = None) -> VirtualBoard:
    b = VirtualBoard(path, code="mpy")
    b.fs.mkdir(parents=True, exist_ok=True)
    (b.fs / "main.py").write_text(MAIN)
    if env:
        b.env = env
    return b


def _run(path: Path, env: dict[str, str] | None = None, cut: bool = False) -> VirtualBoard:
    b = _board(path, env)
    try:
        b.start()
        b.wait_for(r"\[vboard: power cut at" if cut else r"^blocks ", 30)
        deadline = time.monotonic() + 10
        while cut and b.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not (cut and b.running), "the device outlived the power cut"
    finally:
        b.stop()
    return b


def _flash(path: Path) -> bytes:
    return (path / "flash_ota_0.bin").read_bytes()


def test_posted_writes_land_in_order_and_reads_see_them(tmp_path: Path) -> None:
    b = _run(tmp_path / "b")
    out = "\n".join(b.lines)
    assert "before " + "00" * 16 in out
    assert "after " + "".join(f"{i:02x}{i:02x}" for i in range(1, 9)) in out
    assert "range 22" in out  # checked at once by the device's proxy, as the hardware would
    assert "still 0000000001010101" in out  # NOR: written over 0x01, zeros win; the next calls go on
    assert f"blocks {PART // BLOCK} {BLOCK}" in out
    data = _flash(tmp_path / "b")
    assert len(data) == PART
    assert data[:4] == bytes(4) and data[4:1024] == b"\x01" * 1020
    for i in range(8):
        assert data[i * 1024 : (i + 1) * 1024].strip(bytes([i + 1])) in (b"", bytes(4))
    assert data[2 * BLOCK :] == b"\xff" * (PART - 2 * BLOCK)


def _plan(tmp_path: Path) -> list[tuple[int, int, str]]:
    """The durable writes of the script (a calibration run, as the power-cut harness makes one)."""
    state = tmp_path / "calibration"
    _run(state, {"VBOARD_TRACE": "1"})
    plan = []
    for line in (state / "cut.trace").read_text().splitlines():
        boot, n, what = line.split(" ", 2)
        plan.append((int(boot), int(n), what))
    return plan


def test_every_posted_call_is_a_cut_point_of_its_own(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    flash = [what for _, _, what in plan if what.startswith("flash ")]
    assert flash == [
        "flash ota_0 erase 0x1000",
        "flash ota_0 write 0x1000+4096",
        "flash ota_0 erase 0x0",
        "flash ota_0 write 0x0+1024",
        "flash ota_0 write 0x400+1024",
        "flash ota_0 write 0x800+1024",
        "flash ota_0 write 0xc00+1024",
        "flash ota_0 erase 0x1000",
        "flash ota_0 write 0x1000+1024",
        "flash ota_0 write 0x1400+1024",
        "flash ota_0 write 0x1800+1024",
        "flash ota_0 write 0x1c00+1024",
        "flash ota_0 write 0x0+4",
    ]


def _cut_at(tmp_path: Path, plan: list[tuple[int, int, str]], what: str, nth: int = 1) -> bytes:
    boot, n, _ = [c for c in plan if c[2] == what][nth - 1]
    state = tmp_path / f"cut-{n}"
    b = _run(state, {"VBOARD_CUT": f"{boot}:{n}"}, cut=True)
    out = "\n".join(b.lines)
    assert f"power cut at durable write {n} of boot {boot} ({what})" in out
    assert "after " not in out  # the read-back waits for the hardware: the device died first
    assert b.exit_codes and b.exit_codes[-1] != 0
    return _flash(state)


def test_a_cut_inside_posted_writes_leaves_those_before_it_and_tears_its_own(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    # the third 1 KB write of block 0: the first two are there, the third half, the fourth not at all;
    # block 1 as it was before the run of posted calls (zeros)
    data = _cut_at(tmp_path, plan, "flash ota_0 write 0x800+1024")
    assert data[:1024] == b"\x01" * 1024 and data[1024:2048] == b"\x02" * 1024
    assert data[2048:2560] == b"\x03" * 512 and data[2560:3072] == b"\xff" * 512
    assert data[3072:4096] == b"\xff" * 1024
    assert data[BLOCK : 2 * BLOCK] == bytes(BLOCK)
    # the erase of block 1 in the run: block 0 complete, block 1 half erased (first half), no write of it
    data = _cut_at(tmp_path, plan, "flash ota_0 erase 0x1000", nth=2)
    assert data[:BLOCK] == b"".join(bytes([i]) * 1024 for i in range(1, 5))
    assert data[BLOCK : BLOCK + 2048] == b"\xff" * 2048 and data[BLOCK + 2048 : 2 * BLOCK] == bytes(2048)


FAILING = """import esp32
p = esp32.Partition("ota_1")
p.writeblocks(0, b"abcd", 0)  # posted: its failure comes later
p.ioctl(6, 1)  # posted after a failed one: skipped
try:
    p.info()
    print("no error")
except OSError as e:
    print("raised later", type(e).__name__)
print("then", p.info()[4])
"""


def test_a_posted_call_that_fails_is_raised_by_the_next_call_that_waits(tmp_path: Path) -> None:
    """The flash file cannot be opened (a directory stands in its place): the posted write fails in
    the hardware process; the device's next waiting call raises that error instead of its own answer,
    and the call after it is answered as usual."""
    b = _board(tmp_path / "b")
    (b.fs / "main.py").write_text(FAILING)
    (tmp_path / "b" / "flash_ota_1.bin").mkdir()
    try:
        b.start()
        b.wait_for(r"^then ", 30)
    finally:
        b.stop()
    out = "\n".join(b.lines)
    assert "raised later OSError" in out and "then ota_1" in out
