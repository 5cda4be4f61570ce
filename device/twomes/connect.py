# What the online phase does once when it connects, each a loop of requests with backoff: activation
# (trade the activation token for a session token, waiting for the operator and the owner as long as it
# takes) and the confirmation of the version that runs. Loaded only for these (twomes/online.py: no
# session token, a 401, a version to confirm) and unloaded right after.
from micropython import const

from twomes import VERSION, store
from twomes.errors import Error, HttpError, NetError, NoFirmwareApi
from twomes.log import log

_CONFIRM_TRIES = const(6)


async def activate(on):
    """Until the server gives a session token: stored, and kept in on.session."""
    app = on.app
    app.set_state("activating")
    back = app.backoff()
    hinted = None  # one clear line per condition, not one per retry
    while True:
        hint = None
        try:
            data = await on.call(
                "POST", "/device/activate", {"activation_token": app.ident.activation_token}, False
            )
            token = data.get("session_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not 8 <= len(token) <= 1024:
                raise NetError("activation answer has no session token")
            on.session = token
            on.st.put(store.SESSION, token)
            on.st.commit()
            log("activate", "activated; session token stored")
            return
        except HttpError as e:
            if e.status == 404:
                hint = (
                    "not registered on the server yet: the operator registers the activation line "
                    "printed at boot"
                )
            elif e.status == 403:
                hint = "registered, but not attached to an owner yet: waiting for the owner"
            else:
                log("activate", "server answered %d %s" % (e.status, e.detail))
        except NetError as e:
            log("activate", "no answer: %s" % e)
        if hint is not None and hint != hinted:
            hinted = hint
            log("activate", hint)
        await app.sleep_s(back.next_s())


async def confirm(on):
    """Tell the server what runs (a fresh flash or the first boot of a new version); only after the
    server has it is the version kept (twomes/rollback.py, which also counts an update that did not
    stick). The code around the requests is loaded before and after them, not while they run."""
    app, st = on.app, on.st
    from twomes import rollback

    img = rollback.after_boot(on)  # set: the new image that runs, to be confirmed
    rollback = None
    app.unload("rollback")
    if st.get(store.FW_CONFIRMED) == VERSION:
        return
    app.set_state("confirming", VERSION)
    back = app.backoff()
    ok = False
    for _ in range(_CONFIRM_TRIES):
        try:
            await on.authed("POST", "/device/firmware/confirm", {"version": VERSION})
            ok = True
            break
        except NoFirmwareApi:
            log("firmware", "server has no firmware API: keeping %s without confirmation" % VERSION)
            on._fw_api = False
            ok = True
            break
        except Error as e:
            log("firmware", "confirm failed: %s" % e)
        await app.sleep_s(back.next_s())
    from twomes import rollback

    try:
        rollback.settle(on, img, ok)
    finally:
        rollback = None
        app.unload("rollback")
