# Helpers for the device tests that run on BOTH CPython and the MicroPython unix port.
# Only the subset of Python both runtimes share (no pytest fixtures, no pathlib, no f-strings needed).
import json
import os

import vstate

_n = [0]


def tmpdir(tag="t"):
    base = os.getenv("TW_TMP") or "/tmp"
    _n[0] += 1
    d = "%s/%s-%s-%d" % (base, tag, "".join("%02x" % b for b in os.urandom(4)), _n[0])
    os.mkdir(d)
    return d


def new_board(mac="24:6F:28:D3:AD:48", air=None, partitions=None, rollback=True):
    """A fresh simulated board state directory, made current for the vmachine/vnetwork/vesp32 fakes."""
    d = tmpdir("board")
    board = {
        "mac": mac,
        "ap_ip": "127.0.0.1",
        "air": "air.json",
        "button_pin": 0,
        "led_pin": 2,
        "rollback": rollback,
    }
    if partitions:
        board["partitions"] = partitions
    with open(d + "/board.json", "w") as f:
        f.write(json.dumps(board))
    with open(d + "/air.json", "w") as f:
        f.write(json.dumps(air or []))
    vstate.configure(d)
    import vesp32
    import vnetwork

    vesp32._pending.clear()
    vesp32._committed = None
    vnetwork._ifs.clear()
    vnetwork._air[0] = None
    return d


def power_cycle():
    """What a power cut does to the fakes: uncommitted NVS writes and live objects are gone."""
    import vesp32
    import vnetwork

    vesp32.nvs_drop_uncommitted()
    vnetwork._ifs.clear()


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def run(coro):
    import asyncio

    return asyncio.run(coro)


class _MonoClock:
    def ticks_ms(self):
        import time

        return int(time.monotonic() * 1000)

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, b):
        return a + b


def clock():
    import time

    return time if hasattr(time, "ticks_ms") else _MonoClock()


def make_app(url, **settings):
    """The real App and its Server (the online phase's seam) on the simulated board (call new_board()
    first). A lab setting: plain http to the scripted server on 127.0.0.1."""
    import vesp32
    import vmachine
    import vnetwork
    from twomes import config, identity, store
    from twomes.app import App
    from twomes.hw import Board
    from twomes.online.server import Server

    cfg = config.defaults()
    cfg.server_url = url
    cfg.allow_http = True
    cfg.release_keys = (release_key(),)
    cfg.retry_base_s = 0.02  # tests: fast retries (the config file's minimum is 1 s)
    cfg.retry_max_s = 0.1
    cfg.http_timeout_s = 2
    for k in settings:
        setattr(cfg, k, settings[k])
    board = Board(cfg, vmachine, vnetwork, vesp32, clock())
    st = store.Store(board.nvs("twomes"))
    ident = identity.load(st, board.mac(), cfg, os.urandom)
    app = App(board, cfg, st, ident)
    return app, Server(app)


def logged():
    from twomes import log

    if log.sink is None:
        log.sink = []
    return log.sink


async def firmware_check(app, on):
    """Run the online phase's firmware check and, when it saved an update for the next boot, that
    boot's update job (as App.flow does); True when it installed a new version (reboot into it)."""
    from twomes.online import phase
    from twomes.update import state

    if not await phase.firmware(app, on, False):
        return False
    assert state.job_saved()  # the check says True only when it saved an update
    if await app.phase(app.update_boot) == "installed":
        return True
    assert not state.job_saved()  # a failed install drops its job
    return False


SEED = bytes(range(32))  # the test fleet's release key (make_app trusts its public key)
_PUB = []


def release_key():
    """The public key (64 hex) of SEED, as twomes.json's release_keys holds it."""
    if not _PUB:
        import binascii

        import edsign

        _PUB.append(binascii.hexlify(edsign.public_key(SEED)).decode())
    return _PUB[0]


def sign(rel, counter=1, device_type="Generic-Test", seed=SEED):
    """Add a signed manifest of `rel` (as `twomes release --key` makes it) to `rel`; returns it."""
    import binascii

    import edsign

    m = {"device_type": device_type, "kind": rel["kind"], "version": rel["version"], "counter": counter}
    m["size"] = rel["size"]
    m["sha256"] = rel["sha256"]
    text = edsign.canonical(m)
    rel["manifest"] = text
    rel["signature"] = binascii.hexlify(edsign.sign(seed, text.encode())).decode()
    return rel


def release(blob, kind, rel_id, version="9.9.9", signed=True, counter=1, **over):
    """A release object as the firmware API describes `blob` (fields in `over` replace the true ones),
    signed with the test fleet's key (of what it says, `over` included) unless signed=False."""
    import hashlib

    from twomes.update import bundle

    rel = {
        "id": rel_id,
        "version": version,
        "kind": kind,
        "size": len(blob),
        "sha256": bundle.hexdigest(hashlib.sha256(blob)),
        "url": "/device/firmware/releases/%d/image" % rel_id,
    }
    for k in over:
        rel[k] = over[k]
    return sign(rel, counter) if signed else rel


def go(handler, body, **settings):
    """Run `body(app, server_seam, fake_server)` against a scripted server (fakeserver.FakeServer with
    `handler`) on a fresh board, the console log cleared."""
    from fakeserver import FakeServer

    os.chdir(new_board())
    logged().clear()

    async def main():
        srv = await FakeServer(handler).start()
        try:
            app, on = make_app(srv.url, **settings)
            await body(app, on, srv)
        finally:
            await srv.stop()

    run(main())


def certs(name):
    """The path of a file of the session's TLS material (conftest.test_certs: $TW_CERTS): "ca.der",
    "<case>.pem" / ".key" (PEM), "<case>.der" / ".key.der" (DER)."""
    return "%s/%s" % (os.getenv("TW_CERTS"), name)


def server_tls(case):
    """A server-side TLS context with the certificate of `case` (good, self_signed, wrong_name,
    expired, other_ca: conftest.test_certs) on this runtime."""
    import sys

    if sys.implementation.name != "micropython":
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs(case + ".pem"), certs(case + ".key"))
        return ctx
    import tls  # MicroPython's: it takes the leaf and the key in DER

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_SERVER)
    with open(certs(case + ".der"), "rb") as f:
        cert = f.read()
    with open(certs(case + ".key.der"), "rb") as f:
        key = f.read()
    ctx.load_cert_chain(cert, key)
    return ctx


def lines(word):
    """The console lines the device logged that contain `word`."""
    return [ln for ln in logged() if word in ln]
