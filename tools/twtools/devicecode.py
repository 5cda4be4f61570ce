"""Read facts from the device code itself (config keys and their checks, NVS keys), so the host tools
never keep a second copy that could drift: the device modules are loaded on CPython with a stand-in
for the ``micropython`` module."""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import cache
from typing import Any

from twtools import DEVICE_DIR


def _micropython_stub() -> types.ModuleType:
    stub = types.ModuleType("micropython")
    stub.const = lambda value: value  # type: ignore[attr-defined]
    return stub


@cache
def load(relpath: str) -> types.ModuleType:
    """The device module at ``device/<relpath>`` (e.g. "twomes/config.py"), loaded under a private name."""
    path = DEVICE_DIR / relpath
    name = "_twomes_device_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("micropython")
    sys.modules["micropython"] = saved or _micropython_stub()
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["micropython"]
    return module


def config_spec() -> dict[str, tuple[Any, type, int, int]]:
    """``twomes/config.py``'s key -> (default, type, min, max)."""
    return dict(load("twomes/config.py")._SPEC)


def config_problems(values: dict[str, Any]) -> list[str]:
    """What the device would complain about at boot for this ``twomes.json`` content (config.update)."""
    record = types.SimpleNamespace(problems=[])
    load("twomes/config.py").update(record, values)
    return list(record.problems)


def nvs_keys() -> tuple[str, ...]:
    """Every key the app keeps in its NVS namespace (``twomes/store.py`` ALL_KEYS)."""
    return tuple(load("twomes/store.py").ALL_KEYS)


NVS_NAMESPACE = "twomes"


def credentials_problem(ssid: str, password: str) -> str | None:
    """The device's own rule for Wi-Fi credentials (``twomes/ap/creds.py`` check)."""
    problem: str | None = load("twomes/ap/creds.py").check(ssid, password)
    return problem
