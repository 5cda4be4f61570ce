"""Image and bundle updates end to end on virtual boards against a real reference server: an image
that crashes at start is rolled back by the bootloader (and given up after three tries), a bundle on
top of an image does not shadow a newer image, a bootloader without rollback is said so, and a boot
loop puts the device in safe mode."""

from __future__ import annotations

import shutil
from pathlib import Path

from twtools import DEVICE_DIR
from twtools.build import read_version
from twtools.powercut import Lab
from twtools.vboard.runner import MPY_HEAP

BASE = read_version()
# A board that boots an image runs the image's frozen app, which the virtual board loads from .mpy
# files into the heap (it cannot freeze into the unix port; on the chip it is in flash): the .mpy
# mode's heap, not the shipping mode's (docs/heap.md).
IMAGE_HEAP = MPY_HEAP


def _target(lab: Lab, name: str, rel: dict) -> None:
    lab.server.client.set_device_target(name, rel["id"])


def _src(lab: Lab, tag: str, extra_init: str) -> Path:
    src = lab.work / f"src-{tag}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(DEVICE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "twomes" / "__init__.py"
    init.write_text(init.read_text() + extra_init)
    return src


def test_image_that_crashes_at_start_is_rolled_back_and_given_up(lab: Lab) -> None:
    ident = lab.make_identity("24:6F:28:0A:00:01")
    bad = f"{BASE}-crash"
    # a panic at start: the app resets the chip before it can confirm itself
    rel = lab.release(
        "image", bad, _src(lab, "crash", "import machine\nmachine.reset()\n"), runtime=32 * 1024
    )
    _target(lab, ident.name, rel)
    board = lab.fresh(ident, "crash")
    try:
        board.start()
        board.wait_for(rf"target {bad} failed 3 times: not trying it again", 60)
        text = "\n".join(board.lines)
        assert text.count(f"ota_0 holds {bad}") == 3
        assert text.count(f"image {bad} is not running") == 3
        assert text.count(f"{bad} is already in ota_0: verifying it again") == 2  # downloaded once
        assert f"boot: twomes firmware {bad}" not in text  # it never got as far as the app
        board.wait_for(rf"state: running - firmware {lab.old}", 10)
        assert lab.server.client.device(ident.name)["installed_version"] == lab.old
    finally:
        board.stop()


def test_bundle_on_the_factory_app_does_not_shadow_a_newer_image(lab: Lab) -> None:
    ident = lab.make_identity("24:6F:28:0A:00:02")
    v2, v3 = f"{BASE}-bundle.2", f"{BASE}-image.3"
    rel2 = lab.release("bundle", v2)
    rel3 = lab.release("image", v3, runtime=32 * 1024)
    _target(lab, ident.name, rel2)
    board = lab.fresh(ident, "layers", heap=IMAGE_HEAP)
    try:
        board.start()
        board.wait_for(rf"version {v2} confirmed and kept", 30)
        board.wait_for(rf"state: running - firmware {v2}", 10)
        mark = board.mark()
        _target(lab, ident.name, rel3)
        board.power_cut()  # the next check is days away: power it off and on, it checks at boot
        board.power_on()
        board.wait_for(rf"ota_0 holds {v3}", 30, start=mark)
        board.wait_for(rf"boot: bundle {v2} belongs to the image in factory: not used", 30, start=mark)
        board.wait_for(rf"running {v3}, confirmed to the server", 30, start=mark)
        board.wait_for(rf"state: running - firmware {v3}", 10, start=mark)
    finally:
        board.stop()


def test_bootloader_without_rollback_is_reported_and_the_image_kept(lab: Lab) -> None:
    ident = lab.make_identity("24:6F:28:0A:00:03")
    v2 = f"{BASE}-norollback"
    _target(lab, ident.name, lab.release("image", v2, runtime=32 * 1024))
    board = lab.fresh(ident, "norollback", rollback=False, heap=IMAGE_HEAP)
    try:
        board.start()
        board.wait_for(r"bootloader without rollback support: image kept", 30)
        board.wait_for(rf"state: running - firmware {v2}", 10)
    finally:
        board.stop()


def test_boot_loop_means_safe_mode_without_updates(lab: Lab) -> None:
    ident = lab.make_identity("24:6F:28:0A:00:04")
    v2 = f"{BASE}-unwanted"
    _target(lab, ident.name, lab.release("bundle", v2))
    board = lab.fresh(ident, "safe")
    (board.fs / "ota").mkdir(exist_ok=True)
    (board.fs / "ota" / "boots").write_text("5")  # five boots in a row that did not end well
    try:
        board.start()
        board.wait_for(r"boot: safe mode after 5 boots in a row that did not end well", 10)
        board.wait_for(rf"target {v2}, running {lab.old}: no update attempts in safe mode", 30)
        board.wait_for(rf"state: running - firmware {lab.old}", 10)
        assert (board.fs / "ota" / "boots").read_text() == "6"
    finally:
        board.stop()
