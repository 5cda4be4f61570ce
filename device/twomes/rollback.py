# After an update that did not stick: what the app does about it at the next boot (fw.confirm loads
# this only when NVS IMG_NEW is set or otaboot left ota/failed). Tiny, and unloaded right after.
from twomes import VERSION, store
from twomes.log import log

FAILED = "ota/failed"  # otaboot writes the version of a bundle it rolled back here


def after_boot(st, img):
    """IMG_NEW (`img`) names this version: the new image runs, returns img (to confirm). Another
    version: that image was rolled back (counted). A bundle otaboot gave up: counted. Returns None."""
    if img is not None and img.split(" ")[0] == VERSION:
        return img
    if img is not None:
        rolled_back(st, img, VERSION)
    try:
        with open(FAILED) as f:
            version = f.read().strip()
    except OSError:
        return None
    import os

    os.remove(FAILED)  # first: a power cut in between loses a count, never doubles one
    if version:
        _count(st, version)
        log("firmware", "bundle %s never confirmed itself and was rolled back" % version)
    return None


def _count(st, version):
    fails = st.get_int(store.FW_FAILS, 0) if st.get(store.FW_FAILED) == version else 0
    st.put(store.FW_FAILED, version)
    st.put_int(store.FW_FAILS, fails + 1)
    st.commit()


def rolled_back(st, img, running_version):
    """IMG_NEW names another version than the one running: the new image was rolled back (or the
    power went between IMG_NEW and set_boot). Counted as a failed attempt; this version confirms
    itself again, so the server is told what runs (the new one may have confirmed just before)."""
    version = img.split(" ")[0]
    log(
        "firmware",
        "image %s is not running (rolled back or never switched to): %s runs" % (version, running_version),
    )
    st.delete(store.IMG_NEW)
    st.delete(store.FW_CONFIRMED)
    st.commit()
    _count(st, version)


def give_up(board):
    """The new image could not confirm itself: mark it invalid and boot the previous app now. Works
    with and without rollback support in the bootloader (docs/ota.md)."""
    log("firmware", "new image never confirmed: going back to the previous app")
    try:
        board.esp32.Partition.mark_app_invalid_rollback_and_reboot()
    except OSError as e:
        log("firmware", "rollback not possible (%s): restarting" % e)
