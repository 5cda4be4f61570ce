# The online phase against a scripted server on 127.0.0.1: activation, re-activation on 401, the
# firmware check, bundle updates and everything that can go wrong with them. Nothing bad may ever be
# activated: a failed update leaves the boot pointer (ota/state.json) untouched.
import hashlib
import json
import os

from fakeserver import Reply, fw

import support
from twomes import store
from twomes.update import bundle as installer

TOKEN = "Mw.session-token-1"


_go = support.go
_lines = support.lines


def bundle(version, files, mpy=None):
    """A bundle in the device's format (tools/twtools/build.py), built here so both runtimes can."""
    tag = installer.mpy_tag() if mpy is None else mpy
    out = b"TWOMES-BUNDLE 2\nversion %s\nmpy %s\nfiles %d\n" % (
        version.encode(),
        str(tag).encode(),
        len(files),
    )
    for path, content in files:
        out += b"file %s %d %s\n" % (
            path.encode(),
            len(content),
            installer.hexdigest(hashlib.sha256(content)).encode(),
        )
        out += content
    return out


FILES = [("twomes/__init__.py", b'VERSION = "9.9.9"\n'), ("twomes/extra.py", b"X = 1\n" * 300)]


def release(blob, version="9.9.9", **over):
    return support.release(blob, over.pop("kind", "bundle"), 7, version, **over)


def _fw_server(rel, image_reply):
    def handler(m, p, h, b):
        if p == "/device/firmware/target":
            return fw(200, {"release": rel})
        if p == rel["url"]:
            return image_reply
        return fw(404, {"detail": "Not Found"})

    return handler


def _check(app, on):
    on.session = TOKEN
    app.st.put(store.SESSION, TOKEN)  # activated: the update boot reads its token from NVS
    return support.firmware_check(app, on)


def _pointer():
    try:
        with open("ota/state.json") as f:
            return json.loads(f.read())
    except OSError:
        return None


def test_bundle_update_installs_into_a_slot_and_asks_for_reboot():
    blob = bundle("9.9.9", FILES)
    rel = release(blob)

    async def body(app, on, srv):
        assert await _check(app, on) is True
        st = _pointer()
        assert st["slot"] == "a" and st["state"] == "new" and st["version"] == "9.9.9"
        with open("ota/a/twomes/extra.py", "rb") as f:
            assert f.read() == FILES[1][1]
        assert srv.requests[1][2]["authorization"] == "Bearer " + TOKEN

    _go(_fw_server(rel, Reply(200, blob)), body)


def _job():
    from twomes.update import state

    return state.job()


def test_an_update_found_is_saved_and_installed_by_the_next_boot():
    """The check only saves the job and restarts; after a power cut even, the next boot installs it
    with nothing but the HTTP client and the installer loaded."""
    import sys

    blob = bundle("9.9.9", FILES)
    rel = release(blob)

    async def body(app, on, srv):
        on.session = TOKEN
        app.st.put(store.SESSION, TOKEN)
        app.st.commit()
        from twomes.online import phase
        from twomes.update import signing

        # the update state's module is not held through the signature check (the check's peak heap)
        checked = signing.check_release
        held = []

        def spy(*args):
            held.append("twomes.update.state" in sys.modules)
            return checked(*args)

        signing.check_release = spy
        assert await phase.firmware(app, on, False) is True  # saved: the app restarts into the update boot
        assert held == [False] and "twomes.update.signing" not in sys.modules
        saved = dict(rel)
        saved["counter"] = 1  # from its signed manifest: kept once the new version confirms itself
        assert _job() == saved and _pointer() is None
        assert [r[1] for r in srv.requests] == ["/device/firmware/target"]  # nothing downloaded yet
        assert _lines("updating in the next boot")
        support.power_cycle()
        app2, _ = support.make_app(srv.url)
        for m in ("twomes.online.phase", "twomes.update.check", "twomes.update.confirm"):
            sys.modules.pop(m, None)
        assert await app2.phase(app2.update_boot) == "installed"
        assert _job() is None and _pointer()["version"] == "9.9.9"
        assert srv.requests[-1][2]["authorization"] == "Bearer " + TOKEN
        # the update boot loads the job, the installer and the server interface, and unloads them again;
        # the check and the confirmation are never loaded in it
        left = ("twomes.online.phase", "twomes.update.job", "twomes.update.check", "twomes.update.confirm")
        assert not [m for m in left if m in sys.modules]

    _go(_fw_server(rel, Reply(200, blob)), body)


def test_a_romfs_bundle_is_installed_by_its_own_installer_only():
    """The update boot tells a bundle's form by its first bytes: a ROMFS image goes to romfs.py into the
    half of the "romfs" partition that does not run, and the .mpy overlay's installer is not loaded for
    it (2 KB less in the update boot's heap)."""
    import sys

    import romfsutil

    from twomes.update import romfs

    blob = romfsutil.app("9.9.9")
    rel = release(blob)

    async def body(app, on, srv):
        on.session = TOKEN
        app.st.put(store.SESSION, TOKEN)
        app.st.commit()
        from twomes.online import phase

        assert await phase.firmware(app, on, False) is True
        support.power_cycle()
        app2, _ = support.make_app(srv.url)
        seen = []
        real = romfs.install_release

        async def spy(*args):
            seen.append("twomes.update.bundle" in sys.modules)
            return await real(*args)

        pkg = sys.modules["twomes.update"]
        sys.modules.pop("twomes.update.bundle", None)
        pkg.__dict__.pop("bundle", None)
        romfs.install_release = spy
        try:
            assert await app2.phase(app2.update_boot) == "installed"
        finally:
            romfs.install_release = real
            sys.modules["twomes.update.bundle"] = installer
        assert seen == [False]
        assert _pointer()["slot"] == "rom-b" and _pointer()["version"] == "9.9.9" and _job() is None
        assert _lines("(ROMFS, %d bytes)" % len(blob))

    _go(_fw_server(rel, Reply(200, blob)), body)


def test_update_boot_drops_jobs_it_must_not_run():
    from twomes import VERSION

    rel = release(bundle("9.9.9", FILES))
    jobs = (
        (b"{not json", "unreadable update job"),
        (json.dumps({"rel": release(b"x", version=VERSION)}).encode(), None),  # installed
        (json.dumps({"rel": rel}).encode(), None),  # safe mode
    )

    async def body(app, on, srv):
        app.st.put(store.SESSION, TOKEN)
        for i, (data, word) in enumerate(jobs):
            try:
                os.mkdir("ota")
            except OSError:
                pass
            with open("ota/job", "wb") as f:  # written as a check or a damaged flash left it
                f.write(data)
            app.safe = i == 2
            await app.phase(app.update_boot)  # no restart: the online phase goes on
            assert _job() is None and _pointer() is None
            assert word is None or _lines(word)
        assert srv.requests == [] and app.st.get(store.FW_FAIL) is None

    _go(_fw_server(rel, Reply(500, b"")), body)


def test_update_refused_with_401_is_not_a_failed_attempt():
    """A revoked session is not the release's fault: the online phase activates and checks again."""
    blob = bundle("9.9.9", FILES)
    rel = release(blob)

    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert _lines("session token refused (401)") and _job() is None
        assert app.st.get(store.FW_FAIL) is None and _pointer() is None

    _go(_fw_server(rel, Reply(401, {"detail": "Invalid session token"})), body)


def _refused(rel, reply, word):
    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert _pointer() is None  # nothing activated
        assert _lines(word), support.logged()[-3:]
        assert app.st.get(store.FW_FAIL) == "1 " + rel["version"]  # one failure of that version

    _go(_fw_server(rel, reply), body)


def test_wrong_size_is_refused():
    blob = bundle("9.9.9", FILES)
    _refused(release(blob, size=len(blob) + 10), Reply(200, blob), "server sends")


def test_wrong_sha256_is_refused():
    blob = bundle("9.9.9", FILES)
    _refused(release(blob, sha256="0" * 64), Reply(200, blob), "bundle sha256 mismatch")


def test_interrupted_download_is_refused():
    blob = bundle("9.9.9", FILES)
    _refused(release(blob), Reply(200, blob, truncate=len(blob) // 2), "update to 9.9.9 failed")


def test_corrupted_file_inside_bundle_is_refused():
    blob = bundle("9.9.9", FILES)
    i = blob.index(b"X = 1")
    bad = blob[:i] + b"Y" + blob[i + 1 :]
    _refused(release(bad), Reply(200, bad), "twomes/extra.py: sha256 mismatch")


def test_hostile_paths_and_other_versions_are_refused():
    for files, version, word in (
        ([("../boot.py", b"x")], "9.9.9", "bad file entry"),
        ([("/main.py", b"x")], "9.9.9", "bad file entry"),
        ([("twomes/a.txt", b"x")], "9.9.9", "bad file entry"),
        (FILES, "1.2.3", "bundle is version 1.2.3"),
    ):
        blob = bundle(version, files)
        _refused(release(blob), Reply(200, blob), word)


def test_not_a_bundle_is_refused():
    blob = b"\xe9\x03\x02\x20" + b"\x00" * 400 + b"\n"
    _refused(release(blob), Reply(200, blob), "not an app bundle")


def test_bundle_for_another_bytecode_version_is_refused():
    if installer.mpy_tag() is None:
        return  # CPython has no .mpy version; the check runs on the MicroPython side of this test
    blob = bundle("9.9.9", FILES, mpy="5.0")
    _refused(release(blob), Reply(200, blob), "bundle built for mpy 5.0")


def test_a_version_that_keeps_failing_is_not_retried_forever():
    blob = bundle("9.9.9", FILES)
    rel = release(blob, sha256="1" * 64)

    async def body(app, on, srv):
        for _ in range(3):
            assert await _check(app, on) is False
        downloads = len([r for r in srv.requests if r[1] == rel["url"]])
        assert await _check(app, on) is False
        assert len([r for r in srv.requests if r[1] == rel["url"]]) == downloads == 3
        assert _lines("not trying it again")

    _go(_fw_server(rel, Reply(200, blob)), body)


def test_plain_twomes_server_without_firmware_api_is_skipped():
    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert _lines("server has no firmware API")
        assert on.fw_api is False
        n = len(srv.requests)
        await _check(app, on)  # asked once, then not again
        assert len(srv.requests) == n

    _go(lambda m, p, h, b: Reply(404, {"detail": "Not Found"}), body)


def test_no_target_and_up_to_date():
    from twomes import VERSION

    for rel, word in ((None, "no target version"), (release(b"x" * 10, version=VERSION), "up to date")):

        async def body(app, on, srv, word=word):
            assert await _check(app, on) is False
            assert _lines(word)
            assert len(srv.requests) == 1

        _go(lambda m, p, h, b, rel=rel: fw(200, {"release": rel}), body)


def test_malformed_release_from_server_is_an_error_not_an_update():
    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert _lines("malformed release") and _pointer() is None

    bad = {"id": 1, "version": "2", "kind": "floppy", "size": 10, "sha256": "0" * 64, "url": "/x"}
    _go(lambda m, p, h, b: fw(200, {"release": bad}), body)


# ---- signed releases -----------------------------------------------------------------------------


def _refused_unsigned(rel, word, **settings):
    async def body(app, on, srv):
        assert await _check(app, on) is False
        assert _job() is None and _pointer() is None
        assert _lines("refused") and _lines(word), support.logged()
        assert [r[1] for r in srv.requests] == ["/device/firmware/target"]  # nothing downloaded

    _go(_fw_server(rel, Reply(200, b"")), body, **settings)


def test_unsigned_wrong_key_and_other_type_releases_are_refused_before_anything_is_written():
    blob = bundle("9.9.9", FILES)
    _refused_unsigned(release(blob, signed=False), "unsigned")
    other = support.sign(release(blob, signed=False), 1, seed=bytes(32))  # a key the device does not trust
    _refused_unsigned(other, "signature")
    _refused_unsigned(support.sign(release(blob, signed=False), 1, "Other-Type"), "device type")
    forged = release(blob)
    forged["size"] += 1  # the server's release no longer says what was signed
    _refused_unsigned(forged, "differs from its signed manifest")


def test_unsigned_release_only_with_the_lab_setting():
    blob = bundle("9.9.9", FILES)
    rel = release(blob, signed=False)

    async def body(app, on, srv):
        assert await _check(app, on) is True
        assert _lines("allow_unsigned is set") and _pointer()["version"] == "9.9.9"

    _go(_fw_server(rel, Reply(200, blob)), body, allow_unsigned=True)


def test_a_lower_security_counter_is_refused_after_a_higher_one_was_kept():
    from twomes.update import state

    blob = bundle("9.9.9", FILES)

    async def body(app, on, srv):
        app.st.put_int(store.FW_COUNTER, 5)  # a release with counter 5 was installed and kept
        app.st.commit()
        assert await _check(app, on) is False
        assert _lines("security counter 4 below the installed 5")
        assert state.counter(app.st) == 5

    _go(_fw_server(release(blob, counter=4), Reply(200, blob)), body)


def test_key_rotation_two_trusted_keys():
    import binascii

    import edsign

    blob = bundle("9.9.9", FILES)
    new_seed = bytes(range(1, 33))
    rel = support.sign(release(blob, signed=False), 2, seed=new_seed)

    async def body(app, on, srv):
        app.cfg.release_keys = (support.release_key(), binascii.hexlify(edsign.public_key(new_seed)).decode())
        assert await _check(app, on) is True

    _go(_fw_server(rel, Reply(200, blob)), body)


def test_the_counter_is_kept_only_when_the_new_version_is_kept():
    from twomes.update import state

    async def body(app, on, srv):
        state.installed_counter(app.st, "9.9.9", 7)
        state.confirm_kept(app.st, "1.0.0", False)  # another version kept: not 9.9.9's counter
        assert state.counter(app.st) is None
        state.installed_counter(app.st, "9.9.9", 7)
        state.confirm_kept(app.st, "9.9.9", False)
        assert state.counter(app.st) == 7
        state.installed_counter(app.st, "9.9.8", 3)
        state.confirm_kept(app.st, "9.9.8", False)
        assert state.counter(app.st) == 7  # never lower

    _go(None, body)


def test_control_characters_in_a_version_or_url_are_a_malformed_release():
    blob = bundle("9.9.9", FILES)
    for over in ({"version": "9.9.9\n[ 1.0] firmware: FAKE"}, {"url": "/x\r\nX-Evil: 1"}):
        rel = release(blob, signed=False, **over)

        async def body(app, on, srv):
            assert await _check(app, on) is False
            assert _lines("malformed release") and not _lines("FAKE")

        _go(lambda m, p, h, b, rel=rel: fw(200, {"release": rel}), body)


def test_bundle_header_split_anywhere_by_the_network_installs():
    # header lines are taken from whole reads (not byte by byte): whatever the packet boundaries, the
    # bytes after a line are the next file's first bytes
    blob = bundle("9.9.9", FILES)
    rel = release(blob)

    async def body(app, on, srv):
        assert await _check(app, on) is True
        with open("ota/a/twomes/extra.py", "rb") as f:
            assert f.read() == FILES[1][1]
        with open("ota/a/twomes/__init__.py", "rb") as f:
            assert f.read() == FILES[0][1]

    _go(_fw_server(rel, Reply(200, blob, drip=(7, 0))), body)


def test_bundle_header_line_too_long_or_trailing_bytes_are_refused():
    long_name = "twomes/" + "a" * 120 + ".py"  # the file line is over 128 bytes
    blob = bundle("9.9.9", [(long_name, b"x")])
    _refused(release(blob), Reply(200, blob), "bundle header line too long")
    blob = bundle("9.9.9", FILES) + b"junk after the last file"
    _refused(release(blob), Reply(200, blob), "bundle size mismatch")
