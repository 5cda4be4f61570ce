# The online phase: a session token (activation, waiting for the operator and the owner as long as it
# takes), the confirmation of what runs and the firmware check (twomes.update decides), then normal
# running with uploads (twomes/online/running.py). Returns an outcome, never touches the app's insides:
#   "update"   an update was found and saved as the next boot's job: the app restarts into it
#   "offline"  Wi-Fi is gone for good: the app opens the portal (which keeps retrying the network)
from micropython import const

from twomes.errors import Error
from twomes.log import log
from twomes.online.http import printable
from twomes.online.server import Server

_NET = const(0)
_NO_FW_API = const(-2)
UPDATE = "update"
OFFLINE = "offline"


async def run(app, creds):
    srv = Server(app)
    if srv.session is None:
        await activate(app, srv)
    upd = updates(app, srv)
    if await firmware(app, upd, True):
        return UPDATE
    from twomes.online import running

    return await running.run(app, srv, creds, firmware, upd)


def updates(app, srv):
    """Where updates come from: the Twomes server `srv` (its firmware API), or an Eclipse hawkBit DDI
    server (config updates = "hawkbit", twomes/online/ddi.py) with the same update calls."""
    if app.cfg.updates != "hawkbit":
        return srv
    from twomes.online.ddi import Ddi

    return Ddi(app)


async def activate(app, srv):
    """Until the server gives a session token (stored by srv.activate). One clear console line per
    condition, not one per retry; the LED double-blinks while the operator or the owner is awaited."""
    app.set_state("activating")
    back = app.backoff()
    hinted = None
    while True:
        hint = None
        try:
            await srv.activate()
            return
        except Error as e:
            if e.status == _NET:
                log("activate", "no answer: %s" % e)
            elif e.status == 404:
                hint = (
                    "not registered on the server yet: the operator registers the activation line "
                    "printed at boot"
                )
            elif e.status == 403:
                hint = "registered, but not attached to an owner yet: waiting for the owner"
            else:
                log("activate", "server answered %s" % printable(str(e)[5:], 100))
        if hint is not None and hint != hinted:
            hinted = hint
            log("activate", hint)
            app.set_state("waiting", "for the operator")
        await app.sleep_s(back.next_s())


async def firmware(app, srv, confirm):
    """After a connection (confirm=True) confirm what runs when that is due; then ask for the target
    and let twomes.update decide. True when an update was saved for the next boot."""
    if confirm:
        from twomes import rollback

        st = app.st
        from twomes import VERSION, store
        from twomes.app import exists

        if st.get(store.FW_CONFIRMED) != VERSION or st.get(store.IMG_NEW) is not None or exists("ota/failed"):
            await rollback.confirm(srv)
        rollback = None
        app.unload("rollback")
    if not srv.fw_api:
        return False
    from twomes import fw

    app.set_state("checking")
    try:
        data = await srv.authed("GET", "/device/firmware/target")
        if fw.check(srv, data) is not True:
            return False
        if srv.__class__ is not Server:  # DDI: the action is taken (hawkBit shows it running)
            try:
                await srv.report(
                    data["release"],
                    True,
                    ["%s saved: installing it in the next boot" % data["release"]["version"]],
                )
            except Error as e:
                log("firmware", "feedback failed: %s" % e)
        return True
    except Error as e:
        if e.status == _NO_FW_API:
            log("firmware", "server has no firmware API: updates skipped")
        else:
            log("firmware", "check failed: %s" % e)
        return False
    finally:
        fw = None
        app.unload("fw")


async def confirmation(app, srv):
    """Confirm what runs to the server when that is due (twomes.update decides and keeps or gives up)."""
    from twomes import VERSION, rollback, store
    from twomes.app import exists

    st = app.st
    try:
        if st.get(store.FW_CONFIRMED) != VERSION or st.get(store.IMG_NEW) is not None or exists("ota/failed"):
            await rollback.confirm(srv)
    finally:
        rollback = None
        app.unload("rollback")
