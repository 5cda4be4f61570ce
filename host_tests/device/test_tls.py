# Verified https with the online phase's one TLS context (both runtimes: CPython's ssl, MicroPython's
# tls over mbedTLS), against https servers on 127.0.0.1: the phase makes one context and every
# connection uses it, and every connection verifies the server again - its certificate chain against
# the deployed CA and its name against the host of the URL. A refused connection sends nothing (no
# token); a good connection after refused ones still works; the signature check lets go of the
# context and the phase makes a new one after a check that saves nothing.
from fakeserver import FakeServer, Reply, fw

import support
from twomes.errors import Error
from twomes.online import phase

_OK = Reply(200, {"ok": 1})


def _app(url):
    """The app and its seam for an https server: the test CA deployed, plain http not allowed."""
    return support.make_app(url, allow_http=False, ca_file=support.certs("ca.der"))


async def _get(on, url):
    """GET url through the seam -> its JSON answer; Error when the connection is refused."""
    resp = await on.open("GET", url + "/device")
    try:
        return await resp.json(1024)
    finally:
        await resp.close()


async def _refused(on, srv, word):
    try:
        await _get(on, srv.url)
    except Error as e:
        assert e.status == 0 and "TLS refused" in str(e), str(e)
        assert word in str(e).lower(), str(e)
        return
    raise AssertionError("%s accepted" % srv.url)


def test_every_connection_of_the_phases_one_context_verifies_the_server():
    import os

    os.chdir(support.new_board())
    support.logged().clear()

    async def main():
        good = await FakeServer(lambda m, p, h, b: _OK, support.server_tls("good")).start()
        bad = {}
        for case in ("wrong_name", "other_ca", "self_signed", "expired"):
            bad[case] = await FakeServer(lambda m, p, h, b: _OK, support.server_tls(case)).start()
        try:
            app, on = _app(good.url)
            phase.context(app, on)  # the phase's start
            ctx = on.context[0]
            assert ctx is not None
            assert await _get(on, good.url) == {"ok": 1}
            # MicroPython: "does not match" / "not correctly signed"; CPython: "mismatch" / "verify failed"
            words = {"wrong_name": "match", "other_ca": "", "self_signed": "", "expired": ""}
            for _ in range(2):  # each connection, not only the first: the same context every time
                for case in bad:
                    await _refused(on, bad[case], words[case])
                assert await _get(on, good.url) == {"ok": 1}
            assert on.context[0] is ctx  # one context served all eleven connections
            assert len(good.requests) == 3
            for case in bad:
                assert bad[case].requests == [], case  # nothing (no token) reached a server it refused
        finally:
            for srv in [good] + list(bad.values()):
                await srv.stop()

    support.run(main())


def test_a_ca_file_that_does_not_sign_the_server_refuses_every_connection():
    import os

    os.chdir(support.new_board())
    support.logged().clear()

    async def main():
        # the server's certificate is from another CA than the one deployed
        srv = await FakeServer(lambda m, p, h, b: _OK, support.server_tls("other_ca")).start()
        try:
            app, on = _app(srv.url)
            phase.context(app, on)
            for _ in range(3):
                await _refused(on, srv, "")
            assert srv.requests == []
        finally:
            await srv.stop()

    support.run(main())


def test_no_usable_ca_file_is_said_by_each_request_and_no_context_is_made():
    import os

    os.chdir(support.new_board())
    support.logged().clear()

    async def main():
        srv = await FakeServer(lambda m, p, h, b: _OK, support.server_tls("good")).start()
        try:
            for ca_file, word in (("missing.der", "no CA file"), ("junk.der", "unusable")):
                with open("junk.der", "wb") as f:
                    f.write(b"not a certificate")
                app, on = support.make_app(srv.url, allow_http=False, ca_file=ca_file)
                phase.context(app, on)  # says nothing: the requests do
                assert on.context[0] is None
                for _ in range(2):
                    try:
                        await _get(on, srv.url)
                        raise AssertionError("no CA, but accepted")
                    except Error as e:
                        assert e.status == 0 and word in str(e), str(e)
            assert srv.requests == []
        finally:
            await srv.stop()

    support.run(main())


def test_the_signature_check_lets_go_of_the_context_and_the_phase_makes_it_again():
    """The context is not held through the signature check (the check's peak: docs/heap.md); after a
    check that saves nothing (here: a release signed by no trusted key) the phase makes a new one at
    once, and the next connection verifies with it. A check that finds nothing to do keeps it."""
    import os

    import twomes
    from twomes import VERSION

    os.chdir(support.new_board())
    support.logged().clear()
    target = [support.release(b"x" * 10, "bundle", 1, version=VERSION)]
    seen = []

    def handler(m, p, h, b):
        return fw(200, {"release": target[0]})

    async def main():
        srv = await FakeServer(handler, support.server_tls("good")).start()
        app, on = _app(srv.url)
        unload = twomes.unload

        def spy(*names):  # the signature check's end unloads its modules: what is held then
            if "update.signing" in names:
                seen.append(on.context[0])
            unload(*names)

        twomes.unload = spy  # (the check, imported afresh for each check, takes it from the package)
        try:
            phase.context(app, on)
            first = on.context[0]
            assert await phase.firmware(app, on, False) is False  # up to date: no signature check
            assert seen == [] and on.context[0] is first
            target[0] = support.release(b"x" * 10, "bundle", 1, signed=False)  # 9.9.9, unsigned
            assert await phase.firmware(app, on, False) is False
            assert support.lines("refused") and seen == [None]  # let go of during the check
            again = on.context[0]
            assert again is not None and again is not first  # made again by the phase
            target[0] = support.release(b"x" * 10, "bundle", 1, version=VERSION)
            assert await phase.firmware(app, on, False) is False
            assert on.context[0] is again and len(srv.requests) == 3
        finally:
            twomes.unload = unload
            await srv.stop()

    support.run(main())
