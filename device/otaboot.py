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
# comes back. A slot is an .mpy overlay directory (ota/a, ota/b) or a half of the "romfs" partition
# (rom-a, rom-b: mounted at /rom; one that does not mount is rolled back at once). A bundle belongs
# to the app partition (ESP32 image) it first booted on ("base"): while another image runs it is not
# used.
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
    if state.slot_in_use(st, running) is None:
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
            st = _roll_back(state, st)
        else:
            state.write_slot(st)
    if st.get("slot") and not use(state, st):
        # a ROMFS half that does not mount (never after a verified install): as if it never confirmed
        print("boot: slot %s of version %s does not mount, rolling back" % (st["slot"], st.get("version")))
        st = _roll_back(state, st)
        if st.get("slot") and not use(state, st):
            print("boot: slot %s does not mount either: the deployed app starts" % st["slot"])
            return None, st
    return st.get("slot"), st


def _roll_back(state, st):
    """Back to the pointer's previous slot; the version that never confirmed is recorded as failed."""
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
    return st


def use(state, st):
    """Make slot st["slot"] the app of this boot: an .mpy overlay directory first on sys.path, or a ROMFS
    half mounted at /rom (docs/ota.md "Bundles on a ROMFS board"). False when a ROMFS half does not
    mount or does not hold the pointer's version: /rom is then what the port mounts (the first half)."""
    half = state.rom_half(st["slot"])
    if half is None:
        sys.path.insert(0, "ota/" + st["slot"])
        return True
    try:
        import vfs

        seg = memoryview(vfs.rom_ioctl(2, 0))  # the mapped "romfs" partition
    except (ImportError, AttributeError, OSError, TypeError):  # a build without ROMFS (or partition)
        return False
    ok = _mount(vfs, seg[len(seg) // 2 :] if half else seg)
    if ok:
        try:
            with open("/rom/version") as f:
                ok = st.get("version") is None or f.read() == st["version"]
        except OSError:
            ok = False
    if not ok:
        _mount(vfs, seg)
    return ok


def _mount(vfs, buf):
    """Mount the ROMFS in `buf` at /rom in place of what is there, with sys.path in the port's order;
    False (and nothing at /rom) when `buf` holds no ROMFS."""
    try:
        fs = vfs.VfsRom(buf)
    except OSError:
        fs = None
    try:
        vfs.umount("/rom")
    except OSError:
        pass  # nothing mounted: the first half held no ROMFS at start-up
    if fs is None:
        for p in ("/rom", "/rom/lib"):
            if p in sys.path:
                sys.path.remove(p)
        return False
    vfs.mount(fs, "/rom")
    if "/rom" not in sys.path:  # the port adds them only when its own mount succeeded
        i = sys.path.index(".frozen") + 1 if ".frozen" in sys.path else 1
        sys.path[i:i] = ["/rom", "/rom/lib"]
    return True


def select():
    """boot.py: choose the app for this boot; returns (slot or None, slot pointer or None). Every module
    loaded for it (twomes.update.state, the twomes package, a simulation's partition code) is dropped
    again, so the app that runs next imports its own - the chosen slot's - versions of them."""
    before = list(sys.modules)
    path = sys.path[:]
    try:
        # the pointer is read by /lib's copy of the update state, never by a slot's (a torn or bad slot
        # must not break the boot): /lib before /rom while it is imported
        if "/rom" in path:
            i = path.index("/rom")
            sys.path[i:i] = [p for p in path if p in ("/lib", "lib")]
        try:
            from twomes.update import state
        finally:
            sys.path[:] = path
        return choose(state)
    finally:
        state = None
        for name in list(sys.modules):
            if name not in before:
                sys.modules.pop(name)
