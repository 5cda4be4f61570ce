# The app-bundle boot selector (otaboot): new -> pending -> valid, rollback after max_boots.
import json
import os
import sys

import otaguard

import otaboot
import support


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
    otaboot.write({"slot": "a", "state": "new", "prev": None, "version": "1.1.0", "max_boots": 3})
    before = list(sys.path)
    slot, st = otaboot.select()
    assert sys.path[0] == "ota/a"
    sys.path[:] = before
    assert slot == "a" and st["state"] == "pending" and st["boots"] == 1
    st["state"] = "valid"
    otaboot.write(st)
    for _ in range(5):
        assert _select()[0] == "a"


def test_never_confirmed_rolls_back_after_max_boots():
    _in(support.tmpdir("ota"))
    otaboot.write(
        {
            "slot": "b",
            "state": "new",
            "prev": "a",
            "prev_version": "1.0.0",
            "version": "1.1.0",
            "max_boots": 2,
        }
    )
    assert _select()[0] == "b"  # boot 1
    assert _select()[0] == "b"  # boot 2
    slot, st = _select()  # boot 3: give up
    assert slot == "a" and st["state"] == "valid" and st["failed"] == "1.1.0" and st["version"] == "1.0.0"
    assert _select()[0] == "a"


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
        assert otaguard.failed_boots() == n
    app.boot_guard(True)
    assert otaguard.failed_boots() == 0
    _select()
    assert otaguard.failed_boots() == 1


def test_safe_mode_after_too_many_failed_boots():
    from twomes import app

    _in(support.tmpdir("ota"))
    assert app.boot_guard() is False  # no count yet
    for _ in range(otaguard.SAFE_AFTER):
        _select()
    assert app.boot_guard() is False  # not yet: this boot may still go well
    _select()
    assert app.boot_guard() is True  # main() starts the app in safe mode
    assert app.boot_guard(True) is True and otaguard.failed_boots() == 0  # a good boot: normal again
    _select()
    assert app.boot_guard() is False


def test_bundle_installed_on_another_image_is_not_used():
    import vflash

    import vesp32

    d = support.new_board()
    _in(d)
    vflash.bootloader()  # the factory app runs
    had = sys.modules.get("esp32")
    sys.modules["esp32"] = vesp32
    try:
        assert otaguard.running_partition() == "factory"
        otaboot.write({"slot": "a", "state": "new", "version": "2.0.0"})
        assert _select()[0] == "a"  # the first boot records the image the bundle runs on
        assert otaboot.read()["base"] == "factory"
        otaboot.write({"slot": "a", "state": "valid", "version": "2.0.0", "base": "ota_0"})
        assert _select()[0] is None  # the image in ota_0 is not the one running
        otaboot.write({"slot": "a", "state": "valid", "version": "2.0.0", "base": "factory"})
        assert _select()[0] == "a"
    finally:
        if had is None:
            sys.modules.pop("esp32", None)
        else:
            sys.modules["esp32"] = had
