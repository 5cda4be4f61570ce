# After an update that did not stick: what the app does about it at its next boot (images) or next
# firmware check (bundles). Tiny, and loaded only when there is something to do.
from twomes import store
from twomes.log import log


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
    fails = st.get_int(store.FW_FAILS, 0) if st.get(store.FW_FAILED) == version else 0
    st.put(store.FW_FAILED, version)
    st.put_int(store.FW_FAILS, fails + 1)
    st.commit()


def give_up(board):
    """The new image could not confirm itself: mark it invalid and boot the previous app now. Works
    with and without rollback support in the bootloader (docs/ota.md)."""
    log("firmware", "new image never confirmed: going back to the previous app")
    try:
        board.esp32.Partition.mark_app_invalid_rollback_and_reboot()
    except OSError as e:
        log("firmware", "rollback not possible (%s): restarting" % e)


def bundle_failed(st, version):
    """otaboot gave up a bundle of `version` that never confirmed itself ("failed" in its state):
    one failed attempt, so a bundle that cannot confirm is not installed again and again."""
    import sys

    import otaboot

    try:
        s = otaboot.read()
        if not s or s.get("failed") != version:
            return
        s.pop("failed")
        otaboot.write(s)  # first: a power cut in between loses a count, never doubles one
        fails = st.get_int(store.FW_FAILS, 0) if st.get(store.FW_FAILED) == version else 0
        st.put(store.FW_FAILED, version)
        st.put_int(store.FW_FAILS, fails + 1)
        st.commit()
        log("firmware", "bundle %s never confirmed itself and was rolled back" % version)
    finally:
        sys.modules.pop("otaboot", None)
