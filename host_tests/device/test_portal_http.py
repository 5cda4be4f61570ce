# The captive portal over real sockets on 127.0.0.1: probes, the page, the form, bounds, the result page.
import asyncio
import json

import portal_fakes as pf

import support
from twomes import wifi

PROBES = [
    ("connectivitycheck.gstatic.com", "/generate_204"),
    ("clients3.google.com", "/generate_204"),
    ("www.google.com", "/gen_204"),
    ("connectivitycheck.android.com", "/generate_204"),
    ("captive.apple.com", "/hotspot-detect.html"),
    ("www.apple.com", "/library/test/success.html"),
    ("www.msftconnecttest.com", "/connecttest.txt"),
    ("www.msftconnecttest.com", "/redirect"),
    ("www.msftncsi.com", "/ncsi.txt"),
    ("detectportal.firefox.com", "/canonical.html"),
    ("detectportal.firefox.com", "/success.txt"),
]


def _run(body, **cfg):
    async def main():
        p = await pf.start_portal(**cfg)
        try:
            await body(p)
        finally:
            await pf.stop_portal(p)

    support.run(main())


def test_probe_urls_and_unknown_hosts_redirect_to_the_portal():
    async def body(p):
        home = "http://%s/" % pf.host_of(p)
        for host, path in PROBES:
            r = await pf.get(p, path, host=host)
            assert r.status == 302 and r.headers["location"] == home, (host, path, r.raw)
        # the probe paths redirect on the portal's own address too, and so do unknown names and paths
        r = await pf.get(p, "/generate_204")
        assert r.status == 302 and r.headers["location"] == home
        r = await pf.get(p, "/some/where?x=1", host="example.com")
        assert r.status == 302 and r.headers["location"] == home
        r = await pf.get(p, "/nothing-here")
        assert r.status == 302 and r.headers["location"] == home
        r = await pf.get(p, "/generate_204", host="connectivitycheck.gstatic.com", method="HEAD")
        assert r.status == 302 and r.body == b""
        assert p.ctl.submitted == []

    _run(body)


def test_page_lists_networks_strongest_first_escaped_and_self_contained():
    async def body(p):
        r = await pf.get(p, "/")
        assert r.status == 200 and r.headers["content-type"].startswith("text/html")
        t = r.text
        assert 'name="viewport"' in t and "<form" in t and 'method="post"' in t
        assert "<script" not in t.lower() and "src=" not in t and 'href="http' not in t  # nothing external
        names = ["home", pf.CAFE.replace("&", "&amp;"), "&lt;script&gt;alert", "slow", "open-net"]
        pos = [t.find('value="' + n) for n in names]
        assert -1 not in pos and pos == sorted(pos), pos  # strongest first
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x&#39;" in t
        assert t.count('class="lk"') == 4 and t.count('class="op"') == 1  # lock for the secured ones
        assert 'title="-52 dBm"><i style="width:86%">' in t and 'title="-88 dBm"><i style="width:14%">' in t
        assert 'name="password"' in t and 'name="name"' in t and 'name="other"' in t
        assert 'href="/rescan"' in t and p.ident.name in t
        # HEAD: headers only
        r = await pf.get(p, "/", method="HEAD")
        assert r.status == 200 and r.body == b""

    _run(body)


def test_gets_never_act_and_rescan_is_rate_limited():
    async def body(p):
        for path in ("/connect?ssid=home&password=secret-pass", "/api/wifi?ssid=home&password=secret-pass"):
            r = await pf.get(p, path)
            assert r.status in (302, 404, 405), (path, r.status)
        assert p.ctl.submitted == [] and not pf.status(p)["busy"]
        r = await pf.get(p, "/rescan")
        assert r.status == 303 and r.headers["location"] == "/"
        r = await pf.get(p, "/api/networks?refresh=1")
        assert r.status == 200
        assert p.ctl.rescans == 1  # the second one within 10 s is not repeated
        # other methods are refused
        r = await pf.get(p, "/", method="DELETE")
        assert r.status == 405

    _run(body)


def test_form_round_trips_special_characters_exactly():
    async def body(p):
        r = await pf.post(
            p, "/connect", pf.form(ssid=pf.CAFE, password=pf.SPECIAL_PW, name="Kitchen + Hall \u00e9")
        )
        assert r.status == 303 and r.headers["location"] == "/result", r.raw
        r = await pf.get(p, "/result")
        assert r.status == 200 and "Testing" in r.text and 'http-equiv="refresh"' in r.text
        await pf.wait_idle(p)
        assert p.ctl.submitted == [(pf.CAFE, pf.SPECIAL_PW, "Kitchen + Hall \u00e9")]
        r = await pf.get(p, "/result")
        assert "Connected to Caf\u00e9 \u2615 &amp; Co." in r.text and "refresh" not in r.text
        assert pf.SPECIAL_PW not in r.text and "ssw" not in r.text  # the password is never echoed
        st = pf.status(p)
        assert st["result"] == wifi.JOINED and st["state"] == "joining" and p.ctl.joined

    _run(body)


def test_other_field_wins_and_open_network():
    async def body(p):
        r = await pf.post(p, "/connect", pf.form(ssid="home", other="open-net", password=""))
        assert r.status == 303
        await pf.wait_idle(p)
        assert p.ctl.submitted == [("open-net", "", None)]
        assert pf.status(p)["result"] == wifi.JOINED

    _run(body)


def test_results_wrong_password_not_found_timeout():
    async def body(p):
        cases = [
            ("home", "not-the-password", wifi.WRONG_PASSWORD, "was not accepted"),
            ("nowhere", "whatever1", wifi.NOT_FOUND, "was not found"),
            ("slow", "slowslow1", wifi.TIMEOUT, "did not answer in time"),
        ]
        for ssid, pw, code, words in cases:
            r = await pf.post(p, "/connect", pf.form(other=ssid, password=pw))
            assert r.status == 303
            await pf.wait_idle(p)
            r = await pf.get(p, "/result")
            assert words in r.text and 'href="/"' in r.text, (ssid, r.text[-600:])
            assert pf.status(p)["result"] == code
            # the last result stays on the main page too (the phone may come back later)
            r = await pf.get(p, "/")
            assert words in r.text

    _run(body)


def test_hostile_ssid_is_escaped_in_results_and_errors():
    async def body(p):
        r = await pf.post(p, "/connect", pf.form(ssid=pf.HOSTILE, password="wrong-one"))
        assert r.status == 303
        await pf.wait_idle(p)
        r = await pf.get(p, "/result")
        assert "<script>" not in r.text and "&lt;script&gt;alert" in r.text
        # refused input: the form again with the reason, nothing submitted, nothing echoed raw
        n = len(p.ctl.submitted)
        r = await pf.post(p, "/connect", pf.form(ssid=pf.HOSTILE, password="short", name="<b>x</b>"))
        assert r.status == 400 and "8 to 63" in r.text and "<b>x</b>" not in r.text and "&lt;b&gt;x" in r.text
        r = await pf.post(p, "/connect", pf.form(ssid="", password="whatever1"))
        assert r.status == 400 and "1 to 32 bytes" in r.text
        r = await pf.post(p, "/connect", pf.form(other="x" * 33, password="whatever1"))
        assert r.status == 400
        assert len(p.ctl.submitted) == n

    _run(body)


def test_post_needs_form_type_same_origin_and_valid_encoding():
    async def body(p):
        r = await pf.post(p, "/connect", pf.form(ssid="home", password="secret-pass"), ctype="text/plain")
        assert r.status == 415
        r = await pf.post(
            p,
            "/connect",
            pf.form(ssid="home", password="secret-pass"),
            extra="Origin: http://evil.example\r\n",
        )
        assert r.status == 403
        r = await pf.post(p, "/connect", b"ssid=%FF%FE&password=secret-pass")
        assert r.status == 400
        r = await pf.post(p, "/connect", "&".join(["a=b"] * 20))
        assert r.status == 400
        assert p.ctl.submitted == []

    _run(body)


def test_oversized_requests_are_refused():
    async def body(p):
        port = p.cfg.portal_port
        # a header the portal does not read may be longer than its line buffer (skipped)
        r = await pf.request(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 3000 + b"\r\n\r\n")
        assert r.status == 302
        r = await pf.request(
            port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: aaaaaaaaaa\r\n" * 500 + b"\r\n"
        )
        assert r.status == 431
        r = await pf.request(port, b"GET / HTTP/1.1\r\nHost: " + b"h" * 600 + b"\r\n\r\n")
        assert r.status == 431
        r = await pf.request(port, b"GET /" + b"a" * 2100 + b" HTTP/1.1\r\n\r\n")
        assert r.status == 414
        r = await pf.post(p, "/connect", "ssid=home&password=" + "x" * 2000)
        assert r.status == 413
        r = await pf.post(
            p, "/api/wifi", json.dumps({"ssid": "home", "password": "y" * 1100}), ctype="application/json"
        )
        assert r.status == 413 and "error" in r.json()
        r = await pf.request(
            port, b"POST /connect HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"
        )
        assert r.status == 400
        r = await pf.request(
            port, b"POST /connect HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        assert r.status == 411
        r = await pf.request(port, b"\x00\xff garbage\r\n\r\n")
        assert r.status == 400
        assert p.ctl.submitted == []
        r = await pf.get(p, "/")  # still serving
        assert r.status == 200

    _run(body)


def test_slow_clients_get_408_and_are_closed():
    # the integration check, over real sockets and real time with wide margins; each limit to the
    # tick, on a clock the test moves: test_portal_deadlines.py
    async def body(p):
        p.head_ms = 300
        port = p.cfg.portal_port
        clk = p.board
        t0 = clk.ticks_ms()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
        await w.drain()
        data = b""
        for _ in range(3):
            chunk = await asyncio.wait_for(r.read(1024), 10)
            if not chunk:
                break
            data += chunk
        took = clk.ticks_diff(clk.ticks_ms(), t0)
        w.close()
        await w.wait_closed()
        assert data.startswith(b"HTTP/1.1 408"), data
        assert took >= 300, took  # never before its time (the portal's clock starts at the accept)
        # a client that connects and says nothing is dropped too, and others are served meanwhile
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        resp = await pf.get(p, "/api/info")
        assert resp.status == 200
        got = await asyncio.wait_for(r2.read(1024), 10)
        assert got == b"" or got.startswith(b"HTTP/1.1 408")
        w2.close()
        await w2.wait_closed()

    _run(body)


def test_no_heap_for_an_answer_asks_to_come_again_and_the_portal_goes_on():
    def no_heap(*args):
        raise MemoryError("memory allocation failed, allocating 795 bytes")

    class NoHeapList:  # the scan list, as the page finds it when its strings find no heap
        __len__ = no_heap

    async def body(p):
        nets = p.ctl.nets
        p.ctl.status = no_heap
        r = await pf.get(p, "/api/status")  # nothing sent yet: a JSON 503
        assert r.status == 503 and r.headers["content-type"] == "application/json", r.raw
        assert r.json() == {"error": "busy, try again"}
        del p.ctl.status
        p.ctl.nets = NoHeapList()
        r = await pf.get(p, "/")  # mid-page: the page ends with a reload
        assert r.status == 200 and r.text.endswith(
            '<meta http-equiv="refresh" content="2"><p>Busy, one moment&hellip;</p>'
        )
        p.ctl.nets = nets

        class NoHeapName:  # the last result's network name, when escaping it finds no heap
            replace = no_heap

        p.ctl.result = (NoHeapName(), wifi.WRONG_PASSWORD, "wrong password")
        r = await pf.get(p, "/")  # before the status line: a 503 page that reloads itself
        assert r.status == 503 and r.headers["content-type"].startswith("text/html"), r.raw
        assert 'http-equiv="refresh"' in r.text
        p.ctl.result = None
        r = await pf.get(p, "/")  # the portal goes on, nothing of the failed requests left loaded
        assert r.status == 200 and "home" in r.text and r.text.endswith("</html>")

    _run(body)


def test_stop_takes_the_socket_and_the_access_point_down():
    # (the idle time, on a clock the test moves: test_portal_deadlines.py)
    async def main():
        p = await pf.start_portal()
        port = p.cfg.portal_port
        import vstate

        ap = vstate.read_json("ap.json")
        assert ap["active"] and ap["essid"] == p.ident.name and ap["secured"]
        r = await pf.get(p, "/generate_204", host="connectivitycheck.gstatic.com")
        assert r.status == 302
        await pf.stop_portal(p)
        assert not vstate.read_json("ap.json")["active"]
        refused = False
        try:
            await pf.request(port, b"GET / HTTP/1.1\r\n\r\n", timeout=1)
        except OSError:
            refused = True
        assert refused

    support.run(main())


def test_open_access_point_when_configured():
    async def main():
        p = await pf.start_portal(ap_open=True)
        import vstate

        ap = vstate.read_json("ap.json")
        await pf.stop_portal(p)
        assert ap["active"] and not ap["secured"]

    support.run(main())


def test_no_heap_even_to_admit_a_connection_gets_come_again_and_the_loop_goes_on():
    # a MemoryError while the accept loop admits a connection (its slot, its first read): that client
    # gets the "come again" 503 at once, and the accept loop is neither failed nor paused
    async def main():
        from twomes import log

        p = await pf.start_portal()
        lines = log.sink = []
        try:
            admit = p.admit

            async def starved(conn):
                p.admit = admit
                raise MemoryError("memory allocation failed, allocating 216 bytes")

            p.admit = starved
            r = await pf.get(p, "/api/info")
            assert r.status == 503 and r.headers["retry-after"] == "1" and p.refused == 1, r.raw
            r = await pf.get(p, "/api/info")
            assert r.status == 200
            assert not [ln for ln in lines if "task failed" in ln], lines
        finally:
            log.sink = None
            await pf.stop_portal(p)

    support.run(main())


def test_a_failing_server_task_is_logged_and_started_again():
    # a MemoryError (or any error) that ends the accept loop: the supervisor logs it and starts the
    # loop again; the listening socket and the connections stay
    async def main():
        from twomes import log

        p = await pf.start_portal()
        lines = log.sink = []
        try:
            clock = p.tick

            def out_of_memory():
                p.tick = clock
                raise MemoryError("memory allocation failed, allocating 416 bytes")

            p.tick = out_of_memory
            await asyncio.sleep(0.1)
            assert [ln for ln in lines if "portal: task failed (MemoryError): started again (1)" in ln], lines
            r = await pf.get(p, "/api/info")
            assert r.status == 200
        finally:
            log.sink = None
            await pf.stop_portal(p)  # no exception

    support.run(main())
