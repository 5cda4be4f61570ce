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
# select() also counts the boot (otaguard: the boot-loop counter behind safe mode).
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
    """Count this boot, put the chosen slot first on sys.path; returns (slot or None, state or None)."""
    try:
        import otaguard as g  # boot-time only: dropped again below
    except ImportError:
        g = None
    try:
        if g:
            g.count_boot()
    except OSError:
        pass  # a filesystem that cannot take the count: no safe mode, the app still starts
    try:
        return _select(g)
    finally:
        sys.modules.pop("otaguard", None)


def _select(g):
    st = read()
    if not st or not st.get("slot"):
        return None, st
    running = g.running_partition() if g and (st.get("base") or st.get("state") == "new") else None
    if st.get("base") is not None and st["base"] != running:
        print("boot: bundle %s belongs to the image in %s: not used" % (st.get("version"), st["base"]))
        return None, st
    state = st.get("state")
    if state == "new":
        st["state"] = "pending"
        st["boots"] = 1
        if "base" not in st:  # the image this bundle runs on (at boot: no update code in RAM now)
            st["base"] = running
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
                "base": st.get("base"),
            }
            write(st)
            with open("ota/failed", "w") as f:  # for the app: one failed attempt (twomes/rollback.py)
                f.write(st["failed"] or "")
        else:
            write(st)
    if st.get("slot"):
        sys.path.insert(0, "ota/" + st["slot"])
    return st.get("slot"), st
