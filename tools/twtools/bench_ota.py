"""OTA install against a raw download of the same bytes, on a virtual board (MicroPython unix port).

One virtual board (its hardware process with the simulated flash and NVS, its device process with the
app's .mpy modules) runs a bench script as its main.py. A local HTTP server on 127.0.0.1 serves three
releases of (nearly) the same size: an app bundle (the device code plus a ballast module, the .mpy
files form), the same app as a ROMFS bundle, and a virtual-board ESP32 app image padded to the
bundle's size. Per run, in the same device process and in turn, the device's real code does:

* raw download into a file: the app's HTTP client (``Server.open_release``) streams the image's bytes
  through the app's 1 KB buffer into a file, nothing else;
* raw download into the OTA partition: the same, into the next OTA partition (each 4 KB block erased
  before its first write), nothing checked;
* bundle install: ``twomes.update.job.install`` with the .mpy form (``bundle.py``: files into an ``ota/``
  slot, read back, slot switch);
* ROMFS bundle install: the same entry point with the ROMFS form (``romfs.py``: into a half of the
  "romfs" partition, read back, magic written last);
* image install: ``twomes.update.image.install`` (into the next OTA partition, read back, ``set_boot``
  with the bootloader's image check).

Times are wall clock in the device process (``time.ticks_us``), from the request to the installer's
return. The installers compare per byte (their sizes differ by a few per cent at most: the ratio is of
time per byte).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twtools import DEVICE_DIR
from twtools.bench_http import BodyServer
from twtools.build import build_bundle, build_romfs, read_version
from twtools.vboard.images import build_sim_image_bytes
from twtools.vboard.runner import VirtualBoard

# a partition table with room for the sizes measured: "romfs" holds two slots of 2 MB
TABLE = [
    ["nvs", 1, 0x02, 0x9000, 0x6000],
    ["otadata", 1, 0x00, 0xF000, 0x2000],
    ["factory", 0, 0x00, 0x10000, 0x180000],
    ["ota_0", 0, 0x10, 0x190000, 0x200000],
    ["ota_1", 0, 0x11, 0x390000, 0x200000],
    ["romfs", 1, 0x8F, 0x590000, 0x400000],
]
HEAP = "256K"  # the app's modules as .mpy files in the heap, all three installers loaded

_SCRIPT = r"""
import asyncio, gc, json, os, time
from twomes import config, identity, store
from twomes.app import App
from twomes.hw import Board
from twomes.online.server import Server
from twomes.update import image, job, state

with open("bench.json") as f:
    A = json.loads(f.read())
cfg = config.defaults()
cfg.server_url = A["url"]
cfg.allow_http = True
cfg.http_timeout_s = 30
board = Board(cfg)
st = store.Store(board.nvs("twomes"))
app = App(board, cfg, st, identity.load(st, board.mac(), cfg, os.urandom))
on = Server(app)
on.session = "bench-session"
buf = app.buffers()[0]
R = A["releases"]


async def _stream(rel, sink):
    resp, _ = await on.open_release(rel, 0)
    try:
        got = 0
        n = 0
        while True:
            k = resp.read_now(buf[n:])
            if k is None:
                k = await resp.readinto(buf[n:])
            if k:
                n += k
                if n < len(buf):
                    continue
            if n:
                sink(got, n)
                got += n
                n = 0
            if not k:
                break
        return got
    finally:
        await resp.close()


async def raw_file(rel):
    with open("raw.bin", "wb") as f:
        got = await _stream(rel, lambda pos, n: f.write(buf[:n]))
    assert got == rel["size"], got


async def raw_flash(rel):
    part = board.partition("next")

    def put(pos, n):
        if pos % 4096 == 0:
            part.ioctl(6, pos // 4096)
        m = (n + 3) & ~3
        for i in range(n, m):
            buf[i] = 0xFF
        part.writeblocks(pos // 4096, buf[:m], pos % 4096)

    got = await _stream(rel, put)
    assert got == rel["size"], got


async def install_bundle(rel):
    await job.install(app, on, rel)


async def install_image(rel):
    state.download_forget(st)  # every run downloads the whole image (no resume, no "already there")
    await image.install(app, on, rel)


steps = (
    ("raw_file", raw_file, "image"),
    ("raw_flash", raw_flash, "image"),
    ("bundle", install_bundle, "bundle"),
    ("romfs", install_bundle, "romfs"),
    ("image", install_image, "image"),
)
res = {name: [] for name, _, _ in steps}
for r in range(A["runs"] + 1):  # the first round warms up (imports, first-use allocations)
    for name, fn, rel in steps:
        gc.collect()
        t = time.ticks_us()
        asyncio.run(fn(R[rel]))
        dt = time.ticks_diff(time.ticks_us(), t)
        if r:
            res[name].append(dt / 1000)
print("@@BENCH " + json.dumps(res))
"""


def _ballast(src: Path, size: int) -> None:
    """Modules of about `size` bytes of constants in all (never imported): the bundle's stand-in for a
    field app's size; deterministic, and not compressible into nothing. 64 KB a module (mpy-cross runs
    out of its own heap on much larger ones)."""
    block = hashlib.sha256(b"bench-ballast").digest()
    rows_per = 65536 // 66
    left = max(1, size // 66)
    i = 0
    while left > 0:
        rows = []
        for _ in range(min(rows_per, left)):
            block = hashlib.sha256(block).digest()
            rows.append(f"    {block + block[::-1]!r},\n")
        left -= len(rows)
        (src / "twomes" / f"ballast{i}.py").write_text(
            "# size stand-in, never imported\nDATA = (\n" + "".join(rows) + ")\n"
        )
        i += 1


def releases(work: Path, size: int) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """The three release files of about `size` bytes and their release records."""
    version = f"{read_version()}-bench"
    src = work / "src"
    shutil.copytree(DEVICE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    code, _ = build_bundle(work / "code.bundle", version, src)
    _ballast(src, max(0, size - code))
    files: dict[str, bytes] = {}
    build_bundle(work / "b.bundle", version, src)
    files["bundle"] = (work / "b.bundle").read_bytes()
    build_romfs(work / "r.romfs", version, src)
    files["romfs"] = (work / "r.romfs").read_bytes()
    base = len(build_sim_image_bytes(version, DEVICE_DIR, runtime=4))
    target = len(files["bundle"])
    files["image"] = build_sim_image_bytes(version, DEVICE_DIR, runtime=max(4, target - base + 4) & ~3)
    rels = {
        name: {
            "id": i + 1,
            "version": version,
            "kind": "image" if name == "image" else "bundle",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "url": "/" + name,
        }
        for i, (name, data) in enumerate(files.items())
    }
    return rels, files


def measure(runs: int, size: int, heap: str = HEAP) -> dict[str, Any]:
    """Per step, the install (or download) times in ms of `runs` runs, and the release sizes."""
    with tempfile.TemporaryDirectory(prefix="twomes-bench-ota-") as tmp:
        work = Path(tmp)
        rels, files = releases(work, size)
        state = work / "board"
        state.mkdir()
        (state / "board.json").write_text(json.dumps({"partitions": TABLE}))
        board = VirtualBoard(state, code="mpy", heap=heap)
        board.install_app(version=rels["bundle"]["version"])
        for name in ("boot.py", "twomes.json"):
            (board.fs / name).unlink(missing_ok=True)  # no slot selection, no config: the bench script only
        (board.fs / "main.py").write_text(_SCRIPT)
        with BodyServer(files) as srv:
            (board.fs / "bench.json").write_text(
                json.dumps({"url": f"http://127.0.0.1:{srv.port}", "runs": runs, "releases": rels})
            )
            try:
                board.start()
                m = board.wait_for(r"^@@BENCH (.*)$|Traceback|\[vboard:", 120 + runs * size / 2**20 * 60)
            finally:
                board.stop()
        if not m.group(0).startswith("@@BENCH "):
            raise RuntimeError("the OTA benchmark failed on the board:\n" + "\n".join(board.lines[-30:]))
        times: dict[str, Any] = json.loads(m.group(1))
        return {"ms": times, "size": {k: v["size"] for k, v in rels.items()}}
