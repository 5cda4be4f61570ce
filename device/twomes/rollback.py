# After a version has booted and is online: it confirms itself to the server when that is due (a fresh
# flash, or the first boot of a new version), and counts an update that did not stick (an image that was
# rolled back, a bundle otaboot gave up). Loaded by the online phase only when one of these is due
# (twomes/online.py) and unloaded right after.
from micropython import const

from twomes import VERSION, store
from twomes.errors import Error, NoFirmwareApi
from twomes.log import log

_CONFIRM_TRIES = const(6)
_FAILED = "ota/failed"  # otaboot writes the version of a bundle it rolled back here


def _count(st, version):
    """One more failed attempt for `version` (not tried again after three: twomes/fw.py)."""
    fails = st.get_int(store.FW_FAILS, 0) if st.get(store.FW_FAILED) == version else 0
    st.put(store.FW_FAILED, version)
    st.put_int(store.FW_FAILS, fails + 1)
    st.commit()


async def confirm(on):
    """Tell the server what runs; only after the server has it is the version kept. The online phase
    `on` calls this after a connection when IMG_NEW is set, ota/failed exists or this version has not
    been confirmed yet."""
    st, app = on.st, on.app
    img = st.get(store.IMG_NEW)  # "<version> <partition> <running partition>": an image was installed
    if img is not None and img.split(" ")[0] != VERSION:
        # the new image was rolled back (or the power went between IMG_NEW and set_boot): a failed
        # attempt; this version confirms itself again, so the server is told what runs (the new one may
        # have confirmed itself just before)
        version = img.split(" ")[0]
        log(
            "firmware",
            "image %s is not running (rolled back or never switched to): %s runs" % (version, VERSION),
        )
        st.delete(store.IMG_NEW)
        st.delete(store.FW_CONFIRMED)
        st.commit()
        _count(st, version)
        img = None
    if img is None:
        try:
            with open(_FAILED) as f:
                version = f.read().strip()
        except OSError:
            version = None
        if version is not None:
            import os

            os.remove(_FAILED)  # first: a power cut in between loses a count, never doubles one
            if version:
                _count(st, version)
                log("firmware", "bundle %s never confirmed itself and was rolled back" % version)
    # img is set now only when the new image runs: to be confirmed
    if st.get(store.FW_CONFIRMED) == VERSION:
        return
    app.set_state("confirming", VERSION)
    back = app.backoff()
    for _ in range(_CONFIRM_TRIES):
        try:
            await on.authed("POST", "/device/firmware/confirm", {"version": VERSION})
            break
        except NoFirmwareApi:
            log("firmware", "server has no firmware API: keeping %s without confirmation" % VERSION)
            on._fw_api = False
            break
        except Error as e:
            log("firmware", "confirm failed: %s" % e)
        await app.sleep_s(back.next_s())
    else:
        # never confirmed: reboot; the boot selector rolls a bundle back after confirm_boots boots
        log("firmware", "could not confirm %s: restarting" % VERSION)
        if img is not None:
            # a new image: back to the previous app now. Marking it invalid works with and without
            # rollback support in the bootloader (docs/ota.md)
            log("firmware", "new image never confirmed: going back to the previous app")
            try:
                on.board.esp32.Partition.mark_app_invalid_rollback_and_reboot()
            except OSError as e:
                log("firmware", "rollback not possible (%s): restarting" % e)
        raise app.Restart()
    import otaboot

    if otaboot.mark_valid():
        log("firmware", "version %s confirmed and kept" % VERSION)
    otaboot = None
    import sys

    sys.modules.pop("otaboot", None)
    from twomes.app import boot_guard

    boot_guard(True)  # a good boot: the boot-loop counter starts again
    if st.get(store.IMG_NEW) is not None:
        try:
            on.board.esp32.Partition.mark_app_valid_cancel_rollback()
        except OSError as e:
            if e.args and e.args[0] == -261:  # nothing to cancel; the app rolls back itself (docs/ota.md)
                log("firmware", "bootloader without rollback support: image kept, no automatic rollback")
            else:
                log("firmware", "could not mark the app image valid: %s" % e)
        st.delete(store.IMG_NEW)
        st.delete(store.DL_STATE)
    st.put(store.FW_CONFIRMED, VERSION)
    if st.get(store.FW_FAILED) == VERSION:  # another version's failures still count
        st.delete(store.FW_FAILED)
        st.delete(store.FW_FAILS)
    st.commit()
    log("firmware", "running %s, confirmed to the server" % VERSION)
