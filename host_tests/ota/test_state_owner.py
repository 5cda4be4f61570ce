"""Each persisted update state has one owner: device/twomes/update/state.py. Every other device module
(otaboot, the app, the installers, the confirmation) goes through it: no other module names the files
or the NVS keys in its code (comments and docstrings may mention them). And the update package does not
import the app or the online phase back (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

from twtools import DEVICE_DIR, REPO

OWNER = DEVICE_DIR / "twomes" / "update" / "state.py"
STORE = DEVICE_DIR / "twomes" / "store.py"  # the list of all NVS keys (mechanism: names only)
FILES = ("ota/job", "ota/state.json", "ota/boots", "ota/failed")
KEYS = ("fw_ok", "fw_fail", "fw_bad", "fw_fails", "dl_state", "img_new", "fw_ctr", "fw_ctr_new")
KEY_NAMES = (
    "FW_CONFIRMED",
    "FW_FAIL",
    "FW_FAILED",
    "FW_FAILS",
    "DL_STATE",
    "IMG_NEW",
    "FW_COUNTER",
    "FW_COUNTER_NEW",
)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def uses(source: str, allow_key_definitions: bool = False) -> list[str]:
    """What in `source` (Python code) names a persisted update state: 'line: what'."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    allowed: set[int] = set()
    if allow_key_definitions:  # store.py: `FW_CONFIRMED = "fw_ok"` and the ALL_KEYS tuple
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for sub in ast.walk(node):
                    allowed.add(id(sub))
    found = []
    for node in ast.walk(tree):
        if id(node) in docs or id(node) in allowed:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for name in FILES:
                if name in node.value:
                    found.append(f"{node.lineno}: {name!r}")
            if node.value in KEYS:
                found.append(f"{node.lineno}: {node.value!r}")
        name = (
            node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        )
        if name in KEY_NAMES:
            found.append(f"{node.lineno}: {name}")
    return sorted(found, key=lambda u: int(u.split(":")[0]))


def _device_files() -> list[Path]:
    return sorted(p for p in DEVICE_DIR.rglob("*.py") if "__pycache__" not in p.parts) + [
        REPO / "boot.py",
        REPO / "main.py",
    ]


def test_the_checker_finds_what_it_looks_for() -> None:
    code = '"""ota/job (a docstring)"""\nos.remove("ota/boots")\nst.get(store.IMG_NEW)\nst.put("fw_ok", v)\n'
    assert uses(code) == ["2: 'ota/boots'", "3: IMG_NEW", "4: 'fw_ok'"]
    assert uses('DL_STATE = "dl_state"\nALL = (DL_STATE,)\nst.get(DL_STATE)\n', True) == ["3: DL_STATE"]


def test_only_the_state_module_names_the_persisted_update_state() -> None:
    assert OWNER.exists()
    seen = {}
    for path in _device_files():
        if path == OWNER:
            continue
        found = uses(path.read_text(), allow_key_definitions=path == STORE)
        if found:
            seen[str(path.relative_to(REPO))] = found
    assert seen == {}, f"persisted update state named outside {OWNER.relative_to(REPO)}: {seen}"
    owner = uses(OWNER.read_text())
    for name in FILES + KEY_NAMES:  # and the owner does handle every one of them
        assert any(name in u for u in owner), name


def test_the_update_package_does_not_import_the_app_or_the_online_phase() -> None:
    allowed = {"twomes", "twomes.errors", "twomes.log", "twomes.store", "twomes.update"}
    for path in sorted((DEVICE_DIR / "twomes" / "update").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("twomes"):
                assert node.module in allowed, f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.startswith("twomes")], path.name
