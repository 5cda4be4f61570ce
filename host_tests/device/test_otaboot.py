# The app-bundle boot selector (otaboot): new -> pending -> valid, rollback after max_boots.
import json
import os
import sys

import support

import otaboot


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
