"""The state table in device/twomes/app.py names, per state, the part of the firmware that sets it (the
comment of its line: app, setup, online, update). Every `set_state()` call in device/ must come from
that part: the state's argument a string literal or a module constant holding one; a state that is not
in the table, or an argument this test cannot resolve, fails too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

DEVICE = Path(__file__).resolve().parents[1] / "device"
APP = DEVICE / "twomes" / "app.py"
PARTS = {"ap": "setup", "online": "online", "update": "update"}


def _table() -> dict[str, set[str]]:
    """state -> its owners, from the STATES literal's lines in app.py."""
    text = APP.read_text()
    block = text[text.index("STATES = {") : text.index("\n}\n", text.index("STATES = {"))]
    owners: dict[str, set[str]] = {}
    for line in block.splitlines()[1:]:
        m = re.match(r'\s+"(\w+)": .*#\s*([a-z, ]+?)(?:\s+-\s.*)?$', line)
        assert m, f"a state line without its owner: {line!r}"
        owners[m.group(1)] = {o.strip() for o in m.group(2).split(",")}
    return owners


def _part(path: Path) -> str:
    rel = path.relative_to(DEVICE / "twomes")
    return PARTS.get(rel.parts[0], "?") if len(rel.parts) > 1 else "app"


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "text" or NAME = const("text")."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            v = node.value
            if isinstance(v, ast.Call) and getattr(v.func, "id", "") == "const" and v.args:
                v = v.args[0]
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                out[node.targets[0].id] = v.value
    return out


def _calls() -> list[tuple[str, str, str]]:
    """(file, part, state) of every set_state() call in device/."""
    found = []
    for path in sorted((DEVICE / "twomes").rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = _constants(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "set_state"):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                state = arg.value
            elif isinstance(arg, ast.Name) and arg.id in names:
                state = names[arg.id]
            else:
                raise AssertionError(
                    f"{path}:{node.lineno}: set_state's state is not a literal or a constant"
                )
            found.append((f"{path.relative_to(DEVICE)}:{node.lineno}", _part(path), state))
    return found


def test_every_state_has_its_owner_in_the_table() -> None:
    table = _table()
    assert len(table) >= 12 and all(o <= {"app", "setup", "online", "update"} for o in table.values()), table


def test_every_state_is_set_only_by_its_owner() -> None:
    table = _table()
    calls = _calls()
    assert len(calls) >= 20, calls  # (the test sees the calls it should)
    wrong = [(where, part, state) for where, part, state in calls if part not in table.get(state, set())]
    assert not wrong, wrong
    # every state but the first is set somewhere
    assert {state for _, _, state in calls} == set(table) - {"boot"}
