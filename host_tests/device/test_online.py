# The online phase against a scripted server on 127.0.0.1 (both runtimes): activation and
# re-activation, uploads that follow the server's device type, and a server that misbehaves in every
# way a server can - none of it may crash the app, hold it past its deadline or lose measurements.
import asyncio
import json

from fakeserver import Reply

import support
from twomes import store
from twomes.errors import Error
from twomes.online import http, phase, running

TOKEN = "Mw.session-token-1"
DATE = "Wed, 25 Nov 2026 10:00:00 GMT"


_go = support.go
_lines = support.lines


def _active(app, on):
    on.session = TOKEN
    app.st.put(store.SESSION, TOKEN)
    app.st.commit()
    on.sync(DATE)


# ---- activation ------------------------------------------------------------------------------------


def test_activation_waits_for_registration_then_owner():
    answers = [
        Reply(404, {"detail": "No device found for provided activation token"}),
        Reply(404, {"detail": "No device found for provided activation token"}),
        Reply(403, {"detail": "Device not attached to account"}),
        Reply(403, {"detail": "Device not attached to account"}),
        Reply(200, {"session_token": TOKEN}),
    ]

    async def body(app, on, srv):
        await asyncio.wait_for(phase.activate(app, on), 10)
        assert app.st.get(store.SESSION) == TOKEN and on.session == TOKEN
        assert [r[1] for r in srv.requests] == ["/device/activate"] * 5
        sent = json.loads(srv.requests[0][3])
        assert sent == {"activation_token": app.ident.activation_token}
        assert "authorization" not in srv.requests[0][2]
        assert len(_lines("not registered on the server yet")) == 1  # one hint, not one per retry
        assert len(_lines("not attached to an owner")) == 1
        assert not [ln for ln in support.logged() if TOKEN in ln]  # the token is never logged

    _go(lambda m, p, h, b: answers.pop(0), body)


def test_activation_survives_server_errors_and_bad_answers():
    seen_sessions = []
    answers = [
        Reply(500, b"Internal Server Error"),
        Reply(200, b"this is not json"),
        Reply(200, {"no": "token"}),
        Reply(200, {"session_token": 12345}),
        Reply(200, {"session_token": "abc\r\nX-Injected: 1"}),  # would split a header line
        Reply(raw=b"garbage\r\n\r\n"),
        Reply(200, {"session_token": TOKEN}),
    ]

    async def body(app, on, srv):
        def handler(m, p, h, b):
            seen_sessions.append(app.st.get(store.SESSION))
            return answers.pop(0)

        srv.handler = handler
        await asyncio.wait_for(phase.activate(app, on), 10)
        assert seen_sessions == [None] * 7  # nothing stored from a bad answer
        assert app.st.get(store.SESSION) == TOKEN

    _go(None, body)


def test_activation_retries_after_timeout():
    answers = [Reply(200, {"session_token": TOKEN}, stall=1.5), Reply(200, {"session_token": TOKEN})]

    async def body(app, on, srv):
        await asyncio.wait_for(phase.activate(app, on), 10)
        assert app.st.get(store.SESSION) == TOKEN and len(srv.requests) == 2
        assert _lines("no answer: timeout")

    _go(lambda m, p, h, b: answers.pop(0), body, http_timeout_s=0.5)


def test_every_activation_replaces_the_stored_token():
    tokens = ["Mw.first-token-1", "Mw.second-token-2"]

    async def body(app, on, srv):
        await on.activate()
        assert app.st.get(store.SESSION) == "Mw.first-token-1"
        await on.activate()
        assert app.st.get(store.SESSION) == "Mw.second-token-2" == on.session

    _go(lambda m, p, h, b: Reply(200, {"session_token": tokens.pop(0)}), body)


def test_revoked_session_reactivates_and_retries_once():
    uploads = []

    def handler(m, p, h, b):
        if p == "/device/activate":
            return Reply(200, {"session_token": "Mw.second-token-2"})
        uploads.append(h.get("authorization"))
        if len(uploads) == 1:
            return Reply(401, {"detail": "Invalid device session token"})
        return Reply(200, {"size": 1})

    async def body(app, on, srv):
        _active(app, on)
        running.measure(app, on, "heartbeat", "1")
        app.set_state("activating")  # what the running loop shows after a refused session
        await running.upload(app, on)
        assert uploads == ["Bearer " + TOKEN, "Bearer Mw.second-token-2"]
        assert app.st.get(store.SESSION) == "Mw.second-token-2"
        assert app.state == "running"  # uploads work again: state and LED say so at once

    _go(handler, body)


def test_401_forever_backs_off_and_never_reboots():
    async def body(app, on, srv):
        _active(app, on)
        running.measure(app, on, "heartbeat", "1")
        for _ in range(3):
            try:
                await running.upload(app, on)
                raise AssertionError("accepted")
            except Error as e:
                assert e.status == 401
        assert len(app.queue) == 1  # kept for later

    def handler(m, p, h, b):
        if p == "/device/activate":
            return Reply(200, {"session_token": "Mw.again-token-3"})
        return Reply(401, {"detail": "Invalid device session token"})

    _go(handler, body)


# ---- uploads ---------------------------------------------------------------------------------------


def test_upload_payload_is_twomes_variable_interval():
    got = []

    def handler(m, p, h, b):
        got.append((p, json.loads(b)))
        return Reply(200, {"size": 2})

    async def body(app, on, srv):
        _active(app, on)
        running.measure(app, on, "booted_fw", "1.0.0")
        running.measure(app, on, "heartbeat", "1")
        await running.upload(app, on)
        path, payload = got[0]
        assert path == "/device/measurements/variable-interval"
        assert isinstance(payload["upload_time"], int) and payload["upload_time"] >= 1795600000
        props = {pm["property_name"]: pm["measurements"] for pm in payload["property_measurements"]}
        assert props["booted_fw"][0]["value"] == "1.0.0" and props["heartbeat"][0]["value"] == "1"
        assert isinstance(props["heartbeat"][0]["timestamp"], int)
        assert app.queue == []

    _go(handler, body)


def test_failed_upload_keeps_measurements_bounded():
    async def body(app, on, srv):
        _active(app, on)
        for i in range(8):
            running.measure(app, on, "heartbeat", str(i))
        try:
            await running.upload(app, on)
            raise AssertionError("upload should fail")
        except Error as e:
            assert e.status == 503 and str(e) == "HTTP 503 down"
        assert len(app.queue) == 5 and app.queue[0][3] == "3"  # bounded: the oldest went first

    _go(lambda m, p, h, b: Reply(503, {"detail": "down"}), body, queue_max=5)


def _twomes_type(props):
    """A Twomes server whose device type knows only `props`: whole-batch 400 for anything else."""
    stored = []

    def handler(m, p, h, b):
        if p == "/device":
            return Reply(
                200,
                {
                    "id": 1,
                    "name": "TWOMES-D3AD48",
                    "device_type": {"name": "T"},
                    "properties": [{"name": n, "unit": ""} for n in props],
                },
            )
        if p.startswith("/device/firmware"):
            return Reply(404, {"detail": "Not Found"})
        sent = json.loads(b)["property_measurements"]
        bad = [pm["property_name"] for pm in sent if pm["property_name"] not in props]
        if bad:
            return Reply(
                400, {"detail": "Invalid property name(s): {%s}" % ", ".join("'%s'" % n for n in bad)}
            )
        for pm in sent:
            stored.extend((pm["property_name"], x["value"]) for x in pm["measurements"])
        return Reply(200, {"size": len(stored)})

    return handler, stored


def test_uploads_follow_the_device_types_properties():
    handler, stored = _twomes_type(["heartbeat"])

    async def body(app, on, srv):
        _active(app, on)
        await running.learn(on)
        assert on.props == ["heartbeat"]
        running.measure(app, on, "booted_fw", "1.0.0")
        running.measure(app, on, "heartbeat", "1")
        await running.upload(app, on)
        assert stored == [("heartbeat", "1")] and app.queue == []
        assert len(_lines("has no property booted_fw")) == 1
        assert [r[1] for r in srv.requests].count("/device/measurements/variable-interval") == 1

    _go(handler, body)


def test_a_400_naming_properties_is_resent_without_them():
    handler, stored = _twomes_type(["heartbeat", "batteryVoltage"])

    async def body(app, on, srv):
        _active(app, on)  # GET /device never asked: the 400 teaches the device
        running.measure(app, on, "booted_fw", "1.0.0")
        running.measure(app, on, "heartbeat", "1")
        running.measure(app, on, "batteryVoltage", "3.3")
        await running.upload(app, on)
        assert sorted(stored) == [("batteryVoltage", "3.3"), ("heartbeat", "1")] and app.queue == []
        running.measure(app, on, "booted_fw", "1.0.1")  # not sent again: no 400 this time
        running.measure(app, on, "heartbeat", "1")
        n = len(srv.requests)
        await running.upload(app, on)
        assert len(srv.requests) == n + 1

    _go(handler, body)


def test_a_400_that_names_nothing_drops_only_that_batch():
    calls = []

    def handler(m, p, h, b):
        calls.append(p)
        if len(calls) == 1:
            return Reply(400, {"detail": "Invalid measurement"})
        return Reply(200, {"size": 1})

    async def body(app, on, srv):
        _active(app, on)
        for i in range(25):  # two batches: 20 + 5
            running.measure(app, on, "heartbeat", str(i))
        await running.upload(app, on)
        assert app.queue == [] and len(calls) == 2
        assert len(_lines("server refused 20 measurement(s)")) == 1

    _go(handler, body)


# ---- a server that misbehaves ------------------------------------------------------------------------


def _refused(reply, word, timeout=2, within=None, **settings):
    """One API call against `reply`: an Error (status 0) that says `word`, within `within` seconds."""

    async def body(app, on, srv):
        _active(app, on)
        t0 = app.board.ticks_ms()
        try:
            await on.call("GET", "/device")
            raise AssertionError("accepted")
        except Error as e:
            assert e.status == 0 and word in str(e), str(e)
        took = app.board.ticks_diff(app.board.ticks_ms(), t0) / 1000
        assert within is None or took < within, took

    _go(lambda m, p, h, b: reply, body, http_timeout_s=timeout, **settings)


def test_json_bombs_are_refused_before_parsing():
    _refused(Reply(200, b"[" * 2000), "nested too deeply")
    _refused(Reply(200, ("[" + "1," * 999 + "1]").encode()), "too many values")
    _refused(Reply(200, b'{"a":' * 340 + b"1" + b"}" * 340), "nested too deeply")

    # brackets inside strings do not count
    async def body(app, on, srv):
        _active(app, on)
        assert await on.call("GET", "/device") == {"a": "[[[[[[[[[[[[", "b": '"[[[[[[[[[[['}

    _go(lambda m, p, h, b: Reply(200, b'{"a": "[[[[[[[[[[[[", "b": "\\"[[[[[[[[[[["}'), body)


def test_stalled_and_reset_bodies_are_errors_not_crashes():
    _refused(Reply(200, b'{"a": 1}' + b" " * 1992, truncate=10, stall=0), "closed after 10 of 2000")
    _refused(Reply(200, b"x" * 2000, drip=(10, 5)), "timeout", timeout=1, within=4)
    _refused(Reply(200, b"x" * 2000, truncate=10, reset=True), "")


def test_a_dripped_head_is_cut_by_the_request_deadline():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"X-Slow: yes\r\n" * 20 + b"\r\n{}"
    # one byte every 0.3 s never trips the 1 s silence limit; the whole request gets 3 x 1 s
    _refused(Reply(raw=head, drip=(1, 0.3)), "too long", timeout=1, within=6)


def test_no_server_at_all_is_an_error():
    async def body(app, on, srv):
        await srv.stop()
        for _ in range(2):
            try:
                await on.call("GET", "/device")
                raise AssertionError("accepted")
            except Error as e:
                assert e.status == 0 and "connect" in str(e)

    _go(None, body)


def test_plain_http_needs_the_lab_setting():
    async def body(app, on, srv):
        app.cfg.allow_http = False
        try:
            await on.call("GET", "/device")
            raise AssertionError("plain http allowed")
        except Error as e:
            assert e.status == 0 and "plain http refused" in str(e)
        assert srv.requests == []  # nothing (no token) was sent

    _go(lambda m, p, h, b: Reply(200, {}), body)


def test_server_text_reaches_the_console_escaped():
    async def body(app, on, srv):
        _active(app, on)
        try:
            await on.call("GET", "/device")
        except Error as e:
            assert "\n" not in str(e) and "\x1b" not in str(e) and "FAKE" in str(e)
        await asyncio.wait_for(phase.activate(app, on), 5)
        assert not [ln for ln in support.logged() if "\x1b" in ln or "\n" in ln]

    answers = [
        Reply(418, {"detail": "x\n[   9.999] firmware: FAKE\x1b[2J"}),
        Reply(418, {"detail": "y\n[   9.999] firmware: FAKE\x1b[2J"}),
        Reply(200, {"session_token": TOKEN}),
    ]
    _go(lambda m, p, h, b: answers.pop(0), body)


def test_http_client_bounds():
    async def body(app, on, srv):
        # a response head larger than the buffer
        srv.handler = lambda m, p, h, b: Reply(raw=b"HTTP/1.1 200 OK\r\nX: " + b"a" * 3000 + b"\r\n\r\n")
        try:
            resp = await http.request("GET", srv.url + "/", timeout_s=2)
            await resp.close()
            raise AssertionError("accepted an oversized head")
        except Error as e:
            assert e.status == 0 and "too large" in str(e)  # 0: no (readable) answer
        # a body larger than the caller's limit
        srv.handler = lambda m, p, h, b: Reply(200, b"x" * 5000)
        resp = await http.request("GET", srv.url + "/", timeout_s=2)
        try:
            await resp.json(1000)
            raise AssertionError("accepted an oversized body")
        except Error as e:
            assert e.status == 0
        finally:
            await resp.close()
        # https without a CA: refused before connecting
        try:
            await http.request("GET", "https://127.0.0.1:1/", timeout_s=2)
            raise AssertionError("https without a CA")
        except Error as e:
            assert "without a CA" in str(e)

    _go(None, body)


def test_http_request_head_as_the_url_says():
    # the URL's parts, without a string per part: host, port, where the path starts
    assert http.split_url("http://127.0.0.1:8000/a/b/?x=1") == (False, "127.0.0.1", 8000, 21)
    assert http.split_url("https://example.org") == (True, "example.org", 443, 19)
    assert http.split_url("http://[::1]:8000/x") == (False, "::1", 8000, 17)
    assert http.split_url("https://[::1]/x") == (True, "::1", 443, 13)
    for bad in (
        "ftp://h/",
        "http://",
        "http://:80/",
        "http://h:0/",
        "http://h:99999/",
        "http://h:x/",
        "http://[::1/",
        "http://[::1]x/",
        "http://hé/",
    ):
        try:
            http.split_url(bad)
            raise AssertionError("accepted " + bad)
        except ValueError:
            pass

    async def body(app, on, srv):
        # path and query as given (a trailing slash too); Host is the URL's authority; the extra header
        # lines and the body's length follow the fixed ones
        resp = await http.request("POST", srv.url + "/a/b/?x=1", "X-One: 1\r\n", b"{}", 2, bytearray(1024))
        try:
            assert resp.status == 200 and await resp.json(100) == {"ok": True}
        finally:
            await resp.close()
        method, path, headers, sent = srv.requests[-1]
        assert (method, path, sent) == ("POST", "/a/b/?x=1", b"{}")
        assert headers["host"] == "127.0.0.1:%d" % srv.port and headers["x-one"] == "1"
        assert headers["content-length"] == "2" and headers["connection"] == "close"
        # a request head that does not fit the head buffer: refused before connecting
        n = len(srv.requests)
        try:
            await http.request("GET", srv.url + "/", "X-Big: %s\r\n" % ("a" * 1000), None, 2, bytearray(1024))
            raise AssertionError("sent a head larger than the buffer")
        except Error as e:
            assert e.status == 0 and "head buffer" in str(e)
        assert len(srv.requests) == n

    _go(lambda m, p, h, b: Reply(200, {"ok": True}), body)


def test_time_comes_from_the_server_date_header():
    from twomes.online.server import parse_http_date

    assert parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT") == 0
    assert parse_http_date("Wed, 01 Mar 2000 00:00:00 GMT") == 11017 * 86400
    assert parse_http_date("Wed, 25 Nov 2026 10:00:00 GMT") == 1795600800
    assert parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT") == 1709251199
    for bad in (
        "",
        "yesterday",
        "Wed, 25 Nov 2026 10:00:00 CET",
        "Wed, 32 Nov 2026 10:00:00 GMT",
        "Wed, 25 Foo 2026 10:00:00 GMT",
        "Wed, 25 anF 2026 10:00:00 GMT",
        "Wed, 25 Ja 2026 10:00:00 GMT",
        "Wed, 25 Nov 2026 25:00:00 GMT",
    ):
        assert parse_http_date(bad) is None, bad


def test_unknown_property_names_are_read_from_a_twomes_400():
    assert running.unknown_names("Invalid property name(s): {'booted_fw'}") == ["booted_fw"]
    assert running.unknown_names("Invalid property name(s): {'a', \"b\"}") == ["a", "b"]
    assert running.unknown_names("Invalid measurement") == []
