# Captive DNS: every A question gets the access point's address, every other type an empty NOERROR
# answer (answering AAAA with an A record confuses clients). Anything that is not one well-formed
# standard query is dropped without a reply, and so is a question name longer than 255 octets (RFC 1035
# 3.1). One non-blocking UDP socket the task waits on (hw.recvfrom: asyncio's poll, no timer, nothing
# allocated while idle); each reply is built in a buffer of its query's size (allocated per query, as the
# query itself is: nothing is held between queries). serve() is a task the setup controller supervises
# (restarted if it fails).
import asyncio

from micropython import const

from twomes import hw
from twomes.log import log

_MAX = const(512)  # classic DNS over UDP; longer datagrams are dropped
_TTL = const(60)
_TYPE_A = const(1)
_CLASS_IN = const(1)
_NAME_MAX = const(255)


def ip_bytes(ip):
    parts = ip.split(".")
    if len(parts) != 4:
        raise ValueError("not an IPv4 address")
    return bytes(int(p) for p in parts)


def answer(query, ip, out):
    """Write the reply to `query` (bytes) into `out` (bytearray >= len(query) + 16); returns its length, or 0
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
        if ln > 63:
            return 0
        i += 1 + ln
        if i - 12 + 1 > _NAME_MAX:  # octets so far, with the root's zero still to come
            return 0
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


async def serve(ip, port):
    """Bind the UDP socket and answer until cancelled (the socket is closed in `finally`). Errors end
    the task: its supervisor logs them and starts it again."""
    import socket

    addr4 = ip_bytes(ip)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo(ip, port, 0, socket.SOCK_DGRAM)[0][-1])
        s.setblocking(False)
        log("dns", "answering every name with %s (udp port %d)" % (ip, port))
        waiter = hw.datagram_waiter(s)
        while True:
            data, peer = await hw.recvfrom(s, _MAX + 1, waiter)
            try:
                out = bytearray(len(data) + 16)
                n = answer(data, addr4, out)
                if n:
                    s.sendto(memoryview(out)[:n], peer)
            except (OSError, MemoryError):
                pass  # the peer is gone, a full send buffer, no heap: this answer is lost, asked again
            data = out = None
            await asyncio.sleep(0)  # a flood of queries must not starve the HTTP server
    finally:
        s.close()
