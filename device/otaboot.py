# Chooses the app at every boot, before anything else is imported - the app-bundle equivalent of the
# ESP32 bootloader's OTA rule. Never shipped in a bundle, so a bad update cannot break it.
#
# ota/state.json: {"slot": "a"|"b"|null, "state": "new"|"pending"|"valid", "boots": n,
#                  "prev": slot or null, "version": "...", "max_boots": n, "failed": version or null}
# new -> pending (boots=1) -> valid once the app confirmed itself to the server; a slot still pending
# after max_boots boots is abandoned: the previous slot (or the factory app in /lib) comes back.
# "base": the app partition (ESP32 image) the bundle runs on, recorded at its first boot; while another
# image runs (a newer image, until it is confirmed or rolled back) the bundle is not used.
#
# select() (otaguard) also counts the boot: the boot-loop counter behind safe mode.
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


def mark_valid():
    """The running slot confirmed itself to the server: keep it. True when something changed."""
    st = read()
    if st and st.get("slot") and st.get("state") != "valid":
        st["state"] = "valid"
        st["boots"] = 0
        write(st)
        return True
    return False


def select():
    """Count this boot, put the chosen slot first on sys.path; returns (slot or None, state or None).
    The work is otaguard's: boot-time code, loaded for this and dropped again, so the installers and
    the confirmation, which load otaboot for the slot pointer above, do not carry it."""
    try:
        import otaguard

        return otaguard.select()
    finally:
        sys.modules.pop("otaguard", None)
