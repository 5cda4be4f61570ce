# The firmware check: what to do about the server's target (Online.firmware asked for it) and, when an
# update is due, save it as the job of the next boot (twomes/update.py installs it from a clean heap).
# Loaded for a check (at each connection and every fw_check_s), after the request, and unloaded
# afterwards.
from micropython import const

from twomes import JOB, VERSION, store
from twomes.log import log

_FW_FAILS_MAX = const(3)


def check(on, data):
    """`data`: the server's answer to GET /device/firmware/target. True when an update is due: it is
    saved as the next boot's job (the caller restarts)."""
    rel = data.get("release") if isinstance(data, dict) else None
    if rel is not None:  # validated: the server's answer is input like any other
        try:
            ok = (
                isinstance(rel["version"], str)
                and 0 < len(rel["version"]) <= 64
                and rel["kind"] in ("bundle", "image")
                and isinstance(rel["size"], int)
                and rel["size"] > 0
                and isinstance(rel["sha256"], str)
                and len(rel["sha256"]) == 64
                and isinstance(rel["url"], str)
                and rel["url"].startswith("/")
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            log("firmware", "check failed: HTTP 200 malformed release")
            return
    if rel is None:
        log("firmware", "no target version set on the server; running %s" % VERSION)
        return
    version = rel["version"]
    if version == VERSION:
        log("firmware", "up to date (%s)" % VERSION)
        return
    st = on.st
    fails = st.get_int(store.FW_FAILS, 0) if st.get(store.FW_FAILED) == version else 0
    if fails >= _FW_FAILS_MAX:
        log(
            "firmware",
            "target %s failed %d times: not trying it again until the target changes" % (version, fails),
        )
        return
    if on.app.safe:
        log("firmware", "target %s, running %s: no update attempts in safe mode" % (version, VERSION))
        return
    log("firmware", "target %s, running %s: updating in the next boot" % (version, VERSION))
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
