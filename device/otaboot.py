# Chooses the app at every boot, before anything else is imported (boot.py): the app-bundle equivalent
# of the ESP32 bootloader's OTA rule, and the boot-loop counter behind safe mode. Never shipped in a
# bundle, so a bad update cannot break it.
#
# The persisted state (slot pointer ota/state.json, boot counter ota/boots, ota/failed) and its formats
# belong to twomes/update/state.py: loaded here for the choice and dropped again (with the twomes
# package it pulled in), so the app imported afterwards - the chosen slot's - brings its own.
#
# Slot pointer life: new -> pending (boots=1) -> valid once the app confirmed itself to the server; a
# slot still pending after max_boots boots is abandoned: the previous slot (or the factory app in /lib)
# comes back. A bundle belongs to the app partition (ESP32 image) it first booted on ("base"): while
# another image runs it is not used.
import sys


def running_partition():
    """Label of the app partition running (ESP32), or None where there is none (host tests)."""
    try:
        import esp32

        # (the stubs' Partition takes a label only; the firmware also takes Partition.RUNNING)
        return esp32.Partition(esp32.Partition.RUNNING).info()[4]  # pyright: ignore[reportArgumentType]
    except Exception:  # noqa: BLE001 - no esp32 module, no partition table: no image in play
        return None


def choose(state):
    """Count this boot, pick the slot (rolling back a bundle that never confirmed itself) and put it
    first on sys.path. Returns (slot or None, slot pointer or None)."""
    try:
        state.count_boot()
    except OSError:
        pass  # a filesystem that cannot take the count: no safe mode, the app still starts
    st = state.slot()
    if not st or not st.get("slot"):
        return None, st
    running = running_partition() if st.get("base") or st.get("state") == "new" else None
    if st.get("base") is not None and st["base"] != running:
        print("boot: bundle %s belongs to the image in %s: not used" % (st.get("version"), st["base"]))
        return None, st
    phase = st.get("state")
    if phase == "new":
        st["state"] = "pending"
        st["boots"] = 1
        if "base" not in st:  # the image this bundle runs on (at boot: no update code in RAM now)
            st["base"] = running
        state.write_slot(st)
    elif phase == "pending":
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
            state.write_slot(st)
            state.bundle_rolled_back(st["failed"])  # the old version counts it (twomes/update/confirm.py)
        else:
            state.write_slot(st)
    if st.get("slot"):
        sys.path.insert(0, "ota/" + st["slot"])
    return st.get("slot"), st


def select():
    """boot.py: choose the app for this boot; returns (slot or None, slot pointer or None). Every module
    loaded for it (twomes.update.state, the twomes package, a simulation's partition code) is dropped
    again, so the app that runs next imports its own - the chosen slot's - versions of them."""
    before = list(sys.modules)
    try:
        from twomes.update import state

        return choose(state)
    finally:
        state = None
        for name in list(sys.modules):
            if name not in before:
                sys.modules.pop(name)
