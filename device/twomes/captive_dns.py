# Captive DNS: every A question gets the access point's address, every other type an empty NOERROR
# answer (answering AAAA with an A record confuses clients). Anything that is not one well-formed
# standard query is dropped without a reply. One non-blocking UDP socket, polled with asyncio.sleep
# (no private asyncio internals); one preallocated reply buffer.
import asyncio

from micropython import const

from twomes.log import log

_MAX = const(512)  # classic DNS over UDP; longer datagrams are dropped
_IDLE_S = 0.02  # poll period while nothing arrives
_TTL = const(60)
_TYPE_A = const(1)
_CLASS_IN = const(1)
_NAME_MAX = const(255)


def ip_bytes(ip):
    parts = ip.split(".")
    if len(parts) != 4:
        raise ValueError("not an IPv4 address")
    out = bytes(int(p) for p in parts)
    return out


def answer(query, ip, out):
    """Write the reply to `query` (bytes) into `out` (bytearray >= _MAX + 16); returns its length, or 0
    when the packet gets no reply. `ip` is the 4-byte address given to every A question."""
    n = len(query)
    if n < 17 or n > _MAX:  # 12 header + root name (1) + type + class
        return 0
    flags = query[2]
    if flags & 0x80 or (flags >> 3) & 0x0F:  # a response, or not a standard QUERY
        return 0
    if query[4] != 0 or query[5] != 1 or query[6] or query[7] or query[8] or query[9]:
        return 0  # exactly one question, no answers / authority records (EDNS in "additional" is fine)
    # the question name: labels of 1..63 bytes, no compression pointers
    i = 12
    while True:
        if i >= n:
            return 0
        ln = query[i]
        if ln == 0:
            i += 1
            break
        if ln > 63 or i + ln - 11 > _NAME_MAX:
            return 0
        i += 1 + ln
    if i + 4 > n:
        return 0
    qtype = query[i] << 8 | query[i + 1]
    qclass = query[i + 2] << 8 | query[i + 3]
    qend = i + 4
    if qclass != _CLASS_IN and qclass != 255:
        return 0
    out[0:qend] = query[0:qend]  # id + flags + counts + the question, as asked
    out[2] = 0x84 | (flags & 0x01)  # QR, AA, opcode 0, RD copied
    out[3] = 0x00  # RA 0, RCODE NOERROR
    out[6] = 0
    out[7] = 1 if qtype == _TYPE_A else 0  # ANCOUNT
    out[8] = out[9] = out[10] = out[11] = 0  # no authority, no additional records
    if qtype != _TYPE_A:
        return qend
    a = qend
    out[a : a + 12] = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04"  # name -> question, A, IN, TTL, len
    out[a + 8] = _TTL >> 8
    out[a + 9] = _TTL & 0xFF
    out[a + 12 : a + 16] = ip
    return a + 16


class CaptiveDns:
    def __init__(self, ip, port):
        self.ip = ip
        self.port = port
        self.answered = 0
        self.dropped = 0
        self._addr = ip_bytes(ip)
        self._sock = None
        self._task = None
        self._out = None

    def start(self):
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo(self.ip, self.port, 0, socket.SOCK_DGRAM)[0][-1])
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self._sock = s
        self._out = bytearray(_MAX + 16)
        self._task = asyncio.create_task(self._serve())
        log("dns", "answering every name with %s (udp port %d)" % (self.ip, self.port))

    async def stop(self):
        t = self._task
        self._task = None
        if t is not None:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._out = None

    async def _serve(self):
        s = self._sock
        out = self._out
        try:
            while True:
                try:
                    data, addr = s.recvfrom(_MAX + 1)
                except OSError:  # EAGAIN: nothing waiting
                    await asyncio.sleep(_IDLE_S)
                    continue
                try:
                    n = answer(data, self._addr, out)
                except Exception as e:  # noqa: BLE001 - one bad packet never stops the server
                    log("dns", "dropped a packet: %r" % e)
                    n = 0
                data = None
                if n:
                    try:
                        s.sendto(memoryview(out)[:n], addr)
                        self.answered += 1
                    except OSError:
                        pass
                else:
                    self.dropped += 1
                await asyncio.sleep(0)  # a flood of queries must not starve the HTTP server
        finally:
            s.close()
