# ESP32 app-image updates (twomes/update/image.py) against a scripted server on 127.0.0.1, on the simulated
# flash of the virtual board: streamed into the next OTA partition, resumed with Range after a dropped
# connection or a power cut, verified by reading the flash back, switched with set_boot only then. A
# server that misbehaves never gets an image installed: the boot partition stays the running one.
import asyncio
import os

import vflash
from fakeserver import FakeServer, Reply, fw
from imgutil import make_image

import support
import vesp32
import vstate
from twomes import store

TOKEN = "Mw.session-token-1"
URL = "/device/firmware/releases/9/image"
P = vflash.Partition


def release(blob, version="9.9.9", **over):
    return support.release(blob, over.pop("kind", "image"), 9, version, **over)


def ranged(blob, log=None, truncate=None, ignore_range=False):
    """Serves `blob` as the firmware API does: 200, or 206 for `Range: bytes=a-`."""

    def serve(h):
        r = h.get("range")
        if log is not None:
            log.append(r)
        if r and not ignore_range:
            a = int(r[6:-1])
            if a >= len(blob):
                return fw(416, {"detail": "Requested range not satisfiable"})
            rep = Reply(206, blob[a:], {"Content-Range": "bytes %d-%d/%d" % (a, len(blob) - 1, len(blob))})
        else:
            rep = Reply(200, blob)
        if truncate:
            rep.truncate = truncate.pop(0) if truncate else None
        return rep

    return serve


def server(rel, image):
    """image: a function of the request headers -> Reply."""

    def handler(m, p, h, b):
        if p == "/device/firmware/target":
            return fw(200, {"release": rel})
        if p == "/device/firmware/confirm":
            return fw(200, {"version": "x", "release_id": None, "confirmed_on": "2026-11-25T10:00:00Z"})
        if p == rel["url"]:
            return image(h)
        return fw(404, {"detail": "Not Found"})

    return handler


def _go(handler, body, rollback=True, **settings):
    d = support.new_board(rollback=rollback)
    os.chdir(d)
    vflash.bootloader()  # the board has booted: the factory app runs
    vesp32.images = True  # set_boot checks the image, as the bootloader does
    support.logged().clear()

    async def main():
        srv = await FakeServer(handler).start()
        try:
            app, on = support.make_app(srv.url, **settings)
            on.session = TOKEN
            app.st.put(store.SESSION, TOKEN)  # activated: the update boot reads its token from NVS
            await body(app, on, srv)
        finally:
            await srv.stop()

    try:
        support.run(main())
    finally:
        vesp32.images = False
        vflash.image_check = None


def _deadline(slack_s, min_bps):
    """Shorten the download deadline of the installer module the app is about to use (the app unloads
    it after every update, so it is imported afresh here and the app finds this one)."""
    from twomes.update import image as ota_image

    ota_image.SLACK_S, ota_image.MIN_BPS = slack_s, min_bps


def _check(app, on):
    return support.firmware_check(app, on)


async def _confirm(on):
    from twomes.online import phase

    return await phase.confirmation(on.app, on)


def _lines(word):
    return [ln for ln in support.logged() if word in ln]


def _flash(label, n):
    buf = bytearray(n)  # (compared as it is: no second 100 KB copy in the test runtime's 1 MB heap)
    P(label).readblocks(0, buf)
    return buf


def _downloads(srv, rel):
    return [r for r in srv.requests if r[1] == rel["url"]]


def _not_installed(app, rel):
    assert vflash.bootloader() == "factory"  # the boot partition did not change
    assert app.st.get(store.IMG_NEW) is None
    assert app.st.get(store.FW_FAIL) == "1 " + rel["version"]


def test_image_update_streams_verifies_and_switches():
    img = make_image("9.9.9")
    rel = release(img)

    async def body(app, on, srv):
        assert await _check(app, on) is True
        assert _flash("ota_0", len(img)) == img
        assert app.st.get(store.IMG_NEW) == "9.9.9 ota_0 factory"
        assert app.st.get(store.DL_STATE) == "9 %s ota_0 %d" % (rel["sha256"][:16], len(img))
        assert _lines("ota_0 holds 9.9.9")
        assert len(_downloads(srv, rel)) == 1
        assert vflash.bootloader() == "ota_0"  # NEW -> PENDING_VERIFY: it must confirm itself

    _go(server(rel, ranged(img)), body)


def test_dropped_connection_resumes_with_range_where_it_stopped():
    img = make_image("9.9.9")
    rel = release(img)
    ranges = []

    async def body(app, on, srv):
        assert await _check(app, on) is True
        # each resume starts after the last whole buffer written: 29 KB, then 29 + 19 KB
        assert ranges == [None, "bytes=29696-", "bytes=49152-"]
        got = _downloads(srv, rel)
        assert got[1][2]["if-range"] == '"%s"' % rel["sha256"]
        assert _flash("ota_0", len(img)) == img
        assert _lines("resuming in")

    _go(server(rel, ranged(img, ranges, truncate=[30000, 20000])), body)


def test_power_cut_resumes_from_the_last_durable_offset():
    img = make_image("9.9.9", size=100000)
    rel = release(img)
    ranges = []
    answers = [Reply(200, img, truncate=70000)] + [Reply(503, b"busy")] * 3

    async def body(app, on, srv):
        srv.handler = server(rel, lambda h: answers.pop(0) if answers else ranged(img, ranges)(h))
        assert await _check(app, on) is False  # connection lost, then the server is busy: failed for now
        assert app.st.get(store.DL_STATE).endswith(" ota_0 65536")  # the 64 KB checkpoint is durable
        support.power_cycle()
        app2, on2 = support.make_app(srv.url, retry_base_s=0.02)
        on2.session = TOKEN
        app2.st.put(store.SESSION, TOKEN)
        assert await _check(app2, on2) is True
        assert ranges == ["bytes=65536-"]  # resumed, not downloaded again
        assert _lines("resuming the download of 9.9.9 at 65536")
        assert _flash("ota_0", len(img)) == img

    _go(None, body)


def test_server_ignoring_range_restarts_from_zero():
    img = make_image("9.9.9")
    rel = release(img)

    async def body(app, on, srv):
        assert await _check(app, on) is True
        assert _lines("server ignored the range request")
        assert _flash("ota_0", len(img)) == img

    _go(server(rel, ranged(img, truncate=[30000], ignore_range=True)), body)


def test_interrupted_install_after_download_only_verifies_again():
    img = make_image("9.9.9")
    rel = release(img)

    async def body(app, on, srv):
        assert await _check(app, on) is True
        # the power went after IMG_NEW was committed, before set_boot: the old app runs again
        app.st.delete(store.IMG_NEW)
        app.st.commit()
        vstate.write_json("otadata.json", {"entries": [[0xFFFFFFFF, "undefined"], [0xFFFFFFFF, "undefined"]]})
        n = len(srv.requests)
        assert await _check(app, on) is True
        assert len(_downloads(srv, rel)) == 1 and len(srv.requests) == n + 1  # target only, no download
        assert vflash.bootloader() == "ota_0"

    _go(server(rel, ranged(img)), body)


def _refused(rel, image, word, **settings):
    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert _lines(word), support.logged()[-4:]
        _not_installed(app, rel)

    _go(server(rel, image), body, **settings)


def test_wrong_sha256_is_never_installed():
    img = make_image("9.9.9")
    _refused(release(img, sha256="0" * 64), ranged(img), "does not match its sha256")


def test_wrong_size_is_never_installed():
    img = make_image("9.9.9")
    _refused(release(img, size=len(img) + 100), ranged(img), "server sends %d bytes" % len(img))


def test_gigantic_content_length_is_refused_before_anything_is_written():
    img = make_image("9.9.9")
    rel = release(img)
    _refused(
        rel, lambda h: Reply(200, img[:2000], {"Content-Length": "99999999999"}), "server sends 99999999999"
    )
    assert _flash("ota_0", 16) == b"\xff" * 16  # nothing erased or written


def test_image_for_another_chip_is_refused_before_the_first_write():
    img = make_image("9.9.9", chip=9)  # ESP32-S3
    _refused(release(img), ranged(img), "image is for another chip (chip id 9")
    assert _flash("ota_0", 16) == b"\xff" * 16


def test_not_an_image_and_other_versions_are_refused():
    blob = b"TWOMES-BUNDLE 1 20\n" + b"x" * 4000
    _refused(release(blob), ranged(blob), "not an ESP32 app image")
    img = make_image("1.2.3")
    _refused(release(img), ranged(img), "image is version 1.2.3, release says 9.9.9")


def test_too_large_for_the_partition_is_refused_without_downloading():
    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert _lines("does not fit partition ota_0")
        assert _downloads(srv, rel) == []

    img = make_image("9.9.9", size=4000)
    rel = release(img, size=0x200000)
    _go(server(rel, ranged(img)), body)


def test_truncated_body_everywhere_gives_up_after_bounded_tries():
    img = make_image("9.9.9")
    rel = release(img)

    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert len(_downloads(srv, rel)) == 4  # the first try and three resumes
        assert _lines("download stopped")
        _not_installed(app, rel)

    _go(server(rel, lambda h: Reply(200, img, truncate=500)), body)


def test_server_errors_are_retried_with_backoff_then_given_up():
    img = make_image("9.9.9")
    rel = release(img)

    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert len(_downloads(srv, rel)) == 4
        assert len(_lines("resuming in")) == 3
        _not_installed(app, rel)

    _go(server(rel, lambda h: Reply(503, {"detail": "Service Unavailable"})), body)


def test_redirects_are_not_followed():
    img = make_image("9.9.9")
    rel = release(img)

    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert len(_downloads(srv, rel)) == 1  # one request, no following, no retry
        assert _lines("HTTP 302")
        _not_installed(app, rel)

    _go(server(rel, lambda h: Reply(302, b"", {"Location": URL})), body)


def test_slow_drip_is_cut_off_by_the_overall_deadline():
    img = make_image("9.9.9", size=8000)
    rel = release(img)

    async def body(app, on, srv):
        _deadline(1, 100000)  # 1 s for this image
        assert await _check(app, on) is False
        assert _lines("download too slow")
        assert len(_downloads(srv, rel)) == 1  # past the deadline: no resume
        _not_installed(app, rel)

    _go(server(rel, lambda h: Reply(200, img, drip=(100, 0.1))), body)


def test_button_is_answered_while_an_update_crawls():
    img = make_image("9.9.9", size=8000)
    rel = release(img)

    async def body(app, on, srv):
        _deadline(2, 100000)
        button = asyncio.create_task(app.watch())

        async def press():
            await asyncio.sleep(0.4)
            vstate.write_bytes("button", b"1")
            await asyncio.sleep(0.3)
            vstate.write_bytes("button", b"0")

        presser = asyncio.create_task(press())
        assert await _check(app, on) is False
        await presser
        button.cancel()
        assert _lines("button: state updating, firmware")
        _not_installed(app, rel)

    _go(server(rel, lambda h: Reply(200, img, drip=(200, 0.1))), body)


# ---- after the reboot: the new image confirms itself, the old one learns it was rolled back -------


def _booted_new_image(rollback=True):
    """Flash a valid image into ota_0, set_boot it and boot it (PENDING_VERIFY), as after an update."""
    from twomes import VERSION

    img = make_image(VERSION)
    p = P("ota_0")
    for blk in range(len(img) // 4096 + 1):
        p.ioctl(6, blk)
    p.writeblocks(0, bytearray(img), 0)
    p.set_boot()
    assert vflash.bootloader() == "ota_0"
    return img


def _confirm_server():
    def handler(m, p, h, b):
        if p == "/device/firmware/confirm":
            return fw(200, {"version": "x", "release_id": None, "confirmed_on": "2026-11-25T10:00:00Z"})
        return fw(404, {"detail": "Not Found"})

    return handler


def test_new_image_confirms_then_marks_itself_valid():
    from twomes import VERSION

    async def body(app, on, srv):
        _booted_new_image()
        app.st.put(store.IMG_NEW, "%s ota_0 factory" % VERSION)
        app.st.put(store.DL_STATE, "9 0123456789abcdef ota_0 150000")
        app.st.commit()
        await _confirm(on)
        assert [r[1] for r in srv.requests] == ["/device/firmware/confirm"]
        assert app.st.get(store.IMG_NEW) is None and app.st.get(store.DL_STATE) is None
        assert app.st.get(store.FW_CONFIRMED) == VERSION
        assert vflash.bootloader() == "ota_0"  # valid: no rollback at the next boot
        assert vflash.bootloader() == "ota_0"

    _go(_confirm_server(), body)


def test_a_cut_inside_the_keeping_is_finished_at_the_next_connection():
    """fw_ok already says this version, but img_new is still there (the power went while the new image
    was being kept): it confirms again and keeps the image, instead of carrying the marker for good."""
    from twomes import VERSION

    async def body(app, on, srv):
        _booted_new_image()
        app.st.put(store.IMG_NEW, "%s ota_0 factory" % VERSION)
        app.st.put(store.FW_CONFIRMED, VERSION)
        app.st.commit()
        await _confirm(on)
        assert [r[1] for r in srv.requests] == ["/device/firmware/confirm"]
        assert app.st.get(store.IMG_NEW) is None and app.st.get(store.FW_CONFIRMED) == VERSION
        assert vflash.bootloader() == "ota_0"
        await _confirm(on)  # done: nothing due any more
        assert len(srv.requests) == 1

    _go(_confirm_server(), body)


def test_bootloader_without_rollback_says_so_and_keeps_the_image():
    from twomes import VERSION

    async def body(app, on, srv):
        _booted_new_image()
        app.st.put(store.IMG_NEW, "%s ota_0 factory" % VERSION)
        app.st.commit()
        await _confirm(on)
        assert _lines("bootloader without rollback support: image kept")
        assert app.st.get(store.IMG_NEW) is None
        assert vflash.bootloader() == "ota_0"

    _go(_confirm_server(), body, rollback=False)


def test_new_image_that_cannot_reach_the_server_goes_back_to_the_previous_app():
    from twomes import VERSION

    for rollback in (True, False):

        async def body(app, on, srv):
            _booted_new_image()
            app.st.put(store.IMG_NEW, "%s ota_0 factory" % VERSION)
            app.st.commit()
            await srv.stop()  # no answer at all within the confirm window
            try:
                await _confirm(on)
                raise AssertionError("no reboot")
            except SystemExit as e:  # vmachine.reset(): the board reboots
                assert e.args[0] == 93
            assert _lines("going back to the previous app")
            assert vflash.bootloader() == "factory"

        _go(lambda m, p, h, b: fw(500, {"detail": "Internal server error"}), body, rollback=rollback)


def test_new_image_whose_server_half_works_runs_on_unconfirmed():
    """5xx on every confirmation: no reboot loop - the new image runs (and uploads), is not kept yet,
    and the running loop asks again later."""
    from twomes import VERSION

    async def body(app, on, srv):
        _booted_new_image()
        app.st.put(store.IMG_NEW, "%s ota_0 factory" % VERSION)
        app.st.commit()
        assert await _confirm(on) == "pending"
        assert len(srv.requests) == 6
        assert _lines("not confirmed yet (the server answers)")
        assert app.st.get(store.IMG_NEW) is not None and app.st.get(store.FW_CONFIRMED) != VERSION
        assert not _lines("going back to the previous app") and not _lines("confirmed to the server")

    _go(lambda m, p, h, b: fw(500, {"detail": "Internal server error"}), body)


def test_old_version_learns_its_new_image_was_rolled_back():
    from twomes import VERSION

    async def body(app, on, srv):
        app.st.put(store.IMG_NEW, "9.9.9 ota_0 factory")
        app.st.put(store.FW_CONFIRMED, VERSION)
        app.st.commit()
        await _confirm(on)
        assert _lines("image 9.9.9 is not running")
        assert app.st.get(store.IMG_NEW) is None
        assert app.st.get(store.FW_FAIL) == "1 9.9.9"
        # it tells the server again what runs (the new image may have confirmed itself before)
        assert [r[1] for r in srv.requests] == ["/device/firmware/confirm"]
        assert app.st.get(store.FW_CONFIRMED) == VERSION

    _go(_confirm_server(), body)


def test_safe_mode_checks_but_does_not_update():
    img = make_image("9.9.9")
    rel = release(img)

    async def body(app, on, srv):
        app.safe = True
        assert await _check(app, on) is False
        assert _lines("no update attempts in safe mode")
        assert _downloads(srv, rel) == [] and app.st.get(store.FW_FAIL) is None

    _go(server(rel, ranged(img)), body)


def test_bundle_rolled_back_by_otaboot_counts_as_a_failed_attempt():
    import otaboot
    from twomes.update import state

    rel = release(b"x" * 100, kind="bundle")

    async def body(app, on, srv):
        state.write_slot(
            {"slot": "b", "state": "pending", "boots": 3, "max_boots": 3, "prev": None, "version": "9.9.9"}
        )
        slot, st = otaboot.select()  # boot 4: never confirmed, rolled back
        assert slot is None and st["failed"] == "9.9.9"
        await _confirm(on)  # the old version at its next connection
        assert _lines("bundle 9.9.9 never confirmed itself and was rolled back")
        assert app.st.get(store.FW_FAIL) == "1 9.9.9"
        await _confirm(on)  # counted once
        assert app.st.get(store.FW_FAIL) == "1 9.9.9"
        assert await _check(app, on) is False  # the download (404 here) fails: a second strike
        assert app.st.get(store.FW_FAIL) == "2 9.9.9"

    _go(server(rel, lambda h: fw(404, {"detail": "Release not found"})), body)
