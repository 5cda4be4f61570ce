# Activation: trade the activation token for a session token (POST /device/activate), waiting for the
# operator and the owner as long as it takes. Loaded by the online phase only when there is no session
# token (the first connection, or after the server refused it with 401) and unloaded right after.
from micropython import const

from twomes import store
from twomes.errors import Error
from twomes.log import log

_NET = const(0)  # errors.Error status: no (readable) answer


async def run(on):
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
                raise Error(_NET, "activation answer has no session token")
            on.session = token
            on.st.put(store.SESSION, token)
            on.st.commit()
            log("activate", "activated; session token stored")
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
                log("activate", "server answered %s" % str(e)[5:])  # "HTTP 503 down" -> "503 down"
        if hint is not None and hint != hinted:
            hinted = hint
            log("activate", hint)
            app.set_state("waiting", "for the operator")  # the LED double-blinks
        await app.sleep_s(back.next_s())
