# The online phase: a session token (activation, waiting for the operator and the owner as long as it
# takes), the confirmation of what runs and the firmware check (twomes.update decides), then normal
# running with uploads (twomes/online/running.py). Returns an outcome, never touches the app's insides:
#   "update"   an update was found and saved as the next boot's job: the app restarts into it
#   "offline"  Wi-Fi is gone for good: the app opens the portal (which keeps retrying the network)
from micropython import const

from twomes import unload
from twomes.errors import Error, Restart
from twomes.log import log, printable
from twomes.online.server import Server, tls

_NET = const(0)


async def run(app, creds):
    srv = Server(app)
    context(app, srv)
    if srv.session is None:
        await activate(app, srv)
    upd = updates(app, srv)
    if await firmware(app, upd, True):
        return "update"
    from twomes.online import running

    return await running.run(app, srv, creds, firmware, confirmation, upd)


def updates(app, srv):
    """Where updates come from: the Twomes server `srv` (its firmware API), or an Eclipse hawkBit DDI
    server (config updates = "hawkbit", twomes/online/ddi.py) with the same update calls."""
    if app.cfg.updates != "hawkbit":
        return srv
    from twomes.online.ddi import Ddi

    upd = Ddi(app)
    upd.context = srv.context  # the same CA file: one TLS context for both servers (server.tls)
    return upd


def context(app, srv):
    """The phase's one TLS context (3 KB of heap; server.tls), made now unless it is there: first in
    the phase, so that it sits where the heap is whole and not in the holes that the phase's modules
    and requests leave, and again at once after a signature check let go of it (docs/heap.md). A
    missing or unusable CA file is said by each request that needs it."""
    try:
        tls(srv, app.cfg.server_url)
    except Error:
        pass


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
        srv.unconfirmed = await confirmation(app, srv) == "pending"
    if not srv.fw_api:
        return False
    from twomes.update import check

    try:
        done = await check.run(app, srv) == "update"
    finally:
        check = None
        unload("update.check", "update.state")  # (the state's owner: loaded by the check, 3 KB)
    if not done:
        context(app, srv)  # (the signature check may have let go of it)
        return False
    try:  # the server hears that the action is taken (hawkBit shows it running)
        await srv.report(srv.rel, True, "%s saved: installing it in the next boot" % srv.rel["version"])
    except Error as e:
        log("firmware", "feedback failed: %s" % e)
    return True


async def confirmation(app, srv):
    """Confirm what runs to the server when that is due (twomes.update.confirm keeps the version, or
    gives it up: a restart). Returns its outcome; "pending": the server answers but has not taken the
    confirmation yet - the version runs on and the running loop asks again."""
    from twomes.update import confirm

    try:
        outcome = await confirm.run(app, srv)
    finally:
        confirm = None
        unload("update.confirm", "update.state")
    if outcome == "restart":
        raise Restart()
    return outcome
