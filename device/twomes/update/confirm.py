# The confirmation of what runs, when one is due (due(): a fresh flash, the first boot of a new
# version, an update that did not stick). First an update that did not stick is counted (an image that
# was rolled back, a bundle otaboot gave up); then the server is told what runs; after that the version
# is kept, or given up. Loaded at each connection of the online phase, before its requests (code loaded
# after one lands in the holes its garbage left), and unloaded right after.
from micropython import const

from twomes import VERSION
from twomes.errors import Error
from twomes.log import log
from twomes.update import state

_TRIES = const(6)
_NO_FW_API = const(-2)  # errors.Error status: the server has no firmware API (a plain Twomes server)
_NOT_FOUND = const(-261)  # ESP_ERR_NOT_FOUND: the bootloader has no rollback support (docs/ota.md)


def due(st):
    """Is a confirmation due? The one place this is decided."""
    return (
        state.confirmed(st) != VERSION
        or state.image_new(st) is not None
        or state.bundle_rollback_pending()  # otaboot rolled a bundle back: count it
    )


async def run(app, server):
    """Confirm what runs when that is due (`server.confirm`), up to _TRIES times with backoff. Returns
    "none" (nothing due), "kept" (confirmed, or nothing to tell: kept), "no_api" (the server has no
    firmware API: kept without confirmation), "pending" (the server answers but did not take the
    confirmation - 5xx, 401: the version runs and uploads on, the caller asks again later; it is not
    kept meanwhile) or "restart" (no answer at all in _TRIES tries: restart; a new image asked the
    bootloader to go back to the previous app, a bundle goes back after confirm_boots such boots)."""
    st = app.st
    if not due(st):
        return "none"
    img = count_failed_updates(st)  # True: a new image runs, to be confirmed
    if state.confirmed(st) == VERSION and not img:
        return "kept"  # confirmed before (a bundle rolled back was only counted)
    app.set_state("confirming", VERSION)
    back = app.backoff()
    outcome = "restart"
    for _ in range(_TRIES):
        try:
            await server.confirm(VERSION)
            outcome = "kept"
            break
        except Error as e:
            if e.status == _NO_FW_API:
                outcome = "no_api"
                break
            if e.status > 0:
                outcome = "pending"  # the server is there, it only does not take it (yet)
            log("firmware", "confirm failed: %s" % e)
        await app.sleep_s(back.next_s())
    if outcome == "restart":
        give_up(app, img)
    elif outcome == "pending":
        log("firmware", "%s not confirmed yet (the server answers): running on, asking again later" % VERSION)
    else:
        keep(app, img, outcome == "kept")
    return outcome


def count_failed_updates(st):
    """Before a confirmation: an image that was rolled back and a bundle otaboot gave up are counted as
    failed attempts. True when the new image is this version (it runs and is to be confirmed)."""
    img = state.image_new(st)
    if img == VERSION:
        return True
    if img:
        log(
            "firmware",
            "image %s is not running (rolled back or never switched to): %s runs" % (img, VERSION),
        )
        state.image_rolled_back(st, img)  # counted; this version tells the server again what runs
    version = state.take_rolled_back()
    if version:
        state.count_failure(st, version)
        log("firmware", "bundle %s never confirmed itself and was rolled back" % version)
    return False


def give_up(app, img):
    """Never confirmed: restart; otaboot rolls a bundle back after confirm_boots boots, a new image
    (`img` True) goes back to the previous app now."""
    log("firmware", "could not confirm %s: restarting" % VERSION)
    if img:
        # marking it invalid works with and without rollback support in the bootloader (docs/ota.md)
        log("firmware", "new image never confirmed: going back to the previous app")
        try:
            app.board.esp32.Partition.mark_app_invalid_rollback_and_reboot()
        except OSError as e:
            log("firmware", "rollback not possible (%s): restarting" % e)


def keep(app, img, confirmed):
    """Confirmed (or the server has no firmware API: `confirmed` False): keep this version."""
    st = app.st
    if state.keep_slot():
        log("firmware", "version %s confirmed and kept" % VERSION)
    state.good_boot()  # a good boot: the boot-loop counter starts again
    if img:
        try:
            app.board.esp32.Partition.mark_app_valid_cancel_rollback()
        except OSError as e:
            if e.args and e.args[0] == _NOT_FOUND:  # nothing to cancel; the app rolls back itself
                log("firmware", "bootloader without rollback support: image kept, no automatic rollback")
            else:
                log("firmware", "could not mark the app image valid: %s" % e)
    state.confirm_kept(st, VERSION, img)
    if confirmed:
        log("firmware", "running %s, confirmed to the server" % VERSION)
    else:
        log("firmware", "running %s, kept without confirmation: the server has no firmware API" % VERSION)
