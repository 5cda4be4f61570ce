# The JSON API for a provisioning app (info, networks, wifi, status) and the form/URL decoding helpers.
import asyncio
import json

import portal_fakes as pf

import support
from twomes import wifi
from twomes.ap import form
from twomes.ap import httpd as portal

_JSON = "application/json"


def _run(body):
    async def main():
        p = await pf.start_portal()
        try:
            await body(p)
        finally:
            await pf.stop_portal(p)

    support.run(main())


async def _status_until_done(p):
    for _ in range(250):
        st = (await pf.get(p, "/api/status")).json()
        if not st["busy"]:
            return st
        await asyncio.sleep(0.02)
    raise AssertionError("still busy")


def test_info_and_networks():
    async def body(p):
        r = await pf.get(p, "/api/info")
        assert r.status == 200 and r.headers["content-type"] == _JSON
        assert r.json() == {
            "name": p.ident.name,
            "device_type": "Generic-Test",
            "version": "1.0.0",
            "state": "portal",
        }
        nets = (await pf.get(p, "/api/networks")).json()["networks"]
        assert [n["ssid"] for n in nets] == ["home", pf.CAFE, pf.HOSTILE, "slow", "open-net"]
        assert nets[0] == {"ssid": "home", "rssi": -52, "secured": True}
        assert nets[-1]["secured"] is False
        # a rescan picks up a changed air
        import vstate

        with open(vstate.path("air.json"), "w") as f:
            f.write(json.dumps([{"ssid": "new-one", "password": "abcdefgh", "rssi": -40}]))
        nets = (await pf.get(p, "/api/networks?refresh=1")).json()["networks"]
        assert [n["ssid"] for n in nets] == ["new-one"] and p.ctl.rescans == 1
        r = await pf.get(p, "/api/nothing")
        assert r.status == 404 and "error" in r.json()

    _run(body)


def test_wifi_accepted_then_status_reports_the_result():
    async def body(p):
        p.ctl.hold = True  # the join stays in progress until the second POST was refused
        r = await pf.post(
            p, "/api/wifi", json.dumps({"ssid": pf.CAFE, "password": pf.SPECIAL_PW, "name": "Attic"}), _JSON
        )
        assert r.status == 202 and r.json()["accepted"] is True
        st = (await pf.get(p, "/api/status")).json()
        assert st["busy"] is True and st["state"] == "joining" and st["ssid"] == pf.CAFE
        r = await pf.post(p, "/api/wifi", json.dumps({"ssid": "home", "password": "secret-pass"}), _JSON)
        assert r.status == 409 and "error" in r.json()  # one test at a time
        p.ctl.hold = False
        st = await _status_until_done(p)
        assert st["result"] == wifi.JOINED and st["wifi"] == wifi.JOINED and st["state"] == "joining"
        assert p.ctl.joined and p.ctl.saved == (pf.CAFE, pf.SPECIAL_PW)  # tested, then stored
        assert st["result_ssid"] == pf.CAFE and st["result_text"] == "connected"
        assert p.ctl.submitted == [(pf.CAFE, pf.SPECIAL_PW, "Attic")]
        assert pf.SPECIAL_PW not in json.dumps(st)

    _run(body)


def test_wifi_failures_are_reported():
    async def body(p):
        for ssid, pw, code in (
            ("home", "nope-nope", wifi.WRONG_PASSWORD),
            ("absent", "whatever1", wifi.NOT_FOUND),
            ("slow", "slowslow1", wifi.TIMEOUT),
        ):
            r = await pf.post(p, "/api/wifi", json.dumps({"ssid": ssid, "password": pw}), _JSON)
            assert r.status == 202
            st = await _status_until_done(p)
            assert st["result"] == code and st["result_text"] == wifi.REASONS[code], st

    _run(body)


def test_wifi_input_errors():
    async def body(p):
        cases = [
            (json.dumps({"ssid": "home", "password": "secret-pass"}), "text/plain", 415),
            (
                json.dumps({"ssid": "home", "password": "secret-pass"}),
                "application/x-www-form-urlencoded",
                415,
            ),
            ("{not json", _JSON, 400),
            ("[1, 2]", _JSON, 400),
            (json.dumps({"ssid": 5, "password": "secret-pass"}), _JSON, 400),
            (json.dumps({"ssid": "home", "password": "short"}), _JSON, 400),
            (json.dumps({"ssid": "", "password": "secret-pass"}), _JSON, 400),
            (json.dumps({"ssid": "home", "password": "secret-pass", "name": 7}), _JSON, 400),
            (json.dumps({"ssid": "home", "password": "secret-pass", "name": "n" * 40}), _JSON, 400),
        ]
        for body_, ctype, status in cases:
            r = await pf.post(p, "/api/wifi", body_, ctype)
            assert r.status == status, (body_, r.raw)
            assert isinstance(r.json()["error"], str)
        r = await pf.post(p, "/api/wifi", json.dumps({"ssid": "home", "password": "short"}), _JSON)
        assert "8 to 63" in r.json()["error"]
        assert p.ctl.submitted == []

    _run(body)


def test_a_crashing_credential_test_becomes_a_failed_result_and_setup_goes_on():
    async def body(p):
        async def crash(ssid, password):
            raise RuntimeError("boom")

        join = p.ctl._join
        p.ctl._join = crash
        r = await pf.post(p, "/api/wifi", json.dumps({"ssid": "home", "password": "secret-pass"}), _JSON)
        assert r.status == 202
        st = await _status_until_done(p)
        assert st["result"] == wifi.FAILED and st["state"] == "portal" and not st["busy"]
        r = await pf.get(p, "/result")
        assert "Could not connect" in r.text
        p.ctl._join = join  # the next test runs normally
        await pf.post(p, "/connect", pf.form(ssid="home", password="secret-pass"))
        st = await _status_until_done(p)
        assert st["result"] == wifi.JOINED

    _run(body)


def test_unquote_and_form_parsing():
    u = form.unquote
    assert u(b"a+b") == "a b" and u(b"%26%25%2B%40%23%24%3B") == "&%+@#$;"
    assert u(b"caf%C3%A9") == "caf\u00e9" and u(b"100%") == "100%" and u(b"%zz%4") == "%zz%4"
    assert u(b"plain") == "plain" and u(b"") == ""
    support.raises(ValueError, u, b"%FF")
    f = form.parse_form(
        b"ssid=a%26b&password=p%2Bq+r&x=1&ssid=second&novalue", ("ssid", "password", "novalue")
    )
    assert f == {"ssid": "a&b", "password": "p+q r", "novalue": ""}
    assert form.parse_form(pf.form(password=pf.SPECIAL_PW), ("password",)) == {"password": pf.SPECIAL_PW}
    support.raises(ValueError, form.parse_form, b"&" * 20, ("a",))


def test_escape():
    e = portal.escape
    assert e("a&b<c>d\"e'f") == "a&amp;b&lt;c&gt;d&quot;e&#39;f"
    assert e("plain \u2615") == "plain \u2615"
