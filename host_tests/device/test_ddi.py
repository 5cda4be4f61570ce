# The update seam over Eclipse hawkBit DDI (twomes/online/ddi.py) against a scripted DDI server on
# 127.0.0.1 (both runtimes): the polling interval, deployments (plain artifacts and SWUpdate archives),
# malformed answers refused with a clear error, feedback bodies, cancelAction, Range resume.
import hashlib
import json
import os

from fakeserver import FakeServer, Reply

import support
from twomes import VERSION
from twomes.errors import Error
from twomes.online import ddi, phase

TOKEN = "t0k3n-of-this-target"
ROOT = "/DEFAULT/controller/v1/"


def _hex(blob):
    from twomes.update import bundle

    return bundle.hexdigest(hashlib.sha256(blob))


def _member(name, data):
    n = name.encode() + b"\x00"
    head = b"070701" + b"".join(
        b"%08x" % v for v in (1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n), 0)
    )
    out = head + n
    out += b"\x00" * (-len(out) % 4) + data
    return out + b"\x00" * (-len(out) % 4)


def swu(payload, version="9.9.9", name="twomes-9.9.9.bundle", manifest=None, sha=None):
    """An SWUpdate archive (cpio newc) as `twomes release` builds one for gooseBit."""
    desc = 'software = {\n  version = "%s";\n  images: ( { filename = "%s"; sha256 = "%s"; } );\n};\n' % (
        version,
        name,
        sha or _hex(payload),
    )
    out = _member("sw-description", desc.encode())
    if manifest is not None:
        out += _member(name + ".manifest.json", manifest.encode())
    return out + _member(name, payload) + _member("TRAILER!!!", b"")


class Ddi:
    """A scripted DDI server: the controller resource, one deployment, its artifact (with Range)."""

    def __init__(self, blob, name="twomes-9.9.9.bundle", version="9.9.9", sleep="00:05:00", ranges=True):
        self.blob, self.name, self.version, self.sleep, self.ranges = blob, name, version, sleep, ranges
        self.action = 17
        self.cancel = None
        self.deploy = None  # replaces the deployment answer
        self.feedback = []  # (path, body)
        self.config = []
        self.links = None
        self.manifest = None  # bytes: a manifest artifact next to the release file

    def controller(self, url):
        links = {}
        if self.cancel is not None:
            links["cancelAction"] = {"href": url + ROOT + "dev/cancelAction/%d" % self.cancel}
        elif self.action is not None:
            links["deploymentBase"] = {"href": url + ROOT + "dev/deploymentBase/%d" % self.action}
        once, self.links = self.links, None  # a test's links are for one poll
        return {"config": {"polling": {"sleep": self.sleep}}, "_links": once or links}

    def deployment(self, url):
        if self.deploy is not None:
            return self.deploy
        art = {
            "filename": self.name,
            "size": len(self.blob),
            "hashes": {"sha1": "0" * 40},
            "_links": {
                "download-http": {"href": url + ROOT + "dev/softwaremodules/1/artifacts/" + self.name}
            },
        }
        if not self.name.endswith(".swu"):
            art["hashes"]["sha256"] = _hex(self.blob)
        arts = [art]
        if self.manifest is not None:  # the signed manifest as a second artifact of the chunk
            arts.append(
                {
                    "filename": self.name + ".manifest.json",
                    "size": len(self.manifest),
                    "hashes": {},
                    "_links": {"download": {"href": url + ROOT + "dev/softwaremodules/1/artifacts/m.json"}},
                }
            )
        return {
            "id": str(self.action),
            "deployment": {
                "download": "forced",
                "update": "forced",
                "chunks": [{"part": "os", "version": self.version, "name": "twomes", "artifacts": arts}],
            },
        }

    def handler(self, url):
        def handle(m, p, h, b):
            if h.get("authorization") != "TargetToken " + TOKEN:
                return Reply(401, {"message": "no token"})
            name = ROOT + "dev"
            if m == "GET" and p == name:
                return Reply(200, self.controller(url()))
            if m == "PUT" and p == name + "/configData":
                self.config.append(json.loads(b))
                return Reply(200, b"")
            if m == "GET" and p == name + "/deploymentBase/%s" % self.action:
                return Reply(200, self.deployment(url()))
            if m == "GET" and self.cancel is not None and p == name + "/cancelAction/%d" % self.cancel:
                return Reply(200, {"id": str(self.cancel), "cancelAction": {"stopId": str(self.action)}})
            if m == "POST" and p.endswith("/feedback"):
                self.feedback.append((p, json.loads(b)))
                return Reply(200, b"")
            if m == "GET" and p == name + "/softwaremodules/1/artifacts/m.json":
                return Reply(200, self.manifest)
            if m == "GET" and p.startswith(name + "/softwaremodules/1/artifacts/"):
                rng = h.get("range")
                if rng and self.ranges:
                    a, _, z = rng[6:].partition("-")
                    a, z = int(a), int(z) if z else len(self.blob) - 1
                    z = min(z, len(self.blob) - 1)
                    return Reply(
                        206,
                        self.blob[a : z + 1],
                        {"Content-Range": "bytes %d-%d/%d" % (a, z, len(self.blob))},
                    )
                return Reply(200, self.blob)
            return Reply(404, {"message": "no such resource"})

        return handle


def _go(server, body, **settings):
    d = support.new_board()
    os.chdir(d)
    support.logged().clear()

    async def main():
        srv = await FakeServer(None).start()
        srv.handler = server.handler(lambda: srv.url)
        try:
            cfg = {"updates": "hawkbit", "ddi_url": srv.url, "ddi_token": TOKEN}
            for k in settings:
                cfg[k] = settings[k]
            app, on = support.make_app(srv.url, **cfg)
            app.ident.name = "dev"
            await body(app, ddi.Ddi(app), srv)
        finally:
            await srv.stop()

    support.run(main())


async def _read(resp):
    out = b""
    buf = bytearray(100)  # smaller than the file: several reads
    while True:
        n = await resp.readinto(memoryview(buf))
        if not n:
            return out
        out += bytes(buf[:n])


def test_polling_interval():
    assert ddi.parse_sleep("00:01:00") == 60
    assert ddi.parse_sleep("12:34:56") == 12 * 3600 + 34 * 60 + 56
    assert ddi.parse_sleep("0:0:5") == 5
    for bad in ("", "60", "00:60:00", "00:00:60", "aa:bb:cc", "1:2", "00:01:00:00", "-1:00:00", None, 60):
        assert ddi.parse_sleep(bad) is None, bad


def test_plain_artifact_is_a_release_and_the_interval_is_kept():
    blob = os.urandom(3000)
    server = Ddi(blob, name="twomes-9.9.9.bin", sleep="00:02:30")

    async def body(app, upd, srv):
        rel = await upd.target()
        assert upd.sleep_s == 150
        assert rel == {
            "version": "9.9.9",
            "kind": "image",
            "size": 3000,
            "sha256": _hex(blob),
            "url": ROOT + "dev/softwaremodules/1/artifacts/twomes-9.9.9.bin",
            "id": 17,
            "action": "17",
            "skip": 0,
        }
        resp, got = await upd.open_release(rel, 0)
        try:
            assert got == 0 and resp.length == 3000
            assert await _read(resp) == blob
        finally:
            await resp.close()
        assert "range" not in srv.requests[-1][2]
        assert not [ln for ln in support.logged() if TOKEN in ln]  # the token is never logged

    _go(server, body)


def test_swu_archive_gives_the_release_file_inside_it():
    payload = os.urandom(2500)
    blob = swu(payload, manifest='{"manifest": "{\\"signed\\":1}", "signature": "ab"}')
    server = Ddi(blob, name="twomes-9.9.9.swu")

    async def body(app, upd, srv):
        rel = await upd.target()
        assert rel["kind"] == "bundle" and rel["size"] == 2500 and rel["sha256"] == _hex(payload)
        assert rel["manifest"] == '{"signed":1}' and rel["signature"] == "ab"
        assert blob[rel["skip"] : rel["skip"] + rel["size"]] == payload
        assert srv.requests[-1][2]["range"] == "bytes=0-2047"  # only the head was asked for
        resp, got = await upd.open_release(rel, 0)
        try:
            assert got == 0 and resp.length == 2500 and await _read(resp) == payload
        finally:
            await resp.close()
        assert srv.requests[-1][2]["range"] == "bytes=%d-%d" % (rel["skip"], rel["skip"] + 2499)
        # a server without ranges: the archive comes whole, the file is cut out of it
        server.ranges = False
        resp, got = await upd.open_release(rel, 0)
        try:
            assert got == 0 and resp.length == 2500 and await _read(resp) == payload
        finally:
            await resp.close()
        # a chunked answer would hand the installer the chunk framing: refused
        srv.handler = lambda m, p, h, b: Reply(200, blob, {"Transfer-Encoding": "chunked"})
        e = await _error(upd.open_release(rel, 0))
        assert e.status == 0 and "chunked downloads are not supported" in str(e)

    _go(server, body)


def test_range_resume():
    payload = os.urandom(4000)
    for name, blob in (("twomes-9.9.9.bin", payload), ("twomes-9.9.9.swu", swu(payload, name="a.bin"))):
        server = Ddi(blob, name=name)

        async def body(app, upd, srv, server=server):
            rel = await upd.target()
            resp, got = await upd.open_release(rel, 1500)
            try:
                assert got == 1500 and resp.length == 2500
                assert resp.headers["content-range"] == "bytes 1500-3999/4000"  # in the file's terms
                assert await _read(resp) == payload[1500:]
            finally:
                await resp.close()
            skip = rel["skip"]
            assert srv.requests[-1][2]["range"] == "bytes=%d-%d" % (skip + 1500, skip + 3999)
            server.ranges = False  # the range ignored: from the start
            resp, got = await upd.open_release(rel, 1500)
            try:
                assert got == 0 and resp.length == 4000 and await _read(resp) == payload
            finally:
                await resp.close()

        _go(server, body)


def test_malformed_answers_are_refused_with_a_clear_error():
    blob = os.urandom(100)
    good = Ddi(blob, name="f.bin").deployment("http://127.0.0.1:1")

    def variant(path, value):
        d = json.loads(json.dumps(good))
        node = d
        for k in path[:-1]:
            node = node[k]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return d

    A = ("deployment", "chunks", 0, "artifacts", 0)
    cases = [
        ([1, 2], "no action id"),
        (variant(("id",), "x7"), "no action id"),
        (variant(("deployment",), KeyError), "no deployment"),
        (variant(("deployment", "chunks"), []), "no chunks"),
        (variant(("deployment", "chunks", 0, "version"), 7), "chunk has no version"),
        (variant(("deployment", "chunks", 0, "artifacts"), "x"), "chunk has no artifacts"),
        (variant(A, "x"), "artifact is not an object"),
        (variant(A + ("size",), -4), "artifact has no size"),
        (variant(A + ("size",), True), "artifact has no size"),
        (variant(A + ("hashes",), {"sha256": "ab"}), "artifact has no sha256"),
        (variant(A + ("hashes",), {"sha256": "G" * 64}), "artifact has no sha256"),
        (variant(A + ("_links",), {}), "artifact has no download link"),
        (variant(A + ("_links",), {"download": {"href": "ftp://x/y/z/w"}}), "link is not http(s)"),
        (variant(A + ("filename",), ""), "artifact has no filename"),
    ]
    server = Ddi(blob, name="f.bin")

    async def body(app, upd, srv):
        for answer, words in cases:
            server.deploy = answer
            await _refused(upd.target(), words)
        server.deploy = None
        for blob2, words in (
            (b"not a cpio archive" * 10, "not an SWU archive"),
            (swu(blob, sha="zz"), "names no version or sha256"),
            (swu(blob, version="1.0"), "sw-description says version 1.0"),
            (_member("other", b"x") + _member("TRAILER!!!", b""), "no sw-description first"),
        ):
            server.blob, server.name = blob2, "f.swu"
            await _refused(upd.target(), words)
        server.links = {"deploymentBase": {"href": 5}}
        await _refused(upd.target(), "controller has no deploymentBase link")
        server.links = None
        server.deploy = None
        srv.handler = lambda m, p, h, b: Reply(200, b"[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]")
        e = await _error(upd.target())
        assert e.status == 0 and "nested too deeply" in str(e)

    _go(server, body)


async def _error(coro):
    try:
        await coro
    except Error as e:
        return e
    raise AssertionError("no Error")


async def _refused(coro, words):
    e = await _error(coro)
    assert e.status == -1 and words in str(e), (words, str(e))


def test_feedback_bodies_and_confirmation():
    blob = os.urandom(500)
    server = Ddi(blob, name="f.bin")

    async def body(app, upd, srv):
        rel = await upd.target()
        await upd.report(rel, True, ["downloading"])
        await upd.report(rel, False, ["sha256 mismatch\r\nX-Evil: 1"])
        path = ROOT + "dev/deploymentBase/17/feedback"
        assert server.feedback == [
            (
                path,
                {
                    "id": "17",
                    "status": {
                        "execution": "proceeding",
                        "result": {"finished": "none"},
                        "details": ["downloading"],
                    },
                },
            ),
            (
                path,
                {
                    "id": "17",
                    "status": {
                        "execution": "closed",
                        "result": {"finished": "failure"},
                        "details": ["sha256 mismatch??X-Evil: 1"],
                    },
                },
            ),
        ]
        del server.feedback[:]
        await upd.confirm("1.2.3")  # the open action is for another version: nothing to confirm
        assert server.feedback == []
        await upd.confirm("9.9.9")
        assert server.feedback == [
            (
                path,
                {
                    "id": "17",
                    "status": {
                        "execution": "closed",
                        "result": {"finished": "success"},
                        "details": ["running 9.9.9"],
                    },
                },
            )
        ]
        # an open action for the version that runs (its confirmation was lost) is closed by the check
        del server.feedback[:]
        server.version = VERSION
        assert await upd.target() is None
        assert server.feedback[0][1]["status"]["result"]["finished"] == "success"
        server.action = None
        await upd.confirm("9.9.9")  # no open action at all: nothing to send
        assert len(server.feedback) == 1

    _go(server, body)


def test_cancel_is_acknowledged_and_gives_no_target():
    server = Ddi(os.urandom(100), name="f.bin")
    server.cancel = 21

    async def body(app, upd, srv):
        assert await upd.target() is None
        assert upd.cancelled == "17"
        assert server.feedback == [
            (
                ROOT + "dev/cancelAction/21/feedback",
                {
                    "id": "21",
                    "status": {
                        "execution": "closed",
                        "result": {"finished": "success"},
                        "details": ["cancelled on the device"],
                    },
                },
            )
        ]

    _go(server, body)


def test_a_saved_release_is_still_wanted_until_its_action_is_cancelled():
    server = Ddi(os.urandom(100), name="f.bin")

    async def body(app, upd, srv):
        rel = await upd.target()
        assert await upd.wanted(rel) is True
        server.action = 18  # the server moved on to another action
        assert await upd.wanted(rel) is False
        server.action = 17
        server.cancel = 30
        assert await upd.wanted(rel) is False
        assert server.feedback[-1][0] == ROOT + "dev/cancelAction/30/feedback"
        assert server.feedback[-1][1]["status"]["execution"] == "closed"

    _go(server, body)


def test_config_data_is_sent_when_asked_and_the_token_stays_home():
    blob = os.urandom(100)
    server = Ddi(blob, name="f.bin")

    async def body(app, upd, srv):
        server.links = {"configData": {"href": srv.url + ROOT + "dev/configData"}}
        assert (await upd.target())["version"] == "9.9.9"  # polled again at once after the answer
        assert [r[0] for r in srv.requests] == ["GET", "PUT", "GET", "GET"]
        assert server.config == [
            {
                "mode": "merge",
                "data": {"hw_boardname": "Generic-Test", "hw_revision": "default", "sw_version": VERSION},
            }
        ]
        # an artifact on another host (a CDN) gets no token
        assert upd._auth("http://127.0.0.2:9/x") == ""
        assert upd._auth(srv.url + "/x") == "Authorization: TargetToken " + TOKEN + "\r\n"
        assert upd._auth(srv.url + "0/x") == ""  # another port is another host

    _go(server, body)


def test_gateway_token_and_plain_http_refusal():
    server = Ddi(os.urandom(100), name="f.bin")

    async def body(app, upd, srv):
        assert upd._auth(srv.url + "/x").startswith("Authorization: GatewayToken ")
        app.cfg.allow_http = False
        e = await _error(upd.target())
        assert "plain http refused" in str(e)

    _go(server, body, ddi_token_kind="GatewayToken")


def test_online_phase_takes_its_updates_from_ddi():
    blob = os.urandom(700)
    server = Ddi(blob, name="f.bin")
    rel = support.sign({"kind": "image", "version": "9.9.9", "size": 700, "sha256": _hex(blob)})
    server.manifest = json.dumps({"manifest": rel["manifest"], "signature": rel["signature"]}).encode()

    async def body(app, upd, srv):
        from twomes.online.server import Server

        on = Server(app)
        got = phase.updates(app, on)
        assert isinstance(got, ddi.Ddi)
        app.cfg.updates = "twomes"
        assert phase.updates(app, on) is on
        assert await phase.firmware(app, got, False) is True  # the job is saved for the next boot
        from twomes.update import state

        job = state.job()
        assert job["version"] == "9.9.9" and job["action"] == "17" and job["counter"] == 1
        assert server.feedback[-1][1]["status"]["execution"] == "proceeding"

    _go(server, body)


def test_ddi_needs_its_url():
    d = support.new_board()
    os.chdir(d)
    app, _ = support.make_app("http://127.0.0.1:1", updates="hawkbit")
    e = support.raises(Error, ddi.Ddi, app)
    assert "no ddi_url" in str(e)


def test_config_keys():
    from twomes import config

    cfg = config.defaults()
    assert cfg.updates == "twomes" and cfg.ddi_url == "" and cfg.ddi_token_kind == "TargetToken"
    config.update(
        cfg,
        {
            "updates": "hawkbit",
            "ddi_url": "https://hawkbit.example.org",
            "ddi_tenant": "acme",
            "ddi_token": "x" * 32,
            "ddi_token_kind": "GatewayToken",
        },
    )
    assert cfg.problems == [] and cfg.updates == "hawkbit" and cfg.ddi_tenant == "acme"
    cfg = config.defaults()
    config.update(
        cfg,
        {
            "updates": "mender",
            "ddi_url": "ftp://x.example",
            "ddi_token_kind": "BearerToken",
            "ddi_tenant": "",
        },
    )
    assert sorted(cfg.problems) == [  # (MicroPython's dicts keep no order)
        "ddi_tenant out of range 1..64",
        "ddi_token_kind must be one of TargetToken, GatewayToken",
        "ddi_url must start with http:// or https://",
        "updates must be one of twomes, hawkbit",
    ]
    assert cfg.updates == "twomes" and cfg.ddi_url == "" and cfg.ddi_tenant == "DEFAULT"


def test_a_manifest_artifact_comes_with_the_release():
    server = Ddi(os.urandom(300), name="f.bin")
    server.manifest = b'{"manifest": "{\\"version\\":\\"9.9.9\\"}", "signature": "abc"}'

    async def body(app, upd, srv):
        rel = await upd.target()
        assert rel["manifest"] == '{"version":"9.9.9"}' and rel["signature"] == "abc" and rel["size"] == 300
        server.manifest = b'{"version": "9.9.9"}'  # not {manifest, signature}: refused
        e = await _error(upd.target())
        assert e.status == -1 and "not {manifest, signature}" in str(e)
        server.manifest = b"x" * 3000  # larger than any manifest: refused
        e = await _error(upd.target())
        assert e.status == -1 and "manifest missing or larger than 2048 bytes" in str(e)

    _go(server, body)


def test_the_confirmation_after_an_update_closes_the_action():
    from twomes import store

    server = Ddi(os.urandom(300), name="f.bin", version=VERSION)

    async def body(app, upd, srv):
        app.st.put(store.FW_CONFIRMED, "0.0.1")  # a new version runs: its confirmation is due
        app.st.commit()
        assert await phase.firmware(app, upd, True) is False  # nothing more to install
        assert app.st.get(store.FW_CONFIRMED) == VERSION  # kept
        fb = [b for p, b in server.feedback if p.endswith("/deploymentBase/17/feedback")]
        assert fb[0]["status"]["execution"] == "closed" and fb[0]["status"]["result"]["finished"] == "success"
        assert fb[0]["status"]["details"] == ["running " + VERSION]

    _go(server, body)
