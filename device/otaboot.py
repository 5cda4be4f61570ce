# Chooses the app at every boot, before anything else is imported - the app-bundle equivalent of the
# ESP32 bootloader's OTA rule. Never shipped in a bundle, so a bad update cannot break it.
#
# ota/state.json: {"slot": "a"|"b"|null, "state": "new"|"pending"|"valid", "boots": n,
#                  "prev": slot or null, "version": "...", "max_boots": n, "failed": version or null}
# new -> pending (boots=1) -> valid once the app confirmed itself to the server; a slot still pending
# after max_boots boots is abandoned: the previous slot (or the factory app in /lib) comes back.
# "base": the app partition (ESP32 image) the bundle was installed on; while another image runs (a
# newer image, until it is confirmed or rolled back) the bundle is not used.
#
# ota/boots: boots in a row that did not end well (the app calls healthy() once it has run for a
# while or confirmed itself). From SAFE_AFTER + 1 on the app starts in safe mode (no update attempts).
import json
import os
import sys

STATE = "ota/state.json"
BOOTS = "ota/boots"
SAFE_AFTER = 5  # failed boots in a row before safe mode


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


def failed_boots():
    """Boots since the app last said healthy(), this one included."""
    try:
        with open(BOOTS) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def count_boot():
    n = failed_boots() + 1
    try:
        f = open(BOOTS, "w")
    except OSError:
        os.mkdir("ota")
        f = open(BOOTS, "w")
    with f:
        f.write(str(n))
    return n


def healthy():
    """This boot went well: the boot-loop counter starts again."""
    if failed_boots():
        os.remove(BOOTS)


def guard(good):
    """For the app: True when this boot is in safe mode; good=True: this boot went well."""
    n = failed_boots()
    if good and n:
        healthy()
    if n > SAFE_AFTER and not good:
        print("boot: safe mode after %d boots in a row that did not end well: no update attempts" % (n - 1))
    return n > SAFE_AFTER


def running_partition():
    """Label of the app partition running (ESP32), or None where there is none (host tests)."""
    before = list(sys.modules)
    try:
        import esp32

        return esp32.Partition(esp32.Partition.RUNNING).info()[4]
    except Exception:  # noqa: BLE001 - no esp32 module, no partition table: no image in play
        return None
    finally:
        for name in list(sys.modules):  # a simulation's partition code, loaded for this: not kept
            if name not in before:
                sys.modules.pop(name)


def select():
    """Count this boot, put the chosen slot first on sys.path; returns (slot or None, state or None)."""
    try:
        count_boot()
    except OSError as e:
        print("boot: cannot count boots (%s)" % e)
    st = read()
    if not st or not st.get("slot"):
        return None, st
    if st.get("base") is not None and st["base"] != running_partition():
        print("boot: bundle %s belongs to the image in %s: not used" % (st.get("version"), st["base"]))
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
                "base": st.get("base"),
            }
            write(st)
        else:
            write(st)
    if st.get("slot"):
        sys.path.insert(0, "ota/" + st["slot"])
    return st.get("slot"), st
