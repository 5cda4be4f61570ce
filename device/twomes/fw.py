# Firmware: confirm the version that runs, check the server's target, and when an update is due save it
# as the job of the next boot (twomes/update.py installs it from a clean heap). Loaded for a check (at
# each connection and every fw_check_s) and unloaded afterwards.
from micropython import const

from twomes import JOB, VERSION, store
from twomes.errors import Error, NoFirmwareApi
from twomes.log import log

_CONFIRM_TRIES = const(6)
_FW_FAILS_MAX = const(3)


async def confirm(on):
    """A version that has not been confirmed yet (fresh flash or first boot after an update) tells the
    server what it runs; only after the server has it is the version kept."""
    img = on.st.get(store.IMG_NEW)
    from twomes.app import exists

    if img is not None or exists("ota/failed"):  # a new image runs, or an update did not stick
        from twomes import rollback

        img = rollback.after_boot(on.st, img)  # still set: this is the new image, to be confirmed
        on.app.unload("rollback")
    if on.st.get(store.FW_CONFIRMED) == VERSION:
        return
    on.set_state("confirming", VERSION)
    back = on.backoff()
    for _ in range(_CONFIRM_TRIES):
        try:
            await on.authed(on.api.confirm, VERSION)
            break
        except NoFirmwareApi:
            log("firmware", "server has no firmware API: keeping %s without confirmation" % VERSION)
            on._fw_api = False
            break
        except Error as e:
            log("firmware", "confirm failed: %s" % e)
        await on.sleep_s(back.next_s())
    else:
        # never confirmed: reboot; the boot selector rolls back after confirm_boots boots
        log("firmware", "could not confirm %s: restarting" % VERSION)
        if img is not None:  # a new image: back to the previous app now
            from twomes import rollback

            rollback.give_up(on.board)
        raise on.app.Restart()
    import otaboot

    if otaboot.mark_valid():
        log("firmware", "version %s confirmed and kept" % VERSION)
    otaboot = None
    import sys

    sys.modules.pop("otaboot", None)
    from twomes.app import boot_guard

    boot_guard(True)  # a good boot: the boot-loop counter starts again
    if on.st.get(store.IMG_NEW) is not None:
        mark_image_valid(on)
        on.st.delete(store.IMG_NEW)
        on.st.delete(store.DL_STATE)
    on.st.put(store.FW_CONFIRMED, VERSION)
    if on.st.get(store.FW_FAILED) == VERSION:  # another version's failures still count
        on.st.delete(store.FW_FAILED)
        on.st.delete(store.FW_FAILS)
    on.st.commit()
    log("firmware", "running %s, confirmed to the server" % VERSION)


def mark_image_valid(on):
    try:
        on.board.esp32.Partition.mark_app_valid_cancel_rollback()
    except OSError as e:
        if e.args and e.args[0] == -261:  # nothing to cancel; the app rolls back itself (docs/ota.md)
            log("firmware", "bootloader without rollback support: image kept, no automatic rollback")
            return
        log("firmware", "could not mark the app image valid: %s" % e)


async def check(on):
    """True when an update is due: it is saved as the next boot's job (the caller restarts)."""
    if not on._fw_api:
        return
    on.set_state("checking")
    try:
        rel = await on.authed(on.api.target)
    except NoFirmwareApi:
        log("firmware", "server has no firmware API: updates skipped")
        on._fw_api = False
        return
    except Error as e:
        log("firmware", "check failed: %s" % e)
        return
    if rel is None:
        log("firmware", "no target version set on the server; running %s" % VERSION)
        return
    if rel["version"] == VERSION:
        log("firmware", "up to date (%s)" % VERSION)
        return
    failed = on.st.get(store.FW_FAILED)
    fails = on.st.get_int(store.FW_FAILS, 0) if failed == rel["version"] else 0
    if fails >= _FW_FAILS_MAX:
        log(
            "firmware",
            "target %s failed %d times: not trying it again until the target changes"
            % (rel["version"], fails),
        )
        return
    if on.app.safe:
        log("firmware", "target %s, running %s: no update attempts in safe mode" % (rel["version"], VERSION))
        return
    log("firmware", "target %s, running %s: updating in the next boot" % (rel["version"], VERSION))
    import json
    import os

    try:
        os.mkdir("ota")
    except OSError:
        pass
    with open(JOB + ".tmp", "w") as f:
        f.write(json.dumps({"rel": rel, "fails": fails}))
    os.rename(JOB + ".tmp", JOB)  # atomic: a half-written job is never read
    return True
