"""Device HTTP streaming on the MicroPython unix port: the device's client (twomes.online.http, as
.mpy) against a raw blocking-socket loop and micropython-lib ``requests`` (built into the unix port),
all three streaming the same body from a local server on 127.0.0.1 into a file, 1 KB at a time, into
the same buffer, in one MicroPython process.

All three are called from inside one running asyncio event loop, as the app calls anything (its flow
is a task): the loop's task and frames exist before a request and count for nobody; the device's
streaming loop is a coroutine (it awaits), the others' a plain function. Per run, in turn (each
client first, middle and last in turn): throughput (MB/s, wall time of request + body) and garbage
(``micropython.mem_total`` over the stream, per KB of body). Once per client: the live heap it holds
mid-stream (``gc.mem_alloc`` after a collection, above what was allocated before the request), the
heap its module occupies once imported, the smallest free heap one streamed request needs with the
free heap in one piece (everything else filled; bisected to 32 bytes; collector on), and the largest
block it needs in one piece (the free heap only in holes of a given size, plenty of them; the
smallest size that works): what a fragmented heap must still offer. The device client is called as the app calls it, with the 1 KB
head buffer the app allocates once at start (not counted per request; shown as its own row).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from twtools.build import compile_tree
from twtools.vboard.runner import micropython_bin

_SCRIPT = r"""
import gc, sys, time, json, micropython
runs, port, size, small = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = sys.argv[5]
url = "http://127.0.0.1:%d/blob" % port
buf = bytearray(1024)
mv = memoryview(buf)
head = bytearray(1024)  # the device's HTTP head buffer: the app allocates it once at start (app.buffers)
mid = [0, 0]  # [bytes at which to sample the live heap (0: never), sampled live bytes]

def sample(got):
    if mid[0] and got >= mid[0]:
        mid[0] = 0
        gc.collect()
        mid[1] = gc.mem_alloc()

# the blocking clients' streaming loop (the same for both): the socket/stream into the file
def pump(s, f, got):
    while True:
        n = s.readinto(buf)
        if not n:
            return got
        f.write(buf if n == 1024 else mv[:n])
        got += n
        sample(got)

def raw(path):
    import socket
    s = socket.socket()
    try:
        s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        s.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        have = 0
        while True:  # the head (this server sends a short one)
            n = s.readinto(mv[have:])
            if not n:
                raise OSError("closed in head")
            have += n
            i = buf.find(b"\r\n\r\n", 0, have)
            if i >= 0:
                break
        f = open(out, "wb")
        try:
            f.write(mv[i + 4 : have])
            return pump(s, f, have - i - 4)
        finally:
            f.close()
    finally:
        s.close()

def req(path):
    import requests
    r = requests.get(url[: url.rfind("/")] + path.decode(), stream=True)
    try:
        f = open(out, "wb")
        try:
            return pump(r.raw, f, 0)
        finally:
            f.close()
    finally:
        r.close()

async def dev(path):
    from twomes.online import http
    r = await http.request("GET", url[: url.rfind("/")] + path.decode(), head_buf=head)
    try:
        f = open(out, "wb")
        try:
            got = 0
            while True:
                n = r.read_now(mv)
                if n is None:
                    n = await r.readinto(mv)
                if not n:
                    break
                f.write(buf if n == 1024 else mv[:n])
                got += n
                sample(got)
        finally:
            f.close()
    finally:
        await r.close()
    return got

# Every client is called from inside the running event loop, as the app calls anything (its flow is
# an asyncio task): the loop's own task and frames exist before a request and are nobody's cost. The
# device's streaming loop is a coroutine (it awaits), the others' a plain function. When the heap is
# filled to see what a request needs, the caller's coroutine is made before (it is the caller's, like
# a plain function's frame, which MicroPython puts on the C stack when the heap has no room).
clients = (("raw", raw, False), ("requests", req, False), ("device", dev, True))


async def call(fn, is_async, path):
    return (await fn(path)) if is_async else fn(path)


async def fits_holes(fn, is_async, h):
    # free heap only in holes of h GC blocks (plenty of them): the heap is filled with h-block objects
    # (first fit: one after the other), then single blocks into every other hole, then every other
    # h-block object is freed; one streamed request. (A tuple of 4h - 2 items is one allocation of
    # exactly h blocks: a block is 4 words.)
    await asyncio.sleep_ms(1)  # the previous request's cancelled watchdog leaves the queue
    gc.collect()
    aw = fn(b"/small") if is_async else None  # the caller's coroutine exists before: not the client's
    fill = [None] * 8192
    k = 0
    try:
        while k < len(fill):
            try:
                fill[k] = (None,) * (4 * h - 2)
                k += 1
            except MemoryError:
                break
        n = k
        while n < len(fill):
            try:
                fill[n] = (None,) * 2
                n += 1
            except MemoryError:
                break
        for i in range(0, k, 2):
            fill[i] = None
        gc.collect()
        return ((await aw) if is_async else fn(b"/small")) == small
    except MemoryError:
        return False
    finally:
        fill = None
        gc.collect()


async def fits_whole(fn, is_async, room):
    # free heap in one piece: `room` bytes are reserved first, everything else is filled (chunks, then
    # single blocks into every hole), then the reserved piece is freed; one streamed request
    await asyncio.sleep_ms(1)
    gc.collect()
    aw = fn(b"/small") if is_async else None  # the caller's coroutine exists before: not the client's
    fill = [None] * 4096
    k = 0
    try:
        reserve = bytearray(room - 16) if room > 16 else None
        size = 8192
        while size >= 16 and k < len(fill):
            try:
                fill[k] = bytearray(size - 16) if size > 16 else (k,)
                k += 1
            except MemoryError:
                size //= 2
        reserve = None
        gc.collect()
        return ((await aw) if is_async else fn(b"/small")) == small
    except MemoryError:
        return False
    finally:
        fill = None
        gc.collect()


async def bisect(test, fn, is_async, step, hi=48 * 1024):
    lo = 0
    if not await test(fn, is_async, hi):
        return -1
    while hi - lo > step:
        m = (lo + hi) // 2
        if await test(fn, is_async, m):
            hi = m
        else:
            lo = m
    return hi


async def main():
    for name, fn, a in clients:  # warm up (first-use allocations)
        await call(fn, a, b"/small")
    res = {name: {"mbps": [], "garbage_per_kb": []} for name, _, _ in clients}
    for r in range(runs):
        # each client first, middle and last in turn: none always runs on a machine the others warmed
        for name, fn, a in clients[r % 3 :] + clients[: r % 3]:
            gc.collect()
            g = micropython.mem_total()
            t = time.ticks_us()
            got = await call(fn, a, b"/blob")
            dt = time.ticks_diff(time.ticks_us(), t)
            g = micropython.mem_total() - g
            assert got == size, (name, got)
            res[name]["mbps"].append(got / dt)
            res[name]["garbage_per_kb"].append(g * 1024 / got)
    for name, fn, a in clients:
        await asyncio.sleep_ms(1)  # the previous request's cancelled watchdog leaves the queue
        gc.collect()
        base = gc.mem_alloc()
        mid[0] = small // 2
        assert await call(fn, a, b"/small") == small
        res[name]["live"] = mid[1] - base
        res[name]["code"] = code[name]
    for name, fn, a in clients:
        res[name]["need"] = await bisect(fits_whole, fn, a, 32)
        res[name]["block"] = await bisect(fits_holes, fn, a, 1, 64) * 32  # blocks of 32 B (64-bit)
    return res


import asyncio  # the device's app runs on asyncio anyway: not counted below

gc.collect()
code = {}
for name, mod in (("raw", "socket"), ("requests", "requests"), ("device", "twomes.online.http")):
    gc.collect()
    a = gc.mem_alloc()
    __import__(mod)
    gc.collect()
    code[name] = gc.mem_alloc() - a
res = asyncio.run(main())
print("@@BENCH " + json.dumps(res))
"""


class BodyServer:
    """A threaded HTTP/1.1 server on 127.0.0.1: GET /<name> answers that file whole (200) or from a
    `Range: bytes=a-` offset (206), with Content-Length, then closes. Bodies come from memory, so the
    client is what is measured (the HTTP figure and the OTA figure)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = {("/" + k).encode(): v for k, v in files.items()}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self._t = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> BodyServer:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c:
            head = b""
            while b"\r\n\r\n" not in head:
                d = c.recv(4096)
                if not d or len(head) > 65536:
                    return
                head += d
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1] if lines[0].count(b" ") >= 2 else b""
            start = 0
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"range" and v.strip().startswith(b"bytes="):
                    start = int(v.strip()[6:].split(b"-")[0])
            body = self.files.get(path)
            try:
                if body is None or start >= max(len(body), 1):
                    c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                status = b"206 Partial Content" if start else b"200 OK"
                extra = (
                    b"Content-Range: bytes %d-%d/%d\r\n" % (start, len(body) - 1, len(body)) if start else b""
                )
                c.sendall(
                    b"HTTP/1.1 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n%s"
                    b"Connection: close\r\n\r\n" % (status, len(body) - start, extra)
                )
                c.sendall(memoryview(body)[start:])
            except OSError:
                pass


def _bodies(size: int, small: int) -> dict[str, bytes]:
    """The big body (/blob) and the small one (/small) the HTTP figure reads."""
    pattern = bytes(range(256))
    return {"blob": pattern * (size // 256), "small": pattern * (small // 256)}


def run_script(tmp: Path, script: str, heap: str, args: list[str], what: str) -> dict[str, Any]:
    """Run ``script`` on the MicroPython unix port in ``tmp`` with the device code compiled to .mpy
    (``tmp/lib``) and ``-X heapsize=heap``; returns the JSON of its ``@@BENCH`` line."""
    lib = tmp / "lib"
    compile_tree(lib)
    (tmp / "bench.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY")}
    env["MICROPYPATH"] = f".frozen:{lib}"
    proc = subprocess.run(
        [micropython_bin(), "-X", f"heapsize={heap}", "bench.py", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@BENCH "):
            result: dict[str, Any] = json.loads(line[8:])
            return result
    raise RuntimeError(f"{what} did not finish (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")


def measure(
    runs: int, size: int, small: int = 256 * 1024, heap: str = "256K"
) -> dict[str, dict[str, object]]:
    with (
        tempfile.TemporaryDirectory(prefix="twomes-bench-http-") as tmp,
        BodyServer(_bodies(size, small)) as srv,
    ):
        args = [str(runs), str(srv.port), str(len(srv.files[b"/blob"])), str(len(srv.files[b"/small"]))]
        return run_script(Path(tmp), _SCRIPT, heap, [*args, str(Path(tmp) / "out.bin")], "the HTTP benchmark")
