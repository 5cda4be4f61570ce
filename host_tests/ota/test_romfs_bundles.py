"""ROMFS bundles: what stays outside the slots (the boot's code) and the bundle's form per board."""

from __future__ import annotations

import ast
from pathlib import Path

from twtools import DEVICE_DIR
from twtools.build import BOOT_MODULES, NOT_IN_BUNDLE, ROMFS_MAGIC, build_bundle, build_romfs


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
