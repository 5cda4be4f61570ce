"""ROMFS bundles: what stays outside the slots (the boot's code), the bundle's form, and the two halves
of the "romfs" partition taking turns on a virtual board against a real reference server."""

from __future__ import annotations

import ast
from pathlib import Path

from twtools import DEVICE_DIR
from twtools.build import BOOT_MODULES, NOT_IN_BUNDLE, ROMFS_MAGIC, build_bundle, build_romfs, read_version
from twtools.powercut import Lab

BASE = read_version()


def _module_file(name: str) -> str:
    """device/-relative source path of a device module name ("twomes.update.state")."""
    parts = name.split(".")
    pkg = DEVICE_DIR.joinpath(*parts)
    return "/".join(parts) + "/__init__.py" if pkg.is_dir() else "/".join(parts) + ".py"


def _imports(rel: str) -> set[str]:
    """The device modules a module imports (package __init__ files included), at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((DEVICE_DIR / rel).read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way are imported too
                sub = ".".join(parts[:i])
                f = _module_file(sub)
                if (DEVICE_DIR / f).exists():
                    found.add(f)
    return found


def test_the_boot_modules_are_exactly_what_otaboot_imports() -> None:
    """What the boot needs to read the slot pointer stays in /lib on a ROMFS board: all of it (a
    module left out would come from a slot, which a torn update can empty), nothing more."""
    closure: set[str] = set()
    todo = ["otaboot.py"]
    while todo:
        rel = todo.pop()
        if rel in closure:
            continue
        closure.add(rel)
        todo.extend(_imports(rel) - closure)
    assert closure == set(BOOT_MODULES)
    assert NOT_IN_BUNDLE <= BOOT_MODULES


def test_exclusions_match_paths_not_file_names(tmp_path: Path) -> None:
    """NOT_IN_BUNDLE names device/-relative paths: a module elsewhere with the same file name ships."""
    src = tmp_path / "src"
    import shutil

    shutil.copytree(DEVICE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "twomes" / "otaboot.py").write_text("X = 1\n")
    build_bundle(tmp_path / "b.bundle", "9.9.9", src)
    data = (tmp_path / "b.bundle").read_bytes()
    assert b"file twomes/otaboot.mpy " in data and b"file otaboot.mpy " not in data
    build_romfs(tmp_path / "b.romfs", "9.9.9", src)
    image = (tmp_path / "b.romfs").read_bytes()
    assert image.startswith(ROMFS_MAGIC) and b"otaboot.mpy" in image
    # the boot modules the app uses too (the update state) are in the image: the app's own copy
    assert b"state.mpy" in image


def _crashing_src(lab: Lab, tag: str) -> Path:
    """device/ whose twomes package resets the chip when it is imported: a version that never runs."""
    import shutil

    src = lab.work / f"src-{tag}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(DEVICE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "twomes" / "__init__.py"
    init.write_text(init.read_text() + "import machine\nmachine.reset()\n")
    return src


def test_romfs_bundles_take_turns_in_the_two_halves_and_a_bad_one_rolls_back(lab: Lab) -> None:
    """On a board that runs its app from ROMFS (the lab's default): v2 arrives as a signed ROMFS bundle
    and goes into the second half (rom-b), boots, confirms itself and is kept; v3 goes into the first
    half (the deployed app's) while v2 runs, and crashes at every start - also the twomes package it
    ships, which the boot never uses to read the slot pointer (its copy in /lib does): after
    confirm_boots boots the boot mounts rom-b again and v2 runs on."""
    assert lab.code == "romfs"
    ident = lab.make_identity("24:6F:28:0A:00:21")
    v2, v3 = f"{BASE}-rom.2", f"{BASE}-rom.3"
    rel2 = lab.release("bundle", v2)
    rel3 = lab.release("bundle", v3, _crashing_src(lab, "rom-crash"))
    assert (lab.work / f"{v2}.bundle").read_bytes()[:3] == ROMFS_MAGIC
    lab.server.client.set_device_target(ident.name, rel2["id"])
    board = lab.fresh(ident, "romfs-ab")
    try:
        board.start()
        board.wait_for(rf"installing {v2} into slot rom-b \(ROMFS", 30)
        board.wait_for(rf"slot rom-b holds {v2}, verified", 30)
        board.wait_for(rf"version {v2} confirmed and kept", 30)
        board.wait_for(rf"state: running - firmware {v2}", 10)
        mark = board.mark()
        lab.server.client.set_device_target(ident.name, rel3["id"])
        board.power_cut()  # the next check is days away: power it off and on, it checks at boot
        board.power_on()
        board.wait_for(rf"slot rom-a holds {v3}, verified", 30, start=mark)
        board.wait_for(rf"boot: version {v3} never confirmed, rolling back", 60, start=mark)
        board.wait_for(rf"boot: twomes firmware {v2}", 30, start=mark)
        board.wait_for(rf"state: running - firmware {v2}", 30, start=mark)
        text = "\n".join(board.lines[mark:])
        assert f"boot: twomes firmware {v3}" not in text  # it never got as far as the app
        assert lab.server.client.device(ident.name)["installed_version"] == v2
    finally:
        board.stop()
