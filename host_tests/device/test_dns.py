# Captive DNS: A -> the AP address, other types -> empty NOERROR, malformed -> no answer, never a crash.
import asyncio

import portal_fakes as pf

import support
from twomes.ap import dns

IP = bytes([192, 168, 4, 1])


def _ask(packet):
    out = bytearray(600)
    n = dns.answer(packet, IP, out)
    return bytes(out[:n])


def _u16(b, i):
    return b[i] << 8 | b[i + 1]


def test_a_query_gets_the_ap_address():
    q = pf.dns_query("connectivitycheck.gstatic.com", 1, qid=0xBEEF)
    r = _ask(q)
    assert r[:2] == b"\xbe\xef"
    assert r[2] & 0x80 and r[2] & 0x04 and r[2] & 0x01  # response, authoritative, RD echoed
    assert r[3] & 0x0F == 0  # NOERROR
    assert _u16(r, 4) == 1 and _u16(r, 6) == 1 and _u16(r, 8) == 0 and _u16(r, 10) == 0
    assert r[12 : len(q)] == q[12:]  # the question as asked
    a = r[len(q) :]
    assert a[:2] == b"\xc0\x0c" and _u16(a, 2) == 1 and _u16(a, 4) == 1 and _u16(a, 10) == 4
    assert a[12:16] == IP and len(a) == 16
    r = _ask(pf.dns_query("x", 1, rd=False))
    assert not r[2] & 0x01


def test_other_types_get_an_empty_noerror_answer():
    for qtype in (28, 65, 16, 33, 255):  # AAAA, HTTPS, TXT, SRV, ANY
        q = pf.dns_query("captive.apple.com", qtype)
        r = _ask(q)
        assert len(r) == len(q) and r[3] & 0x0F == 0 and _u16(r, 6) == 0, qtype


def test_edns_additional_record_is_accepted_and_not_echoed():
    q = bytearray(pf.dns_query("example.com", 1))
    q[11] = 1  # ARCOUNT 1: an OPT record
    q.extend(b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")
    r = _ask(bytes(q))
    assert _u16(r, 6) == 1 and _u16(r, 10) == 0 and r[-4:] == IP


def test_malformed_packets_get_no_answer():
    good = pf.dns_query("a.example", 1)
    bad = [
        b"",
        b"\x00" * 5,
        good[:-1],  # truncated type/class
        good[:14],  # truncated name
        bytes([good[0], good[1], 0x81]) + good[3:],  # a response, not a query
        bytes([good[0], good[1], 0x01 | (2 << 3)]) + good[3:],  # opcode STATUS
        good[:5] + b"\x02" + good[6:],  # two questions
        good[:7] + b"\x01" + good[8:],  # an answer record in a query
        good[:12] + b"\xc0\x0c" + good[-4:],  # compression pointer in the question
        good[:12] + b"\x40" + b"a" * 64 + b"\x00" + good[-4:],  # label of 64 bytes
        good[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\x00" + good[-4:],  # name longer than 255
        good[:-2] + b"\x00\x03",  # class CHAOS
        good + b"\x00" * 600,  # longer than 512
        bytes(range(256)) * 2,
    ]
    for i, p in enumerate(bad):
        assert _ask(p) == b"", i


def test_fuzz_never_crashes():
    # TW_HOSTILE_N mutated queries (make hostile: 10,000) and as many random packets
    import os

    count = int(os.getenv("TW_HOSTILE_N") or 300)
    base = pf.dns_query("connectivitycheck.gstatic.com", 1)
    out = bytearray(600)
    for _ in range(count):
        noise = os.urandom(len(base))
        n = os.urandom(1)[0] % len(base)
        mutated = bytearray(base)
        for k in range(n % 6):
            mutated[noise[k] % len(base)] = noise[k + 6]
        length = dns.answer(bytes(mutated[: len(base) - (noise[20] % 3)]), IP, out)
        assert 0 <= length <= 528
    for _ in range(count):
        assert 0 <= dns.answer(os.urandom(os.urandom(1)[0] % 64), IP, out) <= 528


async def _serve(port):
    """The captive DNS server on 127.0.0.1:`port`, listening."""
    task = asyncio.create_task(dns.serve("127.0.0.1", port))
    await asyncio.sleep(0.05)
    return task


async def _stop(task):
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def test_server_answers_over_udp_and_survives_garbage():
    async def main():
        port = pf.rand_port()
        task = await _serve(port)
        try:
            r = await pf.udp_ask(port, pf.dns_query("www.msftconnecttest.com", 1))
            assert r is not None and r[-4:] == bytes([127, 0, 0, 1])
            r = await pf.udp_ask(port, pf.dns_query("www.msftconnecttest.com", 28))
            assert r is not None and _u16(r, 6) == 0
            assert await pf.udp_ask(port, b"\xff" * 40, timeout=0.2) is None
            assert await pf.udp_ask(port, b"x" * 1400, timeout=0.2) is None
            r = await pf.udp_ask(port, pf.dns_query("still.alive", 1))
            assert r is not None and r[-4:] == bytes([127, 0, 0, 1])
        finally:
            await _stop(task)
        assert await pf.udp_ask(port, pf.dns_query("gone", 1), timeout=0.2) is None

    support.run(main())


def test_no_heap_for_a_reply_loses_that_reply_not_the_server():
    """The reply is built in a buffer of its query's size, per query: without heap for it that query
    gets no answer (the client asks again) and the server goes on (its task does not end)."""

    async def main():
        port = pf.rand_port()
        task = await _serve(port)
        sizes = []

        def starved(n):
            sizes.append(n)
            raise MemoryError("memory allocation failed, allocating %d bytes" % n)

        try:
            query = pf.dns_query("no.heap", 1)
            dns.bytearray = starved  # (the module's own name comes before the builtin)
            try:
                assert await pf.udp_ask(port, query, timeout=0.2) is None
            finally:
                del dns.bytearray
            assert sizes and sizes[0] == len(query) + 16 and not task.done()
            r = await pf.udp_ask(port, pf.dns_query("heap.again", 1))
            assert r is not None and r[-4:] == bytes([127, 0, 0, 1])
        finally:
            await _stop(task)

    support.run(main())


def test_setup_mode_serves_dns_on_the_board_port():
    async def main():
        p = await pf.start_portal(dns=True)
        try:
            r = await pf.udp_ask(p.cfg.dns_port, pf.dns_query("detectportal.firefox.com", 1))
            assert r is not None and r[-4:] == bytes([127, 0, 0, 1])
        finally:
            await pf.stop_portal(p)
        await asyncio.sleep(0)

    support.run(main())


def test_names_over_255_octets_get_no_answer():
    out = bytearray(528)
    # 4 labels of 63 + the root: 4 * 64 + 1 = 257 octets; 3 of 63 and one of 61: 255 (the limit)
    assert dns.answer(pf.dns_query(".".join(["a" * 63] * 3 + ["b" * 61])), IP, out) > 0
    assert dns.answer(pf.dns_query(".".join(["a" * 63] * 3 + ["b" * 62])), IP, out) == 0
    assert dns.answer(pf.dns_query(".".join(["a" * 63] * 4)), IP, out) == 0


def test_idle_server_waits_on_its_socket_without_garbage():
    # the task waits on the socket (asyncio poll), not on a timer: nothing is allocated while no query
    # comes (MicroPython: micropython.mem_total counts every allocation), and a query still gets its
    # answer at once afterwards
    import sys

    async def main():
        mp = sys.implementation.name == "micropython"
        if mp:
            import micropython

            a = micropython.mem_total()
            await asyncio.sleep(0.3)
            alone = micropython.mem_total() - a  # what this sleep itself allocates
        port = pf.rand_port()
        task = await _serve(port)
        try:
            r = await pf.udp_ask(port, pf.dns_query("warm.up", 1))
            assert r is not None
            if mp:
                a = micropython.mem_total()
                await asyncio.sleep(0.3)  # the DNS task must not wake at all meanwhile
                idle = micropython.mem_total() - a - alone
                assert idle < 64, idle  # the 20 ms poll loop it replaces: ~13 KB here
            else:
                await asyncio.sleep(0.3)
            r = await pf.udp_ask(port, pf.dns_query("after.idle", 1))
            assert r is not None and r[-4:] == bytes([127, 0, 0, 1])
        finally:
            await _stop(task)

    support.run(main())
