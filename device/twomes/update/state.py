# Every persisted update state, read and written here and nowhere else (a test greps device/ for it).
# The other update modules, the app and otaboot ask this module; they never open these files or keys.
#
# Files (LittleFS on the chip; a write of more than one value goes to <name>.tmp and is renamed over
# the old file: one atomic rename, so a power cut leaves the old content or the new, never half):
#   ota/job         JSON {"rel": <release>}: the update the next boot installs (check.py saves it after
#                   validating it, job.py installs it and drops it). <release> is the server's release
#                   object (docs/api.md): id, version, kind "bundle"|"image", size, sha256, url.
#   ota/state.json  the bundle slot pointer, JSON {"slot": "a"|"b"|"rom-a"|"rom-b"|null, "state": "new"|"pending"|"valid",
#                   "boots": n, "prev": slot|null, "prev_version": version|null, "version": version,
#                   "max_boots": n, "failed": version|null, "base": partition label|null}.
#                   new (bundle.py switched to it) -> pending (its first boot, boots=1) -> valid (it
#                   confirmed itself, confirm.py). Still pending after max_boots boots: otaboot goes back
#                   to "prev" and records the version in "failed" and in ota/failed. "base": the app
#                   partition (ESP32 image) the bundle runs on, recorded at its first boot; another image
#                   does not use the bundle (otaboot), replacing that image forgets it (image.py).
#                   "slot": "a"/"b" are the .mpy-overlay bundles in the directories ota/a, ota/b (put first
#                   on sys.path); "rom-a"/"rom-b" the ROMFS bundles in the first/second half of the "romfs"
#                   partition (romfs.py writes them, otaboot mounts the half at /rom); null: no bundle,
#                   the app the board was deployed with (/lib, or the ROMFS in the first half). The
#                   format is read at boot by the copy of this module in /lib (never only in a slot:
#                   tools/twtools/build.py BOOT_MODULES), so a new version must keep reading it.
#   ota/boots       decimal text: boots in a row that did not end well, this one included (otaboot counts
#                   every boot; the app removes the file after a good boot). More than SAFE_AFTER: safe mode.
#   ota/failed      a version: a bundle otaboot rolled back; the old version counts it as a failed
#                   attempt at its next confirmation (confirm.py) and removes the file.
# NVS (keys named in twomes/store.py, the list of all keys). Each key is one atomic write, but a change
# of several keys is not: where their order matters they are committed one by one, in an order that a
# power cut in between cannot turn into a wrong state (count_failure, confirm_kept, image_rolled_back):
#   fw_ok     str  the version last confirmed to the server
#   fw_fail   str  "<count> <version>": failed attempts of that version in a row, ONE item (a count and
#                  its version written as two items could be cut apart and charge a version with
#                  another's count); at FAILS_MAX it is not tried again until the server's target
#                  changes. Firmware <= 1.0 kept them apart (fw_bad, fw_fails): read when fw_fail is
#                  missing, removed at the next write
#   dl_state  str  "<release id> <sha256[:16]> <partition> <offset>": bytes [0, offset) of that image
#                  are in that partition (image.py, every 64 KB and at the end; kept until the new image
#                  confirmed itself, so an install cut after the download only verifies again)
#   img_new   str  "<version> <partition> <running partition>": an ESP32 app image was installed into
#                  <partition> while <running partition> ran; committed before set_boot. The new image
#                  marks itself valid when it sees its own version here, the old one knows it was
#                  rolled back (or the switch never happened).
#   fw_ctr      i32  the highest security counter of a signed release that was installed AND kept:
#                    a release with a lower counter is refused (anti-rollback, twomes/update/signing.py)
#   fw_ctr_new  str  "<version> <counter>" of the signed release just installed; when that version
#                    confirms itself and is kept, fw_ctr becomes the higher of the two (confirm_kept)
import json
import os

from micropython import const

from twomes import store

SAFE_AFTER = const(5)  # failed boots in a row before safe mode (no update attempts)
FAILS_MAX = const(3)  # failed attempts of one version before it is not tried again
# the files (private constants: folded into the code, their names and texts not interned, docs/heap.md)
_DIR = const("ota")
_JOB = const("ota/job")
_SLOT = const("ota/state.json")
_BOOTS = const("ota/boots")
_FAILED = const("ota/failed")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path, text):
    """`text` into `path` with one atomic rename (the ota directory made on first use)."""
    try:
        f = open(path + ".tmp", "w")
    except OSError:
        os.mkdir(_DIR)
        f = open(path + ".tmp", "w")
    with f:
        f.write(text)
    os.rename(path + ".tmp", path)


def _remove(path):
    """True when there was something to remove."""
    try:
        os.remove(path)
        return True
    except OSError:
        return False


# ---- ota/job: the update the next boot installs ----------------------------------------------------
def job_saved():
    return _read(_JOB) is not None


def save_job(rel):
    _write(_JOB, json.dumps({"rel": rel}))


def job():
    """The saved release, or None. A damaged job is removed, then ValueError."""
    text = _read(_JOB)
    if text is None:
        return None
    try:
        rel = json.loads(text)["rel"]
        if isinstance(rel, dict) and isinstance(rel["version"], str):
            return rel
    except (ValueError, KeyError, TypeError):
        pass
    drop_job()
    raise ValueError("unreadable update job")


def drop_job():
    _remove(_JOB)


# ---- ota/state.json: the bundle slot pointer ---------------------------------------------------------
def slot():
    """The slot pointer (a dict), or None: none, or damaged (otaboot then boots the factory app)."""
    text = _read(_SLOT)
    if text is None:
        return None
    try:
        st = json.loads(text)
    except ValueError:
        return None
    return st if isinstance(st, dict) else None


def rom_half(name):
    """0 or 1: the half of the "romfs" partition a slot pointer's "slot" names, or None (not ROMFS)."""
    return {"rom-a": 0, "rom-b": 1}.get(name)


def rom_slot(half):
    return "rom-b" if half else "rom-a"


def slot_in_use(st, running):
    """The slot the boot runs from pointer `st` on the app partition `running` (otaboot's rule: a bundle
    belongs to the image it first booted on), or None: the deployed app."""
    if not st or not st.get("slot"):
        return None
    if st.get("base") is not None and st["base"] != running:
        return None
    return st["slot"]


def write_slot(st):
    _write(_SLOT, json.dumps(st))


def switch_slot(name, version, prev, prev_version, max_boots):
    """bundle.py: slot `name` holds `version`, verified: the next boot runs it (pending until it confirms
    itself, rolled back to `prev` after max_boots boots). This one rename is the switch."""
    write_slot(
        {
            "slot": name,
            "state": "new",
            "boots": 0,
            "prev": prev,
            "prev_version": prev_version,
            "version": version,
            "max_boots": max_boots,
        }
    )


def keep_slot():
    """The running bundle confirmed itself to the server: keep it. True when something changed."""
    st = slot()
    if st and st.get("slot") and st.get("state") != "valid":
        st["state"] = "valid"
        st["boots"] = 0
        write_slot(st)
        return True
    return False


def forget_slot_on(label):
    """image.py is about to overwrite the app partition `label`: a bundle that runs on the image in it is
    gone with it. Returns the forgotten bundle's version, or None."""
    st = slot()
    if st and st.get("slot") and st.get("base") == label:
        write_slot({"slot": None, "state": "valid", "boots": 0, "prev": None})
        return st.get("version") or "?"
    return None


# ---- ota/failed: a bundle otaboot rolled back ------------------------------------------------------
def bundle_rolled_back(version):
    _write(_FAILED, version or "")


def bundle_rollback_pending():
    return _read(_FAILED) is not None


def take_rolled_back():
    """The version of a bundle otaboot rolled back (the file is removed first: a power cut in between
    loses a count, never doubles one), or None."""
    version = _read(_FAILED)
    if version is None or not _remove(_FAILED):
        return None
    return version.strip() or None


# ---- ota/boots: the boot-loop counter --------------------------------------------------------------
def boots():
    """Boots since the app last said one went well, this one included."""
    try:
        return int(_read(_BOOTS))  # pyright: ignore[reportArgumentType] - None (no file): TypeError, below
    except (TypeError, ValueError):
        return 0


def count_boot():
    """otaboot, at every boot. Returns the count; logs the start of safe mode."""
    n = boots() + 1
    try:
        f = open(_BOOTS, "w")
    except OSError:
        os.mkdir(_DIR)
        f = open(_BOOTS, "w")
    with f:
        f.write(str(n))  # one small write: the old count or the new one survives a cut
    if n > SAFE_AFTER:
        print("boot: safe mode after %d boots in a row that did not end well: no update attempts" % (n - 1))
    return n


def safe_mode():
    """More than SAFE_AFTER boots in a row did not end well: no update attempts in this boot."""
    return boots() > SAFE_AFTER


def good_boot():
    """This boot went well (up for a while, or a new version confirmed itself): the count starts again."""
    _remove(_BOOTS)


# ---- NVS: confirmation and failed attempts ---------------------------------------------------------
def confirmed(st):
    """The version last confirmed to the server, or None."""
    return st.get(store.FW_CONFIRMED)


def _failed(st):
    """(count, version) of the failures counted, or (0, None)."""
    raw = st.get(store.FW_FAIL)
    if raw is None:  # firmware <= 1.0
        v = st.get(store.FW_FAILED)
        return (st.get_int(store.FW_FAILS, 0), v) if v else (0, None)
    n, _, v = raw.partition(" ")
    try:
        return int(n), v
    except ValueError:
        return 0, None


def fails(st, version):
    """Failed attempts of `version` in a row (0 when the failures counted are another version's)."""
    n, v = _failed(st)
    return n if v == version else 0


def count_failure(st, version):
    """One more failed attempt of `version`: the one place failures are counted, one NVS item."""
    n = fails(st, version) + 1
    st.put(store.FW_FAIL, "%d %s" % (n, version))
    st.delete(store.FW_FAILED)
    st.delete(store.FW_FAILS)
    st.commit()
    return n


def _forget_failures(st, version):
    """`version` is kept: its failures (not another version's) are forgotten (the caller commits)."""
    if _failed(st)[1] == version:
        st.delete(store.FW_FAIL)
        st.delete(store.FW_FAILED)
        st.delete(store.FW_FAILS)


def counter(st):
    """The highest security counter kept so far, or None (no signed release installed yet)."""
    n = st.get_int(store.FW_COUNTER, -1)
    return None if n < 0 else n


def installed_counter(st, version, n):
    """The release `version` with security counter `n` was installed (not kept yet)."""
    st.put(store.FW_COUNTER_NEW, "%s %d" % (version, n))
    st.commit()


def confirm_kept(st, version, image):
    """`version` confirmed itself and is kept; `image`: it is a new image, whose marker and download
    state are done with. Its failures (not another version's) are forgotten; its security counter is
    kept (the higher one wins). fw_ok is written last: a cut before it repeats the confirmation."""
    new = st.get(store.FW_COUNTER_NEW)
    if new is not None:
        v, _, n = new.partition(" ")
        try:
            n = int(n)
        except ValueError:
            n = -1
        if v == version and n > st.get_int(store.FW_COUNTER, -1):
            st.put_int(store.FW_COUNTER, n)
            st.commit()
        st.delete(store.FW_COUNTER_NEW)
    if image:
        st.delete(store.IMG_NEW)
        st.delete(store.DL_STATE)
    _forget_failures(st, version)
    st.commit()
    st.put(store.FW_CONFIRMED, version)
    st.commit()


# ---- NVS: image installs -----------------------------------------------------------------------------
def image_new(st):
    """The version of an image installed and switched to, or None."""
    v = st.get(store.IMG_NEW)
    return None if v is None else v.split(" ")[0]


def set_image_new(st, version, label, running):
    st.put(store.IMG_NEW, "%s %s %s" % (version, label, running))
    st.commit()


def image_failed(st):
    """set_boot refused the image just written: no marker, and nothing in that partition to resume."""
    st.delete(store.IMG_NEW)
    st.delete(store.DL_STATE)
    st.commit()


def image_rolled_back(st, version):
    """The image `version` that img_new names does not run (rolled back, or the power went between
    img_new and set_boot): the version that runs confirms itself again (the new one may have confirmed
    itself before it went), and the attempt is counted. In this order: a power cut in between repeats
    all of it or loses the count, never the re-confirmation, never a count twice."""
    st.delete(store.FW_CONFIRMED)
    st.commit()
    st.delete(store.IMG_NEW)
    st.commit()
    count_failure(st, version)


def download_key(rel, label):
    """What dl_state names: this release's image in partition `label`."""
    return "%s %s %s" % (rel.get("id", 0), rel["sha256"][:16], label)


def download_at(st, key, size, checkpoint):
    """Durable offset to resume the download named `key`, or 0: only a checkpoint or the end counts."""
    ds = st.get(store.DL_STATE)
    if ds is None or not ds.startswith(key + " "):
        return 0
    try:
        off = int(ds[len(key) + 1 :])
    except ValueError:
        return 0
    return off if 0 < off <= size and (off % checkpoint == 0 or off == size) else 0


def download_done(st, key, pos):
    """Bytes [0, pos) of the download named `key` are in flash (durable)."""
    st.put(store.DL_STATE, "%s %d" % (key, pos))
    st.commit()


def download_forget(st):
    """The partition no longer holds (a prefix of) the image dl_state names."""
    if st.get(store.DL_STATE) is not None:
        st.delete(store.DL_STATE)
        st.commit()
