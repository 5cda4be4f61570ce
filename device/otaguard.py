# Boot-time half of otaboot, in its own module so that the installers and the confirmation, which load
# otaboot for the slot pointer (read/write/mark_valid), do not carry it: the slot choice and rollback
# (select), the boot-loop counter and the running app partition. Loaded by otaboot.select() only and
# dropped again. Never shipped in a bundle (like otaboot).
#
# ota/boots: boots in a row that did not end well; the app removes it once it has run for a while or
# confirmed itself (twomes/app.py boot_guard). From SAFE_AFTER + 1 on the app starts in safe mode.
import os
import sys

from otaboot import read, write

BOOTS = "ota/boots"
SAFE_AFTER = 5  # failed boots in a row before safe mode (twomes/app.py _SAFE_AFTER)


def failed_boots():
    """Boots since the app last said this one went well, this one included."""
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
    if n > SAFE_AFTER:
        print("boot: safe mode after %d boots in a row that did not end well: no update attempts" % (n - 1))
    return n


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
    """otaboot.select(): count this boot, put the chosen slot first on sys.path; returns (slot or None,
    state or None)."""
    try:
        count_boot()
    except OSError:
        pass  # a filesystem that cannot take the count: no safe mode, the app still starts
    st = read()
    if not st or not st.get("slot"):
        return None, st
    running = running_partition() if st.get("base") or st.get("state") == "new" else None
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
