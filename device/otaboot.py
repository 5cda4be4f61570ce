# Chooses the app at every boot, before anything else is imported - the app-bundle equivalent of the
# ESP32 bootloader's OTA rule. Never shipped in a bundle, so a bad update cannot break it.
#
# ota/state.json: {"slot": "a"|"b"|null, "state": "new"|"pending"|"valid", "boots": n,
#                  "prev": slot or null, "version": "...", "max_boots": n, "failed": version or null}
# new -> pending (boots=1) -> valid once the app confirmed itself to the server; a slot still pending
# after max_boots boots is abandoned: the previous slot (or the factory app in /lib) comes back.
import json
import os
import sys

STATE = "ota/state.json"


def read():
    try:
        with open(STATE) as f:
            st = json.loads(f.read())
        return st if isinstance(st, dict) else None
    except (OSError, ValueError):
        return None


def write(st):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(st))
    os.rename(tmp, STATE)  # atomic on LittleFS and POSIX: one small pointer write


def select():
    """Put the chosen slot first on sys.path; returns (slot or None, state dict or None)."""
    st = read()
    if not st or not st.get("slot"):
        return None, st
    state = st.get("state")
    if state == "new":
        st["state"] = "pending"
        st["boots"] = 1
        write(st)
    elif state == "pending":
        st["boots"] = st.get("boots", 0) + 1
        if st["boots"] > st.get("max_boots", 3):
            print("boot: version %s never confirmed, rolling back" % st.get("version"))
            st = {
                "slot": st.get("prev"),
                "state": "valid",
                "boots": 0,
                "prev": None,
                "version": st.get("prev_version"),
                "failed": st.get("version"),
            }
            write(st)
        else:
            write(st)
    if st.get("slot"):
        sys.path.insert(0, "ota/" + st["slot"])
    return st.get("slot"), st
