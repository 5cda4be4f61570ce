# Setup mode under hostile or crowded conditions (issue #17), in-process on both runtimes with real
# sockets on 127.0.0.1: crowded air, idle / slow / concurrent connections, invalid UTF-8, HEAD, console
# injection, supervised tasks. The same attacks against a whole virtual board, with figures, are in
# host_tests/portal/test_hostile.py.
import asyncio
import json

import portal_fakes as pf

import support
from twomes import log, wifi
from twomes.ap import creds, improv_serial
from twomes.ap.controller import supervise
from twomes.ap.portal import SLOTS

# 30 networks with 32-byte names, each also seen weaker on a second channel
CROWDED = []
for _i in range(30):
    _name = ("%02d" % _i) * 16
    CROWDED.append({"ssid": _name, "password": "whatever%d" % _i, "rssi": -40 - _i})
    CROWDED.append({"ssid": _name, "password": "whatever%d" % _i, "rssi": -95})


def _run(body, **kw):
    async def main():
        p = await pf.start_portal(**kw)
        try:
            await body(p)
        finally:
            await pf.stop_portal(p)

    support.run(main())


def _complete(r, head=False):
    """An answer with a status line, its headers, and (with a Content-Length) its whole body."""
    assert r.status in (200, 202, 302, 303, 400, 403, 404, 405, 408, 409, 411, 413, 414, 415, 431, 503), r.raw
    ln = r.headers.get("content-length")
    if ln is not None and not head:
        assert len(r.body) == int(ln), r.raw
    r.body.decode()  # UTF-8
    return r


def test_crowded_air_scan_is_deduplicated_sorted_and_capped():
    board, ident, cfg, ctl = pf.make(air=CROWDED)
    packed, more = creds.scan(board)
    nets = list(creds.listed(packed))
    assert len(nets) == creds.SHOWN_MAX and more == 30 - creds.SHOWN_MAX
    assert [n[0] for n in nets] == [("%02d" % i) * 16 for i in range(creds.SHOWN_MAX)]  # strongest first
    assert [n[1] for n in nets] == [-40 - i for i in range(creds.SHOWN_MAX)]  # each name at its best
    assert all(n[2] is True for n in nets)
    # one bytes object: length, name, RSSI, secured per network (a list of tuples held ~4x the heap)
    assert isinstance(packed, bytes) and len(packed) == creds.SHOWN_MAX * (1 + 32 + 2)


def test_the_scan_list_keeps_names_rssi_and_security_as_they_were():
    air = [
        {"ssid": pf.CAFE, "password": "whatever1", "rssi": -1},
        {"ssid": "x" * 32, "password": "", "rssi": -128},
        {"ssid": "open", "password": "", "rssi": -127},
        {"ssid": "weak", "password": "whatever2", "rssi": -100},
    ]
    board, ident, cfg, ctl = pf.make(air=air)
    packed, more = creds.scan(board)
    assert list(creds.listed(packed)) == [
        (pf.CAFE, -1, True),
        ("weak", -100, True),
        ("open", -127, False),
        ("x" * 32, -128, False),
    ]
    assert more == 0 and list(creds.listed(b"")) == []


def test_crowded_air_in_the_form_the_app_api_and_improv():
    async def body(p):
        r = _complete(await pf.get(p, "/"))
        assert r.status == 200 and r.text.count('type="radio"') == creds.SHOWN_MAX
        assert "14 more networks nearby: type the name below." in r.text and r.text.endswith("</html>")
        r = _complete(await pf.get(p, "/api/networks"))
        d = r.json()
        assert len(d["networks"]) == creds.SHOWN_MAX and d["more"] == 14
        assert d["networks"][0] == {"ssid": "00" * 16, "rssi": -40, "secured": True}
        r = _complete(await pf.get(p, "/api/networks", method="HEAD"), True)
        assert r.status == 200 and r.body == b""
        # Improv: one result per network shown, then the end
        out = []
        ser = improv_serial.Serial(p.ctl, p.ident, "1.0.0", out.append)
        ser.feed(improv_serial.frame(3, b"\x04\x00"))
        assert len(out) == creds.SHOWN_MAX + 1 and all(f[:6] == b"IMPROV" for f in out)
        assert b"00" * 16 in out[0]
        # a network not shown: typed in, accepted and joined
        name = "29" * 16
        r = _complete(await pf.post(p, "/connect", pf.form(ssid="", other=name, password="whatever29")))
        assert r.status == 303
        await pf.wait_idle(p)
        assert pf.status(p)["result"] == wifi.JOINED and p.ctl.saved == (name, "whatever29")

    _run(body, air=CROWDED)


async def _idle(port, n):
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection("127.0.0.1", port))
    return conns


async def _close(conns):
    for _, w in conns:
        w.close()
        try:
            await w.wait_closed()
        except OSError:
            pass


# The two tests below are the real-socket, real-time check of admission and deadlines (no timing is
# asserted); which connection is evicted, and each deadline to the tick: test_portal_deadlines.py.
def test_idle_connections_make_room_for_a_real_request():
    async def body(p):
        conns = await _idle(p.cfg.portal_port, SLOTS + 3)  # a phone's spare connections and more
        await asyncio.sleep(0.1)
        try:
            for _ in range(5):
                r = _complete(await pf.get(p, "/api/info"))
                assert r.status == 200 and r.json()["name"] == p.ident.name
            assert p.evicted >= 3 and p.busy() <= SLOTS
        finally:
            await _close(conns)

    _run(body)


def test_slow_clients_never_stop_the_portal():
    async def slow(port, stop):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            for c in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1":
                if stop:
                    break
                w.write(bytes([c]))
                await w.drain()
                await asyncio.sleep(0.2)
        except OSError:  # closed by the portal: fine
            pass
        finally:
            w.close()

    async def body(p):
        p.head_ms = 2000
        stop = []
        tasks = [asyncio.create_task(slow(p.cfg.portal_port, stop)) for _ in range(SLOTS + 1)]
        try:
            await asyncio.sleep(0.3)
            ok = 0
            for _ in range(8):
                r = _complete(await pf.get(p, "/api/status"))
                ok += r.status == 200
                await asyncio.sleep(0.1)
            assert ok == 8, ok
        finally:
            stop.append(1)
            for t in tasks:
                try:
                    await t
                except Exception:  # noqa: BLE001 - reset by the portal
                    pass

    _run(body)


def test_concurrent_requests_all_get_complete_answers():
    async def body(p):
        async def one(i):
            return await pf.get(p, "/api/status" if i % 2 else "/result")

        rs = await asyncio.gather(*[one(i) for i in range(40)])
        statuses = [_complete(r).status for r in rs if r.raw]
        assert statuses and all(s in (200, 303, 503) for s in statuses), statuses
        r = _complete(await pf.get(p, "/api/status"))  # and it goes on
        assert r.status == 200

    _run(body)


def test_invalid_utf8_and_surrogates_are_refused_and_every_answer_stays_valid():
    _J = "application/json"

    async def body(p):
        for raw in (b'{"ssid": "\\ud800", "password": ""}', b'{"ssid": "\xed\xa0\x80", "password": ""}'):
            r = _complete(await pf.post(p, "/api/wifi", raw, _J))
            assert r.status == 400, r.raw
        for enc in ("%ED%A0%80", "%C0%BC", "%F4%90%80%80", "%E2%82"):
            r = _complete(await pf.post(p, "/connect", "ssid=" + enc + "&password="))
            assert r.status == 400, (enc, r.raw)
        assert p.ctl.submitted == []
        st = _complete(await pf.get(p, "/api/status"))
        st.json()
        r = _complete(await pf.get(p, "/"))
        assert r.status == 200

    _run(body)


def test_head_never_has_a_body():
    async def body(p):
        for path, status in (("/api/nothing", 404), ("/api/status", 200), ("/", 200), ("/favicon.ico", 404)):
            r = _complete(await pf.get(p, path, method="HEAD"), True)
            assert r.status == status and r.body == b"", (path, r.raw)

    _run(body)


def test_text_a_client_sent_is_escaped_on_the_console():
    forged = "x\n[   9.999] wifi: FAKE\u001b[2J"

    async def body(p):
        lines = log.sink = []
        try:
            r = await pf.post(
                p, "/api/wifi", json.dumps({"ssid": forged, "password": "whatever1"}), "application/json"
            )
            assert r.status == 202
            await pf.wait_idle(p)
            # Improv too
            out = []
            ser = improv_serial.Serial(p.ctl, p.ident, "1.0.0", out.append)
            s, pw = forged.encode(), b"whatever1"
            ser.feed(
                improv_serial.frame(3, bytes([1, len(s) + len(pw) + 2, len(s)]) + s + bytes([len(pw)]) + pw)
            )
            await ser.improv.provision(*ser.pending)
        finally:
            log.sink = None
        said = "\n".join(lines)
        assert "FAKE" in said and "\x1b" not in said and "\n[   9.999]" not in said, said
        assert "x\\x0a[   9.999] wifi: FAKE\\x1b[2J" in said, said

    _run(body)


def test_supervise_logs_and_restarts_a_failing_task():
    async def main():
        runs = []

        async def task():
            runs.append(1)
            if len(runs) < 3:
                raise MemoryError("memory allocation failed")

        lines = log.sink = []
        try:
            assert await supervise("dns", task) == 2
        finally:
            log.sink = None
        assert len(runs) == 3
        assert [ln for ln in lines if "dns: task failed (MemoryError): started again" in ln], lines

    support.run(main())


def test_a_dns_task_that_fails_is_started_again():
    async def main():
        from twomes.ap import dns

        port = pf.rand_port()
        calls = []
        real = dns.serve

        async def flaky(ip, port):
            calls.append(1)
            if len(calls) == 1:
                raise MemoryError("memory allocation failed")
            await real(ip, port)

        t = asyncio.create_task(supervise("dns", flaky, "127.0.0.1", port))
        try:
            r = None
            for _ in range(20):
                r = await pf.udp_ask(port, pf.dns_query("captive.apple.com", 1), timeout=0.2)
                if r is not None:
                    break
            assert r is not None and r[-4:] == bytes([127, 0, 0, 1]) and len(calls) == 2
        finally:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass

    support.run(main())


def test_generated_form_bodies_decode_or_are_refused():
    # TW_HOSTILE_N random form bodies (make hostile: 10,000): each decodes to text that is valid UTF-8,
    # or is refused with ValueError (the portal's 400); nothing else
    import os

    from twomes.ap import form

    count = int(os.getenv("TW_HOSTILE_N") or 300)
    alphabet = b"ab=&%+0123456789ABCDEFcdef\xc0\xed\xa0\x80\xff\xf4\x90"
    for _ in range(count):
        r = os.urandom(40)
        body = bytes(alphabet[c % len(alphabet)] for c in r[: r[0] % 40])
        try:
            d = form.parse_form(body, ("ssid", "password", "name", "other"))
        except ValueError:
            continue
        for v in d.values():
            assert creds.text_ok(v), body
            v.encode()
