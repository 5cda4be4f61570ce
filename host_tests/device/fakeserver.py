# A scripted HTTP server on 127.0.0.1 for the device tests (both runtimes): each request is answered by
# the test's handler, which can also misbehave (truncate, stall, send garbage) the way servers do.
import asyncio
import json
import os


class Reply:
    def __init__(
        self, status=200, body=b"", headers=None, truncate=None, stall=0, raw=None, drip=None, reset=False
    ):
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers = headers or {}
        self.truncate = truncate  # send only this many body bytes, then close
        self.stall = stall  # seconds to wait before answering
        self.raw = raw  # bytes sent instead of an HTTP response
        self.drip = drip  # (bytes, seconds): the body (or raw) sent this many bytes at a time, this far apart
        self.reset = reset  # end with a TCP reset instead of a close (CPython; MicroPython: a close)


def fw(status=200, body=None):
    """A reply from our firmware API (it carries the marker header)."""
    return Reply(status, body if body is not None else {}, {"X-Twomes-Firmware-Api": "1"})


class FakeServer:
    def __init__(self, handler, context=None):
        self.handler = handler
        self.context = context  # a server-side TLS context (support.server_tls): https
        self.requests = []  # (method, path, headers dict, body bytes)
        self.server = None
        self.port = None

    async def start(self):
        for _ in range(20):
            port = 20000 + (os.urandom(2)[0] << 8 | os.urandom(1)[0]) % 30000
            try:
                self.server = await asyncio.start_server(self._conn, "127.0.0.1", port, ssl=self.context)
                self.port = port
                return self
            except OSError:
                continue
        raise OSError("no free port")

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("http" if self.context is None else "https", self.port)

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()

    async def _conn(self, r, w):
        try:
            line = await r.readline()
            method, path, _ = line.decode().split(" ", 2)
            headers = {}
            while True:
                h = await r.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = b""
            n = int(headers.get("content-length", "0"))
            while len(body) < n:
                chunk = await r.read(n - len(body))
                if not chunk:
                    break
                body += chunk
            self.requests.append((method, path, headers, body))
            rep = self.handler(method, path, headers, body)
            if rep.stall:
                await asyncio.sleep(rep.stall)
            if rep.raw is not None and rep.drip:
                n, pause = rep.drip
                for i in range(0, len(rep.raw), n):
                    w.write(rep.raw[i : i + n])
                    await w.drain()
                    await asyncio.sleep(pause)
            elif rep.raw is not None:
                w.write(rep.raw)
            else:
                head = "HTTP/1.1 %d X\r\nContent-Length: %d\r\nDate: Wed, 25 Nov 2026 10:00:00 GMT\r\n" % (
                    rep.status,
                    len(rep.body),
                )
                for k in rep.headers:
                    head += "%s: %s\r\n" % (k, rep.headers[k])
                w.write((head + "\r\n").encode())
                body = rep.body if rep.truncate is None else rep.body[: rep.truncate]
                if rep.drip:
                    n, pause = rep.drip
                    for i in range(0, len(body), n):
                        w.write(body[i : i + n])
                        await w.drain()
                        await asyncio.sleep(pause)
                else:
                    w.write(body)
            await w.drain()
            if rep.reset and hasattr(w, "transport"):
                import socket
                import struct

                w.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        except Exception as e:  # noqa: BLE001 - a broken test request must not kill the server
            print("fakeserver:", e)
        finally:
            w.close()
            await w.wait_closed()
