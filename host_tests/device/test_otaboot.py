# The app-bundle boot selector (otaboot) over the update state (twomes/update/state.py): new -> pending
# -> valid, rollback after max_boots, the boot-loop counter behind safe mode, a bundle's base image.
import json
import os
import sys

import otaboot
import support
from twomes.update import state


def _in(d):
    os.chdir(d)
    try:
        os.mkdir("ota")
    except OSError:
        pass


def _select():
    before = list(sys.path)
    slot, st = otaboot.select()
    sys.path[:] = before
    return slot, st


def test_no_state_means_factory():
    _in(support.tmpdir("ota"))
    assert _select() == (None, None)


def test_new_slot_boots_pending_then_valid():
    _in(support.tmpdir("ota"))
    state.write_slot({"slot": "a", "state": "new", "prev": None, "version": "1.1.0", "max_boots": 3})
    before = list(sys.path)
    slot, st = otaboot.select()
    assert sys.path[0] == "ota/a"
    sys.path[:] = before
    assert slot == "a" and st["state"] == "pending" and st["boots"] == 1
    assert state.keep_slot() is True and state.slot()["state"] == "valid"
    assert state.keep_slot() is False  # kept already: nothing written
    for _ in range(5):
        assert _select()[0] == "a"


def test_never_confirmed_rolls_back_after_max_boots():
    _in(support.tmpdir("ota"))
    state.switch_slot("b", "1.1.0", "a", "1.0.0", 2)
    assert _select()[0] == "b"  # boot 1
    assert _select()[0] == "b"  # boot 2
    assert not state.bundle_rollback_pending()
    slot, st = _select()  # boot 3: give up
    assert slot == "a" and st["state"] == "valid" and st["failed"] == "1.1.0" and st["version"] == "1.0.0"
    assert state.bundle_rollback_pending()  # for the old version to count (confirm.py)
    assert _select()[0] == "a"
    assert state.take_rolled_back() == "1.1.0"
    assert state.take_rolled_back() is None and not state.bundle_rollback_pending()  # counted once


def test_damaged_state_file_means_factory():
    _in(support.tmpdir("ota"))
    with open("ota/state.json", "w") as f:
        f.write("{half")
    assert _select() == (None, None)
    with open("ota/state.json", "w") as f:
        f.write(json.dumps([1, 2]))
    assert _select() == (None, None)


def test_boot_counter_counts_boots_until_the_app_says_healthy():
    from twomes import app

    _in(support.tmpdir("ota"))
    os.rmdir("ota")  # a fresh filesystem: the counter makes its directory
    for n in range(1, 4):
        _select()
        assert state.boots() == n
    app.boot_loop(True)
    assert state.boots() == 0
    _select()
    assert state.boots() == 1


def test_safe_mode_after_too_many_failed_boots():
    from twomes import app

    _in(support.tmpdir("ota"))
    assert app.boot_loop() is False  # no count yet
    for _ in range(state.SAFE_AFTER):
        _select()
    assert app.boot_loop() is False  # not yet: this boot may still go well
    _select()
    assert app.boot_loop() is True  # main() starts the app in safe mode
    app.boot_loop(True)  # a good boot: normal again
    assert state.boots() == 0 and app.boot_loop() is False
    _select()
    assert app.boot_loop() is False


def test_select_drops_what_it_loaded():
    """The app imported after the choice must be the chosen slot's: otaboot keeps none of its modules."""
    _in(support.tmpdir("ota"))
    saved = {n: sys.modules[n] for n in list(sys.modules) if n == "twomes" or n.startswith("twomes.")}
    for n in saved:
        del sys.modules[n]
    try:
        _select()
        assert not [n for n in sys.modules if n == "twomes" or n.startswith("twomes.")]
        assert state.boots() == 1
    finally:
        sys.modules.update(saved)


def test_bundle_installed_on_another_image_is_not_used():
    import vflash

    import vesp32

    d = support.new_board()
    _in(d)
    vflash.bootloader()  # the factory app runs
    had = sys.modules.get("esp32")
    sys.modules["esp32"] = vesp32
    try:
        assert otaboot.running_partition() == "factory"
        state.write_slot({"slot": "a", "state": "new", "version": "2.0.0"})
        assert _select()[0] == "a"  # the first boot records the image the bundle runs on
        assert state.slot()["base"] == "factory"
        state.write_slot({"slot": "a", "state": "valid", "version": "2.0.0", "base": "ota_0"})
        assert _select()[0] is None  # the image in ota_0 is not the one running
        state.write_slot({"slot": "a", "state": "valid", "version": "2.0.0", "base": "factory"})
        assert _select()[0] == "a"
        assert state.forget_slot_on("ota_0") is None  # another image's partition: kept
        assert state.forget_slot_on("factory") == "2.0.0" and state.slot()["slot"] is None
    finally:
        if had is None:
            sys.modules.pop("esp32", None)
        else:
            sys.modules["esp32"] = had


# ---- ROMFS slots: halves of the "romfs" partition, mounted at /rom ---------------------------------
import romfsutil  # noqa: E402

_MP = sys.implementation.name == "micropython"
_HALF = 4096


class _Vfs:
    """vfs of a ROMFS build (rom_ioctl(2, 0): the mapped partition) over the port's VfsRom and mount."""

    def __init__(self, seg):
        import vfs

        self.seg = seg
        self.VfsRom = vfs.VfsRom
        self.mount = vfs.mount
        self.umount = vfs.umount

    def rom_ioctl(self, op, *args):
        return self.seg if op == 2 else 1


def _partition(a, b):
    seg = bytearray(b"\xff" * (2 * _HALF))
    if a:
        seg[: len(a)] = a
    if b:
        seg[_HALF : _HALF + len(b)] = b
    return seg


def _rom_boot(seg):
    """One boot with `seg` as the romfs partition: (slot, pointer, /rom/version or None)."""
    before_path = list(sys.path)
    old = sys.modules.get("vfs")
    sys.modules["vfs"] = _Vfs(seg)
    try:
        slot, st = otaboot.select()
        try:
            with open("/rom/version") as f:
                mounted = f.read()
        except OSError:
            mounted = None
        return slot, st, mounted
    finally:
        try:
            sys.modules["vfs"].umount("/rom")
        except OSError:
            pass
        if old is None:
            sys.modules.pop("vfs", None)
        else:
            sys.modules["vfs"] = old
        sys.path[:] = before_path


def _used(boot):
    return boot[0], boot[2]


def test_rom_slot_b_is_mounted_at_rom_and_confirmed_like_a_bundle():
    if not _MP:
        return  # the port's VfsRom: the MicroPython run of this test
    _in(support.tmpdir("ota"))
    seg = _partition(romfsutil.app("1.0.0"), romfsutil.app("1.1.0"))
    state.switch_slot("rom-b", "1.1.0", None, "1.0.0", 2)
    slot, st, mounted = _rom_boot(seg)
    assert (slot, st["state"], mounted) == ("rom-b", "pending", "1.1.0")
    assert state.keep_slot()
    assert _used(_rom_boot(seg)) == ("rom-b", "1.1.0")
    # the next update goes into the first half; it never confirms: back to the second
    seg = _partition(romfsutil.app("1.2.0"), romfsutil.app("1.1.0"))
    state.switch_slot("rom-a", "1.2.0", "rom-b", "1.1.0", 2)
    assert _used(_rom_boot(seg)) == ("rom-a", "1.2.0")
    assert _used(_rom_boot(seg)) == ("rom-a", "1.2.0")
    slot, st, mounted = _rom_boot(seg)
    assert (slot, st["failed"], mounted) == ("rom-b", "1.2.0", "1.1.0")
    assert state.take_rolled_back() == "1.2.0"


def test_rom_slot_that_does_not_mount_is_rolled_back_at_once():
    # MicroPython: the second half holds no ROMFS (erased), the first half comes back at /rom.
    # CPython: a build without ROMFS (no vfs): a ROMFS slot cannot run, the deployed app does.
    _in(support.tmpdir("ota"))
    seg = _partition(romfsutil.app("1.0.0"), None)
    state.switch_slot("rom-b", "1.1.0", None, "1.0.0", 3)
    if _MP:
        slot, st, mounted = _rom_boot(seg)
        assert mounted == "1.0.0"
    else:
        slot, st = _select()
    assert slot is None and st["failed"] == "1.1.0" and st["version"] == "1.0.0"
    assert state.take_rolled_back() == "1.1.0"
    # a half holding another version than the pointer names is not run either
    if _MP:
        seg = _partition(romfsutil.app("1.0.0"), romfsutil.app("0.9.0"))
        state.switch_slot("rom-b", "1.1.0", None, "1.0.0", 3)
        assert _used(_rom_boot(seg)) == (None, "1.0.0")
