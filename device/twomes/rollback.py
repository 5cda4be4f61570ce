# The confirmation of a version (Online.confirm, when one is due: a fresh flash, or the first boot of
# a new version): before it, an update that did not stick is counted (an image that was rolled back, a
# bundle otaboot gave up); then the server is told what runs; after that the version is kept, or given
# up. Loaded for the whole confirmation, before its requests (code loaded after one lands in the holes
# its garbage left), and unloaded right after.
from micropython import const

from twomes import VERSION, store
from twomes.errors import Error
from twomes.log import log

_CONFIRM_TRIES = const(6)
_NO_FW_API = const(-2)  # errors.Error status: the server has no firmware API (a plain Twomes server)
_FAILED = "ota/failed"  # otaboot writes the version of a bundle it rolled back here


async def confirm(on):
    """Confirm what runs to the server (the Online `on`), up to _CONFIRM_TRIES times with backoff."""
    st = on.st
    img = after_boot(on)  # set: the new image that runs, to be confirmed
    if st.get(store.FW_CONFIRMED) == VERSION:
        return
    on.app.set_state("confirming", VERSION)
    back = on.app.backoff()
    ok = False
    for _ in range(_CONFIRM_TRIES):
        try:
            await on.authed("POST", "/device/firmware/confirm", {"version": VERSION})
            ok = True
            break
        except Error as e:
            if e.status == _NO_FW_API:
                log("firmware", "server has no firmware API: keeping %s without confirmation" % VERSION)
                on._fw_api = False
                ok = True
                break
            log("firmware", "confirm failed: %s" % e)
        await on.app.sleep_s(back.next_s())
    settle(on, img, ok)


def _count(st, version):
    """One more failed attempt for `version` (not tried again after three: twomes/fw.py)."""
    fails = st.get_int(store.FW_FAILS, 0) if st.get(store.FW_FAILED) == version else 0
    st.put(store.FW_FAILED, version)
    st.put_int(store.FW_FAILS, fails + 1)
    st.commit()


def after_boot(on):
    """Before a confirmation (twomes/online.py, Online.confirm): an image that was rolled back and a
    bundle otaboot gave up are counted as failed attempts. Returns IMG_NEW when it names this version
    (the new image runs and is to be confirmed), else None."""
    st = on.st
    img = st.get(store.IMG_NEW)  # "<version> <partition> <running partition>": an image was installed
    if img is not None and img.split(" ")[0] == VERSION:
        return img
    if img is not None:
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
    try:
        with open(_FAILED) as f:
            version = f.read().strip()
    except OSError:
        return None
    import os

    os.remove(_FAILED)  # first: a power cut in between loses a count, never doubles one
    if version:
        _count(st, version)
        log("firmware", "bundle %s never confirmed itself and was rolled back" % version)
    return None


def settle(on, img, confirmed):
    """After the confirmation requests: keep this version (confirmed, or the server has no firmware
    API), or give up on it: restart, and a new image (`img`) goes back to the previous app now."""
    st = on.st
    if not confirmed:
        # never confirmed: reboot; the boot selector rolls a bundle back after confirm_boots boots
        log("firmware", "could not confirm %s: restarting" % VERSION)
        if img is not None:
            # marking it invalid works with and without rollback support in the bootloader (docs/ota.md)
            log("firmware", "new image never confirmed: going back to the previous app")
            try:
                on.board.esp32.Partition.mark_app_invalid_rollback_and_reboot()
            except OSError as e:
                log("firmware", "rollback not possible (%s): restarting" % e)
        raise on.app.Restart()
    from twomes.app import boot_guard, exists

    if exists("ota/state.json"):  # = otaboot.STATE: a bundle was installed once (else nothing to keep)
        import otaboot

        if otaboot.mark_valid():
            log("firmware", "version %s confirmed and kept" % VERSION)
        otaboot = None
        import sys

        sys.modules.pop("otaboot", None)

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
