"""CPython (host tests only): the host's side of twomes.hw - a monotonic millisecond clock with the
calls of MicroPython's `time.ticks_*` (no wrap-around), and a client connection with the calls twomes.hw
gives the device's HTTP client ([socket stand-in, stream], opened at the first write, over asyncio's
own streams). It lives with the host tests, not in device/: on the device its functions would cost heap
for nothing (docs/heap.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def ticks_ms() -> int:
    return int(time.monotonic() * 1000)


def ticks_diff(a: int, b: int) -> int:
    return a - b


def ticks_add(a: int, b: int) -> int:
    return a + b


def conn(host: str, port: int, ctx: Any) -> list[Any]:
    """[Sock, Stream] for host:port (TLS with `ctx` when it is not None)."""

    class Stream:
        def __init__(self) -> None:
            self.r: asyncio.StreamReader | None = None
            self.w: asyncio.StreamWriter | None = None
            self.out = b""

        def write(self, data: bytes) -> None:
            self.out = bytes(data)

        async def drain(self) -> None:
            if self.w is None:
                kw = {"ssl": ctx, "server_hostname": host} if ctx is not None else {}
                self.r, self.w = await asyncio.open_connection(host, port, **kw)
            self.w.write(self.out)
            await self.w.drain()

        async def readinto(self, mv: memoryview) -> int:
            assert self.r is not None  # (the first write opened it)
            data = await self.r.read(len(mv))
            mv[: len(data)] = data
            return len(data)

    class Sock:
        def __init__(self, st: Stream) -> None:
            self.st = st

        def readinto(self, mv: memoryview) -> None:
            return None  # what read_now() asks: nothing without waiting here

        def close(self) -> None:
            if self.st.w is not None:
                self.st.w.close()

    st = Stream()
    return [Sock(st), st]
