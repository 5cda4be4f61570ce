"""A virtual board that runs only setup mode's tasks (host_tests/portal/portal_main.py: portal, DNS,
Improv) with the real controller on a stand-in app (fakectl.py), on the MicroPython unix port; or the
real app (start_board(app=True)).

Heap: the virtual board's simulated hardware runs in its own process; the device's heap holds only
vboot and the hardware proxies (about 5 KB with the interpreter's own start), the app's base modules
about 19 KB: this board gets BOARD_HEAP. The portal's own heap figures come from test_portal_heap.py
(no simulation in that heap either)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from twtools.mpprocess import mpy
from twtools.vboard.runner import DEFAULT_HEAP, VirtualBoard

HERE = Path(__file__).resolve().parent
DEVICE_TESTS = HERE.parent / "device"

HOSTILE = "<script>alert(1)</script>&\"x'"
CAFE = "Caf\u00e9 \u2615 & Co"
SPECIAL_PW = "p&%+@#$;\u00e4ssw\u00f6rd =x"
AIR: list[dict[str, Any]] = [
    {"ssid": "home", "password": "secret-pass", "rssi": -52, "join_ms": 300},
    {"ssid": HOSTILE, "password": "whatever1", "rssi": -71},
    {"ssid": CAFE, "password": SPECIAL_PW, "rssi": -60, "join_ms": 300},
    {"ssid": "Neighbours 5G", "password": "whatever2", "rssi": -78},
    {"ssid": "slow", "password": "slowslow1", "rssi": -83, "behavior": "timeout"},
    {"ssid": "open-net", "password": "", "rssi": -88},
]


BOARD_HEAP = "128K"
# The real app's heap (TW_APP_HEAP to try others): the virtual board's default, the budget of the app
# as it ships (its code in ROMFS; docs/heap.md).
APP_HEAP = os.getenv("TW_APP_HEAP") or DEFAULT_HEAP


def start_board(
    state: Path,
    pty: bool = False,
    heap: str = BOARD_HEAP,
    app: bool = False,
    air: list[dict[str, Any]] | None = None,
) -> VirtualBoard:
    """A fresh board with its portal up (returns once its API answers). `app`: the real app (its own
    controller, in `heap`; its server is a closed port on 127.0.0.1: activation is not these tests'
    business) instead of the portal-only main with the fake controller."""
    config = {"wifi_timeout_s": 3, "server_url": "http://127.0.0.1:9", "retry_base_s": 1, "retry_max_s": 5}
    vb = VirtualBoard(state, air=AIR if air is None else air, heap=heap, pty=pty, config=config)
    vb.install_app()
    if not app:
        mpy(HERE / "portal_main.py", vb.fs / "portal_main.mpy")
        mpy(DEVICE_TESTS / "fakectl.py", vb.fs / "fakectl.mpy")
        (vb.fs / "main.py").write_text("import portal_main\n\nportal_main.run()\n")
    vb.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            get_json(vb, "/api/info")
            return vb
        except OSError as e:
            if time.monotonic() > deadline or (vb.boots and not vb.running):
                tail = "\n".join(vb.lines[-20:])
                vb.stop()
                raise RuntimeError(f"the portal board did not come up: {e}\n{tail}") from e
            time.sleep(0.1)


def http(
    vb: VirtualBoard, path: str, body: bytes | None = None, ctype: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        vb.portal_url + path, data=body, method="POST" if body is not None else "GET"
    )
    if ctype:
        req.add_header("Content-Type", ctype)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


def get_json(vb: VirtualBoard, path: str) -> Any:
    status, _, body = http(vb, path)
    return json.loads(body)
